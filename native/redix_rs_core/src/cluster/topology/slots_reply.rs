//! `CLUSTER SLOTS` (every version; read when `CLUSTER SHARDS` is missing, before Redis 7): an array
//! of slot ranges, each `[start, end, primary, replica...]`, where a node is
//! `[endpoint, port, id, metadata]`. The id appeared in Redis 4.0 and the metadata (a map in RESP3,
//! a flat key/value array in RESP2, with `ip` and `hostname` when they are not the endpoint) in 7.0.
//! The endpoint may be null. Replicas the server considers unavailable are not listed.

use super::builder::{resolve_host, Builder};
use super::{Health, Node, Origin, Role, Topology, TopologyError};
use crate::cluster::reply::{error_text, int, is_null, items, text, Fields};
use crate::resp::Frame;

pub(super) fn parse(reply: &Frame, origin: Origin<'_>) -> Result<Topology, TopologyError> {
    if let Some(message) = error_text(reply) {
        return Err(TopologyError::Server(message));
    }
    let ranges = items(reply).ok_or(TopologyError::Malformed("CLUSTER SLOTS is not an array"))?;
    let mut builder = Builder::new();
    for range in ranges {
        add_range(&mut builder, range, origin)?;
    }
    Ok(builder.finish())
}

/// Adds one `[start, end, primary, replica...]` entry.
fn add_range(
    builder: &mut Builder,
    range: &Frame,
    origin: Origin<'_>,
) -> Result<(), TopologyError> {
    let parts = items(range).ok_or(TopologyError::Malformed("a slot range is not an array"))?;
    let [start, end, primary, replicas @ ..] = parts else {
        return Err(TopologyError::Malformed("a slot range has no primary"));
    };
    let (Some(start), Some(end)) = (int(start), int(end)) else {
        return Err(TopologyError::Malformed("a slot bound is not an integer"));
    };
    let primary = builder.node(read_node(primary, Role::Primary, origin)?)?;
    let shard = builder.shard(primary);
    for replica in replicas {
        let replica = builder.node(read_node(replica, Role::Replica, origin)?)?;
        builder.replica(shard, replica);
    }
    builder.claim(shard, start, end)
}

/// One `[endpoint, port, id?, metadata?]` node.
fn read_node(frame: &Frame, role: Role, origin: Origin<'_>) -> Result<Node, TopologyError> {
    let parts = items(frame).ok_or(TopologyError::Malformed("a node is not an array"))?;
    let [endpoint, port, rest @ ..] = parts else {
        return Err(TopologyError::Malformed("a node has no endpoint and port"));
    };
    let port = int(port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or(TopologyError::Malformed("a node has no valid port"))?;
    let id = rest.first().and_then(text).unwrap_or_default();
    let metadata = rest.get(1).and_then(Fields::of);
    let ip = metadata.as_ref().and_then(|m| m.get("ip")).and_then(text);
    let endpoint = if is_null(endpoint) {
        None
    } else {
        Some(text(endpoint).ok_or(TopologyError::Malformed("a node endpoint is not a string"))?)
    };
    Ok(Node {
        id: String::from_utf8_lossy(id).into_owned(),
        host: resolve_host(endpoint, ip, origin),
        port,
        role,
        health: Health::Unreported,
    })
}
