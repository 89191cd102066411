//! The multiplexer's `Router` hook (pub/sub connections) and `submit_unanswered`, against a real
//! redis-server.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redix_rs_core::conn::{ConnectOptions, Multiplexer, Reason, Routed, Router, SubmitError};
use redix_rs_core::resp::Frame;
use support::*;

/// Takes RESP2 pub/sub arrays and RESP3 pushes (kept independent of the crate's `pubsub` module, so
/// that only the `conn` hook is under test) and records them; records `closed` calls.
#[derive(Default)]
struct TestRouter {
    events: Mutex<Vec<Frame>>,
    closed: Mutex<Vec<Reason>>,
    rejected: Mutex<Vec<Frame>>,
    routed: AtomicUsize,
}

impl Router for TestRouter {
    fn route(&self, frame: &Frame) -> Routed {
        let routed = match frame {
            Frame::Array(items) | Frame::Push(items) => match items.first() {
                Some(Frame::Bulk(kind))
                    if [&b"subscribe"[..], b"unsubscribe"].contains(&&kind[..]) =>
                {
                    Routed::Confirmation
                }
                Some(Frame::Bulk(kind)) if &kind[..] == b"message" => Routed::Message,
                _ if matches!(frame, Frame::Push(_)) => Routed::Message,
                _ => Routed::NotMine,
            },
            _ => Routed::NotMine,
        };
        if routed != Routed::NotMine {
            self.routed.fetch_add(1, Ordering::SeqCst);
            self.events.lock().unwrap().push(frame.clone());
        }
        routed
    }

    fn rejected(&self, error: &Frame) {
        self.rejected.lock().unwrap().push(error.clone());
    }

    fn closed(&self, reason: &Reason) {
        self.closed.lock().unwrap().push(reason.clone());
    }
}

impl TestRouter {
    fn routed(&self) -> usize {
        self.routed.load(Ordering::SeqCst)
    }
    fn events(&self) -> Vec<Frame> {
        self.events.lock().unwrap().clone()
    }
}

fn routed_mux(limit: usize) -> (Mux, Arc<TestRouter>) {
    let router = Arc::new(TestRouter::default());
    let mux = Multiplexer::with_router(limit, router.clone() as Arc<dyn Router>);
    (mux, router)
}

/// `[kind, name, n]` or `[message, channel, payload]` as Redis sends them in RESP2.
fn event(kind: &str, name: &str, last: Frame) -> Frame {
    Frame::Array(vec![bulk(kind), bulk(name), last])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_takes_pubsub_frames_and_callers_keep_their_replies() {
    let server = RedisServer::start();
    let (mux, router) = routed_mux(NO_LIMIT);
    let sub = Conn::open_with(&server.tcp_opts(), mux).await;
    sub.mux
        .submit_unanswered(&encoded(&["SUBSCRIBE", "ch1", "ch2"]), 2)
        .expect("submit_unanswered refused");
    eventually("both subscribe confirmations", || router.routed() == 2).await;
    assert_eq!(
        router.events(),
        vec![
            event("subscribe", "ch1", Frame::Integer(1)),
            event("subscribe", "ch2", Frame::Integer(2)),
        ]
    );

    // Messages published meanwhile interleave with the replies to this connection's callers (RESP2
    // PING in subscribed mode answers ["pong", ""]): each caller still gets its own reply.
    let publisher = Conn::open(&server.tcp_opts()).await;
    let mut pings = Vec::new();
    let mut publishes = Vec::new();
    for i in 0..100 {
        let tag = i.to_string();
        publishes.push(send(&publisher.mux, &["PUBLISH", "ch1", tag.as_str()]));
        pings.push(send(&sub.mux, &["PING", tag.as_str()]));
    }
    for (i, rx) in pings.into_iter().enumerate() {
        assert_eq!(
            reply(rx).await,
            Frame::Array(vec![bulk("pong"), bulk(i.to_string())])
        );
    }
    for rx in publishes {
        assert_eq!(reply(rx).await, Frame::Integer(1));
    }
    eventually("all 100 messages", || router.routed() == 102).await;
    let messages: Vec<Frame> = router.events().split_off(2);
    let expected: Vec<Frame> = (0..100)
        .map(|i| event("message", "ch1", bulk(i.to_string())))
        .collect();
    assert_eq!(messages, expected, "messages routed in publish order");

    sub.mux
        .submit_unanswered(&encoded(&["UNSUBSCRIBE", "ch1"]), 1)
        .expect("submit_unanswered refused");
    eventually("the unsubscribe confirmation", || router.routed() == 103).await;
    assert_eq!(
        router.events().last(),
        Some(&event("unsubscribe", "ch1", Frame::Integer(1)))
    );
    sub.task.abort();
    publisher.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_router_pubsub_arrays_are_replies() {
    // A plain multiplexer has no idea of pub/sub: a RESP2 confirmation is just the next reply.
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    assert_eq!(
        cmd(&conn.mux, &["SUBSCRIBE", "ch"]).await,
        Frame::Array(vec![bulk("subscribe"), bulk("ch"), Frame::Integer(1)])
    );
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_unanswered_ignores_the_limit_but_not_close() {
    let (mux, _router) = routed_mux(100);
    let big = encoded(&["SUBSCRIBE", &"c".repeat(200)]);
    mux.submit_unanswered(&big, 1)
        .expect("a lone oversized submission must be accepted");
    // Pub/sub control commands are never refused for the limit: a dropped SUBSCRIBE would leave its
    // subscribers waiting for a confirmation forever.
    mux.submit_unanswered(&encoded(&["SUBSCRIBE", "x"]), 1)
        .expect("unanswered commands are not subject to the limit");
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Full(w)) => w.discard(),
        other => panic!("expected SubmitError::Full, got {other:?}"),
    }
    assert_eq!(mux.pending(), 0, "unanswered commands queue no waiter");
    mux.close(Reason::Atom("bye"));
    assert!(matches!(
        mux.submit_unanswered(b"*1\r\n$4\r\nPING\r\n", 1),
        Err(SubmitError::Closed(()))
    ));
}

/// The router hears of the end of the connection once (the NIF's router then tells subscribers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_hears_once_when_the_connection_ends() {
    let server = RedisServer::start();
    let (mux, router) = routed_mux(NO_LIMIT);
    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    conn.mux
        .submit_unanswered(&encoded(&["SUBSCRIBE", "ch"]), 1)
        .expect("submit_unanswered refused");
    eventually("the subscribe confirmation", || router.routed() == 1).await;
    conn.mux.close(Reason::Atom("closed"));
    assert_eq!(conn.ended().await, Reason::Atom("closed"));
    assert_eq!(*router.closed.lock().unwrap(), vec![Reason::Atom("closed")]);

    // A connection that never ran.
    let (mux, router) = routed_mux(NO_LIMIT);
    mux.abort(&Reason::Atom("econnrefused"));
    assert_eq!(
        *router.closed.lock().unwrap(),
        vec![Reason::Atom("econnrefused")]
    );
}

/// An error reply to a command sent with `submit_unanswered` (Redis 7's `-NOPERM` for a channel the ACL
/// user may not access) goes to the router, never to the next caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reply_to_an_unanswered_command_is_not_given_to_a_caller() {
    let server = RedisServer::start_with(ServerConfig {
        users: vec!["bob on >pw ~* resetchannels &allowed +@all".into()],
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        username: Some(b"bob".to_vec()),
        password: Some(b"pw".to_vec()),
        ..server.tcp_opts()
    };
    let (mux, router) = routed_mux(NO_LIMIT);
    let conn = Conn::open_with(&opts, mux).await;
    conn.mux
        .submit_unanswered(&encoded(&["SUBSCRIBE", "forbidden"]), 1)
        .expect("submit_unanswered refused");
    let ping = send(&conn.mux, &["PING"]);
    assert_eq!(reply(ping).await, simple("PONG"));
    let rejected = router.rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 1);
    assert!(
        matches!(&rejected[0], Frame::Error(m) if m.starts_with(b"NOPERM")),
        "{rejected:?}"
    );
    conn.task.abort();
}
