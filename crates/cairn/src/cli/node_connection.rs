//! `cairn node-connection` (`nc`): properties of the connection between two
//! nodes, for every resource they share (DRBD paths and options).

use cairn_api::node_connection::NodeConnection;
use cairn_client::seg;
use clap::Subcommand;

use super::resource_connection::{path_create_body, path_delete_body, props_text, show_paths};
use super::table::Table;
use super::{Ctx, prop_body};

#[derive(Subcommand, Debug)]
pub enum NodeConnectionCmd {
    /// List node connections (those with properties), optionally of one node or pair.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only connections of this node.
        node_a: Option<String>,
        /// Only the connection between `node_a` and this node.
        node_b: Option<String>,
    },
    /// List the properties of one node connection.
    #[command(name = "list-properties", visible_alias = "lp")]
    ListProperties {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
    },
    /// Set DRBD options of every connection between two nodes: `nc drbd-peer-options --protocol A NODE_A NODE_B`.
    #[command(name = "drbd-peer-options", visible_alias = "popt")]
    DrbdPeerOptions(super::props::DrbdOptionArgs),
    /// Network paths of one node connection (`Paths/<name>/<node>`).
    #[command(subcommand)]
    Path(NodePathCmd),
    /// Set (or, without a value, delete) a node connection property,
    /// e.g. `DrbdOptions/Net/protocol` or `Paths/p1/NODE`.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The property.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodePathCmd {
    /// Add a path: which interface of each node carries the pair's traffic.
    #[command(visible_alias = "c")]
    Create {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The path's name.
        path_name: String,
        /// The network interface of the first node.
        netinterface_a: String,
        /// The network interface of the second node.
        netinterface_b: String,
    },
    /// List the paths of a node connection.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
    },
    /// Delete a path.
    #[command(visible_alias = "d")]
    Delete {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The path's name.
        path_name: String,
    },
}

fn conn_path(a: &str, b: &str) -> String {
    format!("/v1/node-connections/{}/{}", seg(a), seg(b))
}

fn props_of(ctx: &Ctx, a: &str, b: &str) -> Result<cairn_api::Props, i32> {
    ctx.get::<NodeConnection>(&conn_path(a, b)).map(|c| c.props)
}

pub fn run(ctx: &Ctx, cmd: NodeConnectionCmd) -> i32 {
    match cmd {
        NodeConnectionCmd::List { node_a, node_b } => {
            let mut query = Vec::new();
            for (k, v) in [("node_a", &node_a), ("node_b", &node_b)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", seg(v)));
                }
            }
            let path =
                if query.is_empty() { "/v1/node-connections".to_string() } else { format!("/v1/node-connections?{}", query.join("&")) };
            let list: Vec<NodeConnection> = match ctx.get(&path) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Node A", "Node B", "Properties"]);
            for c in &list {
                t.row(vec![c.node_a.clone().into(), c.node_b.clone().into(), props_text(&c.props).into()]);
            }
            ctx.show(&list, t)
        }
        NodeConnectionCmd::ListProperties { node_a, node_b } => match props_of(ctx, &node_a, &node_b) {
            Ok(props) => super::props::show(ctx, &props),
            Err(code) => code,
        },
        NodeConnectionCmd::DrbdPeerOptions(o) => {
            super::props::drbd_options(ctx, "NODE_CONN", 2, &o.args, |n| ("PUT", conn_path(&n[0], &n[1])))
        }
        NodeConnectionCmd::SetProperty { node_a, node_b, key, value } => {
            ctx.send("PUT", &conn_path(&node_a, &node_b), Some(&prop_body(&key, value.as_deref())))
        }
        NodeConnectionCmd::Path(NodePathCmd::Create { node_a, node_b, path_name, netinterface_a, netinterface_b }) => {
            let body = path_create_body(&path_name, (&node_a, &netinterface_a), (&node_b, &netinterface_b));
            ctx.send("PUT", &conn_path(&node_a, &node_b), Some(&body))
        }
        NodeConnectionCmd::Path(NodePathCmd::List { node_a, node_b }) => match props_of(ctx, &node_a, &node_b) {
            Ok(props) => show_paths(ctx, &props),
            Err(code) => code,
        },
        NodeConnectionCmd::Path(NodePathCmd::Delete { node_a, node_b, path_name }) => {
            ctx.send("PUT", &conn_path(&node_a, &node_b), Some(&path_delete_body(&path_name)))
        }
    }
}
