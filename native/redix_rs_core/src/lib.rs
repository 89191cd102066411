//! Pure-Rust core of redix_rs: everything that can be tested without the BEAM.
//!
//! * [`resp`]: the RESP2/RESP3 frame type, the incremental parser and command encoding.
//! * [`conn`]: one connection: transport, handshake and the multiplexer shared by many callers.
//! * [`etf`]: big integers in the Erlang external term format (RESP3 big numbers).
//! * [`pubsub`]: recognising pub/sub frames and routing them to subscribers.
//! * [`cluster`]: Redis Cluster's hash slots, slot map (topology) and command key positions.
//! * [`cache`]: client-side caching: which commands are cacheable, and a cache kept correct by
//!   RESP3 invalidations.

pub mod cache;
pub mod cluster;
pub mod conn;
pub mod etf;
pub mod pubsub;
pub mod resp;
