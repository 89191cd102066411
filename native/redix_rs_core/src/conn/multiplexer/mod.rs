//! One socket shared by any number of callers.
//!
//! Callers `submit` encoded commands together with a [`Waiter`]; both go into one queue under one lock, so
//! the order of waiters is the order of bytes on the wire. A writer loop takes everything queued and
//! writes it in one go (automatic pipelining); a reader loop parses replies and hands each to the oldest
//! waiter (FIFO). Both loops run in one task: whichever ends first ends the connection, and every waiter
//! still queued is failed exactly once.
//!
//! The write queue is a queue of chunks ([`WriteQueue`]): frozen `Bytes` chunks, then a tail buffer.
//! Small submissions are encoded into the tail under the lock (no allocation, no copy); a large one is
//! encoded off the lock and queued as a chunk of its own, so the lock is never held while a large
//! payload is copied or the queue reallocated. The writer takes every chunk and the tail at once and
//! writes them with vectored writes.
//!
//! Who writes, and who wakes whom, is chosen to keep cross-thread wake-ups off the hot path:
//! - a lone caller (nothing awaited, the last read answered one caller) writes its command itself,
//!   with one non-blocking `send` (plain TCP and Unix sockets; see `direct`), as does a submitter that
//!   finds the whole queue (chunks and tail) unwritten and the writer idle, up to `DIRECT_MAX` bytes;
//! - a long pipeline on an idle writer and an empty queue goes to the socket in pieces while it is
//!   being encoded;
//! - otherwise the first submission on an empty queue wakes the writer, unless it is writing (it takes
//!   the queue again when done): the submissions made meanwhile go out with it in one write.
//!
//! A submission never waits for a reply before its bytes are written. (It once did under load: queued
//! behind awaited replies, it woke nobody and the reader handed the queue to the writer after its next
//! read. That saved a wake-up per batch on loopback, where the next read is microseconds away, but on a
//! network it added up to a round trip to every call: through a proxy adding 0.5 ms each way, 200
//! callers on one connection waited ~2 round trips per call.)

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::direct::{send_within, DIRECT_MAX};
use super::out_of_band::{Mode, OutOfBand};
use super::Reason;
use crate::pubsub::{Event, Kind};
use crate::resp::{Frame, Limits};

mod io;
mod submit;

pub use submit::COPY_MAX;

/// How much to read at a time when no large value is pending.
const READ_CHUNK: usize = 64 * 1024;
/// A buffer grown past this for one large value is dropped after use rather than held forever.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;

/// Someone waiting for replies: receives them in order, then is completed or failed, exactly once.
pub trait Waiter: Send + 'static {
    /// Takes the next reply; returns true when this waiter has every reply it expects.
    fn reply(&mut self, frame: Frame) -> bool;
    /// Called once after `reply` returned true.
    fn complete(self);
    /// Called instead of `complete` when the connection ends first.
    fn fail(self, reason: &Reason);
}

/// Takes the frames that are not replies to a caller (classified in `out_of_band`), and hears when
/// the connection ends: the `RedixRs.PubSub` fan-out today, the client-side cache tomorrow. Without a
/// sink, out-of-band frames are dropped (they are never replies).
pub trait OutOfBandSink: Send + Sync + 'static {
    /// Takes one out-of-band item.
    fn take(&self, item: OutOfBand) -> Taken;
    /// Redis answered a command sent with `submit_unanswered` with an error (a refused SUBSCRIBE).
    fn rejected(&self, error: &Frame);
    /// `rejected`, told what the refused command was to confirm (its kind and names): a sink that
    /// follows names (a pub/sub on a Redis Cluster routes a refused shard channel again) overrides it.
    fn refused(&self, error: &Frame, refused: &Confirmations) {
        let _ = refused;
        self.rejected(error);
    }
    /// The connection ended with `reason`.
    fn closed(&self, reason: &Reason);
}

/// Whether a sink could take an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// Taken, but the sink cannot take more (its consumer fell behind): end the connection with
    /// `pubsub_backlog` rather than grow without bound.
    Overloaded,
}

/// The confirmations Redis sends for a pub/sub command sent with `submit_unanswered`: one per name,
/// each a `(s|p)(un)subscribe` frame of this kind naming it. Matched by name, not only by kind: an
/// `sunsubscribe` Redis sends on its own (a slot moved) while this connection's `SUNSUBSCRIBE` of
/// other channels waits must not be counted as one of its confirmations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmations {
    pub kind: Kind,
    pub subscribe: bool,
    /// The names still to be confirmed.
    pub names: Vec<Bytes>,
}

impl Confirmations {
    /// If `event` is one of these confirmations, counts it (true); `done` once all arrived.
    fn take(&mut self, event: &Event) -> bool {
        let (kind, name, subscribe) = match event {
            Event::Subscribed { kind, name } => (kind, name, true),
            Event::Unsubscribed { kind, name } => (kind, name, false),
            _ => return false,
        };
        if *kind != self.kind || subscribe != self.subscribe {
            return false;
        }
        match self.names.iter().position(|n| n == name) {
            Some(i) => {
                self.names.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn done(&self) -> bool {
        self.names.is_empty()
    }
}

/// An entry of the reply queue: a caller, or a command nobody waits for, which Redis answers with
/// confirmations that the sink takes, or with one error.
enum Pending<W> {
    Waiter(W),
    Unanswered(Confirmations),
}

/// Why a submission was refused; the waiter is handed back untouched.
#[derive(Debug)]
pub enum SubmitError<W, E = std::convert::Infallible> {
    /// The connection has ended (or is ending).
    Closed(W),
    /// Accepting it would queue more than the configured number of unwritten bytes.
    Full(W),
    /// The encoder refused the input; nothing was queued.
    Encode(W, E),
}

/// Bytes waiting to be written, in wire order: `chunks` (front first), then `tail`.
#[derive(Default)]
pub(super) struct WriteQueue {
    /// Large submissions, each queued whole as encoded off the lock, and earlier tails frozen to keep
    /// them in order ahead of it.
    chunks: VecDeque<Bytes>,
    chunks_len: usize,
    /// Where small submissions are encoded, after every chunk.
    tail: BytesMut,
    /// Bytes copied into `tail` by `submit` (not encoded there): what the lock was held for.
    copied: u64,
}

impl WriteQueue {
    fn with_capacity(capacity: usize) -> Self {
        WriteQueue {
            tail: BytesMut::with_capacity(capacity),
            ..WriteQueue::default()
        }
    }

    /// Unwritten bytes.
    pub(super) fn len(&self) -> usize {
        self.chunks_len + self.tail.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `bytes` after everything else without copying it (the tail so far becomes a chunk).
    pub(super) fn push_chunk(&mut self, bytes: Bytes) {
        if !self.tail.is_empty() {
            let tail = self.tail.split().freeze();
            self.push_back(tail);
        }
        self.push_back(bytes);
    }

    /// Copies a small submission into the tail.
    pub(super) fn push_copy(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.copied += bytes.len() as u64;
    }

    fn push_back(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks_len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Writes the queue's front to the socket, as much as it takes at once and at most `DIRECT_MAX`
    /// bytes (a submitter holds the lock meanwhile); what remains is the writer task's.
    pub(super) fn send_now(&mut self, fd: RawFd) {
        let mut budget = DIRECT_MAX;
        while let Some(front) = self.chunks.front_mut() {
            let before = front.len();
            let all = send_within(fd, front, &mut budget);
            self.chunks_len -= before - front.len();
            if !all {
                return;
            }
            self.chunks.pop_front();
        }
        send_within(fd, &mut self.tail, &mut budget);
    }

    /// Takes every chunk and swaps the tail with `tail` (the writer's empty buffer, kept for reuse).
    pub(super) fn take(&mut self, chunks: &mut VecDeque<Bytes>, tail: &mut BytesMut) {
        std::mem::swap(&mut self.chunks, chunks);
        self.chunks_len = 0;
        std::mem::swap(&mut self.tail, tail);
    }

    pub(super) fn clear(&mut self) {
        self.chunks.clear();
        self.chunks_len = 0;
        self.tail.clear();
    }
}

struct State<W> {
    out: WriteQueue,
    waiters: VecDeque<Pending<W>>,
    closed: Option<Reason>,
    close_requested: Option<Reason>,
    /// The writer task holds bytes it took from `out` and has not finished writing.
    writing: bool,
    /// How many callers the last read answered.
    last_batch: usize,
    /// The socket, while the connection runs over plain TCP or a Unix socket (TLS records can only be
    /// written by the task that owns the TLS session).
    socket: Option<RawFd>,
    /// What one reply may be.
    limits: Limits,
}

impl<W> State<W> {
    /// The socket, if a submitter may write to it now: nothing written before it is still in flight.
    fn direct_socket(&self) -> Option<RawFd> {
        if self.writing {
            None
        } else {
            self.socket
        }
    }
}

struct Shared<W> {
    state: Mutex<State<W>>,
    wake_writer: Notify,
    wake_closer: Notify,
    /// Signalled at each `-READONLY` reply (see `readonly_reply`).
    readonly_reply: Notify,
    max_queued_bytes: usize,
    mode: Mode,
    sink: Option<Arc<dyn OutOfBandSink>>,
}

/// A handle on one connection's queues; clones share them.
pub struct Multiplexer<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for Multiplexer<W> {
    fn clone(&self) -> Self {
        Multiplexer {
            shared: self.shared.clone(),
        }
    }
}

/// A reply batch in progress: the waiter at the head of the queue, once its first reply arrived.
type Current<W> = Option<W>;

impl<W: Waiter> Multiplexer<W> {
    /// A multiplexer that refuses submissions once `max_queued_bytes` unwritten bytes are queued
    /// (a single submission larger than that is still accepted when the queue is empty).
    pub fn new(max_queued_bytes: usize) -> Self {
        Self::build(max_queued_bytes, Mode::Commands, None)
    }

    /// A multiplexer whose out-of-band frames, read as `mode` says, go to `sink`.
    pub fn with_sink(max_queued_bytes: usize, mode: Mode, sink: Arc<dyn OutOfBandSink>) -> Self {
        Self::build(max_queued_bytes, mode, Some(sink))
    }

    fn build(max_queued_bytes: usize, mode: Mode, sink: Option<Arc<dyn OutOfBandSink>>) -> Self {
        let state = State {
            out: WriteQueue::with_capacity(READ_CHUNK),
            waiters: VecDeque::new(),
            closed: None,
            close_requested: None,
            writing: false,
            last_batch: 0,
            socket: None,
            limits: Limits::default(),
        };
        let shared = Shared {
            state: Mutex::new(state),
            wake_writer: Notify::new(),
            wake_closer: Notify::new(),
            readonly_reply: Notify::new(),
            max_queued_bytes,
            mode,
            sink,
        };
        Multiplexer {
            shared: Arc::new(shared),
        }
    }

    /// Sets what one reply may be (checked by the parser as bytes arrive), from the next `run` on.
    pub fn set_reply_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding the lock leaves plain data behind: keep going rather than poison every caller.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the running connection to end; its waiters are failed with `reason`.
    pub fn close(&self, reason: Reason) {
        self.close_locked(self.lock(), reason);
    }

    /// `close` with the lock already held: no submission can slip in between the decision and the
    /// refusal of later ones.
    fn close_locked(&self, mut st: MutexGuard<'_, State<W>>, reason: Reason) {
        if st.closed.is_none() && st.close_requested.is_none() {
            st.close_requested = Some(reason);
            drop(st);
            self.shared.wake_closer.notify_one();
        }
    }

    /// Ends a connection that cannot run (it failed to connect, or its task panicked): marks it closed
    /// and fails every queued waiter with `reason`.
    pub fn abort(&self, reason: &Reason) {
        self.fail_all(None, reason);
    }

    /// Resolves once a `-READONLY` error reply has been read since the last call (the reply still
    /// goes to its caller): what Sentinel's watcher checks `ROLE` on.
    pub async fn readonly_reply(&self) {
        self.shared.readonly_reply.notified().await;
    }

    /// True once the connection has ended or been asked to (for tests and introspection).
    pub fn is_closed(&self) -> bool {
        let st = self.lock();
        st.closed.is_some() || st.close_requested.is_some()
    }

    /// Bytes that `submit` has copied while holding the lock, over the connection's life (small
    /// submissions only: large ones are queued as chunks). For tests and introspection.
    pub fn bytes_copied_under_lock(&self) -> u64 {
        self.lock().out.copied
    }

    /// Number of waiters queued and not yet answered (for tests and introspection).
    pub fn pending(&self) -> usize {
        let st = self.lock();
        st.waiters
            .iter()
            .filter(|p| matches!(p, Pending::Waiter(_)))
            .count()
    }
}
