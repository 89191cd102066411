//! The client-side cache of one connection as the connection sees it: the [`Store`], which commands
//! may be cached (learnt from the server at each handshake), and how Redis is asked to track them
//! (`OPTIN`, or `BCAST` with prefixes).
//!
//! The life of a cached read, in order:
//!
//! 1. [`ClientCache::get`] with the read's cache key: a hit is answered at once by the caller.
//! 2. On a miss, [`ClientCache::prepare`] checks that the read may be cached (a cacheable command,
//!    and in broadcast mode every key under one of the prefixes), counts the miss and takes its
//!    [`Ticket`], before anything is queued for the socket.
//! 3. The read is submitted as one submission: `CLIENT CACHING yes` and the read (`OPTIN`), or the
//!    read alone (`BCAST`, where Redis tracks every key under the prefixes). The waiter hands the
//!    read's reply to [`ClientCache::fill`] on the connection's reader, in wire order with the
//!    invalidations, before the reply is sent to its caller (see `store` for why that is correct).
//!
//! At each (re)connection the handshake sends `COMMAND` (read by [`ClientCache::learn_commands`]),
//! then the tracking command ([`ClientCache::tracking_command`]), then calls
//! [`ClientCache::tracking_on`], which flushes: nothing read before this connection is trusted. The
//! cache is its connection's out-of-band sink, which flushes it when the connection ends.

use std::fmt;
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::cacheable::{Cacheable, CommandInfoError, NotCacheable};
use super::epochs::Ticket;
use super::key::encode_key;
use super::reply::Reply;
use super::store::{CacheStats, FillError, Limits, LimitsError, Store};
use crate::conn::{OutOfBand, OutOfBandSink, Reason, Taken};
use crate::resp::Frame;

/// How Redis is asked to track what this connection reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingMode {
    /// `CLIENT TRACKING on OPTIN`: only reads sent right after `CLIENT CACHING yes` are tracked, so
    /// the reads of callers who did not ask for caching cost the server nothing.
    OptIn,
    /// `CLIENT TRACKING on BCAST PREFIX p ...`: Redis reports every change of a key under one of the
    /// prefixes (all keys when there is none); only reads of such keys are cached.
    Broadcast { prefixes: Vec<Bytes> },
}

/// Why a read cannot be served from this cache.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(transparent)]
    NotCacheable(#[from] NotCacheable),
    /// Broadcast mode: a key no prefix covers, of which Redis would not report changes.
    #[error("key {0:?} is not under any of the broadcast prefixes")]
    NotCovered(String),
    /// The connection has not completed a handshake yet (never seen by a caller that has a handle).
    #[error("the connection has not learnt the server's commands yet")]
    NotReady,
}

/// The `CLIENT CACHING yes` that precedes each cached read in `OPTIN` mode.
pub const CACHING_YES: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$7\r\nCACHING\r\n$3\r\nyes\r\n";

/// One connection's cache. Share it in an `Arc`; it outlives reconnections.
pub struct ClientCache {
    store: Store,
    mode: TrackingMode,
    commands: RwLock<Option<Arc<Cacheable>>>,
}

impl ClientCache {
    pub fn new(limits: Limits, mode: TrackingMode) -> Result<ClientCache, LimitsError> {
        Ok(ClientCache {
            store: Store::new(limits)?,
            mode,
            commands: RwLock::new(None),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn mode(&self) -> &TrackingMode {
        &self.mode
    }

    /// Whether each cached read is preceded by `CLIENT CACHING yes` (whose `+OK` its waiter eats).
    pub fn sends_caching_yes(&self) -> bool {
        self.mode == TrackingMode::OptIn
    }

    /// The cached reply to the command whose cache key is `key` (`encode_key`). Only hits are
    /// counted here: a miss is counted by [`ClientCache::prepare`], once the read is known to be
    /// cacheable.
    pub fn get(&self, key: &[u8]) -> Option<Reply> {
        self.store.lookup(key)
    }

    /// [`ClientCache::get`], handing the reply to `f` under its shard's read lock (see
    /// [`Store::lookup_with`]).
    pub fn get_with<T>(&self, key: &[u8], f: impl FnOnce(&Reply) -> T) -> Option<T> {
        self.store.lookup_with(key, f)
    }

    /// Checks that `command` may be cached, counts a miss, and takes the ticket its fill needs.
    /// Call it before the read is queued for the socket.
    pub fn prepare<A: AsRef<[u8]>>(&self, command: &[A]) -> Result<Ticket, Refusal> {
        let commands = self.commands();
        let table = commands.as_deref().ok_or(Refusal::NotReady)?;
        let keys = table.keys(command)?;
        if let TrackingMode::Broadcast { prefixes } = &self.mode {
            let uncovered = keys
                .iter()
                .find(|key| !prefixes.is_empty() && !prefixes.iter().any(|p| key.starts_with(p)));
            if let Some(key) = uncovered {
                return Err(Refusal::NotCovered(
                    String::from_utf8_lossy(key).into_owned(),
                ));
            }
        }
        let mut out = BytesMut::new();
        encode_key(command, &mut out);
        let key = out.freeze();
        self.store.count_miss(&key);
        Ok(self.store.ticket(key, keys))
    }

    /// Caches `reply` under `ticket` unless an invalidation or flush came since it was taken.
    pub fn fill(&self, ticket: Ticket, reply: &Frame) -> Result<(), FillError> {
        self.store.fill(ticket, reply)
    }

    pub fn stats(&self) -> CacheStats {
        self.store.stats()
    }

    /// The cacheable commands, once a handshake has read them.
    pub fn commands(&self) -> Option<Arc<Cacheable>> {
        self.commands
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the server's reply to `COMMAND`: from now on, that is what may be cached.
    pub fn learn_commands(&self, reply: &Frame) -> Result<(), CommandInfoError> {
        let table = Cacheable::from_command_info(reply)?;
        *self.commands.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
        Ok(())
    }

    /// The command that turns tracking on: `CLIENT TRACKING on OPTIN`, or `CLIENT TRACKING on BCAST
    /// PREFIX p ...`. Never `NOLOOP`: other callers of the same connection write keys this cache
    /// holds, and their writes must invalidate it too.
    pub fn tracking_command(&self) -> Vec<Bytes> {
        let mut args: Vec<Bytes> = ["CLIENT", "TRACKING", "on"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        match &self.mode {
            TrackingMode::OptIn => args.push(Bytes::from_static(b"OPTIN")),
            TrackingMode::Broadcast { prefixes } => {
                args.push(Bytes::from_static(b"BCAST"));
                for prefix in prefixes {
                    args.push(Bytes::from_static(b"PREFIX"));
                    args.push(prefix.clone());
                }
            }
        }
        args
    }

    /// Tracking is on for a new connection: whatever was cached or in flight before is forgotten.
    pub fn tracking_on(&self) {
        self.store.flush();
    }
}

impl fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCache")
            .field("mode", &self.mode)
            .field("limits", &self.store.limits())
            .finish_non_exhaustive()
    }
}

impl OutOfBandSink for ClientCache {
    fn take(&self, item: OutOfBand) -> Taken {
        self.store.take(item)
    }

    fn rejected(&self, error: &Frame) {
        self.store.rejected(error);
    }

    fn closed(&self, reason: &Reason) {
        self.store.closed(reason);
    }
}

/// A connection's cache as its connect options carry it (to the handshake). Two are equal when they
/// are the same cache.
#[derive(Debug, Clone)]
pub struct Tracking(pub Arc<ClientCache>);

impl PartialEq for Tracking {
    fn eq(&self, other: &Tracking) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Tracking {}
