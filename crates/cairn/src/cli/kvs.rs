//! `cairn key-value-store` (`kv`).

use cairn_api::kvs::KeyValueStore;
use cairn_client::seg;
use clap::Subcommand;

use super::table::Table;
use super::{Ctx, prop_body};

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// List the stores.
    #[command(visible_alias = "l")]
    List,
    /// Show one store's keys and values.
    #[command(visible_alias = "s")]
    Show {
        /// The store.
        name: String,
    },
    /// Set (or, without a value, delete) a key.
    #[command(visible_alias = "m")]
    Modify {
        /// The store (created with its first key).
        name: String,
        /// The key.
        key: String,
        /// The new value; without one the key is deleted.
        value: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: KvCmd) -> i32 {
    match cmd {
        KvCmd::List => {
            let list: Vec<KeyValueStore> = match ctx.get("/v1/key-value-store") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Name", "Keys"]);
            for k in &list {
                t.row(vec![k.name.clone().into(), k.props.len().to_string().into()]);
            }
            ctx.show(&list, t)
        }
        KvCmd::Show { name } => {
            let list: Vec<KeyValueStore> = match ctx.get(&format!("/v1/key-value-store/{}", seg(&name))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Key", "Value"]);
            for k in &list {
                for (key, v) in &k.props {
                    t.row(vec![key.clone().into(), v.clone().into()]);
                }
            }
            ctx.show(&list, t)
        }
        KvCmd::Modify { name, key, value } => {
            ctx.send("PUT", &format!("/v1/key-value-store/{}", seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
    }
}
