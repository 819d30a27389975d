//! An in-memory store for unit tests. It keeps encoded documents, so it
//! exercises the same encoding as the SQLite store.

use parking_lot::Mutex;
use std::collections::BTreeMap;

use cairn_domain::{Change, Object};

use crate::{Store, StoreError, decode, encode};

/// In-memory [`Store`].
#[derive(Default)]
pub struct MemStore {
    rows: Mutex<BTreeMap<(String, String), String>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<Vec<Object>, StoreError> {
        let rows = self.rows.lock();
        rows.iter().map(|((kind, key), data)| decode(kind, key, data)).collect()
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        // Encode everything first so a failure leaves the store untouched.
        let mut ops = Vec::with_capacity(changes.len());
        for c in changes {
            ops.push(match c {
                Change::Put(o) => {
                    let (kind, key, data) = encode(o)?;
                    ((kind.to_string(), key), Some(data))
                }
                Change::Delete(k) => ((k.kind().as_str().to_string(), k.key_string()), None),
            });
        }
        let mut rows = self.rows.lock();
        for (k, v) in ops {
            match v {
                Some(data) => rows.insert(k, data),
                None => rows.remove(&k),
            };
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
