//! Redis Cluster, the pure-Rust pieces: where a key lives ([`slot`]), which node serves a slot
//! ([`topology`]) and where a command's keys are ([`keys`]). Nothing here does I/O: the connection
//! manager feeds these the replies of `CLUSTER SHARDS` / `CLUSTER SLOTS` and `COMMAND INFO` and asks
//! them where each command goes.

pub mod keys;
mod reply;
pub mod slot;
pub mod topology;

pub use keys::{KeyLookup, KeyTable, KeyTableError};
pub use slot::{hash_tag, slot, SLOT_COUNT};
pub use topology::{Health, Node, Origin, Role, Topology, TopologyDiff, TopologyError};
