//! Who may use the REST API: HTTP Basic against a users file, and
//! LINSTOR's bearer tokens (stored hashed in the cluster, see
//! `cairn_domain::auth_token`).
//!
//! Neither is on by default. Basic is required when the controller is
//! given a users file (`--rest-users-file`); tokens are required once token
//! authentication was initialised and a valid token exists (LINSTOR's
//! rule). With both, either credential is accepted. `/health` (and `/`)
//! stay open; `GET /v1/controller/version` stays open to Basic, as
//! LINSTOR's LDAP sign-in never covered it, but not to tokens, as
//! LINSTOR's token filter covers it.
//!
//! The two routes another cluster's controller calls to ship a snapshot
//! here (`/v1/internal/backups/requestReceive` and `…Done`) pass without
//! credentials: they are checked by the master passphrase and the
//! shipment's one-use token they carry (see `rest::ship`).
//!
//! Every refusal is a 401 with an ApiCallRc body and a `WWW-Authenticate`
//! challenge per scheme in force: `Basic realm="Linstor"` and `Bearer
//! realm="linstor-controller"`, LINSTOR's two realms.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cairn_api::ApiCallRc;
use cairn_api::rc;
use parking_lot::Mutex;

use crate::rest::http::{PeerAddr, RequestUser};
use crate::rest::reply::Reply;
use crate::state::AppState;

/// Why a users file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("users file {path}, line {line}: {reason}")]
    Line { path: String, line: usize, reason: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// A user name as the users file takes it: not empty, no `:` (the
/// separator), no whitespace or control characters.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("'{name}' is not a user name: 1 to 128 characters, no ':', whitespace or control characters"));
    }
    Ok(())
}

/// The users file's lines: `name:$argon2id$...` (a PHC string), blank
/// lines and `#` comments ignored.
pub fn parse_users(text: &str, path: &Path) -> Result<Vec<(String, String)>, UsersError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| UsersError::Line { path: path.display().to_string(), line: i + 1, reason };
        let (name, hash) = line.split_once(':').ok_or_else(|| bad("expected NAME:HASH".into()))?;
        check_user_name(name).map_err(bad)?;
        PasswordHash::new(hash).map_err(|e| bad(format!("the hash of '{name}' is no PHC string: {e}")))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("'{name}' appears twice")));
        }
        out.push((name.to_string(), hash.to_string()));
    }
    Ok(out)
}

/// An Argon2id hash (PHC string, random salt) of a password.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| UsersError::Hash(e.to_string()))
}

/// Whether `password` matches a PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Writes `name`'s hash into the users file (added, or replacing the old
/// one), created readable by its owner only; the file is replaced
/// atomically, keeping the old one's owner, group and owner/group mode. With `hash` None the user is removed; the answer says
/// whether it was there.
pub fn write_user(path: &Path, name: &str, hash: Option<&str>) -> Result<bool, UsersError> {
    let read_err = |source| UsersError::Read { path: path.display().to_string(), source };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(read_err(e)),
    };
    parse_users(&text, path)?;
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.trim().split_once(':').is_some_and(|(n, _)| n == name) {
            found = true;
            if let Some(h) = hash {
                lines.push(format!("{name}:{h}"));
            }
        } else {
            lines.push(line.to_string());
        }
    }
    if let (false, Some(h)) = (found, hash) {
        lines.push(format!("{name}:{h}"));
    }
    let mut body = lines.join("\n");
    body.push('\n');
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // The new file keeps the old one's owner and group (the controller's
    // user may be the one reading it, root the one running this), and its
    // owner and group permissions, never any for others.
    #[cfg(unix)]
    let before = std::fs::metadata(path).ok();
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        std::io::Write::write_all(&mut f, body.as_bytes())?;
        f.sync_all()?;
        #[cfg(unix)]
        if let Some(m) = &before {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
            f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o660))?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(read_err)?;
    Ok(found)
}

/// The users file as the controller serves it: re-read when its
/// modification time changes (`cairn user add` takes effect without a
/// restart), with a cache of passwords verified since, so a client that
/// sends Basic on every request pays for Argon2 once.
pub struct Users {
    path: PathBuf,
    inner: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    modified: Option<SystemTime>,
    hashes: HashMap<String, String>,
    /// user -> SHA-256 of the password last verified for them.
    verified: HashMap<String, [u8; 32]>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Users {
    /// Reads the file; it must exist and parse.
    pub fn open(path: &Path) -> Result<Users, UsersError> {
        let users = Users { path: path.to_path_buf(), inner: Mutex::new(Loaded::default()) };
        users.reload()?;
        Ok(users)
    }

    fn reload(&self) -> Result<(), UsersError> {
        let read_err = |source| UsersError::Read { path: self.path.display().to_string(), source };
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).map_err(read_err)?;
        if self.inner.lock().modified == Some(modified) {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
        let hashes = parse_users(&text, &self.path)?.into_iter().collect();
        *self.inner.lock() = Loaded { modified: Some(modified), hashes, verified: HashMap::new() };
        Ok(())
    }

    /// Whether `name` exists and `password` is theirs.
    pub async fn check(self: &Arc<Self>, name: &str, password: &str) -> bool {
        if let Err(e) = self.reload() {
            tracing::error!("{e}; the users as last read stay in force");
        }
        let digest = sha256(password.as_bytes());
        let hash = {
            let inner = self.inner.lock();
            if inner.verified.get(name) == Some(&digest) {
                return true;
            }
            inner.hashes.get(name).cloned()
        };
        // An unknown user costs as much as a wrong password, so the time of
        // an answer does not tell which names exist.
        let known = hash.is_some();
        let pw = password.to_string();
        let ok = tokio::task::spawn_blocking(move || match hash {
            Some(h) => verify_password(&pw, &h),
            None => {
                let _ = hash_password(&pw);
                false
            }
        })
        .await
        .unwrap_or(false);
        let ok = ok && known;
        if ok {
            self.inner.lock().verified.insert(name.to_string(), digest);
        }
        ok
    }
}

/// Lower-case hex SHA-256 of a raw token, as LINSTOR stores it.
pub fn token_hash(raw: &str) -> String {
    sha256(raw.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh token: 32 letters and digits from the system's random source
/// (LINSTOR's `randomAlphaNumString(32)`).
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut buf = [0u8; 64];
        rng.fill(&mut buf)?;
        // 248 = 4 * 62: bytes above it would favour the first letters.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() < 32 {
                out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// The state of the authentication layer.
#[derive(Clone)]
pub struct Gate {
    pub state: AppState,
    pub users: Option<Arc<Users>>,
}

const BASIC_CHALLENGE: &str = "Basic realm=\"Linstor\"";
const BEARER_CHALLENGE: &str = "Bearer realm=\"linstor-controller\"";

/// The middleware: lets a request through or answers 401.
pub async fn authenticate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" || req.uri().path() == "/" {
        return next.run(req).await;
    }
    let tokens = gate.state.read().token_auth_enabled(crate::state::now_ms());
    let basic = gate.users.is_some();
    // Another cluster's controller asking to ship here sends no REST
    // credentials (neither does LINSTOR's): those routes check what the
    // request carries instead (`rest::ship`), told whether sign-in is on.
    if crate::rest::ship::authenticates_itself(req.uri().path()) {
        req.extensions_mut().insert(crate::rest::ship::RestAuthOn(tokens || basic));
        return next.run(req).await;
    }
    let path = req.uri().path();
    if !tokens && (!basic || path == "/v1/controller/version") {
        return next.run(req).await;
    }
    let refuse = |code: i64, message: &str| {
        let mut resp = Reply::new(401, vec![ApiCallRc::new(rc::MASK_ERROR | code, message)]).into_response();
        for (on, challenge) in [(basic, BASIC_CHALLENGE), (tokens, BEARER_CHALLENGE)] {
            if on {
                resp.headers_mut().append(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
        }
        resp
    };
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    let Some((scheme, credential)) = given.map(|g| g.split_once(' ').unwrap_or((g, ""))) else {
        return if tokens {
            refuse(rc::FAIL_ACC_DENIED_COMMAND, "Unauthorized: token invalid or not provided")
        } else {
            refuse(rc::FAIL_SIGN_IN_MISSING_CREDENTIALS, "Login required but no 'Authorization' header given.")
        };
    };
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("bearer") && tokens {
        let peer = req.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0.0.ip());
        let cluster = gate.state.read();
        let valid = cluster
            .auth_token_by_hash(&token_hash(credential))
            .filter(|t| t.unusable(crate::state::now_ms()).is_none() && t.admits(peer))
            .map(|t| t.id);
        drop(cluster);
        if let Some(id) = valid {
            return signed_in(next.run(req).await, format!("token:{id}"));
        }
        return refuse(rc::FAIL_ACC_DENIED_COMMAND, "Unauthorized: token invalid or not provided");
    }
    if scheme.eq_ignore_ascii_case("basic")
        && let Some(users) = &gate.users
    {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credential).ok().and_then(|b| String::from_utf8(b).ok());
        let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return refuse(rc::FAIL_SIGN_IN, "Basic authentication doesn't contain credential token.");
        };
        if users.check(name, password).await {
            let name = name.to_string();
            return signed_in(next.run(req).await, name);
        }
        tracing::info!(user = name, "REST sign-in refused");
        return refuse(rc::FAIL_SIGN_IN, "Sign-in failed: wrong user name or password.");
    }
    if tokens {
        refuse(rc::FAIL_ACC_DENIED_COMMAND, "Unauthorized: token invalid or not provided")
    } else {
        refuse(rc::FAIL_SIGN_IN, "Invalid Authorization method, only 'Basic' supported.")
    }
}

/// `resp` marked with who asked for it, for the access log.
fn signed_in(mut resp: Response, user: String) -> Response {
    resp.extensions_mut().insert(RequestUser(user));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
        assert!(!verify_password("s3cret", "not a hash"));
        assert_ne!(hash_password("s3cret").unwrap(), h, "salted");
    }

    #[test]
    fn users_file_lines_are_checked() {
        let p = Path::new("users");
        let h = hash_password("x").unwrap();
        let ok = parse_users(&format!("# admins\n\nalice:{h}\n bob:{h} \n"), p).unwrap();
        assert_eq!(ok.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        for bad in ["alice".to_string(), "alice:plain".to_string(), format!("a b:{h}"), format!("alice:{h}\nalice:{h}")] {
            assert!(parse_users(&bad, p).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_user_adds_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        let (h1, h2) = (hash_password("one").unwrap(), hash_password("two").unwrap());
        assert!(!write_user(&p, "alice", Some(&h1)).unwrap());
        assert!(!write_user(&p, "bob", Some(&h1)).unwrap());
        assert!(write_user(&p, "alice", Some(&h2)).unwrap());
        let users = parse_users(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        assert_eq!(users, vec![("alice".to_string(), h2), ("bob".to_string(), h1.clone())]);
        assert!(write_user(&p, "bob", None).unwrap());
        assert!(!write_user(&p, "bob", None).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&p), 0o600);
            // A file the operator made group-readable (for the controller's
            // group) stays so; what others could read is taken away.
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            write_user(&p, "carol", Some(&h1)).unwrap();
            assert_eq!(mode(&p), 0o640);
        }
    }

    #[tokio::test]
    async fn users_are_checked_and_changes_to_the_file_take_effect() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        write_user(&p, "alice", Some(&hash_password("one").unwrap())).unwrap();
        let users = Arc::new(Users::open(&p).unwrap());
        assert!(users.check("alice", "one").await);
        assert!(users.check("alice", "one").await, "from the cache");
        assert!(!users.check("alice", "two").await);
        assert!(!users.check("bob", "one").await);
        // A new password: the file's modification time changes, the cache goes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_user(&p, "alice", Some(&hash_password("two").unwrap())).unwrap();
        assert!(users.check("alice", "two").await);
        assert!(!users.check("alice", "one").await);
        // A broken file keeps the users as last read.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, "alice:garbage\n").unwrap();
        assert!(users.check("alice", "two").await);
        assert!(Users::open(&p).is_err());
    }

    #[test]
    fn tokens_are_alphanumeric_and_hashed_as_linstor_does() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_token().unwrap(), t);
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
