//! The export document: every stored object as JSON, in LINSTOR's export
//! envelope (`linstor_version`, `export_timestamp_ms`, `exported_from`,
//! `data_version`, `tables`) with Cairn's own tables, one per object kind,
//! each row the stored document. `POST /v1/controller/database/export` and
//! `cairn db export` write it, `cairn db import` reads it (docs/GUIDE.md,
//! "Moving the database").

use serde::{Deserialize, Serialize};

use cairn_domain::{Change, Kind, Object};

use crate::{Store, StoreError};

/// The version of the tables' contents; an import refuses any other.
pub const DATA_VERSION: &str = "cairn-objects-1";

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    pub linstor_version: String,
    pub export_timestamp_ms: i64,
    /// The database it came from (`sqlite:/var/lib/cairn/cairn.db`,
    /// `postgresql://cairn@db:5432/cairn`; never a password).
    pub exported_from: String,
    pub data_version: String,
    pub tables: Vec<Table>,
}

/// The objects of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The kind (`node`, `stor_pool`, `rsc_grp`, …).
    pub name: String,
    pub data: Vec<serde_json::Value>,
}

/// The document of `objects`: a table for every kind, empty ones too.
pub fn export(objects: &[Object], exported_from: String, now_ms: i64) -> Result<Export, StoreError> {
    let mut tables: Vec<Table> = Kind::ALL.iter().map(|k| Table { name: k.as_str().to_string(), data: Vec::new() }).collect();
    for o in objects {
        let (kind, key) = (o.key().kind().as_str(), o.key().key_string());
        let encode = |reason: String| StoreError::Encode { kind: kind.into(), key: key.clone(), reason };
        let doc: serde_json::Value = o.to_json().and_then(|j| serde_json::from_str(&j)).map_err(|e| encode(e.to_string()))?;
        match tables.iter_mut().find(|t| t.name == kind) {
            Some(t) => t.data.push(doc),
            None => return Err(encode("the kind has no table".into())),
        }
    }
    Ok(Export {
        linstor_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        export_timestamp_ms: now_ms,
        exported_from,
        data_version: DATA_VERSION.into(),
        tables,
    })
}

/// Reads a document: refuses another data version, an unknown table, a
/// row that is not a valid object of its table, and a key given twice.
pub fn parse(bytes: &[u8]) -> Result<Vec<Object>, StoreError> {
    let doc: Export = serde_json::from_slice(bytes).map_err(|e| StoreError::Import(format!("not a Cairn database export: {e}")))?;
    if doc.data_version != DATA_VERSION {
        return Err(StoreError::Import(format!(
            "the export's data version is '{}'; this build reads '{DATA_VERSION}' (exported by {})",
            doc.data_version, doc.linstor_version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in &doc.tables {
        let kind = Kind::parse(&t.name).ok_or_else(|| StoreError::Import(format!("unknown table '{}'", t.name)))?;
        for (i, row) in t.data.iter().enumerate() {
            let o = Object::from_json(kind, &row.to_string())
                .map_err(|e| StoreError::Import(format!("table '{}', row {}: {e}", t.name, i + 1)))?;
            if !seen.insert(o.key()) {
                return Err(StoreError::Import(format!("table '{}' holds '{}' twice", t.name, o.key().key_string())));
            }
            out.push(o);
        }
    }
    Ok(out)
}

/// Writes `objects` into `store` in one transaction. A store that holds
/// objects already is refused unless `replace`, which deletes them in the
/// same transaction (as LINSTOR's import empties every table first).
/// Returns how many objects were written.
pub fn import(store: &dyn Store, objects: Vec<Object>, replace: bool) -> Result<usize, StoreError> {
    let existing = store.load()?;
    if !existing.is_empty() && !replace {
        return Err(StoreError::Import(format!(
            "{} holds {} objects already; import into an empty database, or replace them with --replace",
            store.describe(),
            existing.len()
        )));
    }
    let n = objects.len();
    let mut changes: Vec<Change> = existing.iter().map(|o| Change::Delete(o.key())).collect();
    changes.extend(objects.into_iter().map(Change::Put));
    store.commit(&changes)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    /// The objects of the store suite's cluster.
    fn objects() -> Vec<Object> {
        let store = MemStore::new();
        crate::suite::populate(&store);
        store.load().unwrap()
    }

    #[test]
    fn an_export_reads_back_as_the_same_objects() {
        let objects = objects();
        let doc = export(&objects, "memory".into(), 5).unwrap();
        assert_eq!(doc.tables.len(), Kind::ALL.len(), "every kind has its table");
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut back = parse(&bytes).unwrap();
        back.sort_by_key(|o| o.key());
        let mut objects = objects;
        objects.sort_by_key(|o| o.key());
        assert_eq!(back, objects);
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let doc = export(&objects(), "memory".into(), 5).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&doc).unwrap();
            f(&mut v);
            parse(&serde_json::to_vec(&v).unwrap()).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(with(&|v| v["data_version"] = "cairn-objects-9".into()).contains("data version"));
        assert!(with(&|v| v["tables"][0]["name"] = "nodes_x".into()).contains("unknown table"));
        assert!(
            with(&|v| {
                let row = v["tables"][0]["data"][0].clone();
                v["tables"][0]["data"].as_array_mut().unwrap().push(row);
            })
            .contains("twice")
        );
        assert!(with(&|v| v["tables"][0]["data"][0] = serde_json::json!({"name": 5})).contains("row 1"));
        assert!(parse(b"{not json").is_err());
    }

    #[test]
    fn import_refuses_a_store_in_use_unless_replacing() {
        let all = objects();
        let (old, new) = all.split_at(all.len() / 2);
        let store = MemStore::new();
        store.commit(&old.iter().cloned().map(Change::Put).collect::<Vec<_>>()).unwrap();
        let e = import(&store, new.to_vec(), false).unwrap_err();
        assert!(e.to_string().contains(&format!("holds {} objects already", old.len())), "{e}");
        assert_eq!(store.load().unwrap(), old, "nothing was written");
        assert_eq!(import(&store, new.to_vec(), true).unwrap(), new.len());
        let mut expected = new.to_vec();
        expected.sort_by_key(|o| o.key());
        let mut loaded = store.load().unwrap();
        loaded.sort_by_key(|o| o.key());
        assert_eq!(loaded, expected, "the old objects are gone");
    }
}
