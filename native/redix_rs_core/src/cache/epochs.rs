//! Per-key epochs, hashed into a fixed table, and the flush generation: what a [`Ticket`] records
//! when a cacheable read is submitted and what a fill is checked against.
//!
//! Keeping an exact epoch for every key ever invalidated would grow without bound (Redis may
//! invalidate keys this cache never held), so keys share `slots` counters by hash, like a counting
//! Bloom filter. Sharing can only make a fill be refused when an unrelated key of the same slot was
//! invalidated meanwhile (a later miss, never a stale hit): the check errs on the safe side. The
//! hash is keyed per cache (`RandomState`), so a peer cannot aim invalidations at one slot.
//!
//! Counters only grow (`u64`, one step per invalidation: they do not wrap in any real lifetime).
//! They are bumped with the store's writer lock held; [`Epochs::ticket`] reads them without it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// The fewest and the most shared counters a cache has (8 bytes each).
const MIN_SLOTS: usize = 1024;
const MAX_SLOTS: usize = 64 * 1024;

/// Epochs of a cache's keys.
pub(super) struct Epochs {
    slots: Box<[AtomicU64]>,
    mask: usize,
    hasher: RandomState,
    /// Bumped by every flush: a ticket from before it is refused whatever its keys.
    generation: AtomicU64,
}

/// What a read saw when it was submitted: the cache's generation and the epoch of each key's slot.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub(super) store: u64,
    pub(super) command: Bytes,
    pub(super) keys: Box<[Bytes]>,
    pub(super) generation: u64,
    pub(super) seen: Box<[(usize, u64)]>,
}

impl Ticket {
    /// The command (its cache key) this ticket will fill.
    pub fn command(&self) -> &Bytes {
        &self.command
    }

    /// The keys the reply will depend on.
    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }
}

/// Why a ticket no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Moved {
    /// The cache was flushed after the ticket was taken.
    Generation,
    /// One of the ticket's keys (or a key sharing its slot) was invalidated after it was taken.
    Key,
}

impl Epochs {
    /// A table sized for a cache of `max_entries`: one slot per entry, within the bounds above.
    pub(super) fn new(max_entries: usize) -> Epochs {
        let len = max_entries.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        Epochs {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len - 1,
            hasher: RandomState::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// The slot `key` counts in.
    pub(super) fn slot(&self, key: &[u8]) -> usize {
        // Truncating the hash is the point: any bits will do.
        (self.hasher.hash_one(key) as usize) & self.mask
    }

    /// Records the generation and the current epoch of each key (`keys` are distinct).
    pub(super) fn ticket(&self, store: u64, command: Bytes, keys: Box<[Bytes]>) -> Ticket {
        let generation = self.generation.load(Ordering::Acquire);
        let seen = keys
            .iter()
            .map(|key| {
                let slot = self.slot(key);
                (slot, self.slots[slot].load(Ordering::Acquire))
            })
            .collect();
        Ticket {
            store,
            command,
            keys,
            generation,
            seen,
        }
    }

    /// Whether anything the ticket depends on moved since it was taken. Called with the writer lock
    /// held, as every bump is, so the answer stays true until the fill is done.
    pub(super) fn check(&self, ticket: &Ticket) -> Result<(), Moved> {
        if self.generation.load(Ordering::Acquire) != ticket.generation {
            return Err(Moved::Generation);
        }
        let moved = ticket
            .seen
            .iter()
            .any(|&(slot, epoch)| self.slots[slot].load(Ordering::Acquire) != epoch);
        if moved {
            Err(Moved::Key)
        } else {
            Ok(())
        }
    }

    /// Marks `key` invalidated: every ticket that saw its slot before now is refused.
    pub(super) fn bump(&self, key: &[u8]) {
        self.slots[self.slot(key)].fetch_add(1, Ordering::AcqRel);
    }

    /// Marks everything invalidated.
    pub(super) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}
