//! Frames that are not replies (`conn::out_of_band`), the multiplexer's `OutOfBandSink` hook
//! (pub/sub connections) and `submit_unanswered`, against a real redis-server.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redix_rs_core::conn::{
    Confirmations, ConnectOptions, Mode, Multiplexer, OutOfBand, OutOfBandSink, Posix, Protocol,
    Reason, SubmitError, Taken,
};
use redix_rs_core::pubsub::{Event, Kind};
use redix_rs_core::resp::Frame;
use support::*;

/// Records what the multiplexer hands it, and `closed` calls.
#[derive(Default)]
struct TestSink {
    items: Mutex<Vec<OutOfBand>>,
    closed: Mutex<Vec<Reason>>,
    rejected: Mutex<Vec<Frame>>,
    taken: AtomicUsize,
}

impl OutOfBandSink for TestSink {
    fn take(&self, item: OutOfBand) -> Taken {
        self.taken.fetch_add(1, Ordering::SeqCst);
        self.items.lock().unwrap().push(item);
        Taken::Yes
    }

    fn rejected(&self, error: &Frame) {
        self.rejected.lock().unwrap().push(error.clone());
    }

    fn closed(&self, reason: &Reason) {
        self.closed.lock().unwrap().push(reason.clone());
    }
}

impl TestSink {
    fn routed(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }
    fn events(&self) -> Vec<OutOfBand> {
        self.items.lock().unwrap().clone()
    }
}

fn subscribed_mux(limit: usize) -> (Mux, Arc<TestSink>) {
    let sink = Arc::new(TestSink::default());
    let mux = Multiplexer::with_sink(
        limit,
        Mode::Subscribed,
        sink.clone() as Arc<dyn OutOfBandSink>,
    );
    (mux, sink)
}

fn b(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

fn confirmations(names: &[&str], subscribe: bool) -> Confirmations {
    Confirmations {
        kind: Kind::Channel,
        subscribe,
        names: names.iter().map(|n| b(n)).collect(),
    }
}

fn subscribed(name: &str) -> OutOfBand {
    OutOfBand::Confirmation(Event::Subscribed {
        kind: Kind::Channel,
        name: b(name),
    })
}

fn message(channel: &str, payload: Frame) -> OutOfBand {
    OutOfBand::Message(Event::Message {
        kind: Kind::Channel,
        channel: b(channel),
        payload,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_takes_pubsub_frames_and_callers_keep_their_replies() {
    let server = RedisServer::start();
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let sub = Conn::open_with(&server.tcp_opts(), mux).await;
    sub.mux
        .submit_unanswered(
            &encoded(&["SUBSCRIBE", "ch1", "ch2"]),
            confirmations(&["ch1", "ch2"], true),
        )
        .expect("submit_unanswered refused");
    eventually("both subscribe confirmations", || sink.routed() == 2).await;
    assert_eq!(sink.events(), vec![subscribed("ch1"), subscribed("ch2")]);

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
    eventually("all 100 messages", || sink.routed() == 102).await;
    let messages: Vec<OutOfBand> = sink.events().split_off(2);
    let expected: Vec<OutOfBand> = (0..100)
        .map(|i| message("ch1", bulk(i.to_string())))
        .collect();
    assert_eq!(messages, expected, "messages routed in publish order");

    sub.mux
        .submit_unanswered(
            &encoded(&["UNSUBSCRIBE", "ch1"]),
            confirmations(&["ch1"], false),
        )
        .expect("submit_unanswered refused");
    eventually("the unsubscribe confirmation", || sink.routed() == 103).await;
    assert_eq!(
        sink.events().last(),
        Some(&OutOfBand::Confirmation(Event::Unsubscribed {
            kind: Kind::Channel,
            name: b("ch1")
        }))
    );
    sub.task.abort();
    publisher.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_command_connection_pubsub_arrays_are_replies() {
    // A RESP2 command connection classifies nothing by shape: a confirmation is just the next reply.
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
    let (mux, _sink) = subscribed_mux(100);
    let name = "c".repeat(200);
    let big = encoded(&["SUBSCRIBE", &name]);
    mux.submit_unanswered(&big, confirmations(&[&name], true))
        .expect("a lone oversized submission must be accepted");
    // Pub/sub control commands are never refused for the limit: a dropped SUBSCRIBE would leave its
    // subscribers waiting for a confirmation forever.
    mux.submit_unanswered(&encoded(&["SUBSCRIBE", "x"]), confirmations(&["x"], true))
        .expect("unanswered commands are not subject to the limit");
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Full(w)) => w.discard(),
        other => panic!("expected SubmitError::Full, got {other:?}"),
    }
    assert_eq!(mux.pending(), 0, "unanswered commands queue no waiter");
    mux.close(Reason::Closed);
    assert!(matches!(
        mux.submit_unanswered(b"*1\r\n$4\r\nPING\r\n", confirmations(&["x"], true)),
        Err(SubmitError::Closed(()))
    ));
}

/// The sink hears of the end of the connection once (the NIF's pub/sub sink then tells subscribers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_hears_once_when_the_connection_ends() {
    let server = RedisServer::start();
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    conn.mux
        .submit_unanswered(&encoded(&["SUBSCRIBE", "ch"]), confirmations(&["ch"], true))
        .expect("submit_unanswered refused");
    eventually("the subscribe confirmation", || sink.routed() == 1).await;
    conn.mux.close(Reason::Closed);
    assert_eq!(conn.ended().await, Reason::Closed);
    assert_eq!(*sink.closed.lock().unwrap(), vec![Reason::Closed]);

    // A connection that never ran.
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    mux.abort(&Reason::Posix(Posix::Econnrefused));
    assert_eq!(
        *sink.closed.lock().unwrap(),
        vec![Reason::Posix(Posix::Econnrefused)]
    );
}

/// An error reply to a command sent with `submit_unanswered` (Redis 7's `-NOPERM` for a channel the ACL
/// user may not access) goes to the sink, never to the next caller.
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
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let conn = Conn::open_with(&opts, mux).await;
    conn.mux
        .submit_unanswered(
            &encoded(&["SUBSCRIBE", "forbidden"]),
            confirmations(&["forbidden"], true),
        )
        .expect("submit_unanswered refused");
    let ping = send(&conn.mux, &["PING"]);
    assert_eq!(reply(ping).await, simple("PONG"));
    let rejected = sink.rejected.lock().unwrap().clone();
    assert_eq!(rejected.len(), 1);
    assert!(
        matches!(&rejected[0], Frame::Error(m) if m.starts_with(b"NOPERM")),
        "{rejected:?}"
    );
    conn.task.abort();
}

/// Client-tracking invalidations redirected to a RESP2 subscribed connection arrive as `message`s on
/// `__redis__:invalidate` whose payload is a list of keys (or null after FLUSHALL): they go to the
/// sink with that payload, and a caller on the same connection keeps its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_of_any_payload_are_messages_not_replies() {
    let server = RedisServer::start();
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let sub = Conn::open_with(&server.tcp_opts(), mux).await;
    let id = match cmd(&sub.mux, &["CLIENT", "ID"]).await {
        Frame::Integer(id) => id.to_string(),
        other => panic!("CLIENT ID answered {other:?}"),
    };
    sub.mux
        .submit_unanswered(
            &encoded(&["SUBSCRIBE", "__redis__:invalidate"]),
            confirmations(&["__redis__:invalidate"], true),
        )
        .expect("submit_unanswered refused");
    eventually("the subscribe confirmation", || sink.routed() == 1).await;

    let tracker = Conn::open(&server.tcp_opts()).await;
    let on = cmd(
        &tracker.mux,
        &["CLIENT", "TRACKING", "on", "REDIRECT", &id, "BCAST"],
    )
    .await;
    assert_eq!(on, ok());
    for i in 0..50 {
        let key = format!("k{i}");
        let set = send(&tracker.mux, &["SET", key.as_str(), "v"]);
        // A PING at the head of the queue while the invalidation arrives keeps its PONG.
        let ping = send(&sub.mux, &["PING", key.as_str()]);
        assert_eq!(reply(set).await, ok());
        assert_eq!(
            reply(ping).await,
            Frame::Array(vec![bulk("pong"), bulk(&key)])
        );
    }
    eventually("50 invalidations", || sink.routed() == 51).await;
    let items = sink.events();
    for (i, item) in items[1..].iter().enumerate() {
        let keys = Frame::Array(vec![bulk(format!("k{i}"))]);
        assert_eq!(item, &message("__redis__:invalidate", keys));
    }
    assert_eq!(cmd(&tracker.mux, &["FLUSHALL"]).await, ok());
    eventually("the FLUSHALL invalidation", || sink.routed() == 52).await;
    let last = sink.events().pop().unwrap();
    assert!(
        matches!(
            &last,
            OutOfBand::Message(Event::Message {
                payload: Frame::NullArray | Frame::NullBulk,
                ..
            })
        ),
        "{last:?}"
    );
    sub.task.abort();
    tracker.task.abort();
}

/// Under RESP3 an invalidation is a push frame, on the tracking connection itself: it goes to the
/// sink as an invalidation, or is dropped without one; never to the caller at the head of the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_invalidation_pushes_never_reach_a_caller() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        protocol: Protocol::Resp3,
        ..server.tcp_opts()
    };
    let sink = Arc::new(TestSink::default());
    let mux = Multiplexer::with_sink(
        NO_LIMIT,
        Mode::Commands,
        sink.clone() as Arc<dyn OutOfBandSink>,
    );
    let with_sink = Conn::open_with(&opts, mux).await;
    let without_sink = Conn::open(&opts).await;
    let writer = Conn::open(&server.tcp_opts()).await;
    for conn in [&with_sink, &without_sink] {
        assert_eq!(cmd(&conn.mux, &["CLIENT", "TRACKING", "on"]).await, ok());
    }
    for i in 0..20 {
        let key = format!("t{i}");
        assert_eq!(cmd(&writer.mux, &["SET", key.as_str(), "1"]).await, ok());
        for conn in [&with_sink, &without_sink] {
            assert_eq!(cmd(&conn.mux, &["GET", key.as_str()]).await, bulk("1"));
        }
        assert_eq!(cmd(&writer.mux, &["SET", key.as_str(), "2"]).await, ok());
        for conn in [&with_sink, &without_sink] {
            // The invalidation of `key` is on its way; the next reply is still this caller's own.
            assert_eq!(cmd(&conn.mux, &["GET", key.as_str()]).await, bulk("2"));
        }
    }
    eventually("20 invalidations", || sink.routed() == 20).await;
    for (i, item) in sink.events().iter().enumerate() {
        let keys = Frame::Array(vec![bulk(format!("t{i}"))]);
        assert_eq!(item, &OutOfBand::Invalidation(keys));
    }
    for conn in [with_sink, without_sink, writer] {
        conn.task.abort();
    }
}

/// Redis 7 tells a subscribed client that a sharded channel's slot moved with an unsolicited
/// `sunsubscribe` (a real server sends it only in a cluster, hence a fake server): it is not a
/// confirmation of any command (the unanswered SUBSCRIBE behind it still gets its own), and the caller
/// at the head of the queue keeps its reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_sunsubscribe_is_an_ended_subscription() {
    use tokio::io::AsyncWriteExt;
    let (listener, port) = fake_listener().await;
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;
    let ping = send(&conn.mux, &["PING"]);
    conn.mux
        .submit_unanswered(&encoded(&["SUBSCRIBE", "c"]), confirmations(&["c"], true))
        .expect("submit_unanswered refused");
    let written = encoded(&["PING"]).len() + encoded(&["SUBSCRIBE", "c"]).len();
    read_n(&mut sock, written).await;
    sock.write_all(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        reply(ping).await,
        Frame::Array(vec![bulk("pong"), bulk("")])
    );
    sock.write_all(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n")
        .await
        .unwrap();
    eventually("two out-of-band items", || sink.routed() == 2).await;
    assert_eq!(
        sink.events(),
        vec![
            OutOfBand::Ended(Event::Unsubscribed {
                kind: Kind::Shard,
                name: b("s")
            }),
            subscribed("c"),
        ]
    );
    assert!(!conn.mux.is_closed());
    assert_eq!(conn.mux.pending(), 0);
    conn.task.abort();
}

/// An `sunsubscribe` Redis sends on its own while this connection's own `SUNSUBSCRIBE` of other
/// channels waits is matched by name: it is not counted as one of that command's confirmations, so a
/// caller queued behind the command still gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_are_matched_by_name() {
    use tokio::io::AsyncWriteExt;
    let (listener, port) = fake_listener().await;
    let (mux, sink) = subscribed_mux(NO_LIMIT);
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;
    let ours = Confirmations {
        kind: Kind::Shard,
        subscribe: false,
        names: vec![b("b"), b("c")],
    };
    conn.mux
        .submit_unanswered(&encoded(&["SUNSUBSCRIBE", "b", "c"]), ours)
        .expect("submit_unanswered refused");
    // Queued behind the SUNSUBSCRIBE: it goes out with the same write, or with the reader's
    // hand-over once the confirmations have arrived.
    let ping = send(&conn.mux, &["PING"]);
    read_n(&mut sock, encoded(&["SUNSUBSCRIBE", "b", "c"]).len()).await;
    let sunsubscribe = |name: &str, left: usize| {
        format!(
            "*3\r\n$12\r\nsunsubscribe\r\n${}\r\n{name}\r\n:{left}\r\n",
            name.len()
        )
    };
    let script = sunsubscribe("a", 2) + &sunsubscribe("b", 1) + &sunsubscribe("c", 0);
    sock.write_all(script.as_bytes()).await.unwrap();
    read_n(&mut sock, encoded(&["PING"]).len()).await;
    sock.write_all(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        reply(ping).await,
        Frame::Array(vec![bulk("pong"), bulk("")])
    );
    eventually("three out-of-band items", || sink.routed() == 3).await;
    let shard = |name: &str| Event::Unsubscribed {
        kind: Kind::Shard,
        name: b(name),
    };
    assert_eq!(
        sink.events(),
        vec![
            OutOfBand::Ended(shard("a")),
            OutOfBand::Confirmation(shard("b")),
            OutOfBand::Confirmation(shard("c")),
        ]
    );
    assert!(!conn.mux.is_closed());
    conn.task.abort();
}
