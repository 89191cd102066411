//! The rustler shell of redix_rs: NIF functions, the connection resource, and the translation between
//! Erlang terms and the pure core (`redix_rs_core`).
//!
//! Everything that waits runs on one shared tokio runtime; NIFs only encode, enqueue and return.

mod args;
mod atoms;
mod cache;
mod cluster;
mod cluster_pubsub;
mod config;
mod handle;
mod message_env;
mod nifs;
mod pubsub;
mod reply;
mod runtime;
mod side;

// Only a `load` callback (rustler's): the library has no `upgrade` or `reload` callback, on purpose. Its
// state (the tokio runtime, the call-state table, the resource types that live handles belong to) cannot
// be handed over to a second copy, so loading `RedixRs.Native` again in a running node makes
// `erlang:load_nif/2` answer `{error, {upgrade, "Upgrade not supported by this NIF library."}}`, and the
// module's `@on_load` then fails, which keeps the running version current. A new library needs a restart.
rustler::init!("Elixir.RedixRs.Native", load = load);

/// After rustler's own resource types: the cache's, which it opens by hand (see `cache::open_type`).
fn load(env: rustler::Env, _load_info: rustler::Term) -> bool {
    cache::open_type(env)
}
