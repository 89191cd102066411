//! What changed between two topologies, in the terms a connection manager acts on: nodes gone,
//! nodes new, nodes in another role, and whether any slot is now served elsewhere.

use super::{Node, Topology, SLOT_COUNT};

impl Topology {
    /// What changed from `old` to `new`, for the connection manager.
    pub fn diff(old: &Topology, new: &Topology) -> TopologyDiff {
        let new_of_old: Vec<Option<usize>> = old
            .nodes
            .iter()
            .map(|o| new.nodes.iter().position(|n| n.same_node(o)))
            .collect();
        let left = old
            .nodes
            .iter()
            .zip(&new_of_old)
            .filter(|(_, found)| found.is_none())
            .map(|(node, _)| node.clone())
            .collect();
        let added = new
            .nodes
            .iter()
            .filter(|n| !old.nodes.iter().any(|o| o.same_node(n)))
            .cloned()
            .collect();
        let role_changed = old
            .nodes
            .iter()
            .zip(&new_of_old)
            .filter_map(|(o, found)| new.nodes.get((*found)?).filter(|n| n.role != o.role))
            .cloned()
            .collect();
        let routing_changed = routing_changed(old, new, &new_of_old);
        TopologyDiff {
            left,
            added,
            role_changed,
            routing_changed,
        }
    }
}

/// True when some slot is served by other nodes in `new` than in `old` (its primary, or the set of
/// replicas that serve reads). `new_of_old` maps each old node index to the same node in `new`.
fn routing_changed(old: &Topology, new: &Topology, new_of_old: &[Option<usize>]) -> bool {
    let map = |i: usize| new_of_old.get(i).copied().flatten();
    (0..SLOT_COUNT).any(|slot| match (old.shard_of(slot), new.shard_of(slot)) {
        (None, None) => false,
        (Some(o), Some(n)) => {
            map(o.primary) != Some(n.primary)
                || o.replicas.len() != n.replicas.len()
                || o.replicas
                    .iter()
                    .any(|&r| map(r).is_none_or(|r| !n.replicas.contains(&r)))
        }
        _ => true,
    })
}

/// The difference between two topologies, node by node (a node is the same if its id, host and port
/// are; a node that moved to a new address left and was added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyDiff {
    /// Nodes of the old topology missing from the new one: close their connections.
    pub left: Vec<Node>,
    /// Nodes of the new topology missing from the old one.
    pub added: Vec<Node>,
    /// Nodes in both whose role changed, as they are now: reconnect them in their new role.
    pub role_changed: Vec<Node>,
    /// Some slot is now served by another primary or another set of replicas.
    pub routing_changed: bool,
}

impl TopologyDiff {
    /// True when nothing changed that a connection manager or a router would act on.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
            && self.added.is_empty()
            && self.role_changed.is_empty()
            && !self.routing_changed
    }
}
