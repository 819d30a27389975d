//! `cairn encryption` (`e`): the master passphrase.

use std::io::BufRead;

use clap::Subcommand;

use super::Ctx;

#[derive(Subcommand, Debug)]
pub enum EncryptionCmd {
    /// Set the master passphrase (once).
    #[command(name = "create-passphrase", visible_alias = "cp")]
    Create {
        /// The passphrase; read from stdin when not given.
        #[arg(long)]
        passphrase: Option<String>,
    },
    /// Change the master passphrase.
    #[command(name = "modify-passphrase", visible_alias = "mp")]
    Modify {
        /// The current passphrase; read from stdin when not given.
        #[arg(long = "old-passphrase")]
        old_passphrase: Option<String>,
        /// The new passphrase; read from stdin when not given.
        #[arg(long = "new-passphrase")]
        new_passphrase: Option<String>,
    },
    /// Enter the master passphrase after a controller restart.
    #[command(name = "enter-passphrase", visible_alias = "ep")]
    Enter {
        /// The passphrase; read from stdin when not given.
        #[arg(long)]
        passphrase: Option<String>,
    },
}

/// The given value, or the next line of stdin.
pub fn secret(given: Option<String>, what: &str) -> Option<String> {
    if given.is_some() {
        return given;
    }
    eprintln!("{what}:");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    Some(line.trim_end_matches(['\n', '\r']).to_string()).filter(|s| !s.is_empty())
}

pub fn run(ctx: &Ctx, cmd: EncryptionCmd) -> i32 {
    const PATH: &str = "/v1/encryption/passphrase";
    let missing = || ctx.problem(cairn_api::rc::FAIL_INVLD_CRYPT_PASSPHRASE, "a passphrase is needed");
    match cmd {
        EncryptionCmd::Create { passphrase } => match secret(passphrase, "Master passphrase") {
            Some(p) => ctx.send("POST", PATH, Some(&serde_json::json!({ "new_passphrase": p }))),
            None => missing(),
        },
        EncryptionCmd::Modify { old_passphrase, new_passphrase } => {
            match (secret(old_passphrase, "Old passphrase"), secret(new_passphrase, "New passphrase")) {
                (Some(o), Some(n)) => ctx.send("PUT", PATH, Some(&serde_json::json!({ "old_passphrase": o, "new_passphrase": n }))),
                _ => missing(),
            }
        }
        EncryptionCmd::Enter { passphrase } => match secret(passphrase, "Master passphrase") {
            Some(p) => ctx.send("PATCH", PATH, Some(&p)),
            None => missing(),
        },
    }
}
