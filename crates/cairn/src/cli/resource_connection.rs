//! `cairn resource-connection` (`rc`).

use cairn_api::node_connection::ResourceConnection;
use cairn_client::seg;
use clap::Subcommand;

use super::table::Table;
use super::{Ctx, prop_body};

#[derive(Subcommand, Debug)]
pub enum ResourceConnectionCmd {
    /// List the connections between the replicas of a resource.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// The resource.
        resource: String,
    },
    /// List the properties of one resource connection.
    #[command(name = "list-properties", visible_alias = "lp")]
    ListProperties {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The resource.
        resource: String,
    },
    /// Set (or, without a value, delete) a resource connection property,
    /// e.g. `DrbdOptions/Net/protocol` or `Paths/p1/NODE`.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The resource.
        resource: String,
        /// The property.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
}

fn props_text(c: &ResourceConnection) -> String {
    c.props.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub fn run(ctx: &Ctx, cmd: ResourceConnectionCmd) -> i32 {
    match cmd {
        ResourceConnectionCmd::List { resource } => {
            let list: Vec<ResourceConnection> = match ctx.get(&format!("/v1/resource-definitions/{}/resource-connections", seg(&resource)))
            {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Node A", "Node B", "Properties"]);
            for c in &list {
                t.row(vec![c.node_a.clone().into(), c.node_b.clone().into(), props_text(c).into()]);
            }
            ctx.show(&list, t)
        }
        ResourceConnectionCmd::ListProperties { node_a, node_b, resource } => {
            let path = format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(&resource), seg(&node_a), seg(&node_b));
            let conn: ResourceConnection = match ctx.get(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Key", "Value"]);
            for (k, v) in &conn.props {
                t.row(vec![k.clone().into(), v.clone().into()]);
            }
            ctx.show(&conn.props, t)
        }
        ResourceConnectionCmd::SetProperty { node_a, node_b, resource, key, value } => {
            let path = format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(&resource), seg(&node_a), seg(&node_b));
            ctx.send("PUT", &path, Some(&prop_body(&key, value.as_deref())))
        }
    }
}
