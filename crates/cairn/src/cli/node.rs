//! `cairn node` (`n`).

use cairn_api::node::{NetInterface, Node};
use cairn_client::seg;
use clap::Subcommand;

use super::table::{Cell, Table, Tone};
use super::{Ctx, prop_body, query};

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Register a node.
    #[command(visible_alias = "c")]
    Create {
        /// The node's name, as its satellite knows it (`--node-name`, by default the host name).
        name: String,
        /// IP address of the node's default interface.
        ip: String,
        /// satellite, controller, combined or auxiliary.
        #[arg(long, default_value = "satellite")]
        node_type: String,
        /// Satellite port (3366 plain, 3367 ssl by default).
        #[arg(long)]
        port: Option<u16>,
        /// plain or ssl.
        #[arg(long = "communication-type", default_value = "plain")]
        communication_type: String,
    },
    /// List nodes.
    #[command(visible_alias = "l", alias = "ls")]
    List {
        /// Only these nodes.
        #[arg(short = 'n', long = "nodes", num_args = 1..)]
        nodes: Vec<String>,
        /// Only nodes with these properties (`KEY=VALUE`, or `KEY` for any value).
        #[arg(long = "props", num_args = 1..)]
        props: Vec<String>,
    },
    /// Show one node in detail (interfaces, providers).
    Info {
        /// The node.
        name: String,
    },
    /// Delete a node (refused while it has resources).
    #[command(visible_alias = "d")]
    Delete {
        /// The node.
        name: String,
    },
    /// Remove a node that is gone for good, with its resources.
    Lost {
        /// The node.
        name: String,
    },
    /// Move a node's resources elsewhere before taking it out: each replica is replaced on another
    /// node and deleted once the replacement is UpToDate; the node takes no new resources.
    #[command(visible_alias = "evac")]
    Evacuate {
        /// The node.
        name: String,
        /// Only these nodes may take the replacements.
        #[arg(long, num_args = 1.., conflicts_with = "do_not_target")]
        target: Vec<String>,
        /// These nodes must not take the replacements.
        #[arg(long = "do-not-target", num_args = 1..)]
        do_not_target: Vec<String>,
    },
    /// Undo an evacuation that has not finished, or bring an evicted node back.
    #[command(visible_alias = "rst")]
    Restore {
        /// The node.
        name: String,
        /// Delete the node's resources (except the last diskful replica of a definition) instead of keeping them.
        #[arg(long = "delete-resources")]
        delete_resources: bool,
        /// Delete the node's snapshots.
        #[arg(long = "delete-snapshots")]
        delete_snapshots: bool,
    },
    /// Drop the connection to the nodes' satellites and connect again.
    Reconnect {
        /// The nodes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set a satellite's log level (ERROR, WARN, INFO, DEBUG, TRACE) while it runs.
    SetLogLevel {
        /// The node.
        name: String,
        /// The level.
        level: String,
        /// For the libraries Cairn uses instead of Cairn itself.
        #[arg(long)]
        library: bool,
    },
    /// Set (or, without a value, delete) a node property.
    #[command(visible_alias = "sp")]
    SetProperty {
        /// The node.
        name: String,
        /// The property, e.g. `Aux/rack`.
        key: String,
        /// The new value; without one the property is deleted.
        value: Option<String>,
    },
    /// List a node's properties.
    #[command(visible_alias = "lp")]
    ListProperties {
        /// The node.
        name: String,
    },
    /// Change a node's type (satellite, combined, controller, auxiliary).
    #[command(visible_alias = "m")]
    Modify {
        /// The node.
        name: String,
        /// The new node type.
        #[arg(long = "node-type")]
        node_type: Option<String>,
    },
    /// The nodes as a tree: interfaces, storage pools, resources and their
    /// volumes (all nodes without a name).
    #[command(visible_alias = "dsc")]
    Describe {
        /// The node.
        name: Option<String>,
    },
    /// Network interfaces.
    #[command(visible_alias = "i", subcommand)]
    Interface(InterfaceCmd),
}

#[derive(Subcommand, Debug)]
pub enum InterfaceCmd {
    /// Add a network interface to a node.
    #[command(visible_alias = "c")]
    Create {
        /// The node.
        node: String,
        /// The interface's name, e.g. `data`.
        name: String,
        /// Its IP address.
        ip: String,
        /// Satellite port, when the controller should reach the satellite through this interface.
        #[arg(long)]
        port: Option<u16>,
        /// plain or ssl (with --port).
        #[arg(long = "communication-type")]
        communication_type: Option<String>,
    },
    /// List a node's network interfaces.
    #[command(visible_alias = "l")]
    List {
        /// The node.
        node: String,
    },
    /// Remove a network interface.
    #[command(visible_alias = "d")]
    Delete {
        /// The node.
        node: String,
        /// The interface.
        name: String,
    },
}

/// `ONLINE` -> `Online`, the other states as they are.
pub fn state_cell(status: &str) -> Cell {
    match status {
        "ONLINE" => Cell::toned("Online", Tone::Good),
        "CONNECTED" => Cell::toned("Connected", Tone::Warn),
        other => Cell::toned(other, Tone::Bad),
    }
}

/// The State column: `EVICTED` / `EVACUATE` when the node is so flagged,
/// else its connection status (as upstream's client shows them).
fn node_state(n: &Node) -> &str {
    if n.flags.iter().any(|f| f == "EVICTED") {
        "EVICTED"
    } else if n.flags.iter().any(|f| f == "EVACUATE") {
        "EVACUATE"
    } else {
        n.connection_status.as_deref().unwrap_or("UNKNOWN")
    }
}

fn addresses(n: &Node) -> String {
    n.net_interfaces
        .iter()
        .map(|i| match (i.satellite_port, &i.satellite_encryption_type) {
            (Some(p), Some(t)) => format!("{}:{p} ({t})", i.address),
            _ => i.address.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(ctx: &Ctx, cmd: NodeCmd) -> i32 {
    match cmd {
        NodeCmd::Create { name, ip, node_type, port, communication_type } => {
            let enc = communication_type.to_ascii_uppercase();
            let port = port.unwrap_or(if enc == "SSL" { 3367 } else { 3366 });
            let body = Node {
                name,
                node_type,
                net_interfaces: vec![NetInterface {
                    name: "default".into(),
                    address: ip,
                    satellite_port: Some(i64::from(port)),
                    satellite_encryption_type: Some(enc),
                    is_active: Some(true),
                    uuid: None,
                }],
                ..Default::default()
            };
            ctx.send("POST", "/v1/nodes", Some(&body))
        }
        NodeCmd::List { nodes, props } => {
            let list: Vec<Node> = match ctx.get(&format!("/v1/nodes{}", query(&[("nodes", &nodes), ("props", &props)]))) {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Node", "NodeType", "Addresses", "State"]);
            for n in &list {
                t.row(vec![n.name.clone().into(), n.node_type.clone().into(), addresses(n).into(), state_cell(node_state(n))]);
            }
            t.sort_by_column(0);
            ctx.show(&list, t)
        }
        NodeCmd::Info { name } => {
            let n: Node = match ctx.get(&format!("/v1/nodes/{}", seg(&name))) {
                Ok(n) => n,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Node", "Supported providers", "Unsupported providers", "Layers"]);
            let unsupported = n
                .unsupported_providers
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| format!("{k}: {}", v.join("; "))).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            let unsupported = unsupported.lines().next().unwrap_or_default().to_string();
            t.row(vec![
                n.name.clone().into(),
                n.storage_providers.clone().unwrap_or_default().join(", ").into(),
                unsupported.into(),
                n.resource_layers.clone().unwrap_or_default().join(", ").into(),
            ]);
            ctx.show(&n, t)
        }
        NodeCmd::ListProperties { name } => super::props::list(ctx, &format!("/v1/nodes/{}", seg(&name))),
        NodeCmd::Modify { name, node_type } => {
            let body = serde_json::json!({ "node_type": node_type.map(|t| t.to_ascii_uppercase()) });
            ctx.send("PUT", &format!("/v1/nodes/{}", seg(&name)), Some(&body))
        }
        NodeCmd::Describe { name } => describe(ctx, name.as_deref()),
        NodeCmd::Delete { name } => ctx.send::<()>("DELETE", &format!("/v1/nodes/{}", seg(&name)), None),
        NodeCmd::Reconnect { names } => {
            let requests: Vec<(&str, String, Option<&()>)> =
                names.iter().map(|n| ("PUT", format!("/v1/nodes/{}/reconnect", seg(n)), None)).collect();
            ctx.send_all("Reconnecting", &requests)
        }
        NodeCmd::SetLogLevel { name, level, library } => {
            // As python-linstor's node_set_log_level names the key.
            let key = if library { "level" } else { "level_linstor" };
            ctx.send("PUT", &format!("/v1/nodes/{}/config", seg(&name)), Some(&serde_json::json!({ "log": { key: level } })))
        }
        NodeCmd::Lost { name } => ctx.send::<()>("DELETE", &format!("/v1/nodes/{}/lost", seg(&name)), None),
        NodeCmd::Evacuate { name, target, do_not_target } => {
            let mut body = serde_json::Map::new();
            if !target.is_empty() {
                body.insert("target".into(), target.into());
            }
            if !do_not_target.is_empty() {
                body.insert("do_not_target".into(), do_not_target.into());
            }
            ctx.send("PUT", &format!("/v1/nodes/{}/evacuate", seg(&name)), Some(&body).filter(|b| !b.is_empty()))
        }
        NodeCmd::Restore { name, delete_resources, delete_snapshots } => {
            let mut body = serde_json::Map::new();
            if delete_resources {
                body.insert("delete_resources".into(), true.into());
            }
            if delete_snapshots {
                body.insert("delete_snapshots".into(), true.into());
            }
            ctx.send("PUT", &format!("/v1/nodes/{}/restore", seg(&name)), Some(&body).filter(|b| !b.is_empty()))
        }
        NodeCmd::SetProperty { name, key, value } => {
            ctx.send("PUT", &format!("/v1/nodes/{}", seg(&name)), Some(&prop_body(&key, value.as_deref())))
        }
        NodeCmd::Interface(i) => match i {
            InterfaceCmd::Create { node, name, ip, port, communication_type } => {
                let body = NetInterface {
                    name,
                    address: ip,
                    satellite_port: port.map(i64::from),
                    satellite_encryption_type: communication_type.map(|c| c.to_ascii_uppercase()),
                    is_active: None,
                    uuid: None,
                };
                ctx.send("POST", &format!("/v1/nodes/{}/net-interfaces", seg(&node)), Some(&body))
            }
            InterfaceCmd::List { node } => {
                let list: Vec<NetInterface> = match ctx.get(&format!("/v1/nodes/{}/net-interfaces", seg(&node))) {
                    Ok(l) => l,
                    Err(code) => return code,
                };
                let mut t = Table::new(&["Name", "Address", "Port", "Type", "Active"]);
                for i in &list {
                    t.row(vec![
                        i.name.clone().into(),
                        i.address.clone().into(),
                        i.satellite_port.map(|p| p.to_string()).unwrap_or_default().into(),
                        i.satellite_encryption_type.clone().unwrap_or_default().into(),
                        if i.is_active == Some(true) { "yes" } else { "" }.into(),
                    ]);
                }
                ctx.show(&list, t)
            }
            InterfaceCmd::Delete { node, name } => {
                ctx.send::<()>("DELETE", &format!("/v1/nodes/{}/net-interfaces/{}", seg(&node), seg(&name)), None)
            }
        },
    }
}

/// `node describe`: each node with its interfaces, storage pools and
/// resources (with their volumes) as an indented tree; `-m` gives the same
/// as JSON objects.
fn describe(ctx: &Ctx, name: Option<&str>) -> i32 {
    let q = name.map(|n| format!("?nodes={}", seg(n))).unwrap_or_default();
    let nodes: Vec<Node> = match ctx.get(&format!("/v1/nodes{q}")) {
        Ok(n) => n,
        Err(code) => return code,
    };
    if let Some(n) = name
        && !nodes.iter().any(|x| x.name.eq_ignore_ascii_case(n))
    {
        return ctx.problem(cairn_api::rc::FAIL_NOT_FOUND_NODE, format!("Node '{n}' not found."));
    }
    let pools: Vec<serde_json::Value> = match ctx.get(&format!("/v1/view/storage-pools{q}")) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let rscs: Vec<cairn_api::resource::ResourceWithVolumes> = match ctx.get(&format!("/v1/view/resources{q}")) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let on = |v: &serde_json::Value, n: &Node| v["node_name"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(&n.name));
    let mut json = Vec::new();
    let mut text = String::new();
    for n in &nodes {
        let my_pools: Vec<&serde_json::Value> = pools.iter().filter(|p| on(p, n)).collect();
        let my_rscs: Vec<&cairn_api::resource::ResourceWithVolumes> =
            rscs.iter().filter(|r| r.resource.node_name.eq_ignore_ascii_case(&n.name)).collect();
        json.push(serde_json::json!({ "node": n, "storage_pools": my_pools, "resources": my_rscs }));
        text.push_str(&format!("{} ({}, {})\n", n.name, n.node_type, n.connection_status.as_deref().unwrap_or("UNKNOWN")));
        text.push_str("├── Network interfaces\n");
        for (i, nif) in n.net_interfaces.iter().enumerate() {
            let last = i + 1 == n.net_interfaces.len();
            let port = nif.satellite_port.map(|p| format!(":{p}")).unwrap_or_default();
            text.push_str(&format!("│   {} {} {}{port}\n", if last { "└──" } else { "├──" }, nif.name, nif.address));
        }
        text.push_str("├── Storage pools\n");
        for (i, p) in my_pools.iter().enumerate() {
            let last = i + 1 == my_pools.len();
            let name = p["storage_pool_name"].as_str().unwrap_or_default();
            let kind = p["provider_kind"].as_str().unwrap_or_default();
            text.push_str(&format!("│   {} {name} ({kind})\n", if last { "└──" } else { "├──" }));
        }
        text.push_str("└── Resources\n");
        for (i, r) in my_rscs.iter().enumerate() {
            let last = i + 1 == my_rscs.len();
            let flags = if r.resource.flags.is_empty() { String::new() } else { format!(" [{}]", r.resource.flags.join(", ")) };
            text.push_str(&format!("    {} {}{flags}\n", if last { "└──" } else { "├──" }, r.resource.name));
            for (j, v) in r.volumes.iter().enumerate() {
                let vlast = j + 1 == r.volumes.len();
                text.push_str(&format!(
                    "    {}   {} volume {}: {}, {}, {}\n",
                    if last { " " } else { "│" },
                    if vlast { "└──" } else { "├──" },
                    v.volume_number,
                    v.storage_pool_name,
                    v.device_path.as_deref().unwrap_or("-"),
                    v.state.disk_state.as_deref().unwrap_or("Unknown")
                ));
            }
        }
    }
    if ctx.machine {
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        print!("{text}");
    }
    0
}
