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
    /// Set DRBD options of one replica pair: `rc drbd-peer-options --protocol A NODE_A NODE_B RESOURCE`.
    #[command(name = "drbd-peer-options", visible_alias = "popt")]
    DrbdPeerOptions(super::props::DrbdOptionArgs),
    /// Network paths of one resource connection (`Paths/<name>/<node>`).
    #[command(subcommand)]
    Path(PathCmd),
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

#[derive(Subcommand, Debug)]
pub enum PathCmd {
    /// Add a path: which interface of each node carries this pair's traffic.
    #[command(visible_alias = "c")]
    Create {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The resource.
        resource: String,
        /// The path's name.
        path_name: String,
        /// The network interface of the first node.
        netinterface_a: String,
        /// The network interface of the second node.
        netinterface_b: String,
    },
    /// List the paths of a resource connection.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The resource.
        resource: String,
    },
    /// Delete a path.
    #[command(visible_alias = "d")]
    Delete {
        /// One node of the connection.
        node_a: String,
        /// The other node.
        node_b: String,
        /// The resource.
        resource: String,
        /// The path's name.
        path_name: String,
    },
}

fn conn_path(resource: &str, a: &str, b: &str) -> String {
    format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(resource), seg(a), seg(b))
}

fn run_path(ctx: &Ctx, cmd: PathCmd) -> i32 {
    match cmd {
        PathCmd::Create { node_a, node_b, resource, path_name, netinterface_a, netinterface_b } => {
            let body = path_create_body(&path_name, (&node_a, &netinterface_a), (&node_b, &netinterface_b));
            ctx.send("PUT", &conn_path(&resource, &node_a, &node_b), Some(&body))
        }
        PathCmd::List { node_a, node_b, resource } => match ctx.get::<ResourceConnection>(&conn_path(&resource, &node_a, &node_b)) {
            Ok(conn) => show_paths(ctx, &conn.props),
            Err(code) => code,
        },
        PathCmd::Delete { node_a, node_b, resource, path_name } => {
            ctx.send("PUT", &conn_path(&resource, &node_a, &node_b), Some(&path_delete_body(&path_name)))
        }
    }
}

/// The modify body that adds path `name` between two nodes' interfaces.
pub(super) fn path_create_body(name: &str, a: (&str, &str), b: (&str, &str)) -> serde_json::Value {
    serde_json::json!({ "override_props": {
        format!("Paths/{name}/{}", a.0): a.1,
        format!("Paths/{name}/{}", b.0): b.1,
    }})
}

/// The modify body that removes path `name`.
pub(super) fn path_delete_body(name: &str) -> serde_json::Value {
    serde_json::json!({ "delete_namespaces": [format!("Paths/{name}")] })
}

/// Prints the `Paths/<name>/<node>` properties of a connection, one path a row.
pub(super) fn show_paths(ctx: &Ctx, props: &cairn_api::Props) -> i32 {
    let mut paths: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> = Default::default();
    for (k, v) in props {
        if let Some((name, node)) = k.strip_prefix("Paths/").and_then(|r| r.split_once('/')) {
            paths.entry(name.to_string()).or_default().insert(node.to_string(), v.clone());
        }
    }
    let mut t = Table::new(&["Path", "Interfaces"]);
    for (name, ends) in &paths {
        let value = ends.iter().map(|(n, i)| format!("{n}:{i}")).collect::<Vec<_>>().join(", ");
        t.row(vec![name.clone().into(), value.into()]);
    }
    ctx.show(&paths, t)
}

/// Prints a connection's properties as a key/value table.
pub(super) fn props_text(props: &cairn_api::Props) -> String {
    props.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `drbd-peer-options [OPTIONS] NODE_A NODE_B RESOURCE` (of `rc` and `r`).
pub(super) fn drbd_peer_options(ctx: &Ctx, args: &[String]) -> i32 {
    super::props::drbd_options(ctx, "RSC_CONN", 3, args, |n| {
        ("PUT", format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(&n[2]), seg(&n[0]), seg(&n[1])))
    })
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
                t.row(vec![c.node_a.clone().into(), c.node_b.clone().into(), props_text(&c.props).into()]);
            }
            ctx.show(&list, t)
        }
        ResourceConnectionCmd::ListProperties { node_a, node_b, resource } => {
            let path = format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(&resource), seg(&node_a), seg(&node_b));
            match ctx.get::<ResourceConnection>(&path) {
                Ok(conn) => super::props::show(ctx, &conn.props),
                Err(code) => code,
            }
        }
        ResourceConnectionCmd::DrbdPeerOptions(o) => drbd_peer_options(ctx, &o.args),
        ResourceConnectionCmd::Path(p) => run_path(ctx, p),
        ResourceConnectionCmd::SetProperty { node_a, node_b, resource, key, value } => {
            let path = format!("/v1/resource-definitions/{}/resource-connections/{}/{}", seg(&resource), seg(&node_a), seg(&node_b));
            ctx.send("PUT", &path, Some(&prop_body(&key, value.as_deref())))
        }
    }
}
