//! The `cairn` command line itself, through the real binary: completion
//! scripts, man pages.

use std::process::{Command, Output};

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).env_remove("RUST_LOG").output().expect("run cairn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn completion_scripts_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let o = cairn(&["completion", shell]);
        assert!(o.status.success(), "{shell}: {}", String::from_utf8_lossy(&o.stderr));
        let script = stdout(&o);
        for word in ["resource-group", "spawn", "storage-pool", "machine-readable"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert!(!cairn(&["completion", "tcsh"]).status.success(), "an unknown shell is refused");
}

#[test]
fn man_pages_for_the_binary_and_every_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("man1");
    let o = cairn(&["man", "--out-dir", out.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pages: Vec<String> =
        std::fs::read_dir(&out).expect("out dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    pages.sort();
    for want in ["cairn.1", "cairn-node.1", "cairn-node-list.1", "cairn-resource-group-spawn.1", "cairn-controller-version.1"] {
        assert!(pages.iter().any(|p| p == want), "{want} missing from {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("-help")), "no pages for the help subcommand: {pages:?}");
    let have_groff = Command::new("groff").arg("--version").output().is_ok_and(|o| o.status.success());
    for page in &pages {
        let path = out.join(page);
        let text = std::fs::read_to_string(&path).expect("read page");
        let name = page.trim_end_matches(".1");
        assert!(text.lines().any(|l| l.starts_with(&format!(".TH {name} 1"))), "{page}: no .TH header");
        if have_groff {
            let o = Command::new("groff").args(["-man", "-Tascii", "-ww", "-z"]).arg(&path).output().expect("run groff");
            assert!(o.status.success() && o.stderr.is_empty(), "{page}: groff says {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

const CLIENT_OPTIONS: [&str; 5] = ["--controllers", "--machine-readable", "--no-color", "--no-utf8", "--sort-by"];

#[test]
fn client_options_only_in_the_help_of_client_verbs() {
    for local in [&["controller"][..], &["satellite"], &["up"], &["completion"]] {
        let help = stdout(&cairn(&[local, &["--help"]].concat()));
        assert!(help.contains("Usage:"), "{local:?}: {help}");
        for opt in CLIENT_OPTIONS {
            assert!(!help.contains(opt), "`cairn {} --help` shows {opt}:\n{help}", local.join(" "));
        }
    }
    for client in [&["controller", "version"][..], &["node", "list"], &["rg", "spawn"]] {
        let help = stdout(&cairn(&[client, &["--help"]].concat()));
        for opt in CLIENT_OPTIONS {
            assert!(help.contains(opt), "`cairn {} --help` lacks {opt}:\n{help}", client.join(" "));
        }
    }
}

/// `cairn --version` names the commit (or `unknown` when built from a tree
/// without git) and the build day; the controller's REST reply and
/// `cairn controller version` carry the same.
#[test]
fn version_names_the_commit_and_build_day() {
    let line = stdout(&cairn(&["--version"]));
    let re = |s: &str| {
        let rest = s.strip_prefix(&format!("cairn {} (git ", env!("CARGO_PKG_VERSION")))?;
        let (commit, rest) = rest.split_once(", built ")?;
        let (day, _) = rest.split_once(')')?;
        Some((commit.to_string(), day.to_string()))
    };
    let (commit, day) = re(line.trim()).unwrap_or_else(|| panic!("unexpected --version: {line}"));
    let in_git = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git").exists();
    if in_git {
        assert!(commit.len() == 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    } else {
        assert_eq!(commit, "unknown");
    }
    assert!(day.len() == 10 && day.starts_with("20"), "{line}");

    let dir = tempfile::tempdir().expect("tempdir");
    let ctrl = super::harness::ControllerProc::start(dir.path());
    let v = ctrl.client().version().expect("GET /v1/controller/version");
    assert!(v.git_hash.starts_with(&commit) && v.build_time.starts_with(&day), "{v:?} vs {line}");
    let url = format!("127.0.0.1:{}", ctrl.port);
    let o = cairn(&["--controllers", &url, "controller", "version"]);
    let reply = stdout(&o);
    assert!(reply.contains(&format!("(git {commit}, built {day})")) && reply.contains("REST API"), "{reply}");
    // Logs go to a file here, not a terminal: no colour codes.
    let log = std::fs::read_to_string(dir.path().join("controller.log")).expect("controller log");
    assert!(log.contains("controller ready") && !log.contains('\u{1b}'), "{log}");
}

fn cairn_at(ctrl: &super::harness::ControllerProc, args: &[&str]) -> Output {
    let url = format!("127.0.0.1:{}", ctrl.port);
    cairn(&[&["--controllers", url.as_str()][..], args].concat())
}

/// Problems found on this side: the size is quoted as typed; with `-m`
/// they are a JSON reply list of one error entry, and the exit code is
/// still the problem's (1, or 20 for no controller).
#[test]
fn client_side_errors_quote_the_input_and_are_json_with_m() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctrl = super::harness::ControllerProc::start(dir.path());
    let o = cairn_at(&ctrl, &["rg", "spawn", "DfltRscGrp", "cli-size", "1 Parsec"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("'1 Parsec' is not a size") && err.contains("'Parsec' is not a unit"), "{err}");

    let o = cairn_at(&ctrl, &["-m", "vd", "create", "cli-size", "12QB"]);
    assert_eq!(o.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    let entries = json.as_array().expect("a reply list");
    assert_eq!(entries.len(), 1, "{json}");
    assert!(entries[0]["ret_code"].as_i64().is_some_and(|c| c < 0), "an error entry: {json}");
    assert!(entries[0]["message"].as_str().is_some_and(|m| m.contains("'12QB'")), "{json}");

    let port = super::harness::free_port();
    let o = cairn(&["-m", "--controllers", &format!("127.0.0.1:{port}"), "node", "list"]);
    assert_eq!(o.status.code(), Some(20));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert!(json[0]["ret_code"].as_i64().is_some_and(|c| c < 0) && json[0]["cause"].is_string(), "{json}");
    assert!(json[0]["message"].as_str().is_some_and(|m| m.contains("could not reach a controller")), "{json}");
}

/// On a terminal the progress line is finished before the reply is
/// printed: the reply starts on a line of its own. Needs `script` (a pty).
#[test]
fn progress_line_ends_before_the_reply() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to run cairn on a pty");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ctrl = super::harness::ControllerProc::start(dir.path());
    let screen = |args: &str| {
        let line = format!("{} --controllers 127.0.0.1:{} --no-color {args}", env!("CARGO_BIN_EXE_cairn"), ctrl.port);
        let o = Command::new("script").args(["-qec", &line, "/dev/null"]).output().expect("run script");
        String::from_utf8_lossy(&o.stdout).replace('\r', "")
    };
    // A missing definition: LINSTOR's warning, so "done".
    let out = screen("rd delete cli-nothing");
    let lines: Vec<&str> = out.lines().collect();
    let progress =
        lines.iter().position(|l| l.starts_with("Deleting 'cli-nothing' ...")).unwrap_or_else(|| panic!("no progress line:\n{out}"));
    assert!(lines[progress].contains(" done in ") && lines[progress].ends_with(" s"), "{out}");
    assert_eq!(lines.get(progress + 1), Some(&"WARNING:"), "{out}");
    // A resource of a missing definition: an error, so "failed".
    let out = screen("r delete cli-node cli-nothing");
    let lines: Vec<&str> = out.lines().collect();
    let progress = lines
        .iter()
        .position(|l| l.starts_with("Deleting 'cli-nothing' from 1 node(s) ..."))
        .unwrap_or_else(|| panic!("no progress line:\n{out}"));
    assert!(lines[progress].contains(" failed in ") && lines[progress].ends_with(" s"), "{out}");
    assert_eq!(lines.get(progress + 1), Some(&"ERROR:"), "{out}");
}
