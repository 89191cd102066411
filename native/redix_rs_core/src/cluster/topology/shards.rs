//! `CLUSTER SHARDS` (Redis 7+): an array of shards, each with `slots` (a flat list of inclusive
//! start/end pairs) and `nodes` (one map of fields per node: `id`, `port`, `tls-port`, `ip`,
//! `endpoint`, `hostname`, `role`, `replication-offset`, `health`). RESP3 sends maps, RESP2 flat
//! arrays of key/value pairs. Fields this reader does not use are ignored, so later versions can add
//! some.

use super::builder::{resolve_host, Builder};
use super::{Health, Node, Origin, Role, Topology, TopologyError};
use crate::cluster::reply::{error_text, int, is_null, items, text, Fields};
use crate::resp::Frame;

pub(super) fn parse(reply: &Frame, origin: Origin<'_>) -> Result<Topology, TopologyError> {
    if let Some(message) = error_text(reply) {
        return Err(TopologyError::Server(message));
    }
    let shards = items(reply).ok_or(TopologyError::Malformed("CLUSTER SHARDS is not an array"))?;
    let mut builder = Builder::new();
    for shard in shards {
        add_shard(&mut builder, shard, origin)?;
    }
    Ok(builder.finish())
}

/// Adds a shard's nodes, and its slots when it has a primary to route them to.
fn add_shard(
    builder: &mut Builder,
    shard: &Frame,
    origin: Origin<'_>,
) -> Result<(), TopologyError> {
    let fields = Fields::of(shard).ok_or(TopologyError::Malformed("a shard is not a map"))?;
    let nodes = fields
        .get("nodes")
        .and_then(items)
        .ok_or(TopologyError::Malformed("a shard has no node list"))?;
    let mut primary = None;
    let mut replicas = Vec::new();
    for node in nodes {
        let node = read_node(node, origin)?;
        let role = node.role;
        let index = builder.node(node)?;
        match role {
            // A second primary in one shard would be a server bug; the first one keeps the slots.
            Role::Primary if primary.is_none() => primary = Some(index),
            Role::Primary => {}
            Role::Replica => replicas.push(index),
        }
    }
    let ranges = slot_ranges(fields.get("slots"))?;
    // Without a primary the shard's slots stay unowned: nothing could take writes for them.
    let Some(primary) = primary else {
        return Ok(());
    };
    let shard = builder.shard(primary);
    for replica in replicas {
        builder.replica(shard, replica);
    }
    for (start, end) in ranges {
        builder.claim(shard, start, end)?;
    }
    Ok(())
}

/// The `slots` field as (start, end) pairs; a shard without the field owns nothing.
fn slot_ranges(field: Option<&Frame>) -> Result<Vec<(i64, i64)>, TopologyError> {
    let Some(field) = field else {
        return Ok(Vec::new());
    };
    let bounds = items(field).ok_or(TopologyError::Malformed("slots is not an array"))?;
    if bounds.len() % 2 != 0 {
        return Err(TopologyError::Malformed(
            "slots holds an odd number of bounds",
        ));
    }
    bounds
        .chunks_exact(2)
        .map(|pair| match (int(&pair[0]), int(&pair[1])) {
            (Some(start), Some(end)) => Ok((start, end)),
            _ => Err(TopologyError::Malformed("a slot bound is not an integer")),
        })
        .collect()
}

/// One node's fields.
fn read_node(frame: &Frame, origin: Origin<'_>) -> Result<Node, TopologyError> {
    let fields = Fields::of(frame).ok_or(TopologyError::Malformed("a node is not a map"))?;
    let string = |name| fields.get(name).filter(|f| !is_null(f)).and_then(text);
    let id = string("id").ok_or(TopologyError::Malformed("a node has no id"))?;
    let role = match string("role") {
        Some(b"master") | Some(b"primary") => Role::Primary,
        Some(b"replica") | Some(b"slave") => Role::Replica,
        _ => return Err(TopologyError::Malformed("a node has no known role")),
    };
    Ok(Node {
        id: String::from_utf8_lossy(id).into_owned(),
        host: resolve_host(string("endpoint"), string("ip"), origin),
        port: pick_port(&fields, origin.tls)?,
        role,
        health: string("health").map_or(Health::Unreported, Health::from_text),
    })
}

/// The port a node is reached on: its `tls-port` for TLS connections, its `port` otherwise, each
/// falling back to the other when the node listens on one kind only.
fn pick_port(fields: &Fields<'_>, tls: bool) -> Result<u16, TopologyError> {
    let port = |name| {
        fields
            .get(name)
            .and_then(int)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
    };
    let (preferred, other) = if tls {
        ("tls-port", "port")
    } else {
        ("port", "tls-port")
    };
    port(preferred)
        .or_else(|| port(other))
        .ok_or(TopologyError::Malformed("a node has no port"))
}
