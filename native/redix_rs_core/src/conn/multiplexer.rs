//! One socket shared by any number of callers.
//!
//! Callers `submit` encoded commands together with a [`Waiter`]; both go into one queue under one lock, so
//! the order of waiters is the order of bytes on the wire. A writer loop takes everything queued and
//! writes it in one go (automatic pipelining); a reader loop parses replies and hands each to the oldest
//! waiter (FIFO). Both loops run in one task: whichever ends first ends the connection, and every waiter
//! still queued is failed exactly once.
//!
//! Who writes, and who wakes whom, is chosen to keep cross-thread wake-ups off the hot path:
//! - a lone caller (nothing awaited, the last read answered one caller) writes its command itself,
//!   with one non-blocking `send` (plain TCP and Unix sockets; see `direct`);
//! - a long pipeline on an idle writer goes to the socket in chunks while it is being encoded;
//! - under load, a submission behind awaited replies wakes nobody: the reader, woken by the next reply
//!   anyway, hands the queue to the writer after each read;
//! - otherwise the first submission on an empty queue wakes the writer.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::direct::{send_now, Outgoing, DIRECT_CHUNK};
use super::{Reason, Stream};
use crate::resp::{Frame, Limits, Parsed, Parser};

/// How much to read at a time when no large value is pending.
const READ_CHUNK: usize = 64 * 1024;
/// The writer drops a buffer grown past this after use rather than hold it forever.
const KEEP_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// Someone waiting for replies: receives them in order, then is completed or failed, exactly once.
pub trait Waiter: Send + 'static {
    /// Takes the next reply; returns true when this waiter has every reply it expects.
    fn reply(&mut self, frame: Frame) -> bool;
    /// Called once after `reply` returned true.
    fn complete(self);
    /// Called instead of `complete` when the connection ends first.
    fn fail(self, reason: &Reason);
}

/// Takes the frames that are not replies to a caller (pub/sub messages and confirmations), and hears
/// when the connection ends. Without a router, only RESP3 push frames are set aside (and dropped).
pub trait Router: Send + Sync + 'static {
    /// Takes `frame` if it is not a reply to a caller.
    fn route(&self, frame: &Frame) -> Routed;
    /// Redis answered a command sent with `submit_unanswered` with an error (a refused SUBSCRIBE).
    fn rejected(&self, error: &Frame);
    /// The connection ended with `reason`.
    fn closed(&self, reason: &Reason);
}

/// What a router made of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Not for the router: a reply to a caller.
    NotMine,
    /// An out-of-band message, consumed.
    Message,
    /// A confirmation of a command sent with `submit_unanswered`, consumed.
    Confirmation,
    /// Consumed, but the router cannot take more (its consumer fell behind): end the connection
    /// with `pubsub_backlog` rather than grow without bound.
    Overloaded,
}

/// An entry of the reply queue: a caller, or a command nobody waits for, which Redis answers with
/// `confirmations` frames that the router takes, or with one error.
enum Pending<W> {
    Waiter(W),
    Unanswered { confirmations: usize },
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

struct State<W> {
    out: BytesMut,
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
    max_queued_bytes: usize,
    router: Option<Arc<dyn Router>>,
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
        Self::build(max_queued_bytes, None)
    }

    /// A multiplexer whose non-reply frames go to `router` (a pub/sub connection).
    pub fn with_router(max_queued_bytes: usize, router: Arc<dyn Router>) -> Self {
        Self::build(max_queued_bytes, Some(router))
    }

    fn build(max_queued_bytes: usize, router: Option<Arc<dyn Router>>) -> Self {
        let state = State {
            out: BytesMut::with_capacity(READ_CHUNK),
            waiters: VecDeque::new(),
            closed: None,
            close_requested: None,
            writing: false,
            last_batch: 0,
            socket: None,
        };
        let shared = Shared {
            state: Mutex::new(state),
            wake_writer: Notify::new(),
            wake_closer: Notify::new(),
            max_queued_bytes,
            router,
        };
        Multiplexer {
            shared: Arc::new(shared),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding the lock leaves plain data behind: keep going rather than poison every caller.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues bytes already encoded elsewhere (large submissions, encoded off the lock).
    pub fn submit(&self, bytes: BytesMut, waiter: W) -> Result<(), SubmitError<W>> {
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(waiter));
        }
        if !st.out.is_empty() && st.out.len() + bytes.len() > self.shared.max_queued_bytes {
            return Err(SubmitError::Full(waiter));
        }
        let was_empty = st.out.is_empty();
        let idle = st.waiters.is_empty();
        if was_empty && bytes.len() > READ_CHUNK {
            st.out = bytes; // no copy for a big payload on an idle queue
        } else {
            st.out.extend_from_slice(&bytes);
        }
        st.waiters.push_back(Pending::Waiter(waiter));
        self.write_or_wake(st, was_empty && idle, true);
        Ok(())
    }

    /// Ends a submission: writes the queue to the socket now if the writer is idle and it is worth it
    /// (`direct`), and wakes the writer for whatever is left if `first`: the queue was empty and no
    /// reply was awaited. Otherwise the writer has been woken already, or a reply is on its way and the
    /// reader hands the queue to the writer once it has dispatched it (the reader's wake-up then serves
    /// both: no cross-thread wake-up per command under load).
    fn write_or_wake(&self, mut st: MutexGuard<'_, State<W>>, first: bool, direct: bool) {
        if direct {
            if let Some(fd) = st.direct_socket() {
                send_now(fd, &mut st.out);
            }
        }
        let wake = first && !st.out.is_empty();
        drop(st);
        if wake {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Queues a command whose replies nobody waits for: a pub/sub command that Redis confirms with
    /// `confirmations` frames (one per channel), which go to the router. Its place in the reply queue
    /// is kept all the same, so that an error Redis sends instead is never taken for a caller's reply.
    /// Not subject to the queue limit: these control commands are few, and dropping one would leave
    /// its subscribers waiting for a confirmation that never comes.
    pub fn submit_unanswered(
        &self,
        bytes: &[u8],
        confirmations: usize,
    ) -> Result<(), SubmitError<()>> {
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(()));
        }
        let was_empty = st.out.is_empty();
        st.out.extend_from_slice(bytes);
        st.waiters.push_back(Pending::Unanswered { confirmations });
        drop(st);
        if was_empty {
            self.shared.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Encodes straight into the write queue (small submissions: no allocation, no copy). When the
    /// writer is idle, the encoder may hand large chunks to the socket as it goes
    /// ([`Outgoing::flush_large`]), and the submission is written at once if Redis has nothing else of
    /// this connection's to answer (a lone caller) or if it is large. If `encode` fails, whatever it
    /// queued is removed and nothing is queued; if it fails after writing some of it, the connection
    /// cannot stay in step and is closed.
    pub fn submit_with<E>(
        &self,
        waiter: W,
        encode: impl FnOnce(&mut Outgoing<'_>) -> Result<(), E>,
    ) -> Result<(), SubmitError<W, E>> {
        let mut st = self.lock();
        if st.closed.is_some() || st.close_requested.is_some() {
            return Err(SubmitError::Closed(waiter));
        }
        let before = st.out.len();
        // Mid-encoding writes only on an empty queue: a refusal for size below must be able to take
        // every byte back.
        let socket = if before == 0 {
            st.direct_socket()
        } else {
            None
        };
        let idle = st.waiters.is_empty();
        let mut outgoing = Outgoing::new(&mut st.out, socket);
        // A panicking encoder is undone like a failing one before the panic goes on: its partial bytes
        // must not stay queued (or, written, leave the connection open out of step).
        let encoded = panic::catch_unwind(AssertUnwindSafe(|| encode(&mut outgoing)));
        let (flushed, direct) = (outgoing.flushed(), outgoing.direct());
        let failed = match encoded {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Ok(e)),
            Err(panicked) => Some(Err(panicked)),
        };
        if let Some(failure) = failed {
            if flushed {
                // Part of it reached Redis: nothing more may (its caller is told it failed), and the
                // replies can no longer be matched.
                st.out.clear();
                drop(st);
                self.close(Reason::Atom("partial_submission"));
            } else {
                st.out.truncate(before);
                drop(st);
            }
            return match failure {
                Ok(e) => Err(SubmitError::Encode(waiter, e)),
                Err(panicked) => panic::resume_unwind(panicked),
            };
        }
        if before > 0 && st.out.len() > self.shared.max_queued_bytes {
            st.out.truncate(before);
            return Err(SubmitError::Full(waiter));
        }
        st.waiters.push_back(Pending::Waiter(waiter));
        // A lone caller (the last read answered one caller, and none waits now) writes at once: nobody
        // else will add to this write. Under load, the reader's next wake-up carries the queue instead.
        let lone = idle && st.last_batch <= 1;
        let write_now = direct && (flushed || lone || st.out.len() >= DIRECT_CHUNK);
        self.write_or_wake(st, before == 0 && idle, write_now);
        Ok(())
    }

    /// Asks the running connection to end; its waiters are failed with `reason`.
    pub fn close(&self, reason: Reason) {
        let mut st = self.lock();
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

    /// True once the connection has ended or been asked to (for tests and introspection).
    pub fn is_closed(&self) -> bool {
        let st = self.lock();
        st.closed.is_some() || st.close_requested.is_some()
    }

    /// Number of waiters queued and not yet answered (for tests and introspection).
    pub fn pending(&self) -> usize {
        let st = self.lock();
        st.waiters
            .iter()
            .filter(|p| matches!(p, Pending::Waiter(_)))
            .count()
    }

    /// Serves the connection until the socket fails or `close` is called; returns why it ended.
    /// Every waiter still queued is failed with that reason before this returns.
    pub async fn run(&self, stream: Stream, leftover: BytesMut) -> Reason {
        let mut current: Current<W> = None;
        let reason = match stream {
            Stream::Tcp(mut s) => {
                let _direct = DirectWrites::allow(self, s.as_raw_fd());
                let (r, w) = s.split();
                self.drive(r, w, leftover, &mut current).await
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                match self.drive(r, w, leftover, &mut current).await {
                    // The end of a TLS stream, with or without close_notify: `:ssl`'s name for it.
                    Reason::Atom("tcp_closed") => Reason::Atom("ssl_closed"),
                    reason => reason,
                }
            }
            Stream::Unix(mut s) => {
                let _direct = DirectWrites::allow(self, s.as_raw_fd());
                let (r, w) = s.split();
                self.drive(r, w, leftover, &mut current).await
            }
        };
        self.fail_all(current, &reason);
        reason
    }

    async fn drive<R, Wr>(&self, r: R, w: Wr, buf: BytesMut, current: &mut Current<W>) -> Reason
    where
        R: AsyncRead + Unpin,
        Wr: AsyncWrite + Unpin,
    {
        tokio::select! {
            reason = self.read_loop(r, buf, current) => reason,
            reason = self.write_loop(w) => reason,
            reason = self.closed_by_owner() => reason,
        }
    }

    /// Resolves once `close` has been called (with its reason): also used to abandon a connection
    /// attempt whose owner has gone.
    pub async fn closed_by_owner(&self) -> Reason {
        loop {
            if let Some(reason) = self.lock().close_requested.clone() {
                return reason;
            }
            self.shared.wake_closer.notified().await;
        }
    }

    async fn write_loop<Wr: AsyncWrite + Unpin>(&self, mut w: Wr) -> Reason {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            {
                let mut st = self.lock();
                std::mem::swap(&mut st.out, &mut buf);
                st.writing = !buf.is_empty();
            }
            if buf.is_empty() {
                self.shared.wake_writer.notified().await;
                continue;
            }
            if let Err(e) = w.write_all(&buf).await {
                return Reason::from_io(&e);
            }
            buf.clear();
            if buf.capacity() > KEEP_WRITE_BUFFER {
                buf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut r: R,
        mut buf: BytesMut,
        current: &mut Current<W>,
    ) -> Reason {
        let mut parser = Parser::new(Limits::default());
        let mut done: Vec<W> = Vec::new();
        loop {
            let parsed = self.dispatch_available(&mut parser, &mut buf, current, &mut done);
            // Completions go out per read, not per frame, and always before an error ends the loop, so a
            // waiter already answered is never failed as well.
            let answered = done.len();
            done.drain(..).for_each(Waiter::complete);
            if let Err(reason) = parsed {
                return reason;
            }
            self.after_read(answered);
            let want = parser
                .pending_bulk_remaining(&buf)
                .unwrap_or(0)
                .max(READ_CHUNK);
            buf.reserve(want);
            match r.read_buf(&mut buf).await {
                Ok(0) => return Reason::Atom("tcp_closed"),
                Ok(_) => {}
                Err(e) => return Reason::from_io(&e),
            }
        }
    }

    /// After a read that answered `answered` callers: commands queued while replies were awaited go
    /// out now (a wake-up of this same task, not of another thread).
    fn after_read(&self, answered: usize) {
        let queued = {
            let mut st = self.lock();
            st.last_batch = answered;
            !st.writing && !st.out.is_empty()
        };
        if queued {
            self.shared.wake_writer.notify_one();
        }
    }

    /// Parses every complete frame in `buf` and dispatches it.
    fn dispatch_available(
        &self,
        parser: &mut Parser,
        buf: &mut BytesMut,
        current: &mut Current<W>,
        done: &mut Vec<W>,
    ) -> Result<(), Reason> {
        loop {
            match parser.parse(buf) {
                Ok(Parsed::Complete(frame)) => self.dispatch(frame, current, done)?,
                Ok(Parsed::Incomplete) => return Ok(()),
                Err(e) => return Err(Reason::Tagged("protocol_error", e.to_string())),
            }
        }
    }

    /// Gives `frame` to the router or to the waiter at the head of the queue.
    fn dispatch(
        &self,
        frame: Frame,
        current: &mut Current<W>,
        done: &mut Vec<W>,
    ) -> Result<(), Reason> {
        if let Some(router) = &self.shared.router {
            match router.route(&frame) {
                Routed::Message => return Ok(()),
                Routed::Confirmation => return self.confirmed(),
                Routed::Overloaded => return Err(Reason::Atom("pubsub_backlog")),
                Routed::NotMine => {}
            }
        }
        if matches!(frame, Frame::Push(_)) {
            return Ok(()); // out-of-band (RESP3): never a reply to a caller
        }
        let mut waiter = match current.take() {
            Some(w) => w,
            None => match self.lock().waiters.pop_front() {
                Some(Pending::Waiter(w)) => w,
                Some(Pending::Unanswered { .. }) if frame.is_error() => {
                    self.rejected(&frame);
                    return Ok(());
                }
                _ => return Err(Reason::Atom("unexpected_reply")),
            },
        };
        if waiter.reply(frame) {
            done.push(waiter);
        } else {
            *current = Some(waiter);
        }
        Ok(())
    }

    /// One confirmation of the unanswered command at the head of the queue.
    fn confirmed(&self) -> Result<(), Reason> {
        let mut st = self.lock();
        match st.waiters.front_mut() {
            Some(Pending::Unanswered { confirmations }) if *confirmations > 1 => {
                *confirmations -= 1
            }
            Some(Pending::Unanswered { .. }) => {
                st.waiters.pop_front();
            }
            // A confirmation with no command to match means replies and commands are out of step.
            _ => return Err(Reason::Atom("unexpected_reply")),
        }
        Ok(())
    }

    fn rejected(&self, error: &Frame) {
        if let Some(router) = &self.shared.router {
            router.rejected(error);
        }
    }

    /// Marks the connection closed and fails every waiter, the one mid-reply first (it was oldest).
    fn fail_all(&self, current: Current<W>, reason: &Reason) {
        let waiters = {
            let mut st = self.lock();
            st.socket = None;
            st.closed = Some(reason.clone());
            st.out.clear();
            std::mem::take(&mut st.waiters)
        };
        let queued = waiters.into_iter().filter_map(|p| match p {
            Pending::Waiter(w) => Some(w),
            Pending::Unanswered { .. } => None,
        });
        current
            .into_iter()
            .chain(queued)
            .for_each(|w| w.fail(reason));
        if let Some(router) = &self.shared.router {
            router.closed(reason);
        }
    }
}

/// Lets submitters write to the socket while it is open: dropped (before the socket closes) when the
/// connection stops running, so no submitter ever writes to a closed, or reused, descriptor.
struct DirectWrites<'a, W: Waiter> {
    mux: &'a Multiplexer<W>,
}

impl<'a, W: Waiter> DirectWrites<'a, W> {
    fn allow(mux: &'a Multiplexer<W>, fd: RawFd) -> Self {
        mux.lock().socket = Some(fd);
        DirectWrites { mux }
    }
}

impl<W: Waiter> Drop for DirectWrites<'_, W> {
    fn drop(&mut self) {
        self.mux.lock().socket = None;
    }
}
