//! The connection lifecycle (`conn::lifecycle::supervise`), with no VM: what the owner hears, in order,
//! against a real redis-server (connected, disconnected, refused, a handshake error) and a fake server
//! (an owner that closes during the handshake), and a panic in a waiter.

mod support;

use std::sync::{Arc, Mutex};

use redix_rs_core::conn::lifecycle::{supervise, Lifecycle, LifecycleListener};
use redix_rs_core::conn::{ConnectError, ConnectOptions, Multiplexer, Posix, Reason};
use redix_rs_core::resp::Frame;
use support::*;
use tokio::sync::mpsc;

/// Hands every event to the test, in order.
struct Events(Mutex<mpsc::UnboundedSender<Lifecycle>>);

impl LifecycleListener for Events {
    fn event(&self, event: Lifecycle) {
        let _ = self.0.lock().unwrap().send(event);
    }
}

fn start(mux: &Mux, opts: ConnectOptions) -> mpsc::UnboundedReceiver<Lifecycle> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(supervise(
        mux.clone(),
        opts,
        Arc::new(Events(Mutex::new(tx))),
    ));
    rx
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Lifecycle>) -> Lifecycle {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a lifecycle event")
        .expect("the listener went away")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_then_disconnected_when_the_server_dies() {
    let mut server = RedisServer::start();
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let mut events = start(&mux, server.tcp_opts());
    assert!(matches!(next(&mut events).await, Lifecycle::Connected));
    assert_eq!(cmd(&mux, &["PING"]).await, simple("PONG"));
    let blocked = send(&mux, &["BLPOP", "nothing", "0"]);
    server.kill();
    let Lifecycle::Disconnected(reason) = next(&mut events).await else {
        panic!("expected a disconnection");
    };
    assert!(
        [Reason::TcpClosed, Reason::Posix(Posix::Econnreset)].contains(&reason),
        "{reason:?}"
    );
    assert_eq!(outcome(blocked).await, Err(reason));
    assert!(mux.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_queued_callers_and_is_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let queued = send(&mux, &["PING"]);
    let mut events = start(&mux, ConnectOptions::tcp("127.0.0.1", port));
    let Lifecycle::ConnectFailed(err) = next(&mut events).await else {
        panic!("expected a failed connection");
    };
    assert_eq!(err.reason(), Reason::Posix(Posix::Econnrefused));
    assert_eq!(
        outcome(queued).await,
        Err(Reason::Posix(Posix::Econnrefused))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_error_is_the_servers_own() {
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("right".into()),
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        password: Some(b"wrong".to_vec()),
        ..server.tcp_opts()
    };
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let mut events = start(&mux, opts);
    let Lifecycle::ConnectFailed(ConnectError::Redis(message)) = next(&mut events).await else {
        panic!("expected the server's error");
    };
    assert!(message.starts_with("WRONGPASS"), "{message}");
}

/// An owner that closes the connection while the server has not answered the handshake: the attempt
/// is abandoned at once (a fake server, since a real one answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_closed_by_its_owner_is_abandoned() {
    let (listener, port) = fake_listener().await;
    let opts = ConnectOptions {
        password: Some(b"pw".to_vec()),
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let mut events = start(&mux, opts);
    let (mut sock, _) = listener.accept().await.unwrap();
    // The AUTH arrived and is never answered.
    read_n(&mut sock, encoded(&["AUTH", "pw"]).len()).await;
    mux.close(Reason::OwnerDown);
    let Lifecycle::ConnectFailed(ConnectError::Closed) = next(&mut events).await else {
        panic!("expected the attempt to be abandoned");
    };
}

/// A waiter whose code panics takes down its connection, not the runtime: every other waiter is
/// answered and the owner hears a `Panic` disconnection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_connection_is_a_disconnection() {
    let server = RedisServer::start();
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let mut events = start(&mux, server.tcp_opts());
    assert!(matches!(next(&mut events).await, Lifecycle::Connected));
    let blocked = send(&mux, &["BLPOP", "nothing", "0"]);
    let (waiter, _rx) = ChanWaiter::new(1);
    let waiter = waiter.on_done(|outcome| {
        if outcome.is_ok() {
            panic!("a waiter's code panicked");
        }
    });
    // Another connection unblocks the BLPOP; the PING behind it then completes, and panics.
    let other = Conn::open(&server.tcp_opts()).await;
    mux.submit(encoded(&["PING"]), waiter).unwrap();
    assert_eq!(
        cmd(&other.mux, &["RPUSH", "nothing", "x"]).await,
        Frame::Integer(1)
    );
    let Lifecycle::Disconnected(Reason::Panic(message)) = next(&mut events).await else {
        panic!("expected a panic disconnection");
    };
    assert!(message.contains("a waiter's code panicked"), "{message}");
    // The BLPOP was answered before the PING's waiter panicked; the connection is closed.
    assert!(outcome(blocked).await.is_ok());
    assert!(mux.is_closed());
    other.task.abort();
}
