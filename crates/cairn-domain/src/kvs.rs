//! Key-value stores: named property bags for integrations.

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::{PropsModify, kvs as wire};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::{Props, props};

/// A key-value store instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValueStore {
    pub name: String,
    pub props: Props,
}

impl KeyValueStore {
    pub fn to_api(&self) -> wire::KeyValueStore {
        wire::KeyValueStore { name: self.name.clone(), props: self.props.clone() }
    }
}

impl Cluster {
    pub fn kvs_get(&self, name: &str) -> OpResult<&KeyValueStore> {
        self.kvs
            .get(&key(name))
            .ok_or_else(|| OpError::new(rc::MASK_KVS, rc::FAIL_NOT_FOUND_KVS, format!("Key-value store '{name}' not found.")))
    }

    /// `PUT /v1/key-value-store/{name}`: creates the instance on first use.
    pub fn modify_kvs(&self, name: &str, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_KVS;
        name::check(NameKind::KeyValueStore, name, OP)?;
        let mut k = self.kvs.get(&key(name)).cloned().unwrap_or_else(|| KeyValueStore { name: name.to_string(), props: Props::new() });
        k.props = props::apply(&k.props, req, OP)?;
        let mut out = Outcome::default();
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Key-value store '{}' modified.", k.name)).with_ref("KeyValueStore", &k.name),
        );
        out.put(Object::Kvs(k));
        Ok(out)
    }

    /// `DELETE /v1/key-value-store/{name}`.
    pub fn delete_kvs(&self, name: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_KVS;
        let k = self
            .kvs
            .get(&key(name))
            .ok_or_else(|| OpError::new(OP, rc::FAIL_NOT_FOUND_KVS, format!("Key-value store '{name}' not found.")))?;
        let mut out = Outcome::default();
        out.delete(ObjKey::Kvs(key(&k.name)));
        out.reply(ApiCallRc::success(OP, rc::DELETED, format!("Key-value store '{}' deleted.", k.name)));
        Ok(out)
    }

    /// `POST /v1/controller/properties`.
    pub fn modify_ctrl_props(&self, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_CTRL_CONF;
        let new = props::apply(&self.ctrl_props, req, OP)?;
        let mut out = Outcome::default();
        for (k, v) in &req.override_props {
            out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("Successfully set property '{k}' to value '{v}'")));
        }
        for k in req.delete_props.iter().chain(req.delete_namespaces.iter()) {
            out.reply(ApiCallRc::success(OP, rc::DELETED, format!("Successfully deleted property '{k}'")));
        }
        if out.replies.is_empty() {
            out.reply(ApiCallRc::success(OP, rc::MODIFIED, "Controller properties unchanged."));
        }
        out.put(Object::CtrlProps(new));
        Ok(out)
    }

    /// `DELETE /v1/controller/properties/{key}`: deleting a property that
    /// is not set is a warning, not an error.
    pub fn delete_ctrl_prop(&self, k: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_CTRL_CONF;
        let k = k.strip_prefix('/').unwrap_or(k);
        if !self.ctrl_props.contains_key(k) {
            let mut out = Outcome::default();
            out.reply(ApiCallRc::warning(OP, rc::WARN_DEL_UNSET_PROP, format!("Controller property '{k}' is not set; nothing to delete.")));
            return Ok(out);
        }
        let mut new = self.ctrl_props.clone();
        new.remove(k);
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::DELETED, format!("Successfully deleted property '{k}'")));
        out.put(Object::CtrlProps(new));
        Ok(out)
    }
}
