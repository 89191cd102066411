//! The slot map of a Redis Cluster: its nodes, and for each of the 16384 hash slots the primary that
//! owns it and the replicas that may serve its reads.
//!
//! A [`Topology`] is built from one node's answer to `CLUSTER SHARDS` (Redis 7+, see [`shards`]) or,
//! on older servers, `CLUSTER SLOTS` (see [`slots_reply`]), in RESP2 or RESP3. It is immutable: a
//! refresh builds a new one, and [`Topology::diff`] tells the connection manager which connections
//! to close, open or reopen in another role.
//!
//! Choices made when reading a reply:
//! * **Addresses.** An empty or null endpoint means "the address you used to ask", so the host that
//!   answered is used. `?` (a node configured to announce a hostname that has none) is an unknown
//!   endpoint: the node's IP is used when the reply gives one, else the host that answered.
//! * **Health.** `CLUSTER SHARDS` reports `online`, `fail` (documented as `failed`; both are read)
//!   or `loading` (a replica whose replication offset is still 0) per node. Replicas that are not
//!   `online` are kept in the node list but never routed to; `CLUSTER SLOTS` already leaves
//!   such replicas out, so the two commands route alike. A primary is routed to whatever its health:
//!   it is the only node that can serve its slots, and a failover answers with `MOVED`.
//! * **Unowned slots** stay unrouted ([`Topology::primary`] returns `None`).

mod builder;
mod diff;
mod shards;
mod slots_reply;
#[cfg(test)]
mod tests;

use thiserror::Error;

use super::slot::SLOT_COUNT;
pub use diff::TopologyDiff;

/// Why a reply could not be read as a topology.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopologyError {
    /// The server answered the command with an error (e.g. `ERR This instance has cluster support
    /// disabled`, or `ERR unknown subcommand 'shards'` before Redis 7).
    #[error("the server refused the topology command: {0}")]
    Server(String),
    /// The reply does not have the documented shape; the text says which part.
    #[error("malformed topology reply: {0}")]
    Malformed(&'static str),
    /// A slot range outside 0..16383, or whose end is before its start.
    #[error("invalid slot range {start}-{end}")]
    SlotRange { start: i64, end: i64 },
    /// Two shards claim the same slot.
    #[error("slot {0} is claimed twice")]
    SlotClaimedTwice(u16),
    /// More nodes than a slot table can index (65,535).
    #[error("too many nodes in the topology reply")]
    TooManyNodes,
}

/// Where a topology reply came from, to resolve addresses the reply leaves unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The host the client connected to when it asked.
    pub host: &'a str,
    /// Whether node connections use TLS: `CLUSTER SHARDS` gives a `tls-port` beside the `port`, and
    /// this picks which one a node is reached on.
    pub tls: bool,
}

/// A node's role in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

/// A node's health as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Online,
    /// Marked failed by the cluster (`fail` on the wire; the documentation says `failed`).
    Failed,
    /// Not yet in sync with its primary, or loading its data set (`loading`).
    Loading,
    /// From `CLUSTER SLOTS`, which reports no health but lists only replicas it considers available.
    Unreported,
    /// A value this version does not know; treated like a failure (not routed to when a replica).
    Other(String),
}

impl Health {
    fn from_text(text: &[u8]) -> Health {
        match text {
            b"online" => Health::Online,
            b"failed" | b"fail" => Health::Failed,
            b"loading" => Health::Loading,
            other => Health::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }

    /// True when a replica in this state may be sent reads.
    pub fn serves_reads(&self) -> bool {
        matches!(self, Health::Online | Health::Unreported)
    }
}

/// One cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The 40-character node id (empty when a pre-4.0 `CLUSTER SLOTS` gave none).
    pub id: String,
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub health: Health,
}

impl Node {
    /// True when `other` is the same node at the same address: the test for keeping a connection.
    pub fn same_node(&self, other: &Node) -> bool {
        self.id == other.id && self.host == other.host && self.port == other.port
    }
}

/// A primary and the replicas of it that may serve reads (indexes into [`Topology::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    primary: usize,
    replicas: Vec<usize>,
}

/// Marks a slot no shard owns in the slot table.
const UNOWNED: u16 = u16::MAX;

/// The cluster as one node described it: nodes, shards, and a slot → shard table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    nodes: Vec<Node>,
    shards: Vec<Shard>,
    /// One entry per slot: an index into `shards`, or `UNOWNED`. 32 KiB, so routing a key is one
    /// array read instead of a search through ranges.
    slots: Box<[u16]>,
}

impl Topology {
    /// Reads a `CLUSTER SHARDS` reply (Redis 7+).
    pub fn from_shards(
        reply: &crate::resp::Frame,
        origin: Origin<'_>,
    ) -> Result<Topology, TopologyError> {
        shards::parse(reply, origin)
    }

    /// Reads a `CLUSTER SLOTS` reply (any version; the fallback before Redis 7).
    pub fn from_slots(
        reply: &crate::resp::Frame,
        origin: Origin<'_>,
    ) -> Result<Topology, TopologyError> {
        slots_reply::parse(reply, origin)
    }

    /// Every node of the reply, including failed ones and primaries without slots.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node at `index` (as returned by [`Topology::primary`], [`Topology::replicas`], ...).
    pub fn node(&self, index: usize) -> Option<&Node> {
        self.nodes.get(index)
    }

    /// The node listening on `host:port` (e.g. the target of a `MOVED`).
    pub fn find(&self, host: &str, port: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.port == port && n.host == host)
    }

    /// The primary owning `slot`, or `None` when no node owns it (or `slot` is not below 16384).
    pub fn primary(&self, slot: u16) -> Option<usize> {
        self.shard_of(slot).map(|shard| shard.primary)
    }

    /// The replicas of `slot`'s primary that may serve reads (none for an unowned slot).
    pub fn replicas(&self, slot: u16) -> &[usize] {
        self.shard_of(slot)
            .map_or(&[][..], |shard| shard.replicas.as_slice())
    }

    /// The primaries that own at least one slot, each once: where keyless commands and per-node
    /// scans go.
    pub fn primaries(&self) -> impl Iterator<Item = usize> + '_ {
        self.shards.iter().map(|shard| shard.primary)
    }

    /// How many slots no node owns (0 for a healthy cluster).
    pub fn unowned_slots(&self) -> usize {
        self.slots.iter().filter(|&&s| s == UNOWNED).count()
    }

    fn shard_of(&self, slot: u16) -> Option<&Shard> {
        let index = *self.slots.get(usize::from(slot))?;
        self.shards.get(usize::from(index))
    }
}
