//! Node connections: properties on a pair of nodes (DRBD paths, options).

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::{PropsModify, node_connection as wire};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::{Props, props};

/// Properties of the connection between two nodes; `node_a` sorts first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeConnection {
    pub node_a: String,
    pub node_b: String,
    pub props: Props,
}

impl NodeConnection {
    /// The map key of a pair: upper-case names, sorted.
    pub fn sorted_keys(a: &str, b: &str) -> (String, String) {
        let (a, b) = (key(a), key(b));
        if a <= b { (a, b) } else { (b, a) }
    }

    pub fn to_api(&self) -> wire::NodeConnection {
        wire::NodeConnection { node_a: self.node_a.clone(), node_b: self.node_b.clone(), props: self.props.clone() }
    }
}

impl Cluster {
    /// `PUT /v1/node-connections/{a}/{b}`: creates the connection on first
    /// use.
    pub fn modify_node_conn(&self, a: &str, b: &str, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_NODE_CONN;
        let na = self.node(a, OP)?;
        let nb = self.node(b, OP)?;
        if key(&na.name) == key(&nb.name) {
            return Err(OpError::new(OP, rc::FAIL_INVLD_NODE_NAME, "A node connection needs two different nodes."));
        }
        let (first, second) = if key(&na.name) <= key(&nb.name) { (na, nb) } else { (nb, na) };
        let mut c = self.node_conns.get(&NodeConnection::sorted_keys(a, b)).cloned().unwrap_or_else(|| NodeConnection {
            node_a: first.name.clone(),
            node_b: second.name.clone(),
            props: Props::new(),
        });
        c.props = props::apply(crate::whitelist::PropsObj::NodeConn, &c.props, req, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_NODE_CONN, req) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Node connection between '{}' and '{}' modified.", c.node_a, c.node_b))
                .with_ref("Node", &c.node_a)
                .with_ref("NodeB", &c.node_b),
        );
        out.put(Object::NodeConn(c));
        Ok(out)
    }
}
