//! Client-side caching (issue 15), the pure-Rust part: what may be cached, and the cache itself.
//!
//! * [`cacheable`]: which commands may be served from a cache, derived from `COMMAND INFO`, and
//!   where their keys are.
//! * [`store`]: the cache of one connection, whose fills can never land after an invalidation of
//!   their keys (its header says why), bounded in entries and bytes.
//! * `encode_key`: a command's cache key.
//! * [`Reply`]: a cached reply, re-packed to own exactly its bytes.
//! * [`ClientCache`]: the store with what the connection needs around it (which commands are
//!   cacheable, the tracking mode); what the NIF crate and the handshake use.
//!
//! A connection with a cache speaks RESP3, turns `CLIENT TRACKING on OPTIN` on at every (re)connect,
//! sends `CLIENT CACHING yes` right before each cacheable read, and gives its [`Store`] to its
//! multiplexer as the out-of-band sink (`Multiplexer::with_sink`), so that invalidations reach it in
//! wire order and a disconnection flushes it.

pub mod cacheable;
mod client;
mod epochs;
mod ghost;
mod key;
mod policy;
mod reply;
mod sink;
pub mod store;
mod striped;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use cacheable::{Cacheable, CommandInfoError, Exclusion, NotCacheable};
pub use client::{ClientCache, Refusal, Tracking, TrackingMode, CACHING_YES};
pub use epochs::Ticket;
pub use key::encode_key;
pub use reply::{Reply, ReplyError};
pub use store::{CacheStats, FillError, Limits, LimitsError, Store};
