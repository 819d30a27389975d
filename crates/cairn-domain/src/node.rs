//! Nodes and their network interfaces.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cairn_api::node as wire;
use cairn_api::rc::{self, ApiCallRc};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::storage_pool::{ProviderKind, StorPool};
use crate::{Ctx, DEFAULT_DISKLESS_STOR_POOL, Props, props};

/// Node types (`Node.Type`), shown upper-case, accepted in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeType {
    Controller,
    Satellite,
    Combined,
    Auxiliary,
    RemoteSpdk,
    EbsTarget,
}

impl NodeType {
    pub fn parse(s: &str) -> Option<NodeType> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "CONTROLLER" => NodeType::Controller,
            "SATELLITE" => NodeType::Satellite,
            "COMBINED" => NodeType::Combined,
            "AUXILIARY" => NodeType::Auxiliary,
            "REMOTE_SPDK" => NodeType::RemoteSpdk,
            "EBS_TARGET" => NodeType::EbsTarget,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Controller => "CONTROLLER",
            NodeType::Satellite => "SATELLITE",
            NodeType::Combined => "COMBINED",
            NodeType::Auxiliary => "AUXILIARY",
            NodeType::RemoteSpdk => "REMOTE_SPDK",
            NodeType::EbsTarget => "EBS_TARGET",
        }
    }

    /// Whether the node runs a satellite that holds storage.
    pub fn has_satellite(self) -> bool {
        matches!(self, NodeType::Satellite | NodeType::Combined)
    }

    /// The storage providers a node of this type may have.
    pub fn allows(self, kind: ProviderKind) -> bool {
        use ProviderKind::*;
        match self {
            NodeType::Satellite | NodeType::Combined => !matches!(kind, RemoteSpdk | EbsTarget),
            NodeType::RemoteSpdk => kind == RemoteSpdk,
            NodeType::EbsTarget => kind == EbsTarget,
            NodeType::Controller | NodeType::Auxiliary => false,
        }
    }
}

/// A network interface of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    pub name: String,
    pub address: IpAddr,
    pub satellite_port: Option<u16>,
    /// `PLAIN` or `SSL` when `satellite_port` is set.
    pub satellite_encryption_type: Option<String>,
    pub is_active: bool,
    pub uuid: String,
}

/// A node (desired state; connection state is observed and lives elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub node_type: NodeType,
    pub flags: BTreeSet<String>,
    pub props: Props,
    pub net_interfaces: Vec<NetInterface>,
    pub uuid: String,
}

const CRT: i64 = rc::MASK_CRT | rc::MASK_NODE;
const MOD: i64 = rc::MASK_MOD | rc::MASK_NODE;
const DEL: i64 = rc::MASK_DEL | rc::MASK_NODE;

impl Node {
    /// The wire form; `connection_status` is observed state passed in.
    pub fn to_api(&self, connection_status: &str) -> wire::Node {
        wire::Node {
            name: self.name.clone(),
            node_type: self.node_type.as_str().to_string(),
            flags: self.flags.iter().cloned().collect(),
            props: {
                // Nodes stored before the property was kept get it shown too.
                let mut props = self.props.clone();
                if let Some(n) = self.net_interfaces.iter().find(|n| n.is_active) {
                    props.entry(PROP_CUR_STLT_CONN_NAME.to_string()).or_insert_with(|| n.name.clone());
                }
                props
            },
            net_interfaces: self.net_interfaces.iter().map(NetInterface::to_api).collect(),
            connection_status: Some(connection_status.to_string()),
            uuid: Some(self.uuid.clone()),
            ..Default::default()
        }
    }
}

impl NetInterface {
    pub fn to_api(&self) -> wire::NetInterface {
        wire::NetInterface {
            name: self.name.clone(),
            address: self.address.to_string(),
            satellite_port: self.satellite_port.map(i64::from),
            satellite_encryption_type: self.satellite_encryption_type.clone(),
            is_active: Some(self.is_active),
            uuid: Some(self.uuid.clone()),
        }
    }

    /// Validates a wire interface; `op_obj` is the request's mask.
    pub fn from_api(w: &wire::NetInterface, node_type: NodeType, op_obj: i64, uuid: String) -> OpResult<NetInterface> {
        name::check(NameKind::NetInterface, &w.name, op_obj)?;
        let address: IpAddr = w.address.trim().parse().map_err(|_| {
            OpError::new(op_obj, rc::FAIL_INVLD_NET_ADDR, format!("The address '{}' is not a valid IP address.", w.address))
                .cause("Net interface addresses must be IPv4 or IPv6 literals; clients decode them as IPs.")
                .correction("Give the interface's IP address, e.g. 192.168.0.10 or fd00::10.")
        })?;
        let enc = match &w.satellite_encryption_type {
            None => None,
            Some(e) => match e.trim().to_ascii_uppercase().as_str() {
                "PLAIN" => Some("PLAIN".to_string()),
                "SSL" => Some("SSL".to_string()),
                "" => None,
                _ => {
                    return Err(OpError::new(op_obj, rc::FAIL_INVLD_NET_TYPE, format!("The satellite encryption type '{e}' is invalid."))
                        .correction("Use PLAIN or SSL."));
                }
            },
        };
        let port = match w.satellite_port {
            None => None,
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => {
                return Err(OpError::new(op_obj, rc::FAIL_INVLD_NET_PORT, format!("The satellite port {p} is invalid."))
                    .correction("Use a TCP port from 1 to 65535."));
            }
        };
        // A port without an encryption type means PLAIN; an encryption type
        // without a port gets LINSTOR's default port for the node kind.
        let (port, enc) = match (port, enc) {
            (Some(p), e) => (Some(p), Some(e.unwrap_or_else(|| "PLAIN".into()))),
            (None, Some(e)) => {
                let dflt = match (node_type, e.as_str()) {
                    (NodeType::Controller, "SSL") => 3371,
                    (NodeType::Controller, _) => 3370,
                    (_, "SSL") => 3367,
                    _ => 3366,
                };
                (Some(dflt), Some(e))
            }
            (None, None) => (None, None),
        };
        Ok(NetInterface {
            name: w.name.clone(),
            address,
            satellite_port: port,
            satellite_encryption_type: enc,
            is_active: w.is_active.unwrap_or(false),
            uuid,
        })
    }
}

fn not_found(op_obj: i64, node: &str) -> OpError {
    OpError::new(op_obj, rc::FAIL_NOT_FOUND_NODE, format!("Node '{node}' not found."))
        .cause(format!("The specified node '{node}' could not be found in the database."))
        .correction("Create a node with the name specified or use an existing node.")
        .obj_ref("Node", node)
}

/// The node property LINSTOR keeps the name of the active satellite
/// connection in (`ApiConsts.KEY_CUR_STLT_CONN_NAME`, set by
/// `Node.setActiveStltConn`).
pub const PROP_CUR_STLT_CONN_NAME: &str = "CurStltConnName";

/// Records the active interface in `CurStltConnName`, or removes the
/// property when no interface is active.
fn record_active(node: &mut Node) {
    match node.net_interfaces.iter().find(|n| n.is_active) {
        Some(n) => {
            node.props.insert(PROP_CUR_STLT_CONN_NAME.to_string(), n.name.clone());
        }
        None => {
            node.props.remove(PROP_CUR_STLT_CONN_NAME);
        }
    }
}

/// Makes exactly one satellite-capable interface active: the one the caller
/// asked for, else the first with a satellite port.
fn settle_active(nifs: &mut [NetInterface]) {
    let chosen = nifs
        .iter()
        .position(|n| n.is_active && n.satellite_port.is_some())
        .or_else(|| nifs.iter().position(|n| n.satellite_port.is_some()));
    for (i, n) in nifs.iter_mut().enumerate() {
        n.is_active = Some(i) == chosen;
    }
}

impl Cluster {
    pub fn node(&self, name: &str, op_obj: i64) -> OpResult<&Node> {
        self.nodes.get(&key(name)).ok_or_else(|| not_found(op_obj, name))
    }

    /// `POST /v1/nodes`.
    pub fn create_node(&self, req: &wire::Node, ctx: &mut Ctx) -> OpResult<Outcome> {
        name::check(NameKind::Node, &req.name, CRT)?;
        let node_type = NodeType::parse(&req.node_type).ok_or_else(|| {
            OpError::new(CRT, rc::FAIL_INVLD_NODE_TYPE, format!("The node type '{}' is invalid.", req.node_type))
                .correction("Use one of SATELLITE, COMBINED, CONTROLLER, AUXILIARY, REMOTE_SPDK, EBS_TARGET.")
        })?;
        if let Some(existing) = self.nodes.get(&key(&req.name)) {
            return Err(OpError::new(CRT, rc::FAIL_EXISTS_NODE, format!("A node with the name '{}' already exists.", req.name))
                .cause(format!("Node '{}' was registered before.", existing.name))
                .correction("Use another name, or delete the existing node first.")
                .obj_ref("Node", &existing.name));
        }
        let node_props = props::checked(crate::whitelist::PropsObj::Node, &req.props, CRT)?;
        let mut nifs = Vec::new();
        for w in &req.net_interfaces {
            if nifs.iter().any(|n: &NetInterface| n.name.eq_ignore_ascii_case(&w.name)) {
                return Err(OpError::new(CRT, rc::FAIL_EXISTS_NET_IF, format!("The net interface '{}' is given twice.", w.name)));
            }
            nifs.push(NetInterface::from_api(w, node_type, CRT, ctx.uuid())?);
        }
        if node_type.has_satellite() && !nifs.iter().any(|n| n.satellite_port.is_some()) {
            return Err(OpError::new(
                CRT,
                rc::FAIL_MISSING_NETCOM,
                format!("Node '{}' has no net interface the controller could reach its satellite on.", req.name),
            )
            .correction("Give at least one net interface with an address and a satellite_port (or satellite_encryption_type)."));
        }
        settle_active(&mut nifs);
        let mut node =
            Node { name: req.name.clone(), node_type, flags: BTreeSet::new(), props: node_props, net_interfaces: nifs, uuid: ctx.uuid() };
        record_active(&mut node);
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_NODE, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(CRT, rc::CREATED, format!("New node '{}' registered.", node.name))
                .with_details(format!("Node '{}' UUID is: {}", node.name, node.uuid))
                .with_ref("Node", &node.name),
        );
        if node_type.has_satellite() {
            out.put(Object::StorPool(StorPool::new(
                &node.name,
                DEFAULT_DISKLESS_STOR_POOL,
                ProviderKind::Diskless,
                Props::new(),
                None,
                false,
                ctx.uuid(),
            )));
        }
        out.put(Object::Node(node));
        Ok(out)
    }

    /// `PUT /v1/nodes/{node}`.
    pub fn modify_node(&self, name: &str, req: &wire::NodeModify) -> OpResult<Outcome> {
        let mut node = self.node(name, MOD)?.clone();
        if let Some(t) = &req.node_type {
            let t = NodeType::parse(t).ok_or_else(|| {
                OpError::new(MOD, rc::FAIL_INVLD_NODE_TYPE, format!("The node type '{t}' is invalid."))
                    .correction("Use one of SATELLITE, COMBINED, CONTROLLER, AUXILIARY.")
            })?;
            if t != node.node_type && self.stor_pools_of(&key(name)).any(|p| !t.allows(p.provider_kind)) {
                return Err(OpError::new(MOD, rc::FAIL_INVLD_NODE_TYPE, format!("Node '{}' cannot become {}.", node.name, t.as_str()))
                    .cause("The node has storage pools that a node of that type cannot have.")
                    .correction("Delete those storage pools first."));
            }
            node.node_type = t;
        }
        node.props = props::apply(crate::whitelist::PropsObj::Node, &node.props, &req.props, MOD)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_NODE, &req.props) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(MOD, rc::MODIFIED, format!("Node '{}' modified.", node.name)).with_ref("Node", &node.name));
        out.put(Object::Node(node));
        Ok(out)
    }

    /// First step of `DELETE /v1/nodes/{node}`, as LINSTOR's
    /// CtrlNodeDeleteApiCallHandler: a node that does not exist is a
    /// warning ("had no effect"); a node with a resource in use
    /// (`in_use`, observed) or with the last diskful replica of a definition
    /// that still has diskless replicas is refused with an entry per
    /// resource and FAIL_NODE_HAS_USED_RSC; otherwise its resources are
    /// deleted (the satellite removes them), and [`Cluster::delete_node`]
    /// removes the node once they are gone.
    pub fn delete_node_resources(&self, name: &str, in_use: &dyn Fn(&crate::resource::Resource) -> bool) -> OpResult<Outcome> {
        let mut out = Outcome::default();
        let Some(node) = self.nodes.get(&key(name)) else {
            out.reply(
                ApiCallRc::warning(DEL, rc::WARN_NOT_FOUND, format!("Deletion of node '{name}' had no effect."))
                    .with_cause(format!("Node '{name}' does not exist."))
                    .with_ref("Node", name),
            );
            return Ok(out);
        };
        let k = key(&node.name);
        let mut blockers = Vec::new();
        for r in self.resources_on(&k) {
            if in_use(r) {
                blockers.push(
                    ApiCallRc::error(DEL, rc::FAIL_IN_USE, format!("Resource '{}' is still in use.", r.resource_definition))
                        .with_cause("Resource is mounted/in use.")
                        .with_correction(format!("Un-mount resource '{}' on the node '{}'.", r.resource_definition, node.name))
                        .with_ref("Node", &node.name),
                );
            }
            let rd = key(&r.resource_definition);
            let others: Vec<&crate::resource::Resource> = self.resources_of(&rd).filter(|o| key(&o.node) != k).collect();
            if !r.is_diskless() && others.iter().any(|o| o.is_diskless()) && !others.iter().any(|o| !o.is_diskless()) {
                blockers.push(
                    ApiCallRc::error(
                        DEL,
                        rc::FAIL_IN_USE,
                        format!("Last resource of '{}' with disk still has diskless resources attached.", r.resource_definition),
                    )
                    .with_cause("Resource still has diskless users.")
                    .with_correction("Before deleting this resource, delete the diskless resources attached to it.")
                    .with_ref("Node", &node.name),
                );
            }
        }
        if !blockers.is_empty() {
            out.replies = blockers;
            out.reply(
                ApiCallRc::error(DEL, rc::FAIL_NODE_HAS_USED_RSC, "Cannot delete node, because it has in use or last diskful resources.")
                    .with_cause(format!("Node '{}' cannot be deleted.", node.name))
                    .with_ref("Node", &node.name),
            );
            return Ok(out);
        }
        let names: Vec<String> = self.resources_on(&k).map(|r| r.resource_definition.clone()).collect();
        for rd in names {
            let o = self.delete_resource(&rd, &node.name)?;
            out.changes.extend(o.changes);
            out.replies.extend(o.replies);
        }
        Ok(out)
    }

    /// `DELETE /v1/nodes/{node}` after [`Cluster::delete_node_resources`]:
    /// removes the node with its storage pools and node connections;
    /// refused while resources remain on it.
    pub fn delete_node(&self, name: &str) -> OpResult<Outcome> {
        let node = self.node(name, DEL)?;
        let k = key(&node.name);
        let rscs: Vec<&str> = self.resources_on(&k).map(|r| r.resource_definition.as_str()).collect();
        if !rscs.is_empty() {
            return Err(OpError::new(DEL, rc::FAIL_IN_USE, format!("Node '{}' still has resources.", node.name))
                .cause(format!("Resources on the node: {}", rscs.join(", ")))
                .correction("Delete or move those resources first, or use 'node lost' if the node is gone for good.")
                .obj_ref("Node", &node.name));
        }
        Ok(self.remove_node(node, DEL, "deleted"))
    }

    /// `DELETE /v1/nodes/{node}/lost`: the node is gone for good; its
    /// resources are removed from the cluster with it.
    pub fn lose_node(&self, name: &str) -> OpResult<Outcome> {
        let node = self.node(name, DEL)?;
        let mut out = self.remove_node(node, DEL, "deleted (lost)");
        let k = key(&node.name);
        for r in self.resources_on(&k) {
            out.delete(ObjKey::Rsc(key(&r.resource_definition), k.clone()));
        }
        Ok(out)
    }

    fn remove_node(&self, node: &Node, op_obj: i64, verb: &str) -> Outcome {
        let k = key(&node.name);
        let mut out = Outcome::default();
        for p in self.stor_pools_of(&k) {
            out.delete(ObjKey::StorPool(k.clone(), key(&p.name)));
        }
        for (a, b) in self.node_conns.keys() {
            if *a == k || *b == k {
                out.delete(ObjKey::NodeConn(a.clone(), b.clone()));
            }
        }
        out.delete(ObjKey::Node(k));
        out.reply(
            ApiCallRc::success(op_obj, rc::DELETED, format!("Node '{}' {verb}.", node.name))
                .with_details(format!("Node '{}' UUID was: {}", node.name, node.uuid))
                .with_ref("Node", &node.name),
        );
        out
    }

    /// `POST /v1/nodes/{node}/net-interfaces`.
    pub fn create_net_interface(&self, node: &str, req: &wire::NetInterface, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_NET_IF;
        let mut n = self.node(node, OP)?.clone();
        if n.net_interfaces.iter().any(|i| i.name.eq_ignore_ascii_case(&req.name)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_NET_IF,
                format!("Net interface '{}' already exists on node '{}'.", req.name, n.name),
            )
            .correction("Use another name or modify the existing interface."));
        }
        let nif = NetInterface::from_api(req, n.node_type, OP, ctx.uuid())?;
        let msg = format!("New net interface '{}' on node '{}' created.", nif.name, n.name);
        let want_active = nif.is_active;
        n.net_interfaces.push(nif);
        if want_active {
            let last = n.net_interfaces.len() - 1;
            for (i, x) in n.net_interfaces.iter_mut().enumerate() {
                x.is_active = i == last;
            }
        }
        settle_active(&mut n.net_interfaces);
        record_active(&mut n);
        let mut out = Outcome::default();
        out.reply(ApiCallRc::success(OP, rc::CREATED, msg).with_ref("Node", &n.name).with_ref("NetIf", &req.name));
        out.put(Object::Node(n));
        Ok(out)
    }

    /// `PUT /v1/nodes/{node}/net-interfaces/{nif}`.
    pub fn modify_net_interface(&self, node: &str, nif: &str, req: &wire::NetInterface) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_NET_IF;
        let mut n = self.node(node, OP)?.clone();
        let node_type = n.node_type;
        let idx = n.net_interfaces.iter().position(|i| i.name.eq_ignore_ascii_case(nif)).ok_or_else(|| nif_not_found(OP, &n.name, nif))?;
        let cur = &n.net_interfaces[idx];
        let merged = wire::NetInterface {
            name: cur.name.clone(),
            address: if req.address.is_empty() { cur.address.to_string() } else { req.address.clone() },
            satellite_port: req.satellite_port.or(cur.satellite_port.map(i64::from)),
            satellite_encryption_type: req.satellite_encryption_type.clone().or(cur.satellite_encryption_type.clone()),
            is_active: req.is_active.or(Some(cur.is_active)),
            uuid: None,
        };
        let updated = NetInterface::from_api(&merged, node_type, OP, cur.uuid.clone())?;
        if updated.is_active {
            n.net_interfaces.iter_mut().for_each(|x| x.is_active = false);
        }
        n.net_interfaces[idx] = updated;
        settle_active(&mut n.net_interfaces);
        record_active(&mut n);
        let mut out = Outcome::default();
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Net interface '{}' on node '{}' modified.", n.net_interfaces[idx].name, n.name))
                .with_ref("Node", &n.name),
        );
        out.put(Object::Node(n));
        Ok(out)
    }

    /// `DELETE /v1/nodes/{node}/net-interfaces/{nif}`: the last interface
    /// of a satellite node cannot go.
    pub fn delete_net_interface(&self, node: &str, nif: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_NET_IF;
        let mut n = self.node(node, OP)?.clone();
        let idx = n.net_interfaces.iter().position(|i| i.name.eq_ignore_ascii_case(nif)).ok_or_else(|| nif_not_found(OP, &n.name, nif))?;
        let removed = n.net_interfaces.remove(idx);
        if n.node_type.has_satellite() && !n.net_interfaces.iter().any(|i| i.satellite_port.is_some()) {
            return Err(OpError::new(
                OP,
                rc::FAIL_IN_USE,
                format!("Net interface '{}' is the satellite connection of node '{}'.", removed.name, n.name),
            )
            .correction("Create another interface with a satellite port first."));
        }
        settle_active(&mut n.net_interfaces);
        record_active(&mut n);
        let mut out = Outcome::default();
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("Net interface '{}' on node '{}' deleted.", removed.name, n.name))
                .with_ref("Node", &n.name),
        );
        out.put(Object::Node(n));
        Ok(out)
    }
}

pub(crate) fn nif_not_found(op: i64, node: &str, nif: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_NET_IF, format!("Net interface '{nif}' on node '{node}' not found."))
        .correction("Use an existing net interface name.")
}
