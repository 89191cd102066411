//! Shared helpers for the `conn` integration tests: a real `redis-server` started per test on a free
//! port (killed when its guard drops), a channel-backed [`Waiter`] that counts every call made on it,
//! and a few helpers to run a multiplexer and to script a fake server.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use redix_rs_core::conn::{establish, ConnectOptions, Multiplexer, Reason, Waiter};
use redix_rs_core::resp::{encode_command, Frame, Limits, Parsed, Parser};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Upper bound for any single wait in a test, so a bug shows up as a failure rather than a hang.
pub const WAIT: Duration = Duration::from_secs(30);

/// Queue limit used when a test does not care about back-pressure.
pub const NO_LIMIT: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------
// Temporary directories and free ports
// ---------------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed (with its content) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "redix_rs_core_{tag}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 127.0.0.1 port that was free a moment ago (bound to port 0, read, released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------------------------------------
// A real redis-server
// ---------------------------------------------------------------------------------------------------

/// How to configure a test server beyond the always-on `--save "" --appendonly no --bind 127.0.0.1`.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// `--requirepass <pw>` (the default user's password).
    pub requirepass: Option<String>,
    /// One `--user ...` directive per entry, e.g. `"alice on >pw ~* &* +@all"`.
    pub users: Vec<String>,
    /// Also listen on a Unix socket in the server's temp dir (`--unixsocketperm 700`).
    pub unix_socket: bool,
}

/// A `redis-server` child process, killed (SIGKILL) and reaped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub unix_path: Option<PathBuf>,
    config: ServerConfig,
    // Declared last so the directory is removed after the process is gone.
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerConfig::default())
    }

    /// Starts a server and waits until it answers. The port may be taken between `free_port` and the
    /// server's bind (by a client's ephemeral port, say), so a server that exits early is retried.
    pub fn start_with(config: ServerConfig) -> RedisServer {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("redis");
            let port = free_port();
            let unix_path = config.unix_socket.then(|| dir.path().join("redis.sock"));
            let mut cmd = Command::new(REDIS_SERVER);
            cmd.arg("--save")
                .arg("")
                .arg("--appendonly")
                .arg("no")
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"));
            if let Some(pw) = &config.requirepass {
                cmd.arg("--requirepass").arg(pw);
            }
            for user in &config.users {
                cmd.arg("--user").args(user.split_whitespace());
            }
            if let Some(path) = &unix_path {
                cmd.arg("--unixsocket")
                    .arg(path)
                    .arg("--unixsocketperm")
                    .arg("700");
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd.spawn().expect("spawn /usr/bin/redis-server");
            let mut server = RedisServer {
                child: Some(child),
                port,
                unix_path,
                config: config.clone(),
                dir,
            };
            if server.wait_ready(Duration::from_secs(10)) {
                return server;
            }
            last_log =
                std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
            // Dropping `server` kills it (if still alive) and removes its directory.
        }
        panic!("redis-server did not start after 5 attempts; last log:\n{last_log}");
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connect options for this server over TCP, with no credentials.
    pub fn tcp_opts(&self) -> ConnectOptions {
        ConnectOptions::tcp("127.0.0.1", self.port)
    }

    /// Connect options for this server's Unix socket (requires `unix_socket: true`).
    pub fn unix_opts(&self) -> ConnectOptions {
        let path = self.unix_path.as_ref().expect("server has no unix socket");
        ConnectOptions {
            address: redix_rs_core::conn::Address::Unix {
                path: path.to_string_lossy().into_owned(),
            },
            ..self.tcp_opts()
        }
    }

    /// SIGKILLs the server and reaps it; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True once the server we spawned (not some other process on the port) answers INFO.
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("child");
            if !matches!(child.try_wait(), Ok(None)) {
                return false; // exited: most likely the port was taken
            }
            let pid = child.id();
            if self.probe_pid() == Some(pid) && self.unix_ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn unix_ready(&self) -> bool {
        match &self.unix_path {
            Some(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            None => true,
        }
    }

    /// The `process_id` reported by whatever listens on our port, using blocking I/O and the crate's
    /// own parser (authenticating first when the server requires it).
    fn probe_pid(&self) -> Option<u32> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = BytesMut::new();
        let mut replies = 1;
        if let Some(pw) = &self.config.requirepass {
            encode_command(&["AUTH", pw.as_str()], &mut out);
            replies += 1;
        }
        encode_command(&["INFO", "server"], &mut out);
        sock.write_all(&out).ok()?;
        let mut parser = Parser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut last = None;
        while replies > 0 {
            match parser.parse(&mut buf).ok()? {
                Parsed::Complete(frame) => {
                    last = Some(frame);
                    replies -= 1;
                }
                Parsed::Incomplete => {
                    let mut chunk = [0u8; 4096];
                    let n = sock.read(&mut chunk).ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        let Some(Frame::Bulk(info)) = last else {
            return None;
        };
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------------
// A waiter that reports through a oneshot channel and counts every call
// ---------------------------------------------------------------------------------------------------

/// What a waiter ends with: its replies, or the reason the connection ended first.
pub type Outcome = Result<Vec<Frame>, Reason>;

/// Counters shared by a group of waiters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls to `reply`.
    pub replies: AtomicUsize,
    /// Calls to `reply` after the waiter already had every reply it expected.
    pub overflow: AtomicUsize,
    pub completed: AtomicUsize,
    pub failed: AtomicUsize,
    /// Waiters dropped without `complete` or `fail` (nor `discard`): lost by the multiplexer.
    pub dropped_unresolved: AtomicUsize,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    pub fn replies(&self) -> usize {
        self.replies.load(Ordering::SeqCst)
    }
    pub fn overflow(&self) -> usize {
        self.overflow.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
    pub fn dropped_unresolved(&self) -> usize {
        self.dropped_unresolved.load(Ordering::SeqCst)
    }
}

/// Runs inside `complete` / `fail`, with the outcome about to be sent.
pub type Hook = Box<dyn FnOnce(&Outcome) + Send>;

/// A [`Waiter`] expecting `expected` replies; `complete`/`fail` send the outcome on a oneshot channel.
pub struct ChanWaiter {
    expected: usize,
    replies: Vec<Frame>,
    tx: Option<oneshot::Sender<Outcome>>,
    stats: Arc<Stats>,
    hook: Option<Hook>,
}

impl std::fmt::Debug for ChanWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChanWaiter")
            .field("expected", &self.expected)
            .field("replies", &self.replies.len())
            .finish()
    }
}

impl ChanWaiter {
    pub fn new(expected: usize) -> (ChanWaiter, oneshot::Receiver<Outcome>) {
        ChanWaiter::with_stats(expected, &Stats::new())
    }

    pub fn with_stats(
        expected: usize,
        stats: &Arc<Stats>,
    ) -> (ChanWaiter, oneshot::Receiver<Outcome>) {
        assert!(expected > 0, "a waiter must expect at least one reply");
        let (tx, rx) = oneshot::channel();
        let waiter = ChanWaiter {
            expected,
            replies: Vec::with_capacity(expected.min(1024)),
            tx: Some(tx),
            stats: stats.clone(),
            hook: None,
        };
        (waiter, rx)
    }

    /// Runs `hook` when this waiter is completed or failed (to test re-entrant submissions).
    pub fn on_done(mut self, hook: impl FnOnce(&Outcome) + Send + 'static) -> ChanWaiter {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Drops a waiter that was handed back by a refused submission, without counting it as lost.
    pub fn discard(mut self) {
        self.tx = None;
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(hook) = self.hook.take() {
            hook(&outcome);
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(outcome);
        }
    }
}

impl Waiter for ChanWaiter {
    fn reply(&mut self, frame: Frame) -> bool {
        self.stats.replies.fetch_add(1, Ordering::SeqCst);
        if self.replies.len() >= self.expected {
            self.stats.overflow.fetch_add(1, Ordering::SeqCst);
        }
        self.replies.push(frame);
        self.replies.len() >= self.expected
    }

    fn complete(mut self) {
        self.stats.completed.fetch_add(1, Ordering::SeqCst);
        let replies = std::mem::take(&mut self.replies);
        self.finish(Ok(replies));
    }

    fn fail(mut self, reason: &Reason) {
        self.stats.failed.fetch_add(1, Ordering::SeqCst);
        self.finish(Err(reason.clone()));
    }
}

impl Drop for ChanWaiter {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.stats.dropped_unresolved.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub type Mux = Multiplexer<ChanWaiter>;

/// Awaits a waiter's outcome, failing the test if it takes longer than [`WAIT`] or the waiter was
/// dropped without an answer.
pub async fn outcome(rx: oneshot::Receiver<Outcome>) -> Outcome {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("timed out waiting for a waiter's outcome")
        .expect("waiter dropped without complete or fail")
}

/// Awaits a single-reply waiter that must complete.
pub async fn reply(rx: oneshot::Receiver<Outcome>) -> Frame {
    let mut replies = outcome(rx).await.expect("waiter failed");
    assert_eq!(replies.len(), 1, "expected exactly one reply");
    replies.pop().unwrap()
}

/// Queues one command through `submit_with`, encoding straight into the write queue.
pub fn send<A: AsRef<[u8]>>(mux: &Mux, args: &[A]) -> oneshot::Receiver<Outcome> {
    let (waiter, rx) = ChanWaiter::new(1);
    mux.submit_with(waiter, |out| {
        encode_command(args, out.buf());
        Ok::<(), Infallible>(())
    })
    .expect("submit_with refused");
    rx
}

/// Sends one command and returns its reply.
pub async fn cmd<A: AsRef<[u8]>>(mux: &Mux, args: &[A]) -> Frame {
    reply(send(mux, args)).await
}

/// Encodes one command into a fresh buffer (for `submit`).
pub fn encoded<A: AsRef<[u8]>>(args: &[A]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_command(args, &mut out);
    out
}

/// A multiplexer being served by a spawned `run` task.
pub struct Conn {
    pub mux: Mux,
    pub task: JoinHandle<Reason>,
}

impl Conn {
    /// Establishes a connection with `opts` and serves it with an unbounded-enough queue.
    pub async fn open(opts: &ConnectOptions) -> Conn {
        Conn::open_with(opts, Multiplexer::new(NO_LIMIT)).await
    }

    /// Establishes a connection and serves it with `mux` (which may already hold submissions).
    pub async fn open_with(opts: &ConnectOptions, mux: Mux) -> Conn {
        let (stream, leftover) = establish(opts).await.expect("establish");
        let runner = mux.clone();
        let task = tokio::spawn(async move { runner.run(stream, leftover).await });
        Conn { mux, task }
    }

    /// Waits for `run` to return.
    pub async fn ended(self) -> Reason {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("timed out waiting for run() to return")
            .expect("run() panicked")
    }
}

/// Polls `cond` every few milliseconds until it holds, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------------

pub fn bulk(bytes: impl AsRef<[u8]>) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(bytes.as_ref()))
}

pub fn simple(text: &str) -> Frame {
    Frame::Simple(Bytes::copy_from_slice(text.as_bytes()))
}

pub fn ok() -> Frame {
    simple("OK")
}

/// The text of a bulk, simple or verbatim reply (panics on anything else).
pub fn text(frame: &Frame) -> String {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Verbatim { text, .. } => String::from_utf8_lossy(text).into_owned(),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Fake servers (only for what a real server cannot do)
// ---------------------------------------------------------------------------------------------------

/// A listener on a free 127.0.0.1 port, for a test to script a misbehaving server.
pub async fn fake_listener() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let port = listener.local_addr().expect("local_addr").port();
    (listener, port)
}

/// Connects a fresh multiplexer (which may already hold submissions) to the fake server behind
/// `listener` and returns the server side of the socket.
pub async fn connect_fake(
    listener: &tokio::net::TcpListener,
    port: u16,
    mux: Mux,
) -> (Conn, tokio::net::TcpStream) {
    let conn = Conn::open_with(
        &redix_rs_core::conn::ConnectOptions::tcp("127.0.0.1", port),
        mux,
    )
    .await;
    let (sock, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("timed out accepting")
        .expect("accept");
    sock.set_nodelay(true).unwrap();
    (conn, sock)
}

/// Reads exactly `n` bytes from the fake server's socket.
pub async fn read_n(sock: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, sock.read_exact(&mut buf))
        .await
        .expect("timed out reading from the client")
        .expect("read from the client");
    buf
}
