//! The client-side cache of one connection: cached replies by command, kept correct by the
//! invalidations Redis pushes on that connection, bounded in entries and bytes.
//!
//! # How it is used
//!
//! A cacheable read (see `cacheable`) first tries [`Store::get`] with its cache key (`encode_key`).
//! On a miss, the caller takes a [`Ticket`] ([`Store::ticket`]) *before* its command is queued for
//! the socket, sends `CLIENT CACHING yes` and the read contiguously, and hands the reply to
//! [`Store::fill`] together with the ticket, from whichever thread has it. The connection's reader
//! gives every `invalidate` push to [`Store::invalidate`] as it reads it (the store is the
//! connection's `OutOfBandSink`), and the store is flushed when the connection ends and again when
//! it is re-established.
//!
//! # Why a reply never lands after an invalidation of its keys
//!
//! Each key counts invalidations in an epoch (keys share epochs by hash, see `epochs`), and a flush
//! bumps a generation. A ticket records the generation and its keys' epochs; a fill is accepted only
//! if none of them moved, checked under the writer lock that every bump also holds. Take a read `R`
//! of key `k` and a write `W` of `k` by anyone:
//!
//! 1. `ticket(R)` happens before `R` is written to the socket, so before Redis runs `R`.
//! 2. Redis runs `R` after `CLIENT CACHING yes`, so from then on it tracks `k` for this connection.
//! 3. If `W` runs after `R`, Redis queues `invalidate [k]` on this connection when `W` runs: after
//!    `R`'s reply on the wire (it was queued first), and it arrives even if `W` came from this very
//!    connection (tracking is never `NOLOOP`).
//! 4. The reader handles frames in wire order, so the invalidation is handled after `R`'s reply was
//!    read. Either the fill came first (it held the lock; the invalidation then finds the entry
//!    through the key index and removes it), or the invalidation came first (it bumped `k`'s epoch
//!    after the ticket was taken: the fill is refused). Never a stale entry.
//! 5. If `W` ran before `R`, `R`'s reply is `W`'s value or newer: storing it is right. An
//!    invalidation of an earlier read may still arrive between the ticket and the fill and refuse
//!    it; that costs a later miss, never a wrong hit.
//! 6. A disconnection loses whatever Redis would have pushed; the flush on `closed` (generation
//!    bump) empties the cache and refuses every fill whose ticket came before it, and the flush on
//!    reconnection does the same for anything in between. An `invalidate` with null (`FLUSHALL`,
//!    `FLUSHDB`, a tracking table overflow) is a flush too.
//!
//! After any later round trip on the connection, then, a reader sees `W`: the reply to that round
//! trip is read after the invalidation, which by then has removed the entry.
//!
//! # Bounds
//!
//! `max_entries` entries and `max_bytes` bytes, counting for each entry its cache key (the encoded
//! command, keys included) and its reply ([`Reply::size`]). What an entry costs beyond that (its
//! place in the maps, queues and key index: about 350 bytes, measured by `examples/cache_hits.rs`)
//! is bounded by `max_entries`. Which entry goes is S3-FIFO's choice (see `policy`): a scan of keys
//! read once never pushes out keys that are read again. A reply larger than `max_bytes` is not cached.
//!
//! # Threads
//!
//! Hits come from many callers at once; fills, invalidations and evictions are rarer and mostly
//! from the connection's reader. So readers see only `SHARDS` maps, each under its own striped
//! reader-writer lock (`striped`: a reader takes only its thread's stripe, so hot keys read from
//! every core do not bounce one lock word between them). A hit takes one read lock, reads an atomic
//! frequency, and either clones an `Arc` or (`lookup_with`, for small replies) builds its term under
//! the read lock; hits are counted per thread. Everything else is under one writer `Mutex`, taken
//! before any shard's write lock, briefly, to change that shard's map. A hit never waits for the
//! writer lock, and waits for a shard's write lock only while one entry is added or removed.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use thiserror::Error;

use super::epochs::{Epochs, KeyHash, Moved, Ticket};
use super::policy::{Budget, Id, NewNode, Policy};
use super::reply::{Reply, ReplyError};
use super::striped::{stripe, Striped, STRIPES};
use crate::resp::Frame;

/// Number of reader maps (a power of two).
const SHARDS: usize = 16;

/// How big a cache may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries at once.
    pub max_entries: usize,
    /// Most bytes at once: cache keys, keys and replies.
    pub max_bytes: usize,
}

/// Limits a cache cannot have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LimitsError {
    #[error("max_entries must be at least 1")]
    NoEntries,
    #[error("max_bytes must be at least 1")]
    NoBytes,
    #[error("max_entries must be below 4294967295")]
    TooManyEntries,
}

/// Why a reply was not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FillError {
    /// One of its keys was invalidated after its ticket was taken: the reply may be stale.
    #[error("a key of the reply was invalidated after its read was sent")]
    Stale,
    /// The cache was flushed (`FLUSHALL`, disconnection, reconnection) after its ticket was taken.
    #[error("the cache was flushed after the read was sent")]
    Flushed,
    /// The ticket was taken from another cache (another connection's).
    #[error("the ticket belongs to another cache")]
    ForeignTicket,
    /// The ticket names no key: nothing could ever invalidate the entry.
    #[error("a read of no key is not cached")]
    NoKeys,
    /// The entry alone would exceed `max_bytes`.
    #[error("the entry takes {cost} bytes, more than max_bytes ({max})")]
    TooLarge { cost: usize, max: usize },
    /// The reply itself cannot be cached.
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// What the cache did so far, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
    /// Entries dropped to stay within the limits.
    pub evictions: u64,
    /// Entries dropped because Redis said their data changed (an `invalidate` push of one of their
    /// keys, or with null) or the connection ended.
    pub invalidations: u64,
    /// Replies not cached because an invalidation or flush came between their ticket and their fill.
    pub refused_fills: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// One connection's cache. Share it in an `Arc` between callers and the connection.
pub struct Store {
    id: u64,
    limits: Limits,
    hasher: foldhash::quality::RandomState,
    shards: Box<[Shard]>,
    book: Mutex<Book>,
    epochs: Epochs,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    refused_fills: AtomicU64,
    /// Hits, counted by the thread's stripe.
    hits: Box<[Stripe]>,
}

/// A shard's entries by cache key, found by the hash the store already computed (the key is hashed
/// once per lookup, not again by the map).
#[derive(Default)]
struct ShardMap(hashbrown::HashTable<(u64, Bytes, Reply)>);

impl ShardMap {
    fn get(&self, hash: u64, command: &[u8]) -> Option<&Reply> {
        self.0
            .find(hash, |(_, c, _)| c.as_ref() == command)
            .map(|(_, _, reply)| reply)
    }

    /// Adds the entry, replacing one for the same command.
    fn insert(&mut self, hash: u64, command: Bytes, reply: Reply) {
        match self
            .0
            .entry(hash, |(_, c, _)| *c == command, |(h, _, _)| *h)
        {
            hashbrown::hash_table::Entry::Occupied(mut entry) => {
                entry.get_mut().2 = reply;
            }
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert((hash, command, reply));
            }
        }
    }

    fn remove(&mut self, hash: u64, command: &[u8]) {
        if let Ok(entry) = self.0.find_entry(hash, |(_, c, _)| c.as_ref() == command) {
            entry.remove();
        }
    }
}

/// A counter on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Stripe(AtomicU64);

/// The entries readers look up, by cache key. Aligned so that two shards' lock words never share
/// a cache line.
#[repr(align(128))]
struct Shard {
    map: Striped<ShardMap>,
    misses: AtomicU64,
}

/// The writer's side: the policy's queues and which entries depend on each key.
struct Book {
    policy: Policy,
    by_key: ByKey,
}

/// Entries by key hash. The hashes are already keyed and uniform: hashing them again is waste.
type ByKey = HashMap<KeyHash, Dependents, BuildHasherDefault<PassThrough>>;

#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; this keeps any other input well mixed enough.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The entries that depend on one key: nearly always one, kept inline (no allocation per key).
#[derive(Debug)]
enum Dependents {
    One(Id),
    Many(Vec<Id>),
}

impl Dependents {
    fn add(&mut self, id: Id) {
        match self {
            Dependents::One(first) => *self = Dependents::Many(vec![*first, id]),
            Dependents::Many(ids) => ids.push(id),
        }
    }

    /// Forgets `id`; true when none is left.
    fn forget(&mut self, id: Id) -> bool {
        match self {
            Dependents::One(only) => *only == id,
            Dependents::Many(ids) => {
                ids.retain(|&other| other != id);
                ids.is_empty()
            }
        }
    }

    fn into_ids(self) -> Vec<Id> {
        match self {
            Dependents::One(id) => vec![id],
            Dependents::Many(ids) => ids,
        }
    }
}

impl Store {
    /// An empty cache.
    pub fn new(limits: Limits) -> Result<Store, LimitsError> {
        check(limits)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let budget = Budget {
            entries: limits.max_entries,
            bytes: limits.max_bytes,
        };
        Ok(Store {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limits,
            hasher: foldhash::quality::RandomState::default(),
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
            book: Mutex::new(Book {
                policy: Policy::new(budget),
                by_key: ByKey::default(),
            }),
            epochs: Epochs::new(limits.max_entries),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            refused_fills: AtomicU64::new(0),
            hits: (0..STRIPES).map(|_| Stripe::default()).collect(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The cached reply to `command` (a cache key from `encode_key`), counted as a hit or a miss.
    pub fn get(&self, command: &[u8]) -> Option<Reply> {
        let found = self.lookup(command);
        if found.is_none() {
            self.count_miss(command);
        }
        found
    }

    /// The cached reply to `command`, counted as a hit if there is one; a miss is not counted (the
    /// caller counts it with [`Store::count_miss`] once it knows the read could have been cached).
    pub fn lookup(&self, command: &[u8]) -> Option<Reply> {
        self.lookup_with(command, Reply::clone)
    }

    /// [`Store::lookup`], handing the reply to `f` with its shard's read lock held (writers of that
    /// shard wait meanwhile: keep `f` short, such as building the term of a small reply). Saves the
    /// reference count of a clone, a contended cache line when many threads read one hot entry.
    pub fn lookup_with<T>(&self, command: &[u8], f: impl FnOnce(&Reply) -> T) -> Option<T> {
        let hash = self.hash(command);
        let shard = self.shard(hash);
        // One thread-local read for the lock's stripe and the hit counter's.
        let stripe = stripe();
        let found = shard.map.read_at(stripe).get(hash, command).map(|reply| {
            reply.touch();
            f(reply)
        });
        if found.is_some() {
            // Counted per thread, not per shard: two threads reading hot keys of one shard would
            // otherwise bounce the counter's cache line between them on every hit.
            self.hits[stripe].0.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Counts a lookup of `command` that found nothing.
    pub fn count_miss(&self, command: &[u8]) {
        let shard = self.shard(self.hash(command));
        shard.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what a read of `keys` by `command` (its cache key) must not miss: take it before the
    /// command is queued for the socket. Repeated keys count once.
    pub fn ticket<K: AsRef<[u8]>>(
        &self,
        command: Bytes,
        keys: impl IntoIterator<Item = K>,
    ) -> Ticket {
        let mut distinct: Vec<KeyHash> = Vec::new();
        for key in keys {
            let key = self.epochs.hash(key.as_ref());
            if !distinct.contains(&key) {
                distinct.push(key);
            }
        }
        self.epochs
            .ticket(self.id, command, distinct.into_boxed_slice())
    }

    /// Caches `reply` as the answer to `ticket`'s command, unless one of its keys was invalidated,
    /// or the cache flushed, since the ticket was taken. Evicts what the limits require.
    pub fn fill(&self, ticket: Ticket, reply: &Frame) -> Result<(), FillError> {
        if ticket.store != self.id {
            return Err(FillError::ForeignTicket);
        }
        if ticket.keys.is_empty() {
            return Err(FillError::NoKeys);
        }
        // Copied before the lock is taken.
        let reply = Reply::new(reply)?;
        let cost = entry_cost(&ticket, &reply);
        if cost > self.limits.max_bytes {
            return Err(FillError::TooLarge {
                cost,
                max: self.limits.max_bytes,
            });
        }
        let hash = self.hash(&ticket.command);
        let mut book = self.lock_book();
        if let Err(moved) = self.epochs.check(&ticket) {
            self.refused_fills.fetch_add(1, Ordering::Relaxed);
            return Err(match moved {
                Moved::Generation => FillError::Flushed,
                Moved::Key => FillError::Stale,
            });
        }
        self.insert(&mut book, ticket, hash, reply, cost);
        self.evict(&mut book);
        Ok(())
    }

    /// Handles the payload of an `invalidate` push: a list of keys, or null for all of them. A
    /// payload of any other shape flushes too: when in doubt, forget.
    pub fn invalidate(&self, payload: &Frame) {
        match payload {
            Frame::Array(items) | Frame::Set(items) => match keys_of(items) {
                Some(keys) => self.invalidate_keys(&keys),
                None => self.flush(),
            },
            _ => self.flush(),
        }
    }

    /// Drops every entry that depends on one of `keys`, and refuses every fill of a ticket that
    /// was taken before now and depends on one of them.
    pub fn invalidate_keys<K: AsRef<[u8]>>(&self, keys: &[K]) {
        let mut book = self.lock_book();
        for key in keys {
            let key = self.epochs.hash(key.as_ref());
            // Bumped even when nothing is cached under `key`: a read of it may be on its way.
            self.epochs.bump(key);
            let dependents = book.by_key.remove(&key).map(Dependents::into_ids);
            for id in dependents.unwrap_or_default() {
                if self.remove(&mut book, id) {
                    self.invalidations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Drops every entry and refuses every fill of a ticket taken before now.
    ///
    /// The maps are swapped for empty ones under their locks and freed after: freeing a large cache
    /// entry by entry takes milliseconds, which hits (on scheduler threads) must not wait for.
    pub fn flush(&self) {
        let (dropped, by_key, maps) = {
            let mut book = self.lock_book();
            self.epochs.bump_generation();
            let dropped = book.policy.entries() as u64;
            book.policy.clear();
            let by_key = std::mem::take(&mut book.by_key);
            let maps: Vec<ShardMap> = self
                .shards
                .iter()
                .map(|shard| std::mem::take(&mut *shard.map.write()))
                .collect();
            (dropped, by_key, maps)
        };
        drop((by_key, maps));
        self.invalidations.fetch_add(dropped, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let book = self.lock_book();
            (book.policy.entries(), book.policy.bytes())
        };
        let sum = |f: fn(&Shard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum()
        };
        CacheStats {
            hits: self.hits.iter().map(|h| h.0.load(Ordering::Relaxed)).sum(),
            misses: sum(|s| &s.misses),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            refused_fills: self.refused_fills.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    /// The epoch slot `key` counts in (tests tell unrelated keys that share one).
    #[cfg(test)]
    pub(super) fn epoch_slot(&self, key: &[u8]) -> usize {
        self.epochs.slot(self.epochs.hash(key))
    }

    fn hash(&self, command: &[u8]) -> u64 {
        self.hasher.hash_one(command)
    }

    fn shard(&self, hash: u64) -> &Shard {
        // Middle bits: a shard's map places entries by the same hash, using its low bits (the
        // bucket) and its top seven (the tag), which must vary within a shard.
        let index = (hash >> 32) as usize % SHARDS;
        &self.shards[index]
    }

    fn lock_book(&self) -> MutexGuard<'_, Book> {
        // Nothing here panics while holding the lock; should it, the data is still consistent
        // enough to serve (at worst an entry the index forgot), so carry on rather than poison.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the entry (replacing one for the same command) and indexes it by its keys.
    fn insert(&self, book: &mut Book, ticket: Ticket, hash: u64, reply: Reply, cost: usize) {
        let shard = self.shard(hash);
        let previous = shard.map.read().get(hash, &ticket.command).map(Reply::id);
        if let Some(id) = previous {
            self.remove(book, id);
        }
        let Ticket { command, keys, .. } = ticket;
        let node = NewNode::new(command.clone(), hash, keys, cost);
        let Some(id) = book.policy.insert(node, &reply) else {
            return;
        };
        shard.map.write().insert(hash, command, reply);
        let Book { policy, by_key } = book;
        for &key in policy.get(id).map_or(&[][..], |node| &node.keys) {
            match by_key.get_mut(&key) {
                Some(dependents) => dependents.add(id),
                None => {
                    by_key.insert(key, Dependents::One(id));
                }
            }
        }
    }

    /// Evicts entries until both limits hold.
    fn evict(&self, book: &mut Book) {
        while book.policy.over_budget() {
            let Some(id) = book.policy.victim() else {
                return;
            };
            book.policy.remember_if_small(id);
            if self.remove(book, id) {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes entry `id` out of the policy, its shard and the key index; false if it was not there.
    fn remove(&self, book: &mut Book, id: Id) -> bool {
        let Some(node) = book.policy.remove(id) else {
            return false;
        };
        let mut map = self.shard(node.hash).map.write();
        if map
            .get(node.hash, &node.command)
            .is_some_and(|reply| reply.same(&node.reply))
        {
            map.remove(node.hash, &node.command);
        }
        drop(map);
        for &key in node.keys.iter() {
            unindex(&mut book.by_key, key, id);
        }
        true
    }
}

impl Shard {
    fn new() -> Shard {
        Shard {
            map: Striped::new(ShardMap::default()),
            misses: AtomicU64::new(0),
        }
    }
}

fn check(limits: Limits) -> Result<(), LimitsError> {
    if limits.max_entries == 0 {
        Err(LimitsError::NoEntries)
    } else if limits.max_bytes == 0 {
        Err(LimitsError::NoBytes)
    } else if limits.max_entries >= u32::MAX as usize {
        Err(LimitsError::TooManyEntries)
    } else {
        Ok(())
    }
}

/// What an entry counts against `max_bytes`: its cache key (which holds its keys) and its reply.
fn entry_cost(ticket: &Ticket, reply: &Reply) -> usize {
    ticket.command.len() + reply.size()
}

/// The keys of an `invalidate` push, or `None` if one of them is not a string.
fn keys_of(items: &[Frame]) -> Option<Vec<&[u8]>> {
    items
        .iter()
        .map(|item| match item {
            Frame::Bulk(key) | Frame::Simple(key) => Some(&key[..]),
            _ => None,
        })
        .collect()
}

fn unindex(by_key: &mut ByKey, key: KeyHash, id: Id) {
    if by_key.get_mut(&key).is_some_and(|d| d.forget(id)) {
        by_key.remove(&key);
    }
}
