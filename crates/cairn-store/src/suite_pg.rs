//! The store suite and the PostgreSQL store's own checks against a real
//! server ([`PgServer`]): one server for all of them, a database each.

use cairn_domain::{Change, Cluster, ObjKey, Object};

use crate::pg_server::PgServer;
use crate::suite::{populate, suite};
use crate::{PgStore, Store};

#[test]
fn postgres_store_against_a_real_server() {
    let Some(server) = PgServer::start() else { return };
    suite(&PgStore::open(&server.url("suite")).expect("open"));
    survives_reopen(&server.url("reopen"));
    refuses_a_newer_schema(&server.url("newer"));
    reports_corrupt_documents(&server.url("corrupt"));
    a_failed_commit_changes_nothing(&server.url("failed"));
    controllers_starting_together_migrate_once(&server.url("together"));
    a_connection_the_server_closed_is_replaced(&server.url("reconnect"));
    a_large_batch_is_one_transaction(&server.url("large"));
    one_leader_at_a_time_and_a_deposed_one_writes_nothing(&server.url("lease"));
}

fn one_leader_at_a_time_and_a_deposed_one_writes_nothing(url: &str) {
    use std::time::Duration;
    let (lease, t) = (Duration::from_millis(600), Duration::from_secs(5));
    let a = PgStore::open(url).expect("open a");
    let b = PgStore::open(url).expect("open b");
    let ea = a.lease_acquire("a", lease, t).expect("acquire").expect("a free lease is taken");
    assert_eq!(b.lease_acquire("b", lease, t).expect("acquire"), None, "held by a");
    assert!(a.lease_renew("a", ea, lease, t).expect("renew"));
    assert!(!b.lease_renew("b", ea, lease, t).expect("renew"), "only the holder renews");
    a.fence_commits("a", ea);
    let mut cluster = Cluster::default();
    let seed = cluster.seed(&mut || "u".to_string());
    cluster.apply(seed.clone());
    a.commit(&seed).expect("the leader writes");
    // a stops renewing; once the lease ran out, b takes it.
    std::thread::sleep(lease + Duration::from_millis(100));
    assert!(!a.lease_renew("a", ea, lease, t).expect("renew"), "an expired lease is never extended");
    let eb = b.lease_acquire("b", lease, t).expect("acquire").expect("an expired lease is taken");
    assert!(eb > ea, "the epoch grows: {eb} > {ea}");
    let deletes: Vec<Change> = seed.iter().map(|c| Change::Delete(c.key())).collect();
    let err = a.commit(&deletes).expect_err("a deposed leader must not write");
    assert!(matches!(err, crate::StoreError::Fenced { epoch } if epoch == ea), "{err}");
    assert_eq!(b.load().expect("load").len(), seed.len(), "nothing was deleted");
    // A clean stop hands over at once.
    b.lease_release("b", eb, t).expect("release");
    assert!(a.lease_acquire("a", lease, t).expect("acquire").is_some_and(|e| e > eb));
}

fn survives_reopen(url: &str) {
    let expected = populate(&PgStore::open(url).expect("open"));
    let s = PgStore::open(url).expect("reopen");
    assert_eq!(Cluster::from_objects(s.load().expect("load")), expected, "reopened");
    assert_eq!(s.describe(), url.replace("postgres://", "postgresql://"), "the URL without a password");
}

fn refuses_a_newer_schema(url: &str) {
    let s = PgStore::open(url).expect("open");
    s.execute("UPDATE cairn_schema SET version = 99").expect("set version");
    drop(s);
    let err = PgStore::open(url).err().expect("a newer schema must be refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

fn reports_corrupt_documents(url: &str) {
    let s = PgStore::open(url).expect("open");
    s.execute("INSERT INTO objects (kind, key, data) VALUES ('node', 'X', '{not json')").expect("insert");
    let err = s.load().expect_err("a corrupt document must be reported");
    assert!(err.to_string().contains("node 'X'"), "{err}");
}

fn a_failed_commit_changes_nothing(url: &str) {
    let s = PgStore::open(url).expect("open");
    populate(&s);
    let before = s.load().expect("load");
    // The delete, the second statement of the batch, fails in the server.
    s.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF old.kind = 'node' THEN RAISE EXCEPTION 'refused'; END IF; RETURN old; END $$;
         CREATE TRIGGER refuse BEFORE DELETE ON objects FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .expect("create trigger");
    let c = Cluster::from_objects(before.clone());
    let mut n = c.nodes["ALPHA"].clone();
    n.props.insert("Aux/changed".into(), "yes".into());
    let err = s.commit(&[Change::Put(Object::Node(n)), Change::Delete(ObjKey::Node("BETA".into()))]).expect_err("refused");
    assert!(err.to_string().contains("refused"), "the server's message is kept: {err}");
    assert_eq!(s.load().expect("load"), before, "the put of the failed batch was rolled back");
}

fn controllers_starting_together_migrate_once(url: &str) {
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| PgStore::open(url).map(|_| ()))).collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    for r in opened {
        r.expect("every one opens the database");
    }
    let s = PgStore::open(url).expect("open");
    s.execute(&format!(
        "DO $$ BEGIN IF (SELECT version FROM cairn_schema) <> {} OR (SELECT count(*) FROM cairn_schema) <> 1
         OR (SELECT count(*) FROM cairn_lease) <> 1 THEN RAISE EXCEPTION 'bad version row'; END IF; END $$",
        PgStore::schema_version()
    ))
    .expect("one version row at the current version, one lease row");
}

fn a_connection_the_server_closed_is_replaced(url: &str) {
    let s = PgStore::open(url).expect("open");
    let expected = populate(&s);
    // Every connection of the pool is closed by the server, as after a
    // restart of PostgreSQL.
    let admin = PgStore::open(url).expect("open");
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        .expect("terminate");
    assert_eq!(Cluster::from_objects(s.load().expect("load after the connections were closed")), expected);
    let mut n = expected.nodes["ALPHA"].clone();
    n.props.insert("Aux/after".into(), "1".into());
    s.commit(&[Change::Put(Object::Node(n.clone()))]).expect("commit after the connections were closed");
    assert_eq!(Cluster::from_objects(s.load().expect("load")).nodes["ALPHA"], n);
}

fn a_large_batch_is_one_transaction(url: &str) {
    let s = PgStore::open(url).expect("open");
    let c = populate(&s);
    let base = c.nodes["ALPHA"].clone();
    let mut batch = Vec::new();
    for i in 0..3000 {
        let mut n = base.clone();
        n.name = format!("n{i}");
        batch.push(Change::Put(Object::Node(n)));
    }
    // The last of them fails: none of the 3000 may stay.
    s.execute(
        "CREATE FUNCTION refuse_last() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF new.key = 'N2999' THEN RAISE EXCEPTION 'refused'; END IF; RETURN new; END $$;
         CREATE TRIGGER refuse_last BEFORE INSERT ON objects FOR EACH ROW EXECUTE FUNCTION refuse_last();",
    )
    .expect("create trigger");
    s.commit(&batch).expect_err("refused");
    assert_eq!(Cluster::from_objects(s.load().expect("load")), c, "nothing of the batch stayed");
    s.execute("DROP TRIGGER refuse_last ON objects").expect("drop trigger");
    s.commit(&batch).expect("commit");
    assert_eq!(Cluster::from_objects(s.load().expect("load")).nodes.len(), c.nodes.len() + 3000);
}
