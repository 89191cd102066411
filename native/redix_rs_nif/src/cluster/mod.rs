//! Redis Cluster on the native side: the cluster resource and its NIFs. A call is routed in the
//! caller's NIF call (slot from the command's first key, node from the slot map) and goes straight
//! to that node's multiplexed connection; redirects are followed on the tokio thread that read them
//! (see `call`); the topology is kept current by a tokio task (see `inner`).

mod call;
mod inner;
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redix_rs_core::conn::call_state::CallState;
use redix_rs_core::conn::Outgoing;
use rustler::{
    Atom, Encoder, Env, Error, LocalPid, Monitor, NifResult, Resource, ResourceArc, Term,
};

use crate::args::{count_commands, encode_submission, Budget, EncodeStop, Encoding, Kind};
use crate::{atoms, config};
use call::{Call, Cmd, Reply};
use inner::{Inner, Refused, Route, Settings};

/// A cluster as Elixir sees it. Its owner's death, or the handle being dropped, closes every node
/// connection.
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

#[rustler::resource_impl]
impl Resource for ClusterHandle {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.inner.shutdown(true);
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        self.inner.shutdown(false);
    }
}

/// Starts a cluster: `config` is a node connection's options (as for `connect/2`), `seeds` are
/// `{host, port}`, `opts` is `%{read_from_replicas, refresh_interval, backoff_initial,
/// backoff_max, health_check_interval}` (milliseconds, an atom for never/unbounded). The owner gets `{:redix_rs_cluster,
/// event}` messages. Returns `{:ok, handle}`.
#[rustler::nif]
fn cluster_start<'a>(
    env: Env<'a>,
    config: Term<'a>,
    seeds: Vec<(String, u16)>,
    opts: Term<'a>,
    owner: LocalPid,
) -> NifResult<Term<'a>> {
    let node = config::decode(config)?;
    runtime_ok()?;
    let get = |key: &str| -> NifResult<Term<'a>> {
        let atom = Atom::from_str(env, key)?;
        opts.map_get(atom)
    };
    let millis = |t: Term<'a>| -> NifResult<Option<Duration>> {
        if t.is_atom() {
            Ok(None)
        } else {
            Ok(Some(Duration::from_millis(t.decode()?)))
        }
    };
    if seeds.is_empty() {
        return Err(Error::BadArg);
    }
    let settings = Settings {
        template: node.connect,
        max_queued_bytes: node.max_queued_bytes,
        reply_limits: node.reply_limits,
        read_from_replicas: get("read_from_replicas")?.decode()?,
        refresh_interval: millis(get("refresh_interval")?)?,
        backoff_initial: millis(get("backoff_initial")?)?.unwrap_or(Duration::from_millis(500)),
        backoff_max: millis(get("backoff_max")?)?,
        health_check_interval: millis(get("health_check_interval")?)?,
        seeds,
    };
    let handle = ResourceArc::new(ClusterHandle {
        inner: Inner::start(settings, owner),
    });
    env.monitor(&handle, &owner);
    Ok((atoms::ok(), handle).encode(env))
}

fn runtime_ok() -> NifResult<()> {
    crate::runtime::get()
        .map(|_| ())
        .map_err(|e| Error::Term(Box::new(e)))
}

/// Routes and queues `commands` for the calling process (`kind`: `:pipeline | :transaction`;
/// `route`: `:primary | :replica | :prefer_replica | {:node, "host:port"}`; `timeout`: ms or
/// `:infinity`). Answers as `submit/4` does, plus `{:error, {:redis_error, message}}` for a
/// transaction refused before anything was sent.
#[rustler::nif]
fn cluster_submit<'a>(
    env: Env<'a>,
    handle: ResourceArc<ClusterHandle>,
    reference: Term<'a>,
    commands: Term<'a>,
    kind: Term<'a>,
    route: Term<'a>,
    timeout: Term<'a>,
) -> NifResult<Term<'a>> {
    submit(
        env,
        &handle,
        reference,
        commands,
        (kind, route, timeout),
        Budget::NORMAL,
    )
}

/// `cluster_submit/6` for inputs of any size, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn cluster_submit_dirty<'a>(
    env: Env<'a>,
    handle: ResourceArc<ClusterHandle>,
    reference: Term<'a>,
    commands: Term<'a>,
    kind: Term<'a>,
    route: Term<'a>,
    timeout: Term<'a>,
) -> NifResult<Term<'a>> {
    submit(
        env,
        &handle,
        reference,
        commands,
        (kind, route, timeout),
        Budget::UNLIMITED,
    )
}

/// Closes every node connection (`RedixRs.Cluster.stop/2`). Idempotent.
#[rustler::nif]
fn cluster_close(handle: ResourceArc<ClusterHandle>) -> Atom {
    handle.inner.shutdown(false);
    atoms::ok()
}

/// `{primaries, connections}`: the `"host:port"` of every primary that owns slots, and
/// `{"host:port", readonly, connected}` for every node connection kept.
#[rustler::nif]
fn cluster_info(handle: ResourceArc<ClusterHandle>) -> (Vec<String>, Vec<(String, bool, bool)>) {
    handle.inner.describe()
}

mod route_atoms {
    rustler::atoms! { primary, replica, prefer_replica, node }
}

enum Target {
    Route(Route),
    Node(String),
}

fn decode_target(term: Term<'_>) -> Option<Target> {
    if let Ok(atom) = Atom::from_term(term) {
        return Some(Target::Route(if atom == route_atoms::primary() {
            Route::Primary
        } else if atom == route_atoms::replica() {
            Route::Replica
        } else if atom == route_atoms::prefer_replica() {
            Route::PreferReplica
        } else {
            return None;
        }));
    }
    let (tag, address): (Atom, String) = term.decode().ok()?;
    (tag == route_atoms::node()).then_some(Target::Node(address))
}

fn submit<'a>(
    env: Env<'a>,
    handle: &ClusterHandle,
    reference: Term<'a>,
    commands: Term<'a>,
    (kind, route, timeout): (Term<'a>, Term<'a>, Term<'a>),
    budget: Budget,
) -> NifResult<Term<'a>> {
    let transaction = match crate::args::decode_kind(kind) {
        Some(Kind::Pipeline) => false,
        Some(Kind::Transaction) => true,
        _ => return Err(Error::BadArg),
    };
    let target = decode_target(route).ok_or(Error::BadArg)?;
    let deadline = if timeout.is_atom() {
        None
    } else {
        let ms: u64 = timeout.decode()?;
        Some(Instant::now() + Duration::from_millis(ms))
    };
    let count = match count_commands(commands, budget.elements) {
        Ok(n) => n,
        Err(stop) => return Ok(stop_term(env, stop)),
    };
    let mut buf = BytesMut::new();
    let mut out = Outgoing::detached(&mut buf);
    if let Err(stop) = encode_submission(
        Kind::Pipeline,
        commands,
        &mut out,
        Encoding::Within(budget),
        false,
    ) {
        return Ok(stop_term(env, stop));
    }
    let buf = buf.freeze();
    let split = if count == 1 {
        vec![Cmd {
            pos: usize::from(transaction),
            bytes: buf,
            slot: None,
        }]
    } else {
        let Some(parts) = wire::split(buf) else {
            return Err(Error::BadArg);
        };
        if parts.len() != count {
            return Err(Error::BadArg);
        }
        let offset = usize::from(transaction);
        parts
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| Cmd {
                pos: i + offset,
                bytes,
                slot: None,
            })
            .collect()
    };
    let inner = &handle.inner;
    let Some(state) = CallState::new() else {
        return Ok((atoms::error(), atoms::full()).encode(env));
    };
    let token = state.token();
    let reply = Reply::new(state, env.pid(), reference);
    let answers = if transaction { count + 2 } else { count };
    let route = match &target {
        Target::Route(r) => *r,
        Target::Node(_) => Route::Primary,
    };
    let call = Call::new(inner.clone(), reply, answers, deadline, route, transaction);
    let dispatched = match &target {
        Target::Route(_) => inner.dispatch(call.clone(), split),
        Target::Node(address) => inner.dispatch_to(call.clone(), address, split),
    };
    let refused = |message: &'static str| {
        drop(call.take_reply());
        Ok((
            atoms::error(),
            (Atom::from_str(env, "redis_error")?, message),
        )
            .encode(env))
    };
    match dispatched {
        Ok(()) => Ok((atoms::ok(), (token.index, token.generation)).encode(env)),
        Err(Refused::Closed) => {
            drop(call.take_reply());
            Ok((atoms::error(), atoms::closed()).encode(env))
        }
        Err(Refused::CrossSlot) => refused("CROSSSLOT Keys in request don't hash to the same slot"),
        Err(Refused::NoKey) => {
            refused("ERR transaction_pipeline requires at least one command with a key to route on")
        }
    }
}

fn stop_term(env: Env<'_>, stop: EncodeStop) -> Term<'_> {
    match stop {
        EncodeStop::OverBudget => atoms::dirty().encode(env),
        // Anything else is for the Elixir side to check.
        _ => atoms::normalize().encode(env),
    }
}
