//! What is generated from the command tree itself: shell completion
//! scripts (`cairn completion SHELL`) and man pages (`cairn man --out-dir
//! DIR`), so neither can drift from the real options.

use std::path::Path;

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

/// Writes the completion script for `shell` to stdout.
pub fn completion(cmd: &mut Command, shell: Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
}

/// Writes `cairn.1` and one page per visible subcommand at every depth,
/// `cairn-node-list.1` and so on, into `dir` (created if missing). The
/// built `help` subcommands get no page of their own.
pub fn man_pages(cmd: &Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        man_pages(sub, dir)?;
    }
    let page = clap_mangen::Man::new(cmd.clone());
    page.generate_to(dir).with_context(|| format!("write {}", dir.join(page.get_filename()).display()))?;
    Ok(())
}
