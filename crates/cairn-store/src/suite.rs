//! One test suite, run against every store implementation.

use cairn_api::node::{NetInterface, Node as WireNode};
use cairn_api::resource::{Resource as WireResource, ResourceCreate};
use cairn_api::resource_definition::{
    ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
};
use cairn_api::storage_pool::StoragePool as WireSp;
use cairn_domain::{Change, Cluster, Ctx, ObjKey, Object};

use cairn_proto::ErrorReportFilter;
use cairn_proto::error_report::{Problem, render};

use crate::{MemStore, SqliteStore, Store};

/// Builds a small cluster through the domain operations and commits every
/// outcome, returning the in-memory result to compare against.
pub(crate) fn populate(store: &dyn Store) -> Cluster {
    let mut ctx = Ctx::deterministic();
    let mut c = Cluster::default();
    let seed = c.seed(&mut || "seed-uuid".to_string());
    store.commit(&seed).unwrap();
    c.apply(seed);
    let run = |c: &mut Cluster, out: cairn_domain::Outcome| {
        store.commit(&out.changes).unwrap();
        c.apply(out.changes);
    };
    for n in ["alpha", "Beta"] {
        let req = WireNode {
            name: n.into(),
            node_type: "satellite".into(),
            net_interfaces: vec![NetInterface {
                name: "default".into(),
                address: "127.0.0.1".into(),
                satellite_port: Some(3366),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = c.create_node(&req, &mut ctx).unwrap();
        run(&mut c, out);
        let mut props = cairn_domain::Props::new();
        props.insert("StorDriver/StorPoolName".into(), "/var/lib/cairn/pool".into());
        let sp = WireSp { storage_pool_name: "DfltStorPool".into(), provider_kind: "FILE_THIN".into(), props, ..Default::default() };
        let out = c.create_stor_pool(n, &sp, &mut ctx).unwrap();
        run(&mut c, out);
    }
    let rd = ResourceDefinitionCreate { resource_definition: WireRd { name: "res1".into(), ..Default::default() }, ..Default::default() };
    let out = c.create_rsc_dfn(&rd, &mut ctx).unwrap();
    run(&mut c, out);
    let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(1024), ..Default::default() }, ..Default::default() };
    let out = c.create_vlm_dfn("res1", &vd, &mut ctx).unwrap();
    run(&mut c, out);
    let rscs: Vec<ResourceCreate> = ["alpha", "beta"]
        .iter()
        .map(|n| ResourceCreate { resource: WireResource { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
        .collect();
    let out = c.create_resources("RES1", &rscs, None, &mut ctx).unwrap();
    run(&mut c, out);
    // External files are keyed by their path as given (case-sensitive,
    // with '/' and ':' in it).
    for path in ["/etc/App/a:b.conf", "/etc/app/a:b.conf"] {
        let out = c.set_ext_file(path, Some("aGVsbG8K"), Some(&[".disabled".to_string()]), &mut ctx).unwrap();
        run(&mut c, out);
    }
    let out = c.deploy_ext_file("res1", "/etc/App/a:b.conf", true).unwrap();
    run(&mut c, out);
    // Remotes of both kinds, secrets sealed by the injected function.
    let mut seal = |s: &str| Ok(format!("sealed:{s}"));
    let s3 = cairn_api::remote::S3Remote {
        remote_name: Some("Bucket.Remote".into()),
        endpoint: Some("http://127.0.0.9:9000".into()),
        bucket: Some("bk".into()),
        region: Some("eu-west-1".into()),
        access_key: Some("AK".into()),
        secret_key: Some("SK".into()),
        use_path_style: Some(true),
    };
    let out = c.create_s3_remote(&s3, &mut seal, &mut ctx).unwrap();
    run(&mut c, out);
    let other = cairn_api::remote::LinstorRemote { remote_name: Some("other".into()), url: Some("127.0.0.2".into()), ..Default::default() };
    let out = c.create_linstor_remote(&other, &mut seal, &mut ctx).unwrap();
    run(&mut c, out);
    // REST tokens: the first turns token authentication on (a controller
    // property), a second one with an expiry and an IP filter.
    let out = c.init_token_auth(&ctx, "raw-one", "hash-one", "admin", false).unwrap();
    run(&mut c, out);
    let out = c.create_auth_token(&ctx, "raw-two", "hash-two", "ci", Some("2030-01-01"), Some("10.0.0.7")).unwrap();
    run(&mut c, out);
    // Error reports, with the text of the report.
    for (n, at) in [(1, 1_000), (2, 2_000)] {
        let problem = Problem { exception: "StoreError".into(), message: format!("failure {n}"), ..Problem::default() };
        let r = render(&format!("5B9A15B7-00000-{n:06}"), "Controller", "CONTROLLER", "test", at, &problem);
        let out = c.add_error_report(r);
        run(&mut c, out);
    }
    c
}

pub(crate) fn suite(store: &dyn Store) {
    assert!(store.load().unwrap().is_empty(), "a new store is empty");
    let expected = populate(store);
    let loaded = Cluster::from_objects(store.load().unwrap());
    assert_eq!(loaded, expected, "what was committed loads back identically");
    assert_eq!(loaded.resources.len(), 2);
    assert_eq!(loaded.nodes["BETA"].name, "Beta", "display names survive");
    assert_eq!(loaded.ext_files.len(), 2, "paths differing in case are two files");
    assert_eq!(loaded.ext_files["/etc/App/a:b.conf"].bytes(), b"hello\n");
    assert_eq!(loaded.ext_files_of("RES1").len(), 1);
    assert_eq!(loaded.remotes.len(), 2);
    assert_eq!(loaded.remote_get("bucket.remote").unwrap().name, "Bucket.Remote");
    assert_eq!(loaded.auth_tokens.len(), 2);
    assert_eq!(loaded.auth_token_by_hash("hash-two").and_then(|t| t.ip_filter.as_deref()), Some("10.0.0.7"));
    assert!(loaded.token_auth_enabled(0));
    assert_eq!(loaded.error_reports.len(), 2);
    assert!(loaded.error_reports["5B9A15B7-00000-000002"].text.as_deref().is_some_and(|t| t.contains("failure 2")));

    // Deletes remove exactly the named objects.
    let out = loaded.delete_rsc_dfn("res1").unwrap();
    store.commit(&out.changes).unwrap();
    let after = Cluster::from_objects(store.load().unwrap());
    assert!(after.rsc_dfns.is_empty() && after.vlm_dfns.is_empty() && after.resources.is_empty());
    assert_eq!(after.nodes.len(), 2);
    assert_eq!(after.ext_files.len(), 2, "files outlive the definitions deploying them");
    let out = after.delete_ext_file("/etc/app/a:b.conf").unwrap();
    store.commit(&out.changes).unwrap();
    let after = Cluster::from_objects(store.load().unwrap());
    assert_eq!(after.ext_files.keys().collect::<Vec<_>>(), ["/etc/App/a:b.conf"]);
    let out = after.delete_remote("OTHER").unwrap();
    store.commit(&out.changes).unwrap();
    let after = Cluster::from_objects(store.load().unwrap());
    assert_eq!(after.remotes.keys().collect::<Vec<_>>(), ["BUCKET.REMOTE"]);
    // Deleting reports by a time range removes those in it only.
    let out = after.delete_error_reports(&ErrorReportFilter { since: Some(1_500), ..Default::default() });
    store.commit(&out.changes).unwrap();
    let after = Cluster::from_objects(store.load().unwrap());
    assert_eq!(after.error_reports.keys().collect::<Vec<_>>(), ["5B9A15B7-00000-000001"]);
    // A revoked token is kept (its id is never reused), marked deleted.
    let out = after.revoke_auth_token(&Ctx::deterministic(), 1).unwrap();
    store.commit(&out.changes).unwrap();
    let after = Cluster::from_objects(store.load().unwrap());
    assert_eq!(after.auth_tokens.len(), 2);
    assert!(after.auth_tokens[&1].deleted_at_ms.is_some());

    // Deleting what is not there is harmless; an empty commit is a no-op.
    store.commit(&[Change::Delete(ObjKey::Node("NOPE".into()))]).unwrap();
    store.commit(&[]).unwrap();
    assert_eq!(Cluster::from_objects(store.load().unwrap()), after);

    // A put replaces the document of the same key.
    let mut n = after.nodes["ALPHA"].clone();
    n.props.insert("Aux/x".into(), "1".into());
    store.commit(&[Change::Put(Object::Node(n.clone()))]).unwrap();
    let again = Cluster::from_objects(store.load().unwrap());
    assert_eq!(again.nodes["ALPHA"], n);
    assert_eq!(again.nodes.len(), 2);

    // One commit applies its changes in order: the controller commits the
    // change lists of several requests as one batch, concatenated, and the
    // result must be what committing them one by one gives.
    let (mut first, mut second) = (n.clone(), n.clone());
    first.props.insert("Aux/x".into(), "first".into());
    second.props.insert("Aux/x".into(), "second".into());
    let beta = again.nodes["BETA"].clone();
    let mut gamma = n.clone();
    gamma.name = "gamma".into();
    store
        .commit(&[
            Change::Put(Object::Node(first)),
            Change::Put(Object::Node(second.clone())),
            Change::Delete(ObjKey::Node("BETA".into())),
            Change::Put(Object::Node(beta.clone())),
            Change::Put(Object::Node(gamma.clone())),
            Change::Delete(ObjKey::Node("GAMMA".into())),
        ])
        .unwrap();
    let batched = Cluster::from_objects(store.load().unwrap());
    assert_eq!(batched.nodes["ALPHA"], second, "the later put of a key wins");
    assert_eq!(batched.nodes["BETA"], beta, "a put after a delete of the same key stays");
    assert!(!batched.nodes.contains_key("GAMMA"), "a delete after a put of the same key removes it");
}

#[test]
fn mem_store_passes_the_suite() {
    suite(&MemStore::new());
}

#[test]
fn sqlite_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&SqliteStore::open(&dir.path().join("cairn.db")).unwrap());
}

#[cfg(unix)]
#[test]
fn sqlite_database_files_are_private_new_or_old() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.db");
    let s = SqliteStore::open(&path).unwrap();
    populate(&s);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("cairn.db-wal")), 0o600, "SQLite copies the database's mode");
    drop(s);
    // A database an older version left readable by others is narrowed.
    for f in ["cairn.db", "cairn.db-wal", "cairn.db-shm"] {
        let p = dir.path().join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    drop(SqliteStore::open(&path).unwrap());
    for f in ["cairn.db", "cairn.db-wal", "cairn.db-shm"] {
        let p = dir.path().join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
}

#[test]
fn sqlite_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.db");
    let expected = {
        let s = SqliteStore::open(&path).unwrap();
        populate(&s)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(Cluster::from_objects(s.load().unwrap()), expected);
}

#[test]
fn sqlite_store_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).err().expect("newer schema must be refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn sqlite_store_reports_corrupt_documents_instead_of_dropping_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO objects (kind, key, data) VALUES ('node', 'X', '{not json')", []).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap().load().unwrap_err();
    assert!(err.to_string().contains("node 'X'"), "{err}");
}

#[test]
fn a_failed_commit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cairn.db")).unwrap();
    populate(&s);
    let before = s.load().unwrap();
    // Make the second statement of a batch fail at the database level.
    {
        let conn = s.conn.lock();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE DELETE ON objects WHEN old.kind = 'node' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    }
    let c = Cluster::from_objects(before.clone());
    let mut n = c.nodes["ALPHA"].clone();
    n.props.insert("Aux/changed".into(), "yes".into());
    let batch = [Change::Put(Object::Node(n)), Change::Delete(ObjKey::Node("BETA".into()))];
    assert!(s.commit(&batch).is_err());
    assert_eq!(s.load().unwrap(), before, "the first change of the failed batch was rolled back");
}

#[test]
fn a_sqlite_backup_opens_as_the_same_cluster_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("cairn.db")).unwrap();
    let expected = populate(&s);
    let copy = dir.path().join("copy.db");
    assert!(s.backup_into(&copy).unwrap());
    assert_eq!(Cluster::from_objects(SqliteStore::open(&copy).unwrap().load().unwrap()), expected);
    // A file with something in it is never written over.
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, b"precious").unwrap();
    assert!(s.backup_into(&taken).is_err());
    assert_eq!(std::fs::read(&taken).unwrap(), b"precious");
    // The in-memory store has no file to copy.
    assert!(!MemStore::new().backup_into(&dir.path().join("mem.db")).unwrap());
}
