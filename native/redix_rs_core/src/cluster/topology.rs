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

mod shards;
mod slots_reply;
#[cfg(test)]
mod tests;

use thiserror::Error;

use super::slot::SLOT_COUNT;

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

/// Collects nodes (each once) and slot ownership while a reply is read, then checks and freezes it.
struct Builder {
    nodes: Vec<Node>,
    shards: Vec<Shard>,
    slots: Box<[u16]>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            nodes: Vec::new(),
            shards: Vec::new(),
            slots: vec![UNOWNED; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    /// The index of `node`, adding it if new. A node is recognised by its id, or by its address when
    /// the reply gives no id. A node seen once as a primary stays one.
    fn node(&mut self, node: Node) -> Result<usize, TopologyError> {
        let existing = self.nodes.iter().position(|n| {
            if node.id.is_empty() {
                n.host == node.host && n.port == node.port
            } else {
                n.id == node.id
            }
        });
        if let Some(index) = existing {
            if node.role == Role::Primary {
                self.nodes[index].role = Role::Primary;
            }
            return Ok(index);
        }
        if self.nodes.len() >= usize::from(UNOWNED) {
            return Err(TopologyError::TooManyNodes);
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The shard whose primary is node `primary`, created on first use.
    fn shard(&mut self, primary: usize) -> usize {
        if let Some(index) = self.shards.iter().position(|s| s.primary == primary) {
            return index;
        }
        self.shards.push(Shard {
            primary,
            replicas: Vec::new(),
        });
        self.shards.len() - 1
    }

    /// Adds a replica to a shard; only replicas that serve reads are routed to.
    fn replica(&mut self, shard: usize, replica: usize) {
        let serves = self.nodes[replica].health.serves_reads();
        let replicas = &mut self.shards[shard].replicas;
        if serves && !replicas.contains(&replica) {
            replicas.push(replica);
        }
    }

    /// Gives slots `start..=end` to `shard`.
    fn claim(&mut self, shard: usize, start: i64, end: i64) -> Result<(), TopologyError> {
        let range = slot_range(start, end)?;
        // Shard indexes are below the node count, itself below UNOWNED.
        let tag = u16::try_from(shard).map_err(|_| TopologyError::TooManyNodes)?;
        for slot in range {
            let entry = &mut self.slots[usize::from(slot)];
            if *entry != UNOWNED && *entry != tag {
                return Err(TopologyError::SlotClaimedTwice(slot));
            }
            *entry = tag;
        }
        Ok(())
    }

    /// The topology, keeping only shards that own slots (a primary without slots is still a node).
    fn finish(self) -> Topology {
        let mut owns = vec![false; self.shards.len()];
        for &entry in self.slots.iter().filter(|&&e| e != UNOWNED) {
            owns[usize::from(entry)] = true;
        }
        let mut renumber = vec![UNOWNED; self.shards.len()];
        let mut shards = Vec::new();
        for (old, shard) in self.shards.into_iter().enumerate() {
            if owns[old] {
                // Fewer shards than nodes, and fewer nodes than UNOWNED: the index fits.
                renumber[old] = shards.len() as u16;
                shards.push(shard);
            }
        }
        let mut slots = self.slots;
        for entry in slots.iter_mut().filter(|e| **e != UNOWNED) {
            *entry = renumber[usize::from(*entry)];
        }
        Topology {
            nodes: self.nodes,
            shards,
            slots,
        }
    }
}

/// `start..=end` as slots, refusing ranges outside the slot space.
fn slot_range(start: i64, end: i64) -> Result<std::ops::RangeInclusive<u16>, TopologyError> {
    let bad = || TopologyError::SlotRange { start, end };
    let first = u16::try_from(start).map_err(|_| bad())?;
    let last = u16::try_from(end).map_err(|_| bad())?;
    if first > last || last >= SLOT_COUNT {
        return Err(bad());
    }
    Ok(first..=last)
}

/// The host to connect to for a node whose reply gave `endpoint` (and maybe `ip`).
fn resolve_host(endpoint: Option<&[u8]>, ip: Option<&[u8]>, origin: Origin<'_>) -> String {
    let usable = |h: &&[u8]| !h.is_empty() && *h != b"?";
    let chosen = match endpoint {
        // "?": the node has no hostname to announce; its IP is the best known address.
        Some(b"?") => ip.filter(usable),
        // Empty or null: "the address you asked".
        other => other.filter(usable),
    };
    match chosen {
        Some(host) => String::from_utf8_lossy(host).into_owned(),
        None => origin.host.to_owned(),
    }
}
