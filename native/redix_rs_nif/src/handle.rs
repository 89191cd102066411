//! The connection resource handed to Elixir, and the waiter that answers one caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redix_rs_core::cache::ClientCache;
use redix_rs_core::conn::submission::Expect;
use redix_rs_core::conn::{Mode, Multiplexer, OutOfBandSink, Reason, Waiter};
use redix_rs_core::resp::Frame;
use rustler::{Encoder, Env, LocalPid, Monitor, Resource, Term};

use crate::cache::Fill;
use crate::message_env::{Kept, MessageEnv, OffVmThread};
use crate::pubsub::PubSubFanout;
use crate::{atoms, reply};
use redix_rs_core::conn::call_state::CallState;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection as Elixir sees it. Dropping it (the last reference garbage-collected) or the death of
/// its owner process closes the socket and ends its tokio tasks.
pub struct ConnectionHandle {
    pub mux: Multiplexer<ReplyWaiter>,
    /// Tags the lifecycle messages sent to the owner, so a stale connection's events can be told apart.
    pub id: u64,
    /// The pub/sub side (pub/sub connections only).
    pub pubsub: Option<PubSubSide>,
    /// The process that lends side connections, for submissions holding a blocking command
    /// (`side.rs`); `None` when they stay on this connection (`max_side_connections: 0`, pub/sub,
    /// and side connections themselves).
    pub side_pool: Option<LocalPid>,
    /// The client-side cache (connections with `:client_cache` only); also the out-of-band sink.
    pub cache: Option<Arc<ClientCache>>,
}

/// The pub/sub side: the fan-out whose outbox the owner drains.
pub struct PubSubSide {
    pub fanout: Arc<PubSubFanout>,
}

impl ConnectionHandle {
    /// A plain connection.
    pub fn new(max_queued_bytes: usize) -> Self {
        ConnectionHandle {
            mux: Multiplexer::new(max_queued_bytes),
            id: next_id(),
            pubsub: None,
            side_pool: None,
            cache: None,
        }
    }

    /// A plain connection with a client-side cache, which takes its invalidations.
    pub fn cached(max_queued_bytes: usize, cache: Arc<ClientCache>) -> Self {
        let sink = cache.clone() as Arc<dyn OutOfBandSink>;
        ConnectionHandle {
            mux: Multiplexer::with_sink(max_queued_bytes, Mode::Commands, sink),
            id: next_id(),
            pubsub: None,
            side_pool: None,
            cache: Some(cache),
        }
    }

    /// A pub/sub connection owned by `owner` (the `RedixRs.PubSub` process).
    pub fn pubsub(
        max_queued_bytes: usize,
        owner: LocalPid,
        notify_disconnection: bool,
        max_backlog_bytes: usize,
    ) -> Self {
        let id = next_id();
        let fanout = Arc::new(PubSubFanout::new(
            owner,
            id,
            notify_disconnection,
            max_backlog_bytes,
        ));
        let mux = Multiplexer::with_sink(max_queued_bytes, Mode::Subscribed, fanout.clone());
        let pubsub = Some(PubSubSide { fanout });
        ConnectionHandle {
            mux,
            id,
            pubsub,
            side_pool: None,
            cache: None,
        }
    }
}

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[rustler::resource_impl]
impl Resource for ConnectionHandle {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        // Callers seeing this reason ask `RedixRs.Handles` for the owner's exit reason, so they can
        // exit with `{:redix_exited_during_call, reason}` as Redix callers do.
        self.mux.close(Reason::OwnerDown);
    }
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        self.mux.close(Reason::Closed);
    }
}

/// A caller waiting for `expected` replies; sends `{ref, :ok, replies}` or `{ref, :error, reason}`
/// unless the caller cancelled first. Each reply becomes a term as it arrives (so a long pipeline's
/// answer is mostly built while Redis is still working on its tail, and the frames free the read
/// buffer at once), consed onto a list that is reversed once at the end.
pub struct ReplyWaiter {
    state: CallState,
    pid: LocalPid,
    /// `None` once the answer went out.
    env: Option<MessageEnv>,
    reference: Kept,
    expect: Expect,
    received: usize,
    /// The replies so far, newest first.
    replies: Kept,
    /// A cached read's fill (see `cache::Fill`).
    fill: Option<Fill>,
}

impl ReplyWaiter {
    pub fn new(state: CallState, pid: LocalPid, reference: Term<'_>, expect: Expect) -> Self {
        let env = MessageEnv::take();
        let reference = env.copy(reference);
        // A closure, not the function item, which is tied to one lifetime.
        #[allow(clippy::redundant_closure)]
        let replies = env.keep(|e| Term::list_new_empty(e));
        ReplyWaiter {
            state,
            pid,
            env: Some(env),
            reference,
            expect,
            received: 0,
            replies,
            fill: None,
        }
    }

    /// A cached read's waiter, which fills the cache as its reply arrives.
    pub fn with_fill(mut self, fill: Fill) -> Self {
        self.fill = Some(fill);
        self
    }

    /// Answers the caller, once. The thread is checked before the call's slot is claimed: a claimed
    /// answer always goes out (there is no path from a claim to a dropped message). On a scheduler
    /// thread (never reached: the multiplexer completes and fails waiters on tokio threads) nothing is
    /// claimed, so the caller's own timeout answers it.
    /// Answers the caller, once. The thread is checked before the call's slot is claimed
    /// (`CallState::answer`): a claimed answer always goes out. On a scheduler thread (never reached:
    /// the multiplexer completes and fails waiters on tokio threads) nothing is claimed, so the
    /// caller's own timeout answers it.
    fn send(&mut self, body: impl for<'a> FnOnce(Env<'a>, Term<'a>) -> (Term<'a>, Term<'a>)) {
        let Some(env) = self.env.take() else { return };
        let off_vm = OffVmThread::here();
        debug_assert!(
            off_vm.is_some(),
            "a reply waiter answered on a scheduler thread"
        );
        let (reference, replies) = (self.reference, self.replies);
        let mut env = Some(env);
        self.state.answer(off_vm, |off_vm| {
            if let Some(env) = env.take() {
                env.send(&off_vm, &self.pid, |e, env| {
                    let (tag, payload) = body(e, env.load(e, replies));
                    (env.load(e, reference), tag, payload).encode(e)
                });
            }
        });
        // Not sent (the caller timed out, or no proof): the environment goes back to the pool.
        if let Some(env) = env {
            env.recycle();
        }
    }
}

/// A waiter dropped unanswered (its task panicked mid-reply) still answers its caller, so that no
/// caller waits forever. Waiters handed back by a refused submission, or by an encoder that panicked,
/// are dropped on a scheduler thread, where sending is not allowed and not needed (their caller got the
/// refusal or the exception, and no token).
impl Drop for ReplyWaiter {
    fn drop(&mut self) {
        if self.env.is_some() && !rustler::thread::is_scheduler_thread() {
            self.send(|env, _| {
                let reason = atoms::disconnected().encode(env);
                (atoms::error().encode(env), reason)
            });
        } else if let Some(env) = self.env.take() {
            env.recycle();
        }
    }
}

impl Waiter for ReplyWaiter {
    fn reply(&mut self, frame: Frame) -> bool {
        self.received += 1;
        if let Some(fill) = &mut self.fill {
            if !fill.reply(&frame) {
                return self.expect.is_last(self.received, false);
            }
        }
        // A caller that gave up does not need its replies built (they are still counted, to stay in
        // step with the connection).
        if let Some(env) = self.env.as_ref().filter(|_| !self.state.cancelled()) {
            let head = self.replies;
            self.replies = env.keep(|e| env.load(e, head).list_prepend(reply::frame(e, &frame)));
        }
        self.expect.is_last(self.received, frame.is_error())
    }

    fn complete(mut self) {
        self.send(|env, replies| {
            let list = replies.list_reverse().unwrap_or(replies);
            (atoms::ok().encode(env), list)
        });
    }

    fn fail(mut self, reason: &Reason) {
        self.send(|env, _| (atoms::error().encode(env), reply::reason(env, reason)));
    }
}
