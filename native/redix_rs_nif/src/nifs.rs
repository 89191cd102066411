//! The NIF functions: `connect`, `submit`, `submit_dirty`, `cancel`, `close`, and for pub/sub
//! `pubsub_op` and `pubsub_drain`. Each returns in microseconds (or runs on a dirty scheduler);
//! everything that waits happens on the tokio runtime.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redix_rs_core::conn::lifecycle::{supervise, Lifecycle, LifecycleListener};
use redix_rs_core::conn::{Address, ConnectError, Outgoing, Reason, SentinelEvent, SubmitError};
use rustler::{Binary, Encoder, Env, Error, LocalPid, NifResult, OwnedEnv, ResourceArc, Term};

use crate::args::{
    check_submission, count_commands, decode_kind, encode_submission, Budget, EncodeStop, Encoding,
    Kind,
};
use crate::handle::{ConnectionHandle, ReplyWaiter};
use crate::pubsub::{Action, Op, Subscriber};
use crate::{atoms, config, reply, runtime};
use redix_rs_core::conn::call_state::{self, CallState, Token};
use redix_rs_core::pubsub::Kind as SubscriptionKind;

/// Pipelines longer than this are written to the socket in chunks as they are encoded (when the writer
/// is idle), after a first pass that checks them whole.
const STREAMED_PIPELINE: usize = 32;

/// Starts connecting in the background; returns `{:ok, handle, id}` at once.
///
/// The owner receives `{:redix_rs_native, id, :connected}`, then `{:redix_rs_native, id, {:disconnected,
/// reason}}` when the connection ends, or `{:redix_rs_native, id, {:connect_failed, reason}}` instead of
/// both. The handle monitors the owner: when it dies, the connection closes.
#[rustler::nif]
fn connect<'a>(env: Env<'a>, config: Term<'a>, owner: LocalPid) -> NifResult<Term<'a>> {
    let config = config::decode(config)?;
    let runtime = runtime::get().map_err(|e| Error::Term(Box::new(e)))?;
    let handle = if config.pubsub {
        ResourceArc::new(ConnectionHandle::pubsub(
            config.max_queued_bytes,
            owner,
            config.notify_disconnection,
            config.max_backlog_bytes,
        ))
    } else {
        let mut handle = match config.cache {
            Some(cache) => ConnectionHandle::cached(config.max_queued_bytes, cache),
            None => ConnectionHandle::new(config.max_queued_bytes),
        };
        handle.side_pool = config.side_pool;
        ResourceArc::new(handle)
    };
    handle.mux.set_reply_limits(config.reply_limits);
    env.monitor(&handle, &owner);
    let (mux, id) = (handle.mux.clone(), handle.id);
    runtime.spawn(supervise(
        mux,
        config.connect,
        Arc::new(OwnerProcess { pid: owner, id }),
    ));
    Ok((atoms::ok(), handle, id).encode(env))
}

/// Queues `commands` (a list of commands) for the calling process, as a plain pipeline, a noreply
/// pipeline or a transaction (`kind`: `:pipeline | :noreply | :transaction`); the replies come back as
/// `{reference, :ok, replies}` or `{reference, :error, reason}`.
///
/// Returns `{:ok, token}` (the token is for `cancel/1`), `{:error, :closed | :full}`, `:dirty` when the input is too large for a normal
/// scheduler (call `submit_dirty/3`), or `:normalize` when the input needs Elixir's validation first;
/// or, with nothing queued, `{:side, pool}` when it holds a blocking command and the connection has
/// side connections (`side.rs`).
#[rustler::nif]
fn submit<'a>(
    env: Env<'a>,
    handle: ResourceArc<ConnectionHandle>,
    reference: Term<'a>,
    commands: Term<'a>,
    kind: Term<'a>,
) -> NifResult<Term<'a>> {
    let Some(kind) = decode_kind(kind) else {
        // `:cached`: a read for the client-side cache (see `cache::submit`).
        return crate::cache::submit(env, &handle, reference, commands, kind);
    };
    // A long pipeline is checked whole first, so that it can go to the socket while it is encoded; a
    // short one is checked as it is encoded (and can be taken back from the queue).
    let count = match count_commands(commands, Budget::NORMAL.elements) {
        Ok(n) => n,
        Err(stop) => return Ok(stop_term(env, stop)),
    };
    // A blocking command sends the submission to a side connection (`side.rs`): looked for in the
    // walk that checks a long pipeline, or on its own for a short one.
    let lengths = if count > STREAMED_PIPELINE {
        match check_submission(commands, Budget::NORMAL) {
            Ok((_, true)) if handle.side_pool.is_some() => return Ok(side_term(env, &handle)),
            Ok((lengths, _)) => Some(lengths),
            Err(stop) => return Ok(stop_term(env, stop)),
        }
    } else {
        None
    };
    let encoding = match &lengths {
        Some(lengths) => Encoding::Checked(lengths),
        None => Encoding::Within(Budget::NORMAL),
    };
    let (waiter, token) = match waiter(env, reference, kind, count) {
        Ok(made) => made,
        Err(full) => return Ok(full),
    };
    // A short submission is looked at for blocking commands as it is encoded (`side.rs`); nothing
    // is queued if one is found.
    let stop_at_blocking = handle.side_pool.is_some();
    let encode =
        |out: &mut Outgoing<'_>| encode_submission(kind, commands, out, encoding, stop_at_blocking);
    Ok(match handle.mux.submit_with(waiter, encode) {
        Ok(()) => accepted_term(env, token),
        Err(SubmitError::Encode(_, EncodeStop::Blocking)) => side_term(env, &handle),
        Err(SubmitError::Encode(_, stop)) => stop_term(env, stop),
        Err(e) => refused_term(env, e),
    })
}

/// `submit/4` for inputs of any size, on a dirty CPU scheduler; encodes off the queue lock.
#[rustler::nif(schedule = "DirtyCpu")]
fn submit_dirty<'a>(
    env: Env<'a>,
    handle: ResourceArc<ConnectionHandle>,
    reference: Term<'a>,
    commands: Term<'a>,
    kind: Term<'a>,
) -> NifResult<Term<'a>> {
    let kind = decode_kind(kind).ok_or(Error::BadArg)?;
    let count = match count_commands(commands, usize::MAX) {
        Ok(n) => n,
        Err(stop) => return Ok(stop_term(env, stop)),
    };
    let mut out = BytesMut::new();
    let mut detached = Outgoing::detached(&mut out);
    let unlimited = Encoding::Within(Budget::UNLIMITED);
    let stop_at_blocking = handle.side_pool.is_some();
    match encode_submission(kind, commands, &mut detached, unlimited, stop_at_blocking) {
        Ok(()) => {}
        Err(EncodeStop::Blocking) => return Ok(side_term(env, &handle)),
        Err(stop) => return Ok(stop_term(env, stop)),
    }
    let (waiter, token) = match waiter(env, reference, kind, count) {
        Ok(made) => made,
        Err(full) => return Ok(full),
    };
    Ok(match handle.mux.submit(out, waiter) {
        Ok(()) => accepted_term(env, token),
        Err(e) => refused_term(env, e),
    })
}

/// Closes the connection, for `why`: `:owner_down` (its owner stops: waiters get `{:error,
/// :owner_down}` and exit with the owner's exit reason, as Redix callers do) or
/// `:health_check_timeout` (the connection is declared dead and will be re-established). Idempotent.
#[rustler::nif]
fn close(handle: ResourceArc<ConnectionHandle>, why: rustler::Atom) -> NifResult<rustler::Atom> {
    let reason = if why == atoms::health_check_timeout() {
        Reason::HealthCheckTimeout
    } else if why == atoms::owner_down() {
        Reason::OwnerDown
    } else {
        return Err(Error::BadArg);
    };
    handle.mux.close(reason);
    Ok(atoms::ok())
}

/// Changes who is subscribed to what on a pub/sub connection. `op` is
/// `{action, kind, names, subscriber_pid, ref, redis_names}`: `action` is `:subscribe`, `:unsubscribe`
/// or `:drop` (a dead subscriber, removed silently); `kind` is `:channel`, `:pattern` or `:shard`;
/// `redis_names` are the names Redis must be told about. The messages it owes subscribers
/// (`:subscribed`, `:unsubscribed`) are queued for `pubsub_drain/2`, which the caller runs next;
/// returns how many messages are queued up to and including them: an integer when they are in lane
/// 0 (the caller's own), `{lane, count}` when the subscriber's messages go through another lane (see
/// `pubsub_lanes/2`). On a dirty scheduler: a call may carry tens of thousands of names.
#[rustler::nif(schedule = "DirtyCpu")]
fn pubsub_op<'a>(handle: ResourceArc<ConnectionHandle>, op: Term<'a>) -> NifResult<Term<'a>> {
    let Some(side) = &handle.pubsub else {
        return Err(Error::BadArg);
    };
    let (action, kind, names, subscriber, reference, redis_names): (
        rustler::Atom,
        rustler::Atom,
        Vec<Binary<'a>>,
        LocalPid,
        Term<'a>,
        Vec<Binary<'a>>,
    ) = op.decode()?;
    let action = match action.to_term(op.get_env()).atom_to_string()?.as_str() {
        "subscribe" => Action::Subscribe,
        "unsubscribe" => Action::Unsubscribe,
        "drop" => Action::Drop,
        _ => return Err(Error::BadArg),
    };
    let kind = match kind.to_term(op.get_env()).atom_to_string()?.as_str() {
        "channel" => SubscriptionKind::Channel,
        "pattern" => SubscriptionKind::Pattern,
        "shard" => SubscriptionKind::Shard,
        _ => return Err(Error::BadArg),
    };
    let to_bytes = |bins: Vec<Binary<'a>>| -> Vec<Bytes> {
        bins.iter()
            .map(|b| Bytes::copy_from_slice(b.as_slice()))
            .collect()
    };
    let op = Op {
        action,
        kind,
        names: to_bytes(names),
        subscriber: Subscriber::new(subscriber, reference),
        redis_names: to_bytes(redis_names),
    };
    let env = reference.get_env();
    Ok(match side.fanout.apply(op, &handle.mux) {
        (0, queued) => queued.encode(env),
        (lane, queued) => (lane, queued).encode(env),
    })
}

/// Sends a batch of queued pub/sub messages to their subscribers from the calling process (the
/// `RedixRs.PubSub` process, woken by `{:redix_rs_pubsub_drain, id}`): `{:done | :more, sent}`.
/// `refs` is that process's map of subscriber pid → reference, so that the references the messages
/// carry are taken from its heap rather than decoded again on every call.
#[rustler::nif]
fn pubsub_drain<'a>(
    env: Env<'a>,
    handle: ResourceArc<ConnectionHandle>,
    refs: Term<'a>,
) -> NifResult<(rustler::Atom, usize)> {
    let Some(side) = &handle.pubsub else {
        return Err(Error::BadArg);
    };
    if !refs.is_map() {
        return Err(Error::BadArg);
    }
    let (more, sent) = side.fanout.drain(env, refs, 0).ok_or(Error::BadArg)?;
    Ok((if more { atoms::more() } else { atoms::done() }, sent))
}

/// Called by a caller that timed out: `:cancelled` when its answer will never be sent, `:sent` when it
/// was (the caller then takes it out of its mailbox).
#[rustler::nif]
fn cancel(token: (usize, u64)) -> NifResult<rustler::Atom> {
    let (index, generation) = token;
    match call_state::cancel(Token { index, generation }) {
        Some(true) => Ok(atoms::cancelled()),
        Some(false) => Ok(atoms::sent()),
        None => Err(Error::BadArg),
    }
}

/// The waiter of a call by the calling process, and the token its caller cancels with; or the
/// refusal when millions of calls waiting at once have filled the table of call states (refused like
/// a full queue).
fn waiter<'a>(
    env: Env<'a>,
    reference: Term<'a>,
    kind: Kind,
    count: usize,
) -> Result<(ReplyWaiter, Token), Term<'a>> {
    let state = CallState::new().ok_or_else(|| (atoms::error(), atoms::full()).encode(env))?;
    let token = state.token();
    Ok((
        ReplyWaiter::new(state, env.pid(), reference, kind.expect(count)),
        token,
    ))
}

/// `{:side, pool}`: the submission goes to a side connection (`side.rs`); only asked for when the
/// handle has a pool (`nil` otherwise, never seen).
fn side_term<'a>(env: Env<'a>, handle: &ConnectionHandle) -> Term<'a> {
    match handle.side_pool {
        Some(pool) => (atoms::side(), pool).encode(env),
        None => atoms::nil().encode(env),
    }
}

/// `{:ok, token}` for an accepted submission.
fn accepted_term(env: Env<'_>, token: Token) -> Term<'_> {
    (atoms::ok(), (token.index, token.generation)).encode(env)
}

fn stop_term(env: Env<'_>, stop: EncodeStop) -> Term<'_> {
    match stop {
        EncodeStop::Normalize => atoms::normalize().encode(env),
        EncodeStop::OverBudget => atoms::dirty().encode(env),
        // Handled by the callers (`side_term`), which alone ask for it.
        EncodeStop::Blocking => atoms::nil().encode(env),
    }
}

fn refused_term<E>(env: Env<'_>, err: SubmitError<ReplyWaiter, E>) -> Term<'_> {
    let reason = match err {
        SubmitError::Full(_) => atoms::full(),
        _ => atoms::closed(),
    };
    (atoms::error(), reason).encode(env)
}

/// The owner of a connection, told of its lifecycle as `{:redix_rs_native, id, event}` messages.
struct OwnerProcess {
    pid: LocalPid,
    id: u64,
}

impl LifecycleListener for OwnerProcess {
    fn event(&self, event: Lifecycle) {
        let (owner, id) = (&self.pid, self.id);
        match event {
            // Through sentinels, the owner hears which failed (for telemetry) and which answered (to
            // ask it first next time): `{:sentinel_failed, "host:port", reason}`,
            // `{:sentinel_answered, index, host, port}`.
            Lifecycle::Sentinel(SentinelEvent::Failed { address, reason }) => {
                notify(owner, id, |env| {
                    let reason = reply::reason(env, &reason);
                    (atoms::sentinel_failed(), address.as_str(), reason).encode(env)
                })
            }
            Lifecycle::Sentinel(SentinelEvent::Answered { index, server }) => {
                notify(owner, id, |env| {
                    let (host, port) = match &server {
                        Address::Tcp { host, port } => (host.as_str(), *port),
                        Address::Unix { path } => (path.as_str(), 0),
                    };
                    (atoms::sentinel_answered(), index, host, port).encode(env)
                })
            }
            Lifecycle::Connected => notify(owner, id, |env| atoms::connected().encode(env)),
            Lifecycle::Disconnected(reason) => notify(owner, id, |env| {
                (atoms::disconnected(), reply::reason(env, &reason)).encode(env)
            }),
            Lifecycle::ConnectFailed(err) => notify(owner, id, |env| {
                (atoms::connect_failed(), connect_error(env, &err)).encode(env)
            }),
        }
    }
}

/// A handshake error reply becomes `%RedixRs.Error{}` (fatal, as in Redix); the rest are reasons.
fn connect_error<'a>(env: Env<'a>, err: &ConnectError) -> Term<'a> {
    match err {
        ConnectError::Redis(message) => reply::redis_error(env, message.as_bytes()),
        other => reply::reason(env, &other.reason()),
    }
}

fn notify(owner: &LocalPid, id: u64, event: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) {
    let mut env = OwnedEnv::new();
    let _ = env.send_and_clear(owner, |env| {
        (atoms::redix_rs_native(), id, event(env)).encode(env)
    });
}

/// Splits a pub/sub connection's queue of messages for subscribers into `lanes` lanes (1 to 64), each
/// emptied by its own process with `pubsub_drain_lane/3`, so that sending spreads over schedulers. A
/// subscriber's messages all go into one lane (by its pid), so they keep their order. Only before
/// the first subscription: `true`, or `false` (nothing changed) once there are subscribers.
#[rustler::nif]
fn pubsub_lanes(handle: ResourceArc<ConnectionHandle>, lanes: usize) -> NifResult<bool> {
    let Some(side) = &handle.pubsub else {
        return Err(Error::BadArg);
    };
    if !(1..=64).contains(&lanes) {
        return Err(Error::BadArg);
    }
    Ok(side.fanout.set_lanes(lanes))
}

/// `pubsub_drain/2` for lane `lane`: `{:done | :more, sent}`. Only the lane's one sender calls it.
#[rustler::nif]
fn pubsub_drain_lane<'a>(
    env: Env<'a>,
    handle: ResourceArc<ConnectionHandle>,
    refs: Term<'a>,
    lane: usize,
) -> NifResult<(rustler::Atom, usize)> {
    let Some(side) = &handle.pubsub else {
        return Err(Error::BadArg);
    };
    if !refs.is_map() {
        return Err(Error::BadArg);
    }
    let (more, sent) = side.fanout.drain(env, refs, lane).ok_or(Error::BadArg)?;
    Ok((if more { atoms::more() } else { atoms::done() }, sent))
}
