//! One call on a cluster: its commands split into parts (one per node), each part a waiter on that
//! node's multiplexer, and the collector that puts the replies back in the caller's order and sends
//! one message.
//!
//! A part's replies are looked at when the last one arrives, on the reader's tokio thread: a reply
//! that is `MOVED` or `ASK` is not the caller's (the node ran nothing), so its command is sent on to
//! the node named (`ASKING` first for `ASK`), at most [`MAX_HOPS`] times; `TRYAGAIN` and
//! `CLUSTERDOWN` are sent again after a short pause, within the call's deadline. Every other reply
//! is the caller's. When no part is left, the caller gets `{ref, :ok, replies}` (replies in its
//! order; a command whose node failed holds `%RedixRs.ConnectionError{}`) or, for a call that went to
//! one node, `{ref, :error, reason}` when that node failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redix_rs_core::conn::call_state::CallState;
use redix_rs_core::conn::{Reason, Waiter};
use redix_rs_core::resp::{Frame, ServerErrorKind};
use rustler::{Encoder, Env, LocalPid, Term};
use tokio::sync::oneshot;

use super::inner::{Inner, NodeConn, Route};
use crate::message_env::{Kept, MessageEnv, OffVmThread};
use crate::{atoms, reply};

/// Redirects followed per command before it is answered with `:too_many_redirections`.
pub const MAX_HOPS: u8 = 5;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// One command of a call: where its reply goes, its encoding (kept to send it again), its slot.
#[derive(Clone)]
pub struct Cmd {
    pub pos: usize,
    pub bytes: Bytes,
    pub slot: Option<u16>,
}

/// A command's answer: its reply, or why it has none (a `RedixRs.ConnectionError` reason).
enum Answer {
    Frame(Frame),
    Failed(&'static str),
}

/// The caller's side of a call: sends its one answer.
pub struct Reply {
    state: CallState,
    pid: LocalPid,
    env: Option<MessageEnv>,
    reference: Kept,
}

impl Reply {
    pub fn new(state: CallState, pid: LocalPid, reference: Term<'_>) -> Reply {
        let env = MessageEnv::take();
        let reference = env.copy(reference);
        Reply {
            state,
            pid,
            env: Some(env),
            reference,
        }
    }

    fn send(&mut self, body: impl for<'a> FnOnce(Env<'a>) -> (Term<'a>, Term<'a>)) {
        let Some(env) = self.env.take() else { return };
        let off_vm = OffVmThread::here();
        let reference = self.reference;
        let mut env = Some(env);
        self.state.answer(off_vm, |off_vm| {
            if let Some(env) = env.take() {
                env.send(&off_vm, &self.pid, |e, env| {
                    let (tag, payload) = body(e);
                    (env.load(e, reference), tag, payload).encode(e)
                });
            }
        });
        if let Some(env) = env {
            env.recycle();
        }
    }

    fn ok(mut self, answers: Vec<Option<Answer>>) {
        self.send(|env| {
            let list = answers
                .iter()
                .rev()
                .fold(Term::list_new_empty(env), |list, a| {
                    list.list_prepend(match a {
                        Some(Answer::Frame(frame)) => reply::frame(env, frame),
                        Some(Answer::Failed(reason)) => connection_error(env, reason),
                        None => connection_error(env, "disconnected"),
                    })
                });
            (atoms::ok().encode(env), list)
        });
    }

    fn error(mut self, reason: &'static str) {
        self.send(|env| (atoms::error().encode(env), atom(env, reason).encode(env)));
    }

    /// `{ref, :error, {:redis_error, message}}`: refused before anything was sent.
    pub fn redis_error(mut self, message: &'static str) {
        self.send(|env| {
            let payload = (atom(env, "redis_error"), message).encode(env);
            (atoms::error().encode(env), payload)
        });
    }

    fn cancelled(&self) -> bool {
        self.state.cancelled()
    }
}

/// Dropped unanswered off the VM's threads (a task panicked): the caller still gets an answer.
impl Drop for Reply {
    fn drop(&mut self) {
        if self.env.is_some() && !rustler::thread::is_scheduler_thread() {
            self.send(|env| {
                (
                    atoms::error().encode(env),
                    atoms::disconnected().encode(env),
                )
            });
        } else if let Some(env) = self.env.take() {
            env.recycle();
        }
    }
}

fn atom(env: Env<'_>, name: &str) -> rustler::Atom {
    rustler::Atom::from_str(env, name).unwrap_or_else(|_| atoms::error())
}

/// `%RedixRs.ConnectionError{reason: reason}`.
fn connection_error<'a>(env: Env<'a>, reason: &str) -> Term<'a> {
    let keys = [
        atoms::__struct__().encode(env),
        atoms::__exception__().encode(env),
        atoms::reason().encode(env),
    ];
    let values = [
        atom(env, "Elixir.RedixRs.ConnectionError").encode(env),
        true.encode(env),
        atom(env, reason).encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}

struct Collect {
    reply: Option<Reply>,
    answers: Vec<Option<Answer>>,
    /// Parts not yet answered (counted before they are submitted).
    outstanding: usize,
}

/// A call in flight.
pub struct Call {
    pub inner: Arc<Inner>,
    pub deadline: Option<Instant>,
    pub route: Route,
    pub transaction: bool,
    /// The call went to more than one node at first: a node's failure is answered inline.
    split: AtomicBool,
    st: Mutex<Collect>,
}

impl Call {
    /// A call of `answers` replies; its parts are counted with [`Call::add_parts`] before they are
    /// submitted.
    pub fn new(
        inner: Arc<Inner>,
        reply: Reply,
        answers: usize,
        deadline: Option<Instant>,
        route: Route,
        transaction: bool,
    ) -> Arc<Call> {
        Arc::new(Call {
            inner,
            deadline,
            route,
            transaction,
            split: AtomicBool::new(false),
            st: Mutex::new(Collect {
                reply: Some(reply),
                answers: (0..answers).map(|_| None).collect(),
                outstanding: 0,
            }),
        })
    }

    pub fn set_split(&self, split: bool) {
        self.split.store(split, Ordering::Release);
    }

    fn split(&self) -> bool {
        self.split.load(Ordering::Acquire)
    }

    /// Counts `n` more parts in flight (before they are submitted).
    pub fn add_parts(&self, n: usize) {
        lock(&self.st).outstanding += n;
    }

    /// Takes the reply back (a refusal answered by the NIF itself).
    pub fn take_reply(&self) -> Option<Reply> {
        lock(&self.st).reply.take()
    }

    /// Records answers and one part done; sends when none is left.
    fn settle(&self, answers: impl IntoIterator<Item = (usize, Answer)>) {
        let done = {
            let mut st = lock(&self.st);
            for (pos, answer) in answers {
                if let Some(slot) = st.answers.get_mut(pos) {
                    *slot = Some(answer);
                }
            }
            st.outstanding = st.outstanding.saturating_sub(1);
            if st.outstanding == 0 {
                st.reply
                    .take()
                    .map(|reply| (reply, std::mem::take(&mut st.answers)))
            } else {
                None
            }
        };
        if let Some((reply, answers)) = done {
            // Nothing can be sent from a scheduler thread (a NIF): a tokio task sends it.
            if rustler::thread::is_scheduler_thread() {
                self.inner.spawn(async move { reply.ok(answers) });
            } else {
                reply.ok(answers);
            }
        }
    }

    /// A part failed with `reason`: inline for a split call, the call's answer otherwise.
    pub fn fail(&self, positions: Vec<usize>, reason: &'static str) {
        if !self.split() {
            let reply = {
                let mut st = lock(&self.st);
                st.outstanding = st.outstanding.saturating_sub(1);
                st.reply.take()
            };
            if let Some(reply) = reply {
                if rustler::thread::is_scheduler_thread() {
                    self.inner.spawn(async move { reply.error(reason) });
                } else {
                    reply.error(reason);
                }
            }
            return;
        }
        self.settle(positions.into_iter().map(|p| (p, Answer::Failed(reason))));
    }

    fn cancelled(&self) -> bool {
        lock(&self.st).reply.as_ref().is_none_or(Reply::cancelled)
    }

    fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a node connection waits for: a part of a call, or one of the cluster's own queries.
pub enum ClusterWaiter {
    Part(Part),
    Query(Query),
}

impl Waiter for ClusterWaiter {
    fn reply(&mut self, frame: Frame) -> bool {
        match self {
            ClusterWaiter::Part(p) => p.reply(frame),
            ClusterWaiter::Query(q) => {
                if let Some(tx) = q.tx.take() {
                    let _ = tx.send(Ok(frame));
                }
                true
            }
        }
    }

    fn complete(self) {
        if let ClusterWaiter::Part(p) = self {
            p.complete();
        }
    }

    fn fail(self, reason: &Reason) {
        match self {
            ClusterWaiter::Part(p) => p.fail(reason),
            ClusterWaiter::Query(mut q) => {
                if let Some(tx) = q.tx.take() {
                    let _ = tx.send(Err(reason.clone()));
                }
            }
        }
    }
}

/// One command of the cluster's own (`CLUSTER SHARDS`, `COMMAND`, `SCAN`), answered through a channel.
pub struct Query {
    tx: Option<oneshot::Sender<Result<Frame, Reason>>>,
}

impl Query {
    pub fn new() -> (Query, oneshot::Receiver<Result<Frame, Reason>>) {
        let (tx, rx) = oneshot::channel();
        (Query { tx: Some(tx) }, rx)
    }
}

/// The bytes of a part, ready to be written into a connection's queue.
pub struct Wire {
    asking: bool,
    transaction: bool,
    first: Bytes,
    rest: Vec<Bytes>,
    pub len: usize,
}

impl Wire {
    pub fn write(&self, out: &mut BytesMut) {
        out.reserve(self.len);
        if self.asking {
            out.extend_from_slice(ASKING);
        }
        if self.transaction {
            out.extend_from_slice(MULTI);
        }
        out.extend_from_slice(&self.first);
        for cmd in &self.rest {
            out.extend_from_slice(cmd);
        }
        if self.transaction {
            out.extend_from_slice(EXEC);
        }
    }
}

/// The commands of one call that went to one node together.
pub struct Part {
    call: Arc<Call>,
    cmds: Vec<Cmd>,
    asking: bool,
    hops: u8,
    retries: u8,
    /// The host of the node it went to (a `MOVED` to `:port` means that host).
    host: Arc<str>,
    frames: Vec<Frame>,
    expect: usize,
}

impl Part {
    pub fn new(call: Arc<Call>, cmds: Vec<Cmd>, host: Arc<str>) -> Part {
        Part::with(call, cmds, host, false, 0, 0)
    }

    fn with(
        call: Arc<Call>,
        cmds: Vec<Cmd>,
        host: Arc<str>,
        asking: bool,
        hops: u8,
        retries: u8,
    ) -> Part {
        let wrappers = if call.transaction { 2 } else { 0 };
        let expect = cmds.len() + wrappers + usize::from(asking);
        Part {
            call,
            cmds,
            asking,
            hops,
            retries,
            host,
            frames: Vec::with_capacity(expect),
            expect,
        }
    }

    /// What to send: `ASKING`, `MULTI`, the commands, `EXEC` as the part needs them (the commands'
    /// bytes are shared, not copied).
    pub fn wire(&self) -> Wire {
        let mut cmds = self.cmds.iter().map(|c| c.bytes.clone());
        let first = cmds.next().unwrap_or_default();
        let rest: Vec<Bytes> = cmds.collect();
        let mut len = first.len() + rest.iter().map(Bytes::len).sum::<usize>();
        if self.asking {
            len += ASKING.len();
        }
        if self.call.transaction {
            len += MULTI.len() + EXEC.len();
        }
        Wire {
            asking: self.asking,
            transaction: self.call.transaction,
            first,
            rest,
            len,
        }
    }

    pub fn positions(&self) -> Vec<usize> {
        if self.call.transaction {
            (0..self.cmds.len() + 2).collect()
        } else {
            self.cmds.iter().map(|c| c.pos).collect()
        }
    }

    /// A part whose node refused it (closed) or could not be found.
    pub fn refused(self, reason: &'static str) {
        let positions = self.positions();
        self.call.fail(positions, reason);
    }

    fn reply(&mut self, frame: Frame) -> bool {
        self.frames.push(frame);
        self.frames.len() >= self.expect
    }

    fn fail(self, reason: &Reason) {
        let reason = match reason {
            Reason::OwnerDown => "owner_down",
            _ => "disconnected",
        };
        self.refused(reason);
    }

    fn complete(self) {
        let Part {
            call,
            cmds,
            asking,
            hops,
            retries,
            host,
            frames,
            ..
        } = self;
        let mut frames = frames.into_iter();
        if asking {
            frames.next();
        }
        if call.transaction {
            return complete_transaction(call, cmds, frames.collect(), hops, retries, host);
        }
        // One command answered with a reply of its own: the common case, with nothing to gather.
        if cmds.len() == 1 {
            let frame = frames.next();
            match frame {
                Some(frame) if classify(&frame).is_none() => {
                    call.settle(std::iter::once((cmds[0].pos, Answer::Frame(frame))));
                }
                frame => complete_pipeline(call, cmds, frame.into_iter(), hops, retries, host),
            }
            return;
        }
        complete_pipeline(call, cmds, frames, hops, retries, host);
    }
}

/// Replies of a part of a pipeline: each is the caller's, or a redirect to follow, or a command to
/// send again.
fn complete_pipeline(
    call: Arc<Call>,
    cmds: Vec<Cmd>,
    frames: impl Iterator<Item = Frame>,
    hops: u8,
    retries: u8,
    host: Arc<str>,
) {
    let mut settled = Vec::with_capacity(cmds.len());
    let mut redirects: Vec<Redirect> = Vec::new();
    let mut again: Vec<(Cmd, Frame)> = Vec::new();
    let retry_allowed = !call.expired() && !call.cancelled();
    for (cmd, frame) in cmds.into_iter().zip(frames) {
        match classify(&frame) {
            Some(Redirection::Follow { ask, slot, address }) if hops < MAX_HOPS => {
                redirects.push(Redirect {
                    ask,
                    slot,
                    address,
                    cmd,
                });
            }
            Some(Redirection::Follow { .. }) => {
                settled.push((cmd.pos, Answer::Failed("too_many_redirections")));
            }
            Some(Redirection::Again { down }) if retry_allowed => {
                if down {
                    call.inner.trigger_refresh();
                }
                again.push((cmd, frame));
            }
            _ => settled.push((cmd.pos, Answer::Frame(frame))),
        }
    }
    let parts = follow(&call, redirects, hops + 1, &host);
    let retry = !again.is_empty();
    call.add_parts(parts.len() + usize::from(retry));
    call.settle(settled);
    for (node, part) in parts {
        submit(&node, part);
    }
    if retry {
        retry_later(call, again, hops, retries);
    }
}

/// A redirect to follow.
struct Redirect {
    ask: bool,
    slot: u16,
    address: String,
    cmd: Cmd,
}

enum Redirection {
    Follow {
        ask: bool,
        slot: u16,
        address: String,
    },
    Again {
        down: bool,
    },
}

fn classify(frame: &Frame) -> Option<Redirection> {
    let error = frame.server_error()?;
    Some(match error.kind {
        ServerErrorKind::Moved { slot, address } | ServerErrorKind::Ask { slot, address } => {
            let ask = error.message.starts_with(b"ASK");
            Redirection::Follow {
                ask,
                slot,
                address: String::from_utf8_lossy(&address).into_owned(),
            }
        }
        ServerErrorKind::TryAgain => Redirection::Again { down: false },
        ServerErrorKind::ClusterDown => Redirection::Again { down: true },
        _ => return None,
    })
}

/// `host:port` of a redirect; an empty host means the node that answered.
fn resolve(address: &str, host: &str) -> Option<(String, u16)> {
    let (h, p) = address.rsplit_once(':')?;
    let port = p.parse().ok()?;
    let h = if h.is_empty() || h == "?" { host } else { h };
    Some((h.to_owned(), port))
}

/// Groups redirected commands by target (and `ASK` or not), tells the owner, and makes the parts.
fn follow(
    call: &Arc<Call>,
    redirects: Vec<Redirect>,
    hops: u8,
    host: &str,
) -> Vec<(Arc<NodeConn>, Part)> {
    let mut groups: Vec<(bool, u16, String, Vec<Cmd>)> = Vec::new();
    for r in redirects {
        match groups.iter_mut().find(|g| g.0 == r.ask && g.2 == r.address) {
            Some(g) => g.3.push(r.cmd),
            None => groups.push((r.ask, r.slot, r.address, vec![r.cmd])),
        }
    }
    let mut parts = Vec::with_capacity(groups.len());
    for (ask, slot, address, cmds) in groups {
        let Some((target_host, port)) = resolve(&address, host) else {
            let positions: Vec<usize> = cmds.iter().map(|c| c.pos).collect();
            call.add_parts(1);
            call.fail(positions, "closed");
            continue;
        };
        call.inner.redirected(ask, slot, &target_host, port);
        let node = call.inner.node_at(&target_host, port);
        let part = Part::with(call.clone(), cmds, node.host.clone(), ask, hops, 0);
        parts.push((node, part));
    }
    parts
}

/// Submits `part` to `node` (on a tokio thread: a refusal is answered here).
pub fn submit(node: &NodeConn, part: Part) {
    if let Err(part) = node.submit(part) {
        part.call.inner.trigger_refresh();
        part.refused("closed");
    }
}

/// Sends commands answered `TRYAGAIN`/`CLUSTERDOWN` again after a pause, routed afresh; past the
/// deadline, their error replies are their answers.
fn retry_later(call: Arc<Call>, again: Vec<(Cmd, Frame)>, hops: u8, retries: u8) {
    let pause = retry_pause(retries);
    let inner = call.inner.clone();
    inner.spawn(async move {
        let late = call.deadline.is_some_and(|d| Instant::now() + pause >= d);
        if late || call.cancelled() {
            call.settle(
                again
                    .into_iter()
                    .map(|(cmd, frame)| (cmd.pos, Answer::Frame(frame))),
            );
            return;
        }
        tokio::time::sleep(pause).await;
        let mut groups: Vec<(Arc<NodeConn>, Vec<Cmd>)> = Vec::new();
        let mut failed = Vec::new();
        for (cmd, _) in again {
            match call.inner.node_for(cmd.slot, call.route) {
                Ok(node) => match groups.iter_mut().find(|g| Arc::ptr_eq(&g.0, &node)) {
                    Some(g) => g.1.push(cmd),
                    None => groups.push((node, vec![cmd])),
                },
                Err(reason) => failed.push((cmd.pos, Answer::Failed(reason))),
            }
        }
        call.add_parts(groups.len());
        call.settle(failed);
        for (node, cmds) in groups {
            submit_again(&call, &node, cmds, hops, retries);
        }
    });
}

/// The pause before commands answered `TRYAGAIN`/`CLUSTERDOWN` go again: 10 ms, doubled at each
/// retry, at most 250 ms.
fn retry_pause(retries: u8) -> Duration {
    Duration::from_millis(10 << retries.min(5)).min(Duration::from_millis(250))
}

/// Submits `cmds` to `node` again after a `TRYAGAIN`/`CLUSTERDOWN` (no `ASKING`; one more retry).
fn submit_again(call: &Arc<Call>, node: &NodeConn, cmds: Vec<Cmd>, hops: u8, retries: u8) {
    let part = Part::with(
        call.clone(),
        cmds,
        node.host.clone(),
        false,
        hops,
        retries + 1,
    );
    submit(node, part);
}

/// A transaction's replies: `OK`, one `QUEUED` (or error) per command, then `EXEC`'s. A `MOVED` or
/// `ASK` among them means the node ran nothing: the whole transaction goes to the target.
fn complete_transaction(
    call: Arc<Call>,
    cmds: Vec<Cmd>,
    frames: Vec<Frame>,
    hops: u8,
    retries: u8,
    host: Arc<str>,
) {
    let queued = frames.get(1..frames.len().saturating_sub(1)).unwrap_or(&[]);
    let redirect = queued.iter().find_map(classify);
    match redirect {
        Some(Redirection::Follow { ask, slot, address }) if hops < MAX_HOPS => {
            if let Some((target_host, port)) = resolve(&address, &host) {
                call.inner.redirected(ask, slot, &target_host, port);
                let node = call.inner.node_at(&target_host, port);
                let part = Part::with(call.clone(), cmds, node.host.clone(), ask, hops + 1, 0);
                // This part replaces the one that completed: the count is unchanged.
                submit(&node, part);
                return;
            }
            call.fail(Vec::new(), "closed");
        }
        Some(Redirection::Follow { .. }) => call.fail(Vec::new(), "too_many_redirections"),
        Some(Redirection::Again { down }) if !call.expired() && !call.cancelled() => {
            if down {
                call.inner.trigger_refresh();
            }
            let pause = retry_pause(retries);
            let inner = call.inner.clone();
            inner.spawn(async move {
                tokio::time::sleep(pause).await;
                let slot = cmds.iter().find_map(|c| c.slot);
                match call.inner.node_for(slot, Route::Primary) {
                    Ok(node) => submit_again(&call, &node, cmds, hops, retries),
                    Err(reason) => call.fail(Vec::new(), reason),
                }
            });
        }
        _ => {
            call.settle(
                frames
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| (i, Answer::Frame(f))),
            );
        }
    }
}
