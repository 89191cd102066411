//! Collecting a topology while a reply is read: each node once, shards by primary, and slot
//! ownership checked (in range, never claimed twice); and resolving the addresses replies leave
//! unknown.

use super::{Node, Origin, Role, Shard, Topology, TopologyError, SLOT_COUNT, UNOWNED};

/// Collects nodes (each once) and slot ownership while a reply is read, then checks and freezes it.
pub(super) struct Builder {
    nodes: Vec<Node>,
    shards: Vec<Shard>,
    slots: Box<[u16]>,
}

impl Builder {
    pub(super) fn new() -> Builder {
        Builder {
            nodes: Vec::new(),
            shards: Vec::new(),
            slots: vec![UNOWNED; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    /// The index of `node`, adding it if new. A node is recognised by its id, or by its address when
    /// the reply gives no id. A node seen once as a primary stays one.
    pub(super) fn node(&mut self, node: Node) -> Result<usize, TopologyError> {
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
    pub(super) fn shard(&mut self, primary: usize) -> usize {
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
    pub(super) fn replica(&mut self, shard: usize, replica: usize) {
        let serves = self.nodes[replica].health.serves_reads();
        let replicas = &mut self.shards[shard].replicas;
        if serves && !replicas.contains(&replica) {
            replicas.push(replica);
        }
    }

    /// Gives slots `start..=end` to `shard`.
    pub(super) fn claim(
        &mut self,
        shard: usize,
        start: i64,
        end: i64,
    ) -> Result<(), TopologyError> {
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
    pub(super) fn finish(self) -> Topology {
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
pub(super) fn resolve_host(
    endpoint: Option<&[u8]>,
    ip: Option<&[u8]>,
    origin: Origin<'_>,
) -> String {
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
