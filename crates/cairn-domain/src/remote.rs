//! Remotes: where backups go. An S3 remote names a bucket and the keys
//! to reach it; a LINSTOR remote names another controller (Cairn's or
//! LINSTOR's) by URL and, optionally, its cluster id and the passphrase
//! it expects.
//!
//! As in LINSTOR's `CtrlRemoteApiCallHandler`, the secrets (S3 access and
//! secret key, the LINSTOR remote's passphrase) are stored only encrypted
//! with the master key, and no list ever shows them. The domain stays pure:
//! the caller injects the sealing function (the controller's master key),
//! which refuses with LINSTOR's error while no master passphrase is
//! entered.

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::remote as wire;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::ctx::Ctx;
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};

/// A remote as stored: name, identity, and what kind it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remote {
    pub name: String,
    pub uuid: String,
    pub target: RemoteTarget,
}

/// The kind-specific part of a remote. Secrets are sealed (hex, opened
/// only with the master key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RemoteTarget {
    S3 { endpoint: String, bucket: String, region: String, access_key: String, secret_key: String, use_path_style: bool },
    Linstor { url: String, passphrase: Option<String>, cluster_id: Option<String> },
}

/// Seals a secret with the master key, or says why it cannot.
pub type Seal<'a> = &'a mut dyn FnMut(&str) -> OpResult<String>;

/// Every entry of a remote request is coded as a modification of a
/// remote, as LINSTOR's response context for remotes does.
const OP: i64 = rc::MASK_MOD | rc::MASK_REMOTE;
/// Missing parameters are coded as a backup configuration error.
const OP_BACKUP: i64 = rc::MASK_MOD | rc::MASK_BACKUP;

/// LINSTOR's description of a remote in messages.
fn describe(name: &str) -> String {
    format!("Remote: {name}")
}

impl Remote {
    /// The S3 list entry: no keys, ever.
    pub fn to_s3_api(&self) -> Option<wire::S3Remote> {
        match &self.target {
            RemoteTarget::S3 { endpoint, bucket, region, use_path_style, .. } => Some(wire::S3Remote {
                remote_name: Some(self.name.clone()),
                endpoint: Some(endpoint.clone()),
                bucket: Some(bucket.clone()),
                region: Some(region.clone()),
                use_path_style: Some(*use_path_style),
                ..Default::default()
            }),
            RemoteTarget::Linstor { .. } => None,
        }
    }

    /// The LINSTOR remote list entry: URL and cluster id, never the
    /// passphrase.
    pub fn to_linstor_api(&self) -> Option<wire::LinstorRemote> {
        match &self.target {
            RemoteTarget::Linstor { url, cluster_id, .. } => Some(wire::LinstorRemote {
                remote_name: Some(self.name.clone()),
                url: Some(url.clone()),
                cluster_id: cluster_id.clone(),
                passphrase: None,
            }),
            RemoteTarget::S3 { .. } => None,
        }
    }

    fn kind_label(&self) -> &'static str {
        match self.target {
            RemoteTarget::S3 { .. } => "s3",
            RemoteTarget::Linstor { .. } => "linstor",
        }
    }
}

/// A string given and not empty.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

fn require_all(fields: &[(&str, &Option<String>)]) -> OpResult<()> {
    let missing: Vec<&str> = fields.iter().filter(|(_, v)| given(v).is_none()).map(|(n, _)| *n).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = if missing.len() == 1 { "parameter is" } else { "parameters are" };
    Err(OpError::new(
        OP_BACKUP,
        rc::FAIL_INVLD_BACKUP_CONFIG,
        format!("The remote could not be created because the following required {what} missing: [{}]", missing.join(", ")),
    ))
}

fn check_name(name: &str) -> OpResult<()> {
    name::check(NameKind::Remote, name, OP)
}

/// A cluster id must be a UUID (LINSTOR: `UuidUtils.isUuid`).
fn check_cluster_id(id: &str) -> OpResult<()> {
    let groups: Vec<&str> = id.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == lens.len() && groups.iter().zip(lens).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(OpError::new(OP, rc::FAIL_INVLD_CONF, "The given cluster id is not a valid UUID").cause(format!("'{id}' is not a UUID.")))
    }
}

/// LINSTOR's `createUrlWithDefaults`: `[http(s)://]host[:port]`, scheme
/// `http` and port 3370 (3371 for https) when not given; anything after
/// the port is dropped.
pub fn linstor_url(given: &str) -> OpResult<String> {
    let (scheme, rest) = match given.split_once("://") {
        Some((s, r)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => (s.to_ascii_lowercase(), r),
        Some(_) => return Err(bad_url(given)),
        None => ("http".to_string(), given),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(bad_url(given));
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad_url(given))?,
        None if scheme == "https" => 3371,
        None => 3370,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

fn bad_url(given: &str) -> OpError {
    OpError::new(OP, rc::FAIL_UNKNOWN_ERROR, format!("Given URL '{given}' did not match expected pattern of (https?://)?([^:]+)(:[0-9]+)?"))
        .correction("Give the remote controller's REST address, e.g. http://10.0.0.5:3370.")
}

impl Cluster {
    /// A remote by name.
    pub fn remote_get(&self, name: &str) -> OpResult<&Remote> {
        self.remotes.get(&key(name)).ok_or_else(|| {
            OpError::new(OP, rc::FAIL_NOT_FOUND_REMOTE, format!("Remote '{name}' not registered."))
                .cause(format!("The specified remote '{name}' could not be found in the database"))
                .correction(format!("Create a remote with the name '{name}' first."))
        })
    }

    fn remote_of_kind(&self, name: &str, kind: &str) -> OpResult<&Remote> {
        check_name(name)?;
        let r = self.remote_get(name)?;
        if r.kind_label() != kind {
            return Err(OpError::new(OP, rc::FAIL_EXISTS_REMOTE, format!("The remote with the name '{}' is not a {kind} remote.", r.name)));
        }
        Ok(r)
    }

    fn check_remote_name_free(&self, name: &str) -> OpResult<()> {
        check_name(name)?;
        if let Some(r) = self.remotes.get(&key(name)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_REMOTE,
                format!(
                    "A remote with the name '{}' already exists. Please use a different name or try to modify the remote instead.",
                    r.name
                ),
            ));
        }
        Ok(())
    }

    /// `POST /v1/remotes/s3`.
    pub fn create_s3_remote(&self, req: &wire::S3Remote, seal: Seal, ctx: &mut Ctx) -> OpResult<Outcome> {
        require_all(&[
            ("remote_name", &req.remote_name),
            ("endpoint", &req.endpoint),
            ("bucket", &req.bucket),
            ("region", &req.region),
            ("access_key", &req.access_key),
            ("secret_key", &req.secret_key),
        ])?;
        let name = req.remote_name.clone().unwrap_or_default();
        self.check_remote_name_free(&name)?;
        let target = RemoteTarget::S3 {
            endpoint: req.endpoint.clone().unwrap_or_default(),
            bucket: req.bucket.clone().unwrap_or_default(),
            region: req.region.clone().unwrap_or_default(),
            access_key: seal(req.access_key.as_deref().unwrap_or_default())?,
            secret_key: seal(req.secret_key.as_deref().unwrap_or_default())?,
            use_path_style: req.use_path_style.unwrap_or(false),
        };
        let remote = Remote { name: name.clone(), uuid: ctx.uuid(), target };
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::CREATED, "Remote created").with_ref("RemoteName", &name));
        out.put(Object::Remote(remote));
        Ok(out)
    }

    /// `PUT /v1/remotes/s3/{name}`: what is given and not empty replaces
    /// what is stored (LINSTOR's rule; `use_path_style` is not modifiable
    /// there either).
    pub fn modify_s3_remote(&self, name: &str, req: &wire::S3Remote, seal: Seal) -> OpResult<Outcome> {
        let mut r = self.remote_of_kind(name, "s3")?.clone();
        if let RemoteTarget::S3 { endpoint, bucket, region, access_key, secret_key, .. } = &mut r.target {
            for (field, new) in [(endpoint, &req.endpoint), (bucket, &req.bucket), (region, &req.region)] {
                if let Some(v) = given(new) {
                    *field = v.to_string();
                }
            }
            for (field, new) in [(access_key, &req.access_key), (secret_key, &req.secret_key)] {
                if let Some(v) = given(new) {
                    *field = seal(v)?;
                }
            }
        }
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("{} modified.", describe(&r.name))).with_details(format!(
            "{} UUID is: {}",
            describe(&r.name),
            r.uuid
        )));
        out.put(Object::Remote(r));
        Ok(out)
    }

    /// `POST /v1/remotes/linstor`.
    pub fn create_linstor_remote(&self, req: &wire::LinstorRemote, seal: Seal, ctx: &mut Ctx) -> OpResult<Outcome> {
        require_all(&[("remote_name", &req.remote_name), ("url", &req.url)])?;
        let name = req.remote_name.clone().unwrap_or_default();
        self.check_remote_name_free(&name)?;
        let cluster_id = given(&req.cluster_id).map(|id| check_cluster_id(id).map(|()| id.to_string())).transpose()?;
        let url = linstor_url(req.url.as_deref().unwrap_or_default())?;
        // LINSTOR seals a passphrase that is given at all, even an empty one.
        let passphrase = req.passphrase.as_deref().map(&mut *seal).transpose()?;
        let remote = Remote { name: name.clone(), uuid: ctx.uuid(), target: RemoteTarget::Linstor { url, passphrase, cluster_id } };
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::CREATED, "Linstor remote successfully created").with_ref("RemoteName", &name));
        out.put(Object::Remote(remote));
        Ok(out)
    }

    /// `PUT /v1/remotes/linstor/{name}`.
    pub fn modify_linstor_remote(&self, name: &str, req: &wire::LinstorRemote, seal: Seal) -> OpResult<Outcome> {
        let mut r = self.remote_of_kind(name, "linstor")?.clone();
        if let RemoteTarget::Linstor { url, passphrase, cluster_id } = &mut r.target {
            if let Some(u) = given(&req.url) {
                *url = linstor_url(u)?;
            }
            if let Some(p) = given(&req.passphrase) {
                *passphrase = Some(seal(p)?);
            }
            if let Some(id) = given(&req.cluster_id) {
                check_cluster_id(id)?;
                *cluster_id = Some(id.to_string());
            }
        }
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, "Linstor remote successfully updated"));
        out.put(Object::Remote(r));
        Ok(out)
    }

    /// `DELETE /v1/remotes?remote_name=…`: a remote that does not exist is
    /// a warning, as in LINSTOR. No shipment can be running yet, so the
    /// remote goes at once (LINSTOR's "marked for deletion", then
    /// "deleted").
    pub fn delete_remote(&self, name: &str) -> OpResult<Outcome> {
        check_name(name)?;
        let mut out = Outcome::default();
        let Some(r) = self.remotes.get(&key(name)) else {
            out.reply(ApiCallRc::warning(OP, rc::WARN_NOT_FOUND, format!("{} not found.", describe(name))));
            return Ok(out);
        };
        let what = describe(&r.name);
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("{what} marked for deletion.")).with_details(format!("{what} UUID is: {}", r.uuid)),
        );
        out.reply(ApiCallRc::success(OP, rc::DELETED, format!("{what} deleted.")).with_details(format!("{what} UUID was: {}", r.uuid)));
        out.delete(ObjKey::Remote(key(&r.name)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> impl FnMut(&str) -> OpResult<String> {
        |s: &str| Ok(format!("sealed({s})"))
    }

    fn locked(_: &str) -> OpResult<String> {
        Err(OpError::new(OP, rc::FAIL_NOT_FOUND_CRYPT_KEY, "Unable to create encrypt key without having a master key"))
    }

    fn s3(name: &str) -> wire::S3Remote {
        wire::S3Remote {
            remote_name: Some(name.into()),
            endpoint: Some("http://127.0.0.9:9000".into()),
            bucket: Some("bk".into()),
            region: Some("us-east-1".into()),
            access_key: Some("AK".into()),
            secret_key: Some("SK".into()),
            use_path_style: Some(true),
        }
    }

    fn applied(mut c: Cluster, out: Outcome) -> Cluster {
        c.apply(out.changes);
        c
    }

    #[test]
    fn s3_remote_is_stored_sealed_and_listed_without_keys() {
        let c = Cluster::default();
        let mut seal = sealer();
        let out = c.create_s3_remote(&s3("backups"), &mut seal, &mut Ctx::deterministic()).unwrap();
        assert_eq!(out.replies[0].ret_code, rc::MASK_MOD | rc::MASK_REMOTE | rc::CREATED);
        let c = applied(c, out);
        let r = c.remote_get("BACKUPS").unwrap();
        let RemoteTarget::S3 { access_key, secret_key, .. } = &r.target else { panic!("not s3") };
        assert_eq!((access_key.as_str(), secret_key.as_str()), ("sealed(AK)", "sealed(SK)"));
        let listed = r.to_s3_api().unwrap();
        assert_eq!((listed.access_key, listed.secret_key), (None, None));
        assert_eq!(listed.bucket.as_deref(), Some("bk"));
        assert!(r.to_linstor_api().is_none());
        let again = c.create_s3_remote(&s3("Backups"), &mut seal, &mut Ctx::deterministic()).unwrap_err();
        assert_eq!(again.rc.code(), rc::FAIL_EXISTS_REMOTE);
    }

    #[test]
    fn missing_parameters_are_named_and_the_master_key_is_needed() {
        let c = Cluster::default();
        let req = wire::S3Remote { remote_name: Some("r1".into()), bucket: Some(String::new()), ..Default::default() };
        let e = c.create_s3_remote(&req, &mut sealer(), &mut Ctx::deterministic()).unwrap_err();
        assert_eq!(e.rc.ret_code, rc::MASK_ERROR | rc::MASK_MOD | rc::MASK_BACKUP | rc::FAIL_INVLD_BACKUP_CONFIG);
        assert!(e.rc.message.ends_with("parameters are missing: [endpoint, bucket, region, access_key, secret_key]"), "{}", e.rc.message);
        let e = c.create_s3_remote(&s3("r1"), &mut locked, &mut Ctx::deterministic()).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_NOT_FOUND_CRYPT_KEY);
        let bad = c.create_s3_remote(&s3("no/slash"), &mut sealer(), &mut Ctx::deterministic()).unwrap_err();
        assert_eq!(bad.rc.code(), rc::FAIL_INVLD_REMOTE_NAME);
    }

    #[test]
    fn modify_replaces_what_is_given_and_keeps_the_kind() {
        let mut seal = sealer();
        let c = Cluster::default();
        let out = c.create_s3_remote(&s3("r1"), &mut seal, &mut Ctx::deterministic()).unwrap();
        let c = applied(c, out);
        let req = wire::S3Remote {
            bucket: Some("other".into()),
            secret_key: Some("SK2".into()),
            region: Some(String::new()),
            ..Default::default()
        };
        let c = applied(c.clone(), c.modify_s3_remote("r1", &req, &mut seal).unwrap());
        let RemoteTarget::S3 { bucket, region, access_key, secret_key, .. } = &c.remote_get("r1").unwrap().target else { panic!() };
        assert_eq!((bucket.as_str(), region.as_str()), ("other", "us-east-1"));
        assert_eq!((access_key.as_str(), secret_key.as_str()), ("sealed(AK)", "sealed(SK2)"));
        let e = c.modify_linstor_remote("r1", &wire::LinstorRemote::default(), &mut seal).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_EXISTS_REMOTE);
        let e = c.modify_s3_remote("nope", &req, &mut seal).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_NOT_FOUND_REMOTE);
    }

    #[test]
    fn linstor_remote_url_gets_defaults_and_the_cluster_id_must_be_a_uuid() {
        assert_eq!(linstor_url("10.0.0.5").unwrap(), "http://10.0.0.5:3370");
        assert_eq!(linstor_url("https://ctrl.example").unwrap(), "https://ctrl.example:3371");
        assert_eq!(linstor_url("http://ctrl:3380/v1").unwrap(), "http://ctrl:3380");
        assert!(linstor_url("ftp://x").is_err());
        assert!(linstor_url("http://x:port").is_err());
        let c = Cluster::default();
        let mut seal = sealer();
        let mut req = wire::LinstorRemote {
            remote_name: Some("other".into()),
            url: Some("127.0.0.2".into()),
            cluster_id: Some("x".into()),
            passphrase: None,
        };
        let e = c.create_linstor_remote(&req, &mut seal, &mut Ctx::deterministic()).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_CONF);
        req.cluster_id = Some("0f8c3a52-7f4e-4c1d-9d1e-2b3c4d5e6f70".into());
        req.passphrase = Some("pw".into());
        let c = applied(c.clone(), c.create_linstor_remote(&req, &mut seal, &mut Ctx::deterministic()).unwrap());
        let r = c.remote_get("other").unwrap();
        assert_eq!(
            r.target,
            RemoteTarget::Linstor {
                url: "http://127.0.0.2:3370".into(),
                passphrase: Some("sealed(pw)".into()),
                cluster_id: req.cluster_id.clone()
            }
        );
        let listed = r.to_linstor_api().unwrap();
        assert_eq!((listed.passphrase, listed.url.as_deref()), (None, Some("http://127.0.0.2:3370")));
        let out = c.delete_remote("OTHER").unwrap();
        assert_eq!(out.replies.last().unwrap().ret_code, rc::MASK_MOD | rc::MASK_REMOTE | rc::DELETED);
        let c = applied(c, out);
        assert!(c.remotes.is_empty());
        let gone = c.delete_remote("other").unwrap();
        assert!(gone.replies[0].is_warning() && gone.changes.is_empty());
    }
}
