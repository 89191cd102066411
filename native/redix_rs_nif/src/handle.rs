//! The connection resource handed to Elixir, and the waiter that answers one caller.

use std::sync::atomic::{AtomicU64, Ordering};

use redix_rs_core::conn::{Multiplexer, Reason, Waiter};
use redix_rs_core::resp::Frame;
use rustler::env::SavedTerm;
use rustler::{Encoder, Env, LocalPid, Monitor, OwnedEnv, Resource, Term};

use crate::{atoms, reply};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection as Elixir sees it. Dropping it (the last reference garbage-collected) or the death of
/// its owner process closes the socket and ends its tokio task.
pub struct ConnectionHandle {
    pub mux: Multiplexer<ReplyWaiter>,
    /// Tags the lifecycle messages sent to the owner, so a stale connection's events can be told apart.
    pub id: u64,
}

impl ConnectionHandle {
    pub fn new(max_queued_bytes: usize) -> Self {
        ConnectionHandle {
            mux: Multiplexer::new(max_queued_bytes),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

#[rustler::resource_impl]
impl Resource for ConnectionHandle {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.mux.close(Reason::Atom("closed"));
    }
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        self.mux.close(Reason::Atom("closed"));
    }
}

/// A caller waiting for `expected` replies; sends `{ref, :ok, replies}` or `{ref, :error, reason}`.
pub struct ReplyWaiter {
    pid: LocalPid,
    env: OwnedEnv,
    reference: SavedTerm,
    expected: usize,
    replies: Vec<Frame>,
}

impl ReplyWaiter {
    pub fn new(pid: LocalPid, reference: Term<'_>, expected: usize) -> Self {
        let env = OwnedEnv::new();
        let reference = env.save(reference);
        ReplyWaiter {
            pid,
            env,
            reference,
            expected,
            replies: Vec::with_capacity(expected.min(1024)),
        }
    }

    fn send(self, body: impl for<'a> FnOnce(Env<'a>, &[Frame]) -> (Term<'a>, Term<'a>)) {
        let ReplyWaiter {
            pid,
            mut env,
            reference,
            replies,
            ..
        } = self;
        // A dead recipient is not an error: its answer simply has nowhere to go.
        let _ = env.send_and_clear(&pid, |env| {
            let (tag, payload) = body(env, &replies);
            (reference.load(env), tag, payload).encode(env)
        });
    }
}

impl Waiter for ReplyWaiter {
    fn reply(&mut self, frame: Frame) -> bool {
        self.replies.push(frame);
        self.replies.len() == self.expected
    }

    fn complete(self) {
        self.send(|env, replies| (atoms::ok().encode(env), reply::list(env, replies)));
    }

    fn fail(self, reason: &Reason) {
        self.send(|env, _| (atoms::error().encode(env), reply::reason(env, reason)));
    }
}
