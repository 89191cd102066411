//! The rustler shell of redix_rs: NIF functions, the connection resource, and the translation between
//! Erlang terms and the pure core (`redix_rs_core`).
//!
//! Everything that waits runs on one shared tokio runtime; NIFs only encode, enqueue and return.

mod args;
mod atoms;
mod config;
mod handle;
mod message_env;
mod nifs;
mod pubsub;
mod reply;
mod runtime;

rustler::init!("Elixir.RedixRs.Native");
