//! Nodes through the REST API of the shared controller: create, list with
//! filters, modify, delete, and LINSTOR's errors for duplicates, unknown
//! and invalid names.

use cairn_api::node::{NetInterface, Node, NodeModify};
use cairn_api::rc::{self, MASK_CRT, MASK_DEL, MASK_ERROR, MASK_MOD, MASK_NODE};
use cairn_api::{ApiCallRc, PropsModify};
use cairn_client::ClientError;

use crate::shared::{assert_refused, assert_success, client, free_port_on};

fn node(name: &str, ip: &str) -> Node {
    Node {
        name: name.into(),
        node_type: "SATELLITE".into(),
        net_interfaces: vec![NetInterface {
            name: "default".into(),
            address: ip.into(),
            // Nothing listens there: the node stays offline.
            satellite_port: Some(i64::from(free_port_on(ip))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn listed(query: &str) -> Vec<String> {
    let nodes: Vec<Node> = client().get(&format!("/v1/nodes{query}")).expect("list nodes");
    let mut names: Vec<String> = nodes.into_iter().map(|n| n.name).filter(|n| n.starts_with("it-node-")).collect();
    names.sort();
    names
}

#[test]
fn create_list_modify_delete() {
    let c = client();
    for (name, ip) in [("it-node-a", "127.0.10.30"), ("it-node-b", "127.0.10.31"), ("it-node-c", "127.0.10.32")] {
        let rcs = assert_success(c.create_node(&node(name, ip)), MASK_CRT | MASK_NODE | rc::CREATED);
        assert!(rcs.iter().any(|r| r.message.contains(name)), "{rcs:?}");
    }

    // Repeated keys select several; names match in any case.
    assert_eq!(listed("?nodes=it-node-a&nodes=IT-NODE-C"), ["it-node-a", "it-node-c"]);
    assert_eq!(listed("?nodes=it-node-b"), ["it-node-b"]);
    let one: Node = c.get("/v1/nodes/IT-NODE-B").expect("get one");
    assert_eq!((one.name.as_str(), one.node_type.as_str()), ("it-node-b", "SATELLITE"), "the name as created");
    assert_eq!(one.net_interfaces[0].address, "127.0.10.31");
    assert_ne!(one.connection_status.as_deref(), Some("ONLINE"), "no satellite there");

    // Modify: properties set, filtered on, deleted.
    let set = NodeModify {
        props: PropsModify { override_props: [("Aux/it-rack".into(), "r1".into())].into(), ..Default::default() },
        ..Default::default()
    };
    assert_success(c.put("/v1/nodes/it-node-a", &set), MASK_MOD | MASK_NODE | rc::MODIFIED);
    let a: Node = c.get("/v1/nodes/it-node-a").expect("get a");
    assert_eq!(a.props.get("Aux/it-rack").map(String::as_str), Some("r1"));
    assert_eq!(listed("?props=Aux%2Fit-rack%3Dr1"), ["it-node-a"], "percent-encoded props filter");
    assert_eq!(listed("?props=Aux/it-rack"), ["it-node-a"]);
    assert!(listed("?props=Aux/it-rack=r2").is_empty());
    let unset = NodeModify { props: PropsModify { delete_props: vec!["Aux/it-rack".into()], ..Default::default() }, ..Default::default() };
    assert_success(c.put("/v1/nodes/it-node-a", &unset), MASK_MOD | MASK_NODE | rc::MODIFIED);
    assert!(listed("?props=Aux/it-rack").is_empty());

    // Delete: gone from the list, and a second delete is LINSTOR's
    // "had no effect" warning (HTTP 200).
    assert_success(c.delete("/v1/nodes/it-node-b"), MASK_DEL | MASK_NODE | rc::DELETED);
    assert_eq!(listed("?nodes=it-node-a&nodes=it-node-b&nodes=it-node-c"), ["it-node-a", "it-node-c"]);
    assert_success(c.delete("/v1/nodes/it-node-b"), rc::MASK_WARN | MASK_DEL | MASK_NODE | rc::WARN_NOT_FOUND);
    for n in ["it-node-a", "it-node-c"] {
        assert_success(c.delete(&format!("/v1/nodes/{n}")), MASK_DEL | MASK_NODE | rc::DELETED);
    }
    assert!(listed("?nodes=it-node-a&nodes=it-node-b&nodes=it-node-c").is_empty());
}

#[test]
fn duplicates_unknown_and_invalid_names_are_refused() {
    let c = client();
    assert_success(c.create_node(&node("it-node-dup", "127.0.10.33")), MASK_CRT | MASK_NODE | rc::CREATED);
    // The same name in another case is the same node.
    let e =
        assert_refused(c.create_node(&node("IT-NODE-DUP", "127.0.10.34")), 500, MASK_ERROR | MASK_CRT | MASK_NODE | rc::FAIL_EXISTS_NODE);
    assert!(e.message.contains("IT-NODE-DUP") || e.message.contains("it-node-dup"), "{e:?}");
    let n: Node = c.get("/v1/nodes/it-node-dup").expect("get");
    assert_eq!(n.net_interfaces[0].address, "127.0.10.33", "the refused create changed nothing");

    let modify = NodeModify::default();
    assert_refused(c.put("/v1/nodes/it-node-nope", &modify), 404, MASK_ERROR | MASK_MOD | MASK_NODE | rc::FAIL_NOT_FOUND_NODE);
    assert_refused(
        c.get::<Node>("/v1/nodes/it-node-nope").map(|_| Vec::<ApiCallRc>::new()),
        404,
        MASK_ERROR | MASK_NODE | rc::FAIL_NOT_FOUND_NODE,
    );

    for bad in ["bad name", "-it-leading-dash", "x"] {
        let r = c.create_node(&node(bad, "127.0.10.35"));
        match &r {
            Err(ClientError::Api { replies, .. }) => {
                assert_eq!(replies[0].ret_code, MASK_ERROR | MASK_CRT | MASK_NODE | rc::FAIL_INVLD_NODE_NAME, "{bad}: {replies:?}")
            }
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
    }
    assert_success(c.delete("/v1/nodes/it-node-dup"), MASK_DEL | MASK_NODE | rc::DELETED);
}
