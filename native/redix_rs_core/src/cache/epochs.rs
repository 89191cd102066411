//! Keys by hash, per-key epochs hashed into a fixed table, and the flush generation: what a
//! [`Ticket`] records when a cacheable read is submitted and what a fill is checked against.
//!
//! The cache knows keys only by a 64-bit hash, keyed per cache (`RandomState`, so a peer cannot aim
//! at one): the key index and the epochs use it, and the key bytes themselves are kept only inside
//! the cache key (the encoded command). Two keys with one hash would only make an invalidation of
//! one drop the other's entries too: never a stale hit.
//!
//! Keeping an exact epoch for every key ever invalidated would grow without bound (Redis may
//! invalidate keys this cache never held), so keys share `slots` counters by hash, like a counting
//! Bloom filter. Sharing can only make a fill be refused when an unrelated key of the same slot was
//! invalidated meanwhile (a later miss, never a stale hit): the check errs on the safe side.
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

/// A key as the cache knows it.
pub(super) type KeyHash = u64;

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
    /// The distinct keys the reply depends on.
    pub(super) keys: Box<[KeyHash]>,
    pub(super) generation: u64,
    /// The epoch of each key's slot, in the order of `keys`.
    pub(super) seen: Box<[u64]>,
}

impl Ticket {
    /// The command (its cache key) this ticket will fill.
    pub fn command(&self) -> &Bytes {
        &self.command
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

    pub(super) fn hash(&self, key: &[u8]) -> KeyHash {
        self.hasher.hash_one(key)
    }

    /// The slot a key counts in.
    pub(super) fn slot(&self, key: KeyHash) -> usize {
        // Truncating the hash is the point: any bits will do.
        (key as usize) & self.mask
    }

    /// Records the generation and the current epoch of each key (`keys` are distinct).
    pub(super) fn ticket(&self, store: u64, command: Bytes, keys: Box<[KeyHash]>) -> Ticket {
        let generation = self.generation.load(Ordering::Acquire);
        let seen = keys.iter().map(|&key| self.epoch(key)).collect();
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
            .keys
            .iter()
            .zip(ticket.seen.iter())
            .any(|(&key, &seen)| self.epoch(key) != seen);
        if moved {
            Err(Moved::Key)
        } else {
            Ok(())
        }
    }

    /// Marks `key` invalidated: every ticket that saw its slot before now is refused.
    pub(super) fn bump(&self, key: KeyHash) {
        if let Some(slot) = self.slots.get(self.slot(key)) {
            slot.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks everything invalidated.
    pub(super) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn epoch(&self, key: KeyHash) -> u64 {
        self.slots
            .get(self.slot(key))
            .map_or(0, |slot| slot.load(Ordering::Acquire))
    }
}
