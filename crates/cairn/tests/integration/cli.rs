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
