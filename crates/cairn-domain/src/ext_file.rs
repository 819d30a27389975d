//! External files (LINSTOR's `ExternalFile`): content the controller keeps
//! under an absolute path, written by the satellites of the nodes that hold
//! a resource of a definition deploying it.
//!
//! A definition deploys a file through its property `files/<path without
//! the leading '/'>` = `True` (LINSTOR's `NAMESPC_FILES`); undeploying
//! removes the property. The satellites refuse paths whose directory their
//! administrator did not allow (`--allow-ext-files`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_api::ext_file as wire;
use cairn_api::rc::{self, ApiCallRc};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::ctx::Ctx;
use crate::error::{OpError, OpResult};
use crate::name::key;

/// LINSTOR's `ExternalFileName.MAX_LENGTH`.
pub const MAX_PATH_LEN: usize = 1024;
/// The namespace of the deploying properties of a resource definition.
pub const NAMESPACE: &str = "files";

/// One external file as stored: its content base64-encoded (as it travels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalFile {
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub alt_suffixes: Vec<String>,
    pub uuid: String,
}

impl ExternalFile {
    pub fn to_api(&self, with_content: bool) -> wire::ExternalFile {
        wire::ExternalFile {
            path: self.path.clone(),
            content: with_content.then(|| self.content.clone()),
            alt_suffixes: Some(self.alt_suffixes.clone()),
        }
    }

    /// The content, decoded (it was checked when stored).
    pub fn bytes(&self) -> Vec<u8> {
        B64.decode(&self.content).unwrap_or_default()
    }
}

/// The property of a resource definition that deploys `path`.
pub fn deploy_key(path: &str) -> String {
    format!("{NAMESPACE}/{}", path.trim_start_matches('/'))
}

/// The path a deploying property names (`files/etc/x` -> `/etc/x`), if the
/// key is one.
pub fn deployed_path(prop_key: &str) -> Option<String> {
    prop_key.strip_prefix("files/").map(|rest| format!("/{rest}"))
}

/// LINSTOR's `ExternalFileName` rules (absolute, ASCII, at most 1024
/// characters), and Cairn's own: no `.`/`..` element and no NUL, because
/// satellites write there.
pub fn check_path(path: &str, op: i64) -> OpResult<()> {
    let why = if path.len() > MAX_PATH_LEN {
        Some(format!("Invalid name: Name length {} is greater than maximum length {MAX_PATH_LEN}", path.len()))
    } else if !path.starts_with('/') {
        Some("Invalid name: The path must be absolute!".to_string())
    } else if !path.is_ascii() {
        Some("Invalid name: The path must contain only ASCII characters".to_string())
    } else if path.contains('\0') || path.split('/').any(|e| e == "." || e == "..") {
        Some("Invalid name: The path must not contain '.' or '..' elements or NUL characters".to_string())
    } else if path.ends_with('/') {
        Some("Invalid name: The path must name a file, not a directory".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(cause) => {
            Err(OpError::new(op, rc::FAIL_INVLD_EXT_FILE_NAME, format!("The given external file name '{path}' is invalid.")).cause(cause))
        }
    }
}

/// Whether a satellite allowing `allowed` directories writes `path`
/// (LINSTOR: the normalized path's parent is one of them, exactly).
pub fn allowed(path: &str, allowed: &[String]) -> bool {
    cairn_proto::ext_file_allowed(path, allowed)
}

fn invalid(message: String) -> OpError {
    OpError::new(rc::MASK_MOD | rc::MASK_EXT_FILES, rc::FAIL_INVLD_EXT_FILE, message)
}

fn description(path: &str) -> String {
    format!("External file: {path}")
}

impl Cluster {
    pub fn ext_file(&self, path: &str, op: i64) -> OpResult<&ExternalFile> {
        check_path(path, op)?;
        self.ext_files.get(path).ok_or_else(|| {
            OpError::new(op, rc::FAIL_NOT_FOUND_EXT_FILE, format!("External file '{path}' not registered."))
                .cause(format!("The specified external file '{path}' could not be found in the database"))
                .correction(format!("Create an external file with the name '{path}' first."))
        })
    }

    /// `PUT /v1/files/{path}`: creates the file, or changes its content
    /// (when given and not empty) and alternative suffixes (when given).
    /// As LINSTOR, the call answers with the satellites' answers only.
    pub fn set_ext_file(&self, path: &str, content_b64: Option<&str>, alt_suffixes: Option<&[String]>, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_EXT_FILES;
        check_path(path, OP)?;
        let content = match content_b64 {
            Some(s) => Some(B64.decode(s.trim()).map_err(|e| invalid(format!("The content is not valid base64: {e}")))?),
            None => None,
        };
        if let Some(sfx) = alt_suffixes.into_iter().flatten().find(|s| s.contains('/') || s.contains("..")) {
            return Err(invalid(format!("Alternative suffixes must not contain path separators or '..': {sfx}")));
        }
        let f = match self.ext_files.get(path) {
            None => {
                let Some(bytes) = content.filter(|b| !b.is_empty()) else {
                    return Err(invalid("The content must not be null or empty".into()));
                };
                ExternalFile {
                    path: path.to_string(),
                    content: B64.encode(bytes),
                    alt_suffixes: alt_suffixes.map(<[String]>::to_vec).unwrap_or_default(),
                    uuid: ctx.uuid(),
                }
            }
            Some(old) => {
                let mut f = old.clone();
                if let Some(bytes) = content.filter(|b| !b.is_empty()) {
                    f.content = B64.encode(bytes);
                }
                if let Some(sfx) = alt_suffixes {
                    f.alt_suffixes = sfx.to_vec();
                }
                f
            }
        };
        let mut out = Outcome::default();
        out.put(Object::ExtFile(f));
        Ok(out)
    }

    /// `DELETE /v1/files/{path}`: undeploys it from every definition and
    /// forgets it.
    pub fn delete_ext_file(&self, path: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_EXT_FILES;
        check_path(path, OP)?;
        let mut out = Outcome::default();
        let Some(f) = self.ext_files.get(path) else {
            out.reply(ApiCallRc::warning(0, rc::WARN_NOT_FOUND, format!("{} not found in LINSTOR database.", description(path))));
            return Ok(out);
        };
        out.reply(ApiCallRc::success(0, rc::DELETED, format!("{} marked for deletion.", description(path))).with_details(format!(
            "{} UUID is: {}",
            description(path),
            f.uuid
        )));
        let prop = deploy_key(path);
        for rd in self.rsc_dfns.values().filter(|d| d.props.contains_key(&prop)) {
            let mut rd = rd.clone();
            rd.props.remove(&prop);
            out.put(Object::RscDfn(rd));
        }
        out.delete(ObjKey::ExtFile(path.to_string()));
        out.reply(ApiCallRc::success(0, rc::DELETED, format!("{} deleted.", description(path))).with_details(format!(
            "{} UUID was: {}",
            description(path),
            f.uuid
        )));
        Ok(out)
    }

    /// `POST|DELETE /v1/resource-definitions/{rd}/files/{path}`.
    pub fn deploy_ext_file(&self, rd: &str, path: &str, deploy: bool) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC_DFN;
        let d = self.rsc_dfn(rd, OP)?;
        self.ext_file(path, OP)?;
        let mut d = d.clone();
        let prop = deploy_key(path);
        if deploy {
            d.props.insert(prop, "True".into());
        } else {
            d.props.remove(&prop);
        }
        let mut out = Outcome::default();
        let verb = if deploy { "Deployed" } else { "Undeployed" };
        for r in self.resources_of(&key(&d.name)) {
            out.reply(
                ApiCallRc::success(0, rc::MODIFIED, format!("{verb} {path} on resource '{}' on '{}'", d.name, r.node))
                    .with_ref("Node", &r.node),
            );
        }
        out.put(Object::RscDfn(d));
        Ok(out)
    }

    /// The external files a definition deploys, by path.
    pub fn ext_files_of(&self, rd_key: &str) -> Vec<&ExternalFile> {
        let Some(d) = self.rsc_dfns.get(rd_key) else { return Vec::new() };
        d.props
            .iter()
            .filter(|(_, v)| v.eq_ignore_ascii_case("true"))
            .filter_map(|(k, _)| deployed_path(k))
            .filter_map(|p| self.ext_files.get(&p))
            .collect()
    }

    /// Keys of the definitions deploying `path`.
    pub fn rsc_dfns_deploying(&self, path: &str) -> Vec<String> {
        let prop = deploy_key(path);
        self.rsc_dfns.iter().filter(|(_, d)| d.props.contains_key(&prop)).map(|(k, _)| k.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_linstors_name_rules_and_refuse_dot_elements() {
        let code = |p: &str| check_path(p, 0).err().map(|e| e.rc.code());
        assert_eq!(code("/etc/x.conf"), None);
        for bad in ["etc/x", "/etc/../x", "/etc/./x", "/etc/ü", "/etc/", &format!("/{}", "a".repeat(1024))] {
            assert_eq!(code(bad), Some(rc::FAIL_INVLD_EXT_FILE_NAME), "{bad}");
        }
    }

    #[test]
    fn the_allowed_directory_is_the_files_parent_exactly() {
        let dirs = vec!["/etc/app/".to_string(), "/srv".to_string()];
        assert!(allowed("/etc/app/x.toml", &dirs));
        assert!(allowed("/srv//y", &dirs));
        assert!(!allowed("/etc/app/sub/x", &dirs));
        assert!(!allowed("/etc/x", &dirs));
        assert_eq!((deploy_key("/etc/x"), deployed_path("files/etc/x")), ("files/etc/x".to_string(), Some("/etc/x".to_string())));
    }

    #[test]
    fn set_creates_then_modifies_and_refuses_empty_content_or_bad_suffixes() {
        let mut ctx = Ctx::deterministic();
        let mut c = Cluster::default();
        let e = c.set_ext_file("/etc/x", Some(""), None, &mut ctx).unwrap_err();
        assert_eq!((e.rc.code(), e.rc.message.as_str()), (rc::FAIL_INVLD_EXT_FILE, "The content must not be null or empty"));
        let e = c.set_ext_file("/etc/x", Some("aGk="), Some(&["/x".to_string()]), &mut ctx).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_INVLD_EXT_FILE);
        assert_eq!(c.set_ext_file("/etc/x", Some("%%"), None, &mut ctx).unwrap_err().rc.code(), rc::FAIL_INVLD_EXT_FILE);
        let o = c.set_ext_file("/etc/x", Some("aGk="), None, &mut ctx).unwrap();
        assert!(o.replies.is_empty());
        c.apply(o.changes);
        assert_eq!(c.ext_files["/etc/x"].bytes(), b"hi");
        // Empty content keeps the old one; suffixes change.
        let o = c.set_ext_file("/etc/x", Some(""), Some(&[".off".to_string()]), &mut ctx).unwrap();
        c.apply(o.changes);
        assert_eq!((c.ext_files["/etc/x"].bytes(), c.ext_files["/etc/x"].alt_suffixes.clone()), (b"hi".to_vec(), vec![".off".to_string()]));
        let d = c.delete_ext_file("/etc/nope").unwrap();
        assert_eq!(d.replies[0].code(), rc::WARN_NOT_FOUND);
        let d = c.delete_ext_file("/etc/x").unwrap();
        c.apply(d.changes);
        assert!(c.ext_files.is_empty());
        assert_eq!(c.ext_file("/etc/x", 0).unwrap_err().rc.code(), rc::FAIL_NOT_FOUND_EXT_FILE);
    }
}
