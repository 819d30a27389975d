//! Resource connections: properties on the connection between the replicas
//! of one resource on two nodes (DRBD paths, per-connection DRBD options).
//! They beat the node connection of the same pair, as in LINSTOR.

use std::collections::BTreeSet;

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::{PropsModify, node_connection as wire};
use serde::{Deserialize, Serialize};

use crate::cluster::{Change, Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::node_connection::NodeConnection;
use crate::{Props, props};

/// The namespace of a connection's network paths.
pub const PATHS_NAMESPACE: &str = "Paths";

/// Properties of the connection between two replicas of a resource;
/// `node_a` sorts first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceConnection {
    pub resource_definition: String,
    pub node_a: String,
    pub node_b: String,
    pub props: Props,
    #[serde(default)]
    pub flags: BTreeSet<String>,
}

impl ResourceConnection {
    /// The map key: upper-case definition and node names, nodes sorted.
    pub fn map_key(rd: &str, a: &str, b: &str) -> (String, String, String) {
        let (a, b) = NodeConnection::sorted_keys(a, b);
        (key(rd), a, b)
    }

    pub fn to_api(&self) -> wire::ResourceConnection {
        wire::ResourceConnection {
            node_a: self.node_a.clone(),
            node_b: self.node_b.clone(),
            props: self.props.clone(),
            flags: self.flags.iter().cloned().collect(),
        }
    }
}

fn description(a: &str, b: &str, rd: &str) -> String {
    format!("resource connection between nodes '{a}' and '{b}' for resource '{rd}'")
}

/// Checks `Paths/<path>/<node>=<interface>` keys as LINSTOR does: the node
/// must be one of the pair and the interface one of that node's.
fn check_paths(req: &PropsModify, nodes: [&crate::node::Node; 2], op: i64) -> OpResult<()> {
    for (k, v) in &req.override_props {
        let k = k.strip_prefix('/').unwrap_or(k);
        let Some(rest) = k.strip_prefix("Paths/") else { continue };
        let Some((path, node)) = rest.split_once('/').filter(|(p, n)| !p.is_empty() && !n.is_empty() && !n.contains('/')) else {
            return Err(OpError::new(op, rc::FAIL_INVLD_PROP, "Connection path property invalid.")
                .cause(format!("The key '{k}' is invalid."))
                .correction("Path keys are 'Paths/<path name>/<node name>' with a network interface of that node as value."));
        };
        let Some(n) = nodes.iter().find(|n| key(&n.name) == key(node)) else {
            return Err(
                OpError::new(op, rc::FAIL_INVLD_PROP, "Connection path node unknown.").cause(format!("The node name '{node}' is unknown."))
            );
        };
        if !n.net_interfaces.iter().any(|i| i.name.eq_ignore_ascii_case(v)) {
            return Err(OpError::new(op, rc::FAIL_INVLD_PROP, "NetInterface for node unknown.")
                .cause(format!("The Netinterface '{v}' is not known for node '{}'", n.name))
                .correction(format!("Path '{path}' must name a network interface of node '{}'.", n.name)));
        }
    }
    Ok(())
}

impl Cluster {
    /// The stored connection of a pair, if any.
    pub fn rsc_conn(&self, rd: &str, a: &str, b: &str) -> Option<&ResourceConnection> {
        self.rsc_conns.get(&ResourceConnection::map_key(rd, a, b))
    }

    /// `GET …/resource-connections`: one entry for every pair of the
    /// definition's resources, with its properties when it has any (as
    /// LINSTOR lists them). An unknown definition has none.
    pub fn rsc_conns_of(&self, rd: &str) -> Vec<wire::ResourceConnection> {
        let Some(d) = self.rsc_dfns.get(&key(rd)) else { return Vec::new() };
        let rd_key = key(&d.name);
        let nodes: Vec<String> = self.resources_of(&rd_key).map(|r| r.node.clone()).collect();
        let mut out = Vec::new();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                out.push(self.rsc_conn(&rd_key, a, b).map(|c| c.to_api()).unwrap_or_else(|| {
                    let (first, second) = if key(a) <= key(b) { (a, b) } else { (b, a) };
                    wire::ResourceConnection { node_a: first.clone(), node_b: second.clone(), ..Default::default() }
                }));
            }
        }
        out
    }

    /// `GET …/resource-connections/{a}/{b}`: the pair's connection; both
    /// replicas must exist.
    pub fn rsc_conn_of(&self, rd: &str, a: &str, b: &str) -> OpResult<wire::ResourceConnection> {
        const OP: i64 = rc::MASK_RSC_CONN;
        let ra = self.resource(rd, a, OP)?;
        let rb = self.resource(rd, b, OP)?;
        if key(&ra.node) == key(&rb.node) {
            return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_RSC_CONN, format!("Resource connection between '{a}' and '{b}' not found."))
                .cause("A resource connection joins two different nodes."));
        }
        Ok(self.rsc_conn(&ra.resource_definition, &ra.node, &rb.node).map(|c| c.to_api()).unwrap_or_else(|| {
            let (first, second) = if key(&ra.node) <= key(&rb.node) { (ra, rb) } else { (rb, ra) };
            wire::ResourceConnection { node_a: first.node.clone(), node_b: second.node.clone(), ..Default::default() }
        }))
    }

    /// `PUT …/resource-connections/{a}/{b}`: creates the connection on
    /// first use; both replicas must exist.
    pub fn modify_rsc_conn(&self, rd: &str, a: &str, b: &str, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC_CONN;
        let ra = self.resource(rd, a, OP)?;
        let rb = self.resource(rd, b, OP)?;
        if key(&ra.node) == key(&rb.node) {
            return Err(OpError::new(OP, rc::FAIL_INVLD_NODE_NAME, "A resource connection needs two different nodes.")
                .obj_ref("RscDfn", &ra.resource_definition));
        }
        let (na, nb) = (self.node(&ra.node, OP)?, self.node(&rb.node, OP)?);
        check_paths(req, [na, nb], OP)?;
        let (first, second) = if key(&na.name) <= key(&nb.name) { (na, nb) } else { (nb, na) };
        let mut conn = self.rsc_conn(&ra.resource_definition, &na.name, &nb.name).cloned().unwrap_or_else(|| ResourceConnection {
            resource_definition: ra.resource_definition.clone(),
            node_a: first.name.clone(),
            node_b: second.name.clone(),
            props: Props::new(),
            flags: BTreeSet::new(),
        });
        conn.props = props::apply(crate::whitelist::PropsObj::RscConn, &conn.props, req, OP)?;
        let mut out = Outcome::default();
        out.reply(
            ApiCallRc::success(
                OP,
                rc::MODIFIED,
                format!("Successfully updated properties of {}.", description(&conn.node_a, &conn.node_b, &conn.resource_definition)),
            )
            .with_ref("FirstNode", &conn.node_a)
            .with_ref("SecondNode", &conn.node_b)
            .with_ref("RscDfn", &conn.resource_definition),
        );
        out.put(Object::RscConn(conn));
        Ok(out)
    }

    /// The resource connections that go with the resources `changes`
    /// delete (a resource put back in the same change keeps them).
    pub fn rsc_conn_cascade(&self, changes: &[Change]) -> Vec<Change> {
        let mut gone: BTreeSet<(String, String)> = BTreeSet::new();
        for ch in changes {
            match ch {
                Change::Delete(ObjKey::Rsc(rd, node)) => {
                    gone.insert((rd.clone(), node.clone()));
                }
                Change::Put(o) => {
                    if let ObjKey::Rsc(rd, node) = o.key() {
                        gone.remove(&(rd, node));
                    }
                }
                _ => {}
            }
        }
        let already: BTreeSet<ObjKey> = changes.iter().filter(|c| matches!(c, Change::Delete(_))).map(Change::key).collect();
        self.rsc_conns
            .keys()
            .filter(|(rd, a, b)| gone.contains(&(rd.clone(), a.clone())) || gone.contains(&(rd.clone(), b.clone())))
            .map(|(rd, a, b)| ObjKey::RscConn(rd.clone(), a.clone(), b.clone()))
            .filter(|k| !already.contains(k))
            .map(Change::Delete)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::node::NetInterface as WireNif;
    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
    };

    use super::*;
    use crate::Ctx;
    use crate::desired::{affected_nodes, desired_for_node};
    use cairn_proto::DrbdPath;

    fn apply_ok(c: &mut Cluster, o: OpResult<Outcome>) -> Outcome {
        let o = o.unwrap_or_else(|e| panic!("{}: {:?}", e.rc.message, e.rc.cause));
        c.apply(o.changes.clone());
        o
    }

    fn run(c: &mut Cluster, f: impl FnOnce(&Cluster) -> OpResult<Outcome>) -> Outcome {
        let o = f(c);
        apply_ok(c, o)
    }

    fn props(kv: &[(&str, &str)]) -> PropsModify {
        PropsModify { override_props: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    /// Three nodes with interfaces `data` and `repl`, resource `web` with
    /// DRBD on all three.
    fn cluster() -> Cluster {
        let mut ctx = Ctx::deterministic();
        let mut c = crate::testing::seeded();
        for (n, last) in [("n1", 1), ("n2", 2), ("n3", 3)] {
            let o = c.create_node(&crate::testing::satellite(n, &[]), &mut ctx);
            apply_ok(&mut c, o);
            for (nif, net) in [("data", 10), ("repl", 11)] {
                let req = WireNif { name: nif.into(), address: format!("10.{net}.0.{last}"), ..Default::default() };
                let o = c.create_net_interface(n, &req, &mut ctx);
                apply_ok(&mut c, o);
            }
            let o = c.create_stor_pool(n, &crate::testing::pool("DfltStorPool", "FILE_THIN", "/srv/p"), &mut ctx);
            apply_ok(&mut c, o);
        }
        let rd =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "web".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_rsc_dfn(&rd, &mut ctx);
        apply_ok(&mut c, o);
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
        let o = c.create_vlm_dfn("web", &vd, &mut ctx);
        apply_ok(&mut c, o);
        let reqs: Vec<ResourceCreate> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| ResourceCreate { resource: WireRsc { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
            .collect();
        let o = c.create_resources("web", &reqs, None, &mut ctx);
        apply_ok(&mut c, o);
        c
    }

    fn peer(c: &Cluster, node: &str, peer_host: &str) -> cairn_proto::DrbdPeer {
        let d = desired_for_node(c, node).1[0].drbd.clone().unwrap();
        d.peers.into_iter().find(|p| p.host == peer_host).unwrap()
    }

    #[test]
    fn every_pair_is_listed_and_a_modified_one_carries_its_properties() {
        let mut c = cluster();
        let list = c.rsc_conns_of("WEB");
        assert_eq!(
            list.iter().map(|l| (l.node_a.as_str(), l.node_b.as_str())).collect::<Vec<_>>(),
            [("n1", "n2"), ("n1", "n3"), ("n2", "n3")]
        );
        assert!(list.iter().all(|l| l.props.is_empty()));
        assert!(c.rsc_conns_of("nope").is_empty(), "an unknown definition has no connections");
        let o = run(&mut c, |c: &Cluster| c.modify_rsc_conn("web", "N3", "n1", &props(&[("DrbdOptions/Net/protocol", "A")])));
        assert_eq!(o.replies[0].ret_code, rc::MASK_MOD | rc::MASK_RSC_CONN | rc::MODIFIED);
        assert_eq!(affected_nodes(&c, &o.changes), BTreeSet::from(["N1".to_string(), "N3".to_string()]));
        let one = c.rsc_conn_of("web", "n3", "n1").unwrap();
        assert_eq!((one.node_a.as_str(), one.node_b.as_str()), ("n1", "n3"), "sorted, with the nodes' own names");
        assert_eq!(one.props.get("DrbdOptions/Net/protocol").map(String::as_str), Some("A"));
        assert_eq!(c.rsc_conns_of("web")[1].props.len(), 1);
        // Deleting the property keeps the (now empty) connection object.
        let del = PropsModify { delete_props: vec!["DrbdOptions/Net/protocol".into()], ..Default::default() };
        run(&mut c, |c: &Cluster| c.modify_rsc_conn("web", "n1", "n3", &del));
        assert!(c.rsc_conn_of("web", "n1", "n3").unwrap().props.is_empty());
    }

    #[test]
    fn bad_pairs_and_bad_paths_are_refused_with_linstors_codes() {
        let mut c = cluster();
        let code = |r: OpResult<Outcome>| r.unwrap_err().rc.code();
        assert_eq!(code(c.modify_rsc_conn("nope", "n1", "n2", &props(&[]))), rc::FAIL_NOT_FOUND_RSC_DFN);
        assert_eq!(code(c.modify_rsc_conn("web", "n1", "n9", &props(&[]))), rc::FAIL_NOT_FOUND_NODE);
        assert_eq!(code(c.modify_rsc_conn("web", "n1", "n1", &props(&[]))), rc::FAIL_INVLD_NODE_NAME);
        assert_eq!(c.rsc_conn_of("web", "n2", "n2").unwrap_err().rc.code(), rc::FAIL_NOT_FOUND_RSC_CONN);
        let e = c.modify_rsc_conn("web", "n1", "n2", &props(&[("Paths/p1/n3", "data")])).unwrap_err();
        assert_eq!((e.rc.code(), e.rc.message.as_str()), (rc::FAIL_INVLD_PROP, "Connection path node unknown."));
        let e = c.modify_rsc_conn("web", "n1", "n2", &props(&[("Paths/p1/n1", "nic9")])).unwrap_err();
        assert_eq!((e.rc.code(), e.rc.message.as_str()), (rc::FAIL_INVLD_PROP, "NetInterface for node unknown."));
        let e = c.modify_rsc_conn("web", "n1", "n2", &props(&[("Paths/p1", "data")])).unwrap_err();
        assert_eq!((e.rc.code(), e.rc.message.as_str()), (rc::FAIL_INVLD_PROP, "Connection path property invalid."));
        // Without a replica on a node there is no connection to it.
        let o = c.delete_resource("web", "n3");
        apply_ok(&mut c, o);
        assert_eq!(code(c.modify_rsc_conn("web", "n1", "n3", &props(&[]))), rc::FAIL_NOT_FOUND_RSC);
    }

    #[test]
    fn paths_and_options_beat_the_node_connection_and_reach_only_their_pair() {
        let mut c = cluster();
        run(&mut c, |c: &Cluster| {
            c.modify_node_conn(
                "n1",
                "n2",
                &props(&[("Paths/x/n1", "data"), ("Paths/x/n2", "data"), ("DrbdOptions/Net/max-buffers", "1000")]),
            )
        });
        assert_eq!(peer(&c, "N1", "n2").paths, vec![DrbdPath { local: "10.10.0.1".into(), peer: "10.10.0.2".into() }]);
        assert_eq!(peer(&c, "N1", "n2").options.get("DrbdOptions/Net/max-buffers").map(String::as_str), Some("1000"));
        run(&mut c, |c: &Cluster| {
            c.modify_rsc_conn(
                "web",
                "n2",
                "n1",
                &props(&[
                    ("Paths/y/n1", "repl"),
                    ("Paths/y/n2", "repl"),
                    ("DrbdOptions/Net/max-buffers", "2000"),
                    ("DrbdOptions/Net/protocol", "A"),
                    ("DrbdOptions/PeerDevice/c-max-rate", "51200"),
                ]),
            )
        });
        let p = peer(&c, "N1", "n2");
        assert_eq!(p.paths, vec![DrbdPath { local: "10.11.0.1".into(), peer: "10.11.0.2".into() }], "the resource connection's paths");
        assert_eq!(p.options.get("DrbdOptions/Net/max-buffers").map(String::as_str), Some("2000"));
        assert_eq!(p.options.get("DrbdOptions/PeerDevice/c-max-rate").map(String::as_str), Some("51200"));
        let back = peer(&c, "N2", "n1");
        assert_eq!(back.paths, vec![DrbdPath { local: "10.11.0.2".into(), peer: "10.11.0.1".into() }], "seen from the other side");
        assert_eq!(back.options, p.options);
        // Other pairs keep the plain connection.
        let other = peer(&c, "N1", "n3");
        assert!(other.paths.is_empty() && other.options.is_empty(), "{other:?}");
        // The definition's Net options beat the node connection's, the resource connection's beat both.
        let m = cairn_api::resource_definition::ResourceDefinitionModify {
            props: props(&[("DrbdOptions/Net/max-buffers", "3000"), ("DrbdOptions/Net/sndbuf-size", "1048576")]),
            ..Default::default()
        };
        run(&mut c, |c: &Cluster| c.modify_rsc_dfn("web", &m));
        let p = peer(&c, "N1", "n2");
        assert_eq!(p.options.get("DrbdOptions/Net/max-buffers").map(String::as_str), Some("2000"));
        assert_eq!(p.options.get("DrbdOptions/Net/sndbuf-size").map(String::as_str), Some("1048576"));
        let del = PropsModify { delete_props: vec!["DrbdOptions/Net/max-buffers".into()], ..Default::default() };
        run(&mut c, |c: &Cluster| c.modify_rsc_conn("web", "n1", "n2", &del));
        assert_eq!(peer(&c, "N1", "n2").options.get("DrbdOptions/Net/max-buffers").map(String::as_str), Some("3000"));
    }

    #[test]
    fn connections_go_with_their_resources() {
        let mut c = cluster();
        run(&mut c, |c: &Cluster| c.modify_rsc_conn("web", "n1", "n2", &props(&[("Aux/x", "1")])));
        run(&mut c, |c: &Cluster| c.modify_rsc_conn("web", "n2", "n3", &props(&[("Aux/x", "2")])));
        let o = c.delete_resource("web", "n1").unwrap();
        let cascade = c.rsc_conn_cascade(&o.changes);
        assert_eq!(cascade, vec![Change::Delete(ObjKey::RscConn("WEB".into(), "N1".into(), "N2".into()))]);
        // A resource deleted and put back in the same change keeps them.
        let mut replaced = o.changes.clone();
        replaced.push(Change::Put(Object::Rsc(c.resources[&("WEB".to_string(), "N1".to_string())].clone())));
        assert!(c.rsc_conn_cascade(&replaced).is_empty());
        c.apply(o.changes.into_iter().chain(cascade));
        assert_eq!(c.rsc_conns.len(), 1);
        let o = c.delete_rsc_dfn("web").unwrap();
        let cascade = c.rsc_conn_cascade(&o.changes);
        c.apply(o.changes.into_iter().chain(cascade));
        assert!(c.rsc_conns.is_empty());
    }

    #[test]
    fn deactivation_sets_inactive_and_the_satellite_is_told() {
        let mut c = cluster();
        let o = run(&mut c, |c: &Cluster| c.set_resource_active("web", "n2", false, false));
        assert_eq!(o.replies[0].ret_code, rc::MASK_MOD | rc::MASK_RSC | rc::MODIFIED);
        assert!(c.resources[&("WEB".to_string(), "N2".to_string())].flags.contains("INACTIVE"));
        assert!(desired_for_node(&c, "N2").1[0].inactive);
        assert!(!desired_for_node(&c, "N1").1[0].inactive);
        // The peers keep it in their configuration.
        assert!(desired_for_node(&c, "N1").1[0].drbd.as_ref().unwrap().peers.iter().any(|p| p.host == "n2"));
        // Again: an info, no change.
        let o = c.set_resource_active("web", "n2", false, false).unwrap();
        assert!(o.changes.is_empty());
        assert_eq!(o.replies[0].ret_code, rc::MASK_INFO | rc::MASK_MOD | rc::MASK_RSC | rc::INFO_NOOP);
        run(&mut c, |c: &Cluster| c.set_resource_active("web", "n2", true, false));
        assert!(!desired_for_node(&c, "N2").1[0].inactive);
        // A replica in use stays active.
        let e = c.set_resource_active("web", "n1", false, true).unwrap_err();
        assert_eq!(e.rc.code(), rc::FAIL_IN_USE);
        assert_eq!(c.set_resource_active("web", "n9", false, false).unwrap_err().rc.code(), rc::FAIL_NOT_FOUND_NODE);
    }
}
