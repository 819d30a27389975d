//! Build metadata for `GET /v1/controller/version` and `cairn --version`:
//! `CAIRN_GIT_HASH`, the commit built (`unknown` outside a git checkout,
//! e.g. from a source tarball; a packager may set `CAIRN_GIT_HASH` in the
//! environment), and `CAIRN_BUILD_EPOCH`, the build time in seconds
//! (`SOURCE_DATE_EPOCH` when set, for reproducible builds). Reruns when
//! HEAD or the branch it points to moves, in a plain checkout and in a
//! worktree alike (git itself says where those files are).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// The files whose change means another commit is checked out: HEAD, the
/// branch's ref (or, while it is packed, the folder it would appear in)
/// and packed-refs.
fn head_files() -> Vec<PathBuf> {
    let git_path = |p: &str| git(&["rev-parse", "--git-path", p]).map(PathBuf::from);
    let mut files: Vec<PathBuf> = [git_path("HEAD"), git_path("packed-refs")].into_iter().flatten().collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git_path(&r)) {
        if branch.exists() {
            files.push(branch);
        } else {
            files.extend(branch.parent().map(Path::to_path_buf));
        }
    }
    files.into_iter().filter(|p| p.exists()).collect()
}

/// The commit, if this source tree is the top of a git checkout (and not
/// an unpacked tarball inside some other repository).
fn commit() -> Option<String> {
    let root = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR")?).join("../..").canonicalize().ok()?;
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?).canonicalize().ok()?;
    if top != root {
        return None;
    }
    for file in head_files() {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    git(&["rev-parse", "HEAD"]).filter(|h| h.len() >= 7 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CAIRN_GIT_HASH");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let hash = std::env::var("CAIRN_GIT_HASH").ok().filter(|h| !h.trim().is_empty()).or_else(commit).unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    println!("cargo:rustc-env=CAIRN_GIT_HASH={}", hash.trim());
    println!("cargo:rustc-env=CAIRN_BUILD_EPOCH={epoch}");
}
