//! Desired state per node: what a satellite must make, computed purely from
//! the cluster.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::{
    CloneSourceDesired, DrbdDesired, DrbdPath, DrbdPeer, DrbdVolumeDesired, ExtFileDesired, LuksDesired, PoolDesired, ResourceDesired,
    RollbackDesired, Secret, VolumeDesired, VolumeSourceDesired,
};

use crate::resource::Resource;

use crate::cluster::{Change, Cluster, ObjKey};
use crate::name::key;
use crate::node_connection::NodeConnection;

/// The property naming a pool's backing object, with its legacy spellings.
const BACKING_KEYS: &[&str] = &[
    "StorDriver/StorPoolName",
    "StorDriver/FileDir",
    "StorDriver/LvmVg",
    "StorDriver/ThinPool",
    "StorDriver/ZPool",
    "StorDriver/ZPoolThin",
];

/// The short id of a volume on its node: the first 12 hex digits of its
/// UUID.
pub fn volume_id(uuid: &str) -> String {
    uuid.chars().filter(|c| c.is_ascii_hexdigit()).map(|c| c.to_ascii_lowercase()).take(12).collect()
}

/// The pools and resources one node must have, sorted by name, without
/// LUKS keys.
pub fn desired_for_node(c: &Cluster, node_key: &str) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
    desired_for_node_with(c, node_key, &|_| None)
}

/// The first value of a property from resource, definition, group, node,
/// controller.
fn rsc_prop<'a>(c: &'a Cluster, r: &'a Resource, k: &str) -> Option<&'a String> {
    let rd = c.rsc_dfns.get(&key(&r.resource_definition));
    let rg = rd.and_then(|d| c.rsc_grps.get(&key(&d.resource_group)));
    let node = c.nodes.get(&key(&r.node));
    [Some(&r.props), rd.map(|d| &d.props), rg.map(|g| &g.props), node.map(|n| &n.props), Some(&c.ctrl_props)]
        .into_iter()
        .flatten()
        .find_map(|p| p.get(k))
}

fn words(v: Option<&String>) -> Vec<String> {
    v.map(|s| s.split_whitespace().map(String::from).collect()).unwrap_or_default()
}

/// Like [`desired_for_node`]; `unseal` opens the sealed LUKS volume
/// secrets (None while the controller is locked).
pub fn desired_for_node_with(
    c: &Cluster,
    node_key: &str,
    unseal: &dyn Fn(&str) -> Option<String>,
) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
    desired_of_node(c, node_key, None, unseal)
}

/// Like [`desired_for_node_with`], with only the resources of the given
/// definitions (upper-case keys) when `only` is set: a change's delta
/// costs what the change touches, not what the node holds.
pub fn desired_of_node(
    c: &Cluster,
    node_key: &str,
    only: Option<&BTreeSet<String>>,
    unseal: &dyn Fn(&str) -> Option<String>,
) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
    let pools = c
        .stor_pools_of(node_key)
        .map(|p| PoolDesired {
            name: p.name.clone(),
            kind: p.provider_kind,
            backing: BACKING_KEYS.iter().find_map(|k| p.props.get(*k).cloned()),
        })
        .collect();
    let on_node: Box<dyn Iterator<Item = &Resource>> = match only {
        Some(rds) => Box::new(rds.iter().filter_map(|rd| c.resources.get(&(rd.clone(), node_key.to_string())))),
        None => Box::new(c.resources_on(node_key)),
    };
    let mut rscs: Vec<ResourceDesired> = on_node
        .map(|r| {
            let rd_key = key(&r.resource_definition);
            ResourceDesired {
                drbd: drbd_for(c, r),
                name: r.resource_definition.clone(),
                diskless: r.is_diskless(),
                volumes: c
                    .vlm_dfns_of(&rd_key)
                    .filter_map(|vd| {
                        r.volumes.get(&vd.volume_number).map(|v| VolumeDesired {
                            number: vd.volume_number,
                            id: volume_id(&v.uuid),
                            size_kib: vd.size_kib,
                            pool: v.storage_pool.clone(),
                            luks: v.luks_secret.as_ref().map(|sealed| LuksDesired {
                                key: unseal(sealed).map(Secret),
                                previous_keys: v.luks_previous.iter().filter_map(|p| unseal(p).map(Secret)).collect(),
                                withheld: None,
                                format_options: words(rsc_prop(c, r, "StorDriver/LuksFormatOptions")),
                                open_options: words(rsc_prop(c, r, "StorDriver/LuksOpenOptions")),
                            }),
                            source: v
                                .source
                                .as_ref()
                                .map(|s| VolumeSourceDesired { resource: s.resource.clone(), snapshot: s.snapshot.clone() }),
                            clone_from: v.clone_of.as_ref().map(|s| CloneSourceDesired {
                                resource: s.resource.clone(),
                                id: volume_id(&s.volume_uuid),
                                zfs_clone: s.zfs_clone,
                            }),
                        })
                    })
                    .collect(),
                // A replicated resource's snapshot is taken once I/O is
                // suspended on all its nodes (phase Take).
                snapshots: c
                    .snapshots_of(&rd_key)
                    .filter(|s| s.nodes.contains_key(node_key) && s.phase != crate::snapshot::SnapshotPhase::Suspend)
                    .map(|s| s.name.clone())
                    .collect(),
                received_snapshots: c
                    .snapshots_of(&rd_key)
                    .filter(|s| s.nodes.contains_key(node_key) && is_received(s))
                    .map(|s| s.name.clone())
                    .collect(),
                rollback: r.rollback.as_ref().map(|b| RollbackDesired { snapshot: b.snapshot.clone(), id: b.id.clone(), zfs: b.zfs }),
                inactive: r.flags.contains(crate::resource::FLAG_INACTIVE),
                files: c
                    .ext_files_of(&rd_key)
                    .into_iter()
                    .map(|f| ExtFileDesired { path: f.path.clone(), content: f.content.clone(), alt_suffixes: f.alt_suffixes.clone() })
                    .collect(),
                snapshots_only: false,
            }
        })
        .collect();
    rscs.extend(kept_snapshots(c, node_key, only));
    rscs.sort_by(|a, b| a.name.cmp(&b.name));
    (pools, rscs)
}

/// Whether a snapshot was shipped here from another cluster (it keeps
/// the source's snapshot uuid).
fn is_received(s: &crate::snapshot::SnapshotDfn) -> bool {
    s.props.contains_key(crate::backup::SOURCE_SNAP_UUID_PROP)
}

/// Definitions whose resource on the node was deleted while snapshots of
/// it on the node stay (ZFS, as LINSTOR): the satellite keeps those
/// snapshots (on the volumes it renamed aside) and removes the others.
fn kept_snapshots(c: &Cluster, node_key: &str, only: Option<&BTreeSet<String>>) -> Vec<ResourceDesired> {
    let mut by_rd: BTreeMap<String, ResourceDesired> = BTreeMap::new();
    for s in c.snapshots.values() {
        let rd_key = key(&s.resource_definition);
        if only.is_some_and(|o| !o.contains(&rd_key)) || c.resources.contains_key(&(rd_key.clone(), node_key.to_string())) {
            continue;
        }
        let Some(ns) = s.nodes.get(node_key) else { continue };
        let e = by_rd.entry(rd_key).or_insert_with(|| ResourceDesired {
            name: s.resource_definition.clone(),
            snapshots_only: true,
            ..Default::default()
        });
        e.snapshots.push(s.name.clone());
        if is_received(s) {
            e.received_snapshots.push(s.name.clone());
        }
        for v in &ns.volumes {
            if !e.volumes.iter().any(|d| d.number == v.volume_number) {
                e.volumes.push(VolumeDesired {
                    number: v.volume_number,
                    id: volume_id(&v.uuid),
                    size_kib: 0,
                    pool: v.storage_pool.clone(),
                    ..Default::default()
                });
            }
        }
    }
    by_rd.into_values().collect()
}

/// The DRBD host name of a node (`NodeUname`, else its name) and its
/// replication address: the interface `PrefNic` names (storage pools,
/// resource, definition, group, node, controller, as LINSTOR looks it up),
/// else the one named `default`, else the first.
fn host_and_address(c: &Cluster, r: &Resource) -> (String, String) {
    let Some(n) = c.nodes.get(&key(&r.node)) else { return (r.node.clone(), String::new()) };
    let host = n.props.get("NodeUname").cloned().unwrap_or_else(|| n.name.clone());
    let rd = c.rsc_dfns.get(&key(&r.resource_definition));
    let rg = rd.and_then(|d| c.rsc_grps.get(&key(&d.resource_group)));
    let pools = r.volumes.values().filter_map(|v| c.stor_pools.get(&(key(&r.node), key(&v.storage_pool)))).map(|p| &p.props);
    let pref = pools
        .chain([Some(&r.props), rd.map(|d| &d.props), rg.map(|g| &g.props), Some(&n.props), Some(&c.ctrl_props)].into_iter().flatten())
        .find_map(|p| p.get("PrefNic"));
    let nif = pref
        .and_then(|name| n.net_interfaces.iter().find(|i| i.name.eq_ignore_ascii_case(name)))
        .or_else(|| n.net_interfaces.iter().find(|i| i.name.eq_ignore_ascii_case("default")))
        .or_else(|| n.net_interfaces.first());
    (host, nif.map(|i| i.address.to_string()).unwrap_or_default())
}

/// Paths between two nodes from the `Paths/<name>/<node>=<interface>`
/// properties of the resource connection, else of the node connection (as
/// LINSTOR); incomplete ones are skipped.
fn paths(c: &Cluster, rd: &str, local: &str, peer: &str) -> Vec<DrbdPath> {
    let has_paths = |p: &crate::Props| p.keys().any(|k| k.starts_with("Paths/"));
    let props = match c.rsc_conn(rd, local, peer).map(|rc| &rc.props).filter(|p| has_paths(p)) {
        Some(p) => p,
        None => match c.node_conns.get(&NodeConnection::sorted_keys(local, peer)) {
            Some(conn) => &conn.props,
            None => return Vec::new(),
        },
    };
    let (Some(ln), Some(pn)) = (c.nodes.get(&key(local)), c.nodes.get(&key(peer))) else { return Vec::new() };
    let addr = |n: &crate::node::Node, path: &str| {
        let nif = props
            .iter()
            .find(|(k, _)| {
                k.strip_prefix("Paths/")
                    .and_then(|rest| rest.split_once('/'))
                    .is_some_and(|(p, node)| p == path && key(node) == key(&n.name))
            })
            .map(|(_, v)| v)?;
        n.net_interfaces.iter().find(|i| i.name.eq_ignore_ascii_case(nif)).map(|i| i.address.to_string())
    };
    let names: std::collections::BTreeSet<&str> =
        props.keys().filter_map(|k| k.strip_prefix("Paths/").and_then(|rest| rest.split_once('/')).map(|(p, _)| p)).collect();
    names.into_iter().filter_map(|p| Some(DrbdPath { local: addr(ln, p)?, peer: addr(pn, p)? })).collect()
}

/// `DrbdOptions/*` properties with LINSTOR's priority: controller, then
/// resource group, then resource definition, then resource (last wins).
fn drbd_options(c: &Cluster, r: &Resource) -> BTreeMap<String, String> {
    let rd = c.rsc_dfns.get(&key(&r.resource_definition));
    let rg = rd.and_then(|d| c.rsc_grps.get(&key(&d.resource_group)));
    let mut out = BTreeMap::new();
    for props in [Some(&c.ctrl_props), rg.map(|g| &g.props), rd.map(|d| &d.props), Some(&r.props)].into_iter().flatten() {
        for (k, v) in props {
            if k.starts_with("DrbdOptions/") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// The options of the connection from `r` to `peer`: `DrbdOptions/Net/*`
/// when the resource or node connection sets any (priority, lowest first:
/// controller, group, node connection, definition, resource connection, as
/// LINSTOR's `ConfFileBuilder`), and `DrbdOptions/PeerDevice/*` (the
/// resource's own, then the resource connection's).
fn conn_options(c: &Cluster, r: &Resource, peer: &Resource) -> BTreeMap<String, String> {
    const NET: &str = "DrbdOptions/Net/";
    const PEER_DEVICE: &str = "DrbdOptions/PeerDevice/";
    let rd = c.rsc_dfns.get(&key(&r.resource_definition));
    let rg = rd.and_then(|d| c.rsc_grps.get(&key(&d.resource_group)));
    let rsc_conn = c.rsc_conn(&r.resource_definition, &r.node, &peer.node).map(|x| &x.props);
    let node_conn = c.node_conns.get(&NodeConnection::sorted_keys(&r.node, &peer.node)).map(|x| &x.props);
    let has = |p: Option<&crate::Props>, ns: &str| p.is_some_and(|p| p.keys().any(|k| k.starts_with(ns)));
    let mut out = BTreeMap::new();
    if has(rsc_conn, NET) || has(node_conn, NET) {
        for p in [Some(&c.ctrl_props), rg.map(|g| &g.props), node_conn, rd.map(|d| &d.props), rsc_conn].into_iter().flatten() {
            out.extend(p.iter().filter(|(k, _)| k.starts_with(NET)).map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let mut peer_device: BTreeMap<String, String> = drbd_options(c, r).into_iter().filter(|(k, _)| k.starts_with(PEER_DEVICE)).collect();
    if let Some(p) = rsc_conn {
        peer_device.extend(p.iter().filter(|(k, _)| k.starts_with(PEER_DEVICE)).map(|(k, v)| (k.clone(), v.clone())));
    }
    out.extend(peer_device);
    out
}

/// The DRBD part of a resource's desired state, if its stack has DRBD.
fn drbd_for(c: &Cluster, r: &Resource) -> Option<DrbdDesired> {
    let mine = r.drbd?;
    let rd_key = key(&r.resource_definition);
    let rd = c.rsc_dfns.get(&rd_key)?;
    let (host, address) = host_and_address(c, r);
    let mut peers: Vec<DrbdPeer> = c
        .resources_of(&rd_key)
        .filter(|p| key(&p.node) != key(&r.node) && !p.flags.contains("DELETE"))
        .filter_map(|p| {
            let d = p.drbd?;
            let (host, address) = host_and_address(c, p);
            let paths = paths(c, &rd_key, &r.node, &p.node);
            let options = conn_options(c, r, p);
            Some(DrbdPeer { host, node_id: d.node_id, address, port: d.tcp_port, diskless: p.is_diskless(), paths, options })
        })
        .collect();
    peers.sort_by(|a, b| a.host.cmp(&b.host));
    Some(DrbdDesired {
        node_id: mine.node_id,
        port: mine.tcp_port,
        peer_slots: c.peer_slots(&rd_key),
        secret: rd.drbd.secret.clone().unwrap_or_default(),
        address,
        host,
        diskless: r.is_diskless(),
        volumes: c
            .vlm_dfns_of(&rd_key)
            .filter_map(|vd| {
                Some(DrbdVolumeDesired {
                    number: vd.volume_number,
                    minor: vd.drbd_minor?,
                    day0_gi: vd.props.get(crate::resource_definition::PROP_DRBD_CURRENT_GI).cloned(),
                    initialized: vd.flags.contains(crate::resource_definition::FLAG_DRBD_INITIALIZED),
                    initial_sync: vd
                        .props
                        .contains_key(crate::drbd_auto::PROP_INITIAL_SYNC_RSC)
                        .then(|| !r.is_diskless() && c.initial_sync_rsc(&rd_key, vd) == Some(&r.uuid)),
                })
            })
            .collect(),
        options: drbd_options(c, r),
        peers,
        initial_sync: !r.is_diskless() && rd.props.get(crate::drbd_auto::PROP_INITIAL_SYNC_RSC) == Some(&r.uuid),
        joining: r.flags.contains(crate::toggle_disk::FLAG_DISK_ADDING),
        // Diskless ones too: the application may write through any node.
        suspend_io: c.io_suspended(&rd_key),
        forget_peers: rd.drbd.forgetting.iter().filter(|(_, nodes)| nodes.contains(&key(&r.node))).map(|(id, _)| *id).collect(),
    })
}

/// Node keys whose desired state the changes may alter, as seen in `c`.
/// Call it on the cluster before and after applying the changes: a deleted
/// definition's nodes are only visible before, a new resource's after.
/// The resource definitions (upper-case keys) whose resources are all a
/// change can alter in the satellites' desired state; None when it can
/// alter more (nodes, pools, groups, controller properties, ...).
pub fn resource_scope(changes: &[Change]) -> Option<BTreeSet<String>> {
    changes
        .iter()
        .map(|ch| match ch.key() {
            ObjKey::Rsc(rd, _) | ObjKey::VlmDfn(rd, _) | ObjKey::RscDfn(rd) | ObjKey::SnapDfn(rd, _) | ObjKey::RscConn(rd, ..) => Some(rd),
            _ => None,
        })
        .collect()
}

pub fn affected_nodes(c: &Cluster, changes: &[Change]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // Nodes holding snapshots of a definition keep them without its
    // resource (ZFS) and must hear when they go.
    let nodes_of = |rd: &str| {
        c.resources_of(rd).map(|r| key(&r.node)).chain(c.snapshots_of(rd).flat_map(|s| s.nodes.keys().cloned())).collect::<Vec<_>>()
    };
    for ch in changes {
        match ch.key() {
            // A replica's peers see it in their DRBD configuration too.
            ObjKey::Rsc(rd, node) => {
                out.insert(node);
                out.extend(nodes_of(&rd));
            }
            ObjKey::StorPool(node, _) => {
                out.insert(node);
            }
            ObjKey::VlmDfn(rd, _) | ObjKey::RscDfn(rd) | ObjKey::SnapDfn(rd, _) => out.extend(nodes_of(&rd)),
            // Group properties (DRBD options) reach every node of its definitions.
            ObjKey::RscGrp(rg) => {
                for d in c.rsc_dfns.values().filter(|d| key(&d.resource_group) == rg) {
                    out.extend(nodes_of(&key(&d.name)));
                }
            }
            // A node's address and name appear in its peers' configuration.
            ObjKey::Node(node) => {
                out.insert(node.clone());
                for r in c.resources_on(&node) {
                    out.extend(nodes_of(&key(&r.resource_definition)));
                }
            }
            ObjKey::CtrlProps => out.extend(c.nodes.keys().cloned()),
            // A file's content reaches the nodes of the definitions deploying it.
            ObjKey::ExtFile(path) => {
                for rd in c.rsc_dfns_deploying(&path) {
                    out.extend(nodes_of(&rd));
                }
            }
            // Paths between two nodes appear in both nodes' files.
            ObjKey::NodeConn(a, b) | ObjKey::RscConn(_, a, b) => {
                out.insert(a);
                out.insert(b);
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {

    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate, VolumeDefinitionModify,
    };

    use super::*;
    use crate::Ctx;

    fn cluster() -> (Cluster, Ctx) {
        let mut ctx = Ctx::deterministic();
        let mut c = crate::testing::seeded();
        for n in ["n1", "n2"] {
            let o = c.create_node(&crate::testing::satellite(n, &[]), &mut ctx).unwrap();
            c.apply(o.changes);
            let o = c.create_stor_pool(n, &crate::testing::pool("DfltStorPool", "FILE_THIN", "/srv/p"), &mut ctx).unwrap();
            c.apply(o.changes);
        }
        let rd =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "web".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_rsc_dfn(&rd, &mut ctx).unwrap();
        c.apply(o.changes);
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(2048), ..Default::default() }, ..Default::default() };
        let o = c.create_vlm_dfn("web", &vd, &mut ctx).unwrap();
        c.apply(o.changes);
        (c, ctx)
    }

    #[test]
    fn desired_state_lists_pools_and_resources_of_the_node() {
        let (mut c, mut ctx) = cluster();
        let req = ResourceCreate {
            resource: WireRsc { node_name: "n1".into(), ..Default::default() },
            layer_list: Some(vec!["STORAGE".into()]),
            ..Default::default()
        };
        let o = c.create_resources("web", &[req], None, &mut ctx).unwrap();
        c.apply(o.changes.clone());
        assert_eq!(affected_nodes(&c, &o.changes), BTreeSet::from(["N1".to_string()]));
        let (pools, rscs) = desired_for_node(&c, "N1");
        assert_eq!(
            pools.iter().map(|p| (p.name.as_str(), p.kind.as_str(), p.backing.as_deref())).collect::<Vec<_>>(),
            [("DfltDisklessStorPool", "DISKLESS", None), ("DfltStorPool", "FILE_THIN", Some("/srv/p"))]
        );
        let id = volume_id(&c.resources[&("WEB".to_string(), "N1".to_string())].volumes[&0].uuid);
        assert_eq!(id.len(), 12);
        assert_eq!(
            rscs,
            vec![ResourceDesired {
                drbd: None,
                name: "web".into(),
                diskless: false,
                volumes: vec![VolumeDesired {
                    number: 0,
                    id,
                    size_kib: 2048,
                    pool: "DfltStorPool".into(),
                    luks: None,
                    source: None,
                    clone_from: None
                }],
                snapshots: vec![],
                received_snapshots: vec![],
                rollback: None,
                inactive: false,
                files: vec![],
                snapshots_only: false,
            }]
        );
        assert!(desired_for_node(&c, "N2").1.is_empty());
    }

    #[test]
    fn a_deployed_file_goes_to_the_nodes_of_the_definition_and_its_changes_reach_them() {
        let (mut c, mut ctx) = cluster();
        let rc = ResourceCreate { resource: WireRsc { node_name: "n1".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_resources("web", &[rc], None, &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.set_ext_file("/etc/app/a.conf", Some("aGk="), None, &mut ctx).unwrap();
        c.apply(o.changes.clone());
        // Not deployed yet: nobody needs it.
        assert!(affected_nodes(&c, &o.changes).is_empty());
        let o = c.deploy_ext_file("web", "/etc/app/a.conf", true).unwrap();
        assert_eq!(o.replies[0].message, "Deployed /etc/app/a.conf on resource 'web' on 'n1'");
        c.apply(o.changes);
        assert_eq!(c.rsc_dfns["WEB"].props.get("files/etc/app/a.conf").map(String::as_str), Some("True"));
        let files = &desired_for_node(&c, "N1").1[0].files;
        assert_eq!((files.len(), files[0].path.as_str(), files[0].content.as_str()), (1, "/etc/app/a.conf", "aGk="));
        let o = c.set_ext_file("/etc/app/a.conf", Some("aG8="), None, &mut ctx).unwrap();
        assert_eq!(affected_nodes(&c, &o.changes), BTreeSet::from(["N1".to_string()]));
        // Deleting the file undeploys it.
        let o = c.delete_ext_file("/etc/app/a.conf").unwrap();
        c.apply(o.changes);
        assert!(desired_for_node(&c, "N1").1[0].files.is_empty() && !c.rsc_dfns["WEB"].props.contains_key("files/etc/app/a.conf"));
    }

    #[test]
    fn resizing_a_volume_definition_affects_every_node_of_the_resource() {
        let (mut c, mut ctx) = cluster();
        let reqs: Vec<ResourceCreate> = ["n1", "n2"]
            .iter()
            .map(|n| ResourceCreate { resource: WireRsc { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
            .collect();
        let o = c.create_resources("web", &reqs, None, &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.modify_vlm_dfn("web", 0, &VolumeDefinitionModify { size_kib: Some(4096), ..Default::default() }).unwrap();
        c.apply(o.changes.clone());
        assert_eq!(affected_nodes(&c, &o.changes), BTreeSet::from(["N1".to_string(), "N2".to_string()]));
        assert_eq!(desired_for_node(&c, "N2").1[0].volumes[0].size_kib, 4096);
        let o = c.delete_rsc_dfn("web").unwrap();
        assert_eq!(affected_nodes(&c, &o.changes).len(), 2, "seen before the delete");
        c.apply(o.changes.clone());
        assert!(desired_for_node(&c, "N1").1.is_empty());
    }

    #[test]
    fn a_resource_change_is_scoped_to_its_definitions_and_the_scoped_state_matches_the_full_one() {
        let (mut c, mut ctx) = cluster();
        let req = ResourceCreate { resource: WireRsc { node_name: "n1".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_resources("web", std::slice::from_ref(&req), None, &mut ctx).unwrap();
        assert_eq!(resource_scope(&o.changes), Some(BTreeSet::from(["WEB".to_string()])));
        c.apply(o.changes);
        let rd = ResourceDefinitionCreate { resource_definition: WireRd { name: "db".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_rsc_dfn(&rd, &mut ctx).unwrap();
        c.apply(o.changes);
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(1024), ..Default::default() }, ..Default::default() };
        let o = c.create_vlm_dfn("db", &vd, &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.create_resources("db", &[req], None, &mut ctx).unwrap();
        c.apply(o.changes);
        let (pools, all) = desired_for_node(&c, "N1");
        let (scoped_pools, scoped) = desired_of_node(&c, "N1", Some(&BTreeSet::from(["DB".to_string()])), &|_| None);
        assert_eq!(scoped_pools, pools);
        assert_eq!(scoped, all.into_iter().filter(|r| r.name == "db").collect::<Vec<_>>());
        // Anything beyond resources (here a node) widens the scope to all.
        let o = c.create_node(&crate::testing::satellite("n3", &[]), &mut ctx).unwrap();
        assert_eq!(resource_scope(&o.changes), None);
    }
}

#[cfg(test)]
mod address_tests {
    use cairn_api::PropsModify;
    use cairn_api::node::NetInterface as WireNif;
    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
    };

    use super::*;
    use crate::Ctx;

    #[test]
    fn pref_nic_and_node_connection_paths_choose_the_addresses() {
        let mut ctx = Ctx::deterministic();
        let mut c = crate::testing::seeded();
        let run = |c: &mut Cluster, o: crate::error::OpResult<crate::Outcome>| c.apply(o.unwrap().changes);
        for (n, last) in [("n1", 1), ("n2", 2)] {
            let o = c.create_node(&crate::testing::satellite(n, &[]), &mut ctx);
            run(&mut c, o);
            for (nif, net) in [("data", 10), ("repl", 11)] {
                let req = WireNif { name: nif.into(), address: format!("10.{net}.0.{last}"), ..Default::default() };
                let o = c.create_net_interface(n, &req, &mut ctx);
                run(&mut c, o);
            }
            let o = c.create_stor_pool(n, &crate::testing::pool("DfltStorPool", "FILE_THIN", "/srv/p"), &mut ctx);
            run(&mut c, o);
        }
        let rd =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "web".into(), ..Default::default() }, ..Default::default() };
        let o = c.create_rsc_dfn(&rd, &mut ctx);
        run(&mut c, o);
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
        let o = c.create_vlm_dfn("web", &vd, &mut ctx);
        run(&mut c, o);
        let reqs: Vec<ResourceCreate> = ["n1", "n2"]
            .iter()
            .map(|n| ResourceCreate { resource: WireRsc { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
            .collect();
        let o = c.create_resources("web", &reqs, None, &mut ctx);
        run(&mut c, o);
        let drbd = |c: &Cluster| desired_for_node(c, "N1").1[0].drbd.clone().unwrap();
        // Without PrefNic: the interface named `default`.
        assert_eq!((drbd(&c).address.as_str(), drbd(&c).peers[0].address.as_str()), ("127.0.0.1", "127.0.0.1"));
        // PrefNic on the resource definition.
        let m = cairn_api::resource_definition::ResourceDefinitionModify {
            props: PropsModify { override_props: [("PrefNic".to_string(), "repl".to_string())].into(), ..Default::default() },
            ..Default::default()
        };
        let o = c.modify_rsc_dfn("web", &m);
        run(&mut c, o);
        assert_eq!((drbd(&c).address.as_str(), drbd(&c).peers[0].address.as_str()), ("10.11.0.1", "10.11.0.2"));
        assert!(drbd(&c).peers[0].paths.is_empty());
        // Two paths on the node connection; an incomplete third is ignored.
        let props: crate::Props =
            [("Paths/p1/n1", "data"), ("Paths/p1/n2", "data"), ("Paths/p2/n1", "repl"), ("Paths/p2/n2", "repl"), ("Paths/p3/n1", "data")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let o = c.modify_node_conn("n2", "n1", &PropsModify { override_props: props, ..Default::default() });
        let o = o.unwrap();
        assert_eq!(affected_nodes(&c, &o.changes), BTreeSet::from(["N1".to_string(), "N2".to_string()]));
        c.apply(o.changes);
        assert_eq!(
            drbd(&c).peers[0].paths,
            vec![
                DrbdPath { local: "10.10.0.1".into(), peer: "10.10.0.2".into() },
                DrbdPath { local: "10.11.0.1".into(), peer: "10.11.0.2".into() }
            ]
        );
        let n2 = desired_for_node(&c, "N2").1[0].drbd.clone().unwrap();
        assert_eq!(n2.peers[0].paths[0], DrbdPath { local: "10.10.0.2".into(), peer: "10.10.0.1".into() }, "seen from the other side");
    }
}
