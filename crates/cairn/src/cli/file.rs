//! `cairn file` (`f`): external files, as upstream's `linstor file`.

use std::io::{IsTerminal, Read};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn_api::ext_file::ExternalFile;
use cairn_api::rc;
use cairn_client::seg;
use clap::Subcommand;

use super::Ctx;
use super::table::Table;

#[derive(Subcommand, Debug)]
pub enum FileCmd {
    /// List all files in the cluster.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Generate pastable output (accepted for compatibility).
        #[arg(short, long)]
        pastable: bool,
    },
    /// Show a single file's content.
    #[command(visible_alias = "s")]
    Show {
        /// Name (absolute path) of the file.
        file_name: String,
    },
    /// Set the content of a file (created if new): read from stdin, or
    /// edited in $EDITOR when stdin is a terminal.
    #[command(visible_alias = "m")]
    Modify {
        /// Name (absolute path) of the file.
        file_name: String,
    },
    /// Delete a file (undeploying it everywhere).
    #[command(visible_alias = "d")]
    Delete {
        /// Name (absolute path) of the file.
        file_name: String,
    },
    /// Deploy a file with a resource definition: it is written on every node holding one of its resources.
    #[command(visible_alias = "dep")]
    Deploy {
        /// Name (absolute path) of the file.
        file_name: String,
        /// The resource definition.
        resource_name: String,
    },
    /// Undeploy a file from a resource definition: it is removed where no other resource wants it.
    #[command(visible_alias = "und")]
    Undeploy {
        /// Name (absolute path) of the file.
        file_name: String,
        /// The resource definition.
        resource_name: String,
    },
}

fn path(file_name: &str) -> String {
    format!("/v1/files/{}", seg(file_name))
}

/// The current content (empty for a new file) edited in $EDITOR.
fn edit(ctx: &Ctx, file_name: &str) -> Result<Vec<u8>, String> {
    let initial = ctx.client.get::<ExternalFile>(&path(file_name)).ok().and_then(|f| f.content).unwrap_or_default();
    let initial = B64.decode(initial).unwrap_or_default();
    let tmp = std::env::temp_dir().join(format!("cairn-file-{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(opts.write(true).create_new(true), 0o600);
    let result = opts
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &initial))
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))
        .and_then(|()| {
            let editor = std::env::var("EDITOR").unwrap_or_else(|_| "nano".into());
            std::process::Command::new(&editor).arg(&tmp).status().map_err(|e| format!("cannot run {editor}: {e}"))
        })
        .and_then(|_| std::fs::read(&tmp).map_err(|e| format!("cannot read {}: {e}", tmp.display())));
    let _ = std::fs::remove_file(&tmp);
    result
}

pub fn run(ctx: &Ctx, cmd: FileCmd) -> i32 {
    match cmd {
        FileCmd::List { pastable: _ } => {
            let list: Vec<ExternalFile> = match ctx.get("/v1/files") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Path"]);
            for f in &list {
                t.row(vec![f.path.clone().into()]);
            }
            ctx.show(&list, t)
        }
        FileCmd::Show { file_name } => {
            let f: ExternalFile = match ctx.get(&path(&file_name)) {
                Ok(f) => f,
                Err(code) => return code,
            };
            if ctx.machine {
                return ctx.show(&f, Table::new(&[]));
            }
            match B64.decode(f.content.unwrap_or_default()) {
                Ok(bytes) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&bytes);
                    0
                }
                Err(e) => ctx.problem(rc::FAIL_INVLD_EXT_FILE, format!("the controller sent content that is not base64: {e}")),
            }
        }
        FileCmd::Modify { file_name } => {
            let content = if std::io::stdin().is_terminal() {
                edit(ctx, &file_name)
            } else {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).map(|_| buf).map_err(|e| format!("cannot read stdin: {e}"))
            };
            let content = match content {
                Ok(c) => c,
                Err(e) => return ctx.problem(rc::FAIL_INVLD_EXT_FILE, e),
            };
            let body = ExternalFile { path: file_name.clone(), content: Some(B64.encode(content)), alt_suffixes: None };
            ctx.send("PUT", &path(&file_name), Some(&body))
        }
        FileCmd::Delete { file_name } => ctx.send::<()>("DELETE", &path(&file_name), None),
        FileCmd::Deploy { file_name, resource_name } => {
            ctx.send::<()>("POST", &format!("/v1/resource-definitions/{}/files/{}", seg(&resource_name), seg(&file_name)), None)
        }
        FileCmd::Undeploy { file_name, resource_name } => {
            ctx.send::<()>("DELETE", &format!("/v1/resource-definitions/{}/files/{}", seg(&resource_name), seg(&file_name)), None)
        }
    }
}
