//! Key-value stores: named property bags for integrations.

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::{PropsModify, kvs as wire};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::whitelist::{self, PropsObj};
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

/// The stored master key (`encrypted/…`) belongs to the passphrase API.
fn is_crypt_key(k: &str) -> bool {
    k == "encrypted" || k.starts_with("encrypted/")
}

fn crypt_key_refused(op: i64, k: &str) -> OpError {
    OpError::new(op, rc::FAIL_INVLD_PROP, format!("The property '{k}' holds the encrypted master key and cannot be set or deleted here."))
        .correction("Use /v1/encryption/passphrase.")
}

/// Where the cluster's id is kept (LINSTOR's `Cluster/LocalID`).
pub const CLUSTER_ID_PROP: &str = "Cluster/LocalID";

impl Cluster {
    /// Stores the master key's properties (the passphrase API); with
    /// `create`, only if no master key is stored yet (checked here, under
    /// the writer lock, so two creates cannot both win).
    pub fn set_crypt_props(&self, props: &[(String, String)], create: bool) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CTRL_CONF;
        let set = self.ctrl_props.contains_key("encrypted/masterkey");
        if create && set {
            return Err(OpError::new(OP | rc::MASK_CRT, rc::FAIL_EXISTS_CRYPT_PASSPHRASE, "The master passphrase is already set.")
                .correction("Change it with PUT (old and new passphrase) or enter it with PATCH."));
        }
        if !create && !set {
            return Err(OpError::new(OP | rc::MASK_MOD, rc::FAIL_NOT_FOUND_CRYPT_KEY, "No master passphrase is set.")
                .correction("Create one with POST first."));
        }
        let mut new = self.ctrl_props.clone();
        for (k, v) in props {
            new.insert(k.clone(), v.clone());
        }
        let mut out = Outcome::default();
        out.put(Object::CtrlProps(new));
        Ok(out)
    }

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
        k.props = props::apply(PropsObj::Kvs, &k.props, req, OP)?;
        // LINSTOR's CtrlKvsApiCallHandler: one entry coded as a controller
        // configuration change, and an instance left empty is removed.
        let mut out = Outcome::default();
        out.reply(ApiCallRc::new(rc::MASK_CTRL_CONF | rc::MASK_MOD | rc::MODIFIED, "Successfully updated properties"));
        if k.props.is_empty() {
            if self.kvs.contains_key(&key(&k.name)) {
                out.delete(ObjKey::Kvs(key(&k.name)));
            }
        } else {
            out.put(Object::Kvs(k));
        }
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

    /// Gives the cluster its id (`Cluster/LocalID`, a UUID), as LINSTOR's
    /// controller does once; None when it has one. Other clusters name
    /// it by this id (LINSTOR remotes, shipments).
    pub fn init_cluster_id(&self, id: &str) -> Option<Outcome> {
        if self.ctrl_props.contains_key(CLUSTER_ID_PROP) {
            return None;
        }
        let mut props = self.ctrl_props.clone();
        props.insert(CLUSTER_ID_PROP.to_string(), id.to_string());
        let mut out = Outcome::default();
        out.put(Object::CtrlProps(props));
        Some(out)
    }

    /// `POST /v1/controller/properties`.
    pub fn modify_ctrl_props(&self, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_CTRL_CONF;
        let touched = req.override_props.keys().chain(req.delete_props.iter()).chain(req.delete_namespaces.iter());
        if let Some(k) = touched.map(|k| k.trim_start_matches('/')).find(|k| is_crypt_key(k)) {
            return Err(crypt_key_refused(OP, k));
        }
        // LINSTOR's controller handler codes a key it refuses as a
        // creation or deletion of controller configuration.
        let abs = |k: &str| k.strip_prefix('/').unwrap_or(k).to_string();
        let set: Props = req.override_props.iter().map(|(k, v)| (abs(k), v.clone())).collect();
        let set = props::checked(PropsObj::Ctrl, &set, rc::MASK_CTRL_CONF | rc::MASK_CRT)?;
        for k in &req.delete_props {
            whitelist::check_delete(PropsObj::Ctrl, &abs(k), rc::MASK_CTRL_CONF | rc::MASK_DEL)?;
        }
        let new = props::apply(PropsObj::Ctrl, &self.ctrl_props, req, OP)?;
        let mut out = Outcome::default();
        for (k, v) in &set {
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
        if is_crypt_key(k) {
            return Err(crypt_key_refused(OP, k));
        }
        whitelist::check_delete(PropsObj::Ctrl, k, OP)?;
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
