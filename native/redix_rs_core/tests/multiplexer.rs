//! `Multiplexer` against a real redis-server: submission paths, FIFO matching under concurrency,
//! pipelines, large values, back-pressure, close, abort and a server that dies under pending waiters.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use redix_rs_core::conn::{Multiplexer, Outgoing, Posix, Reason, SubmitError};
use redix_rs_core::resp::{encode_command, Frame};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_and_submit_get_their_replies() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let mux = &conn.mux;

    // submit_with: encoded straight into the write queue.
    assert_eq!(cmd(mux, &["PING"]).await, simple("PONG"));
    assert_eq!(cmd(mux, &["SET", "k", "v1"]).await, ok());

    // submit: bytes encoded elsewhere.
    let (waiter, rx) = ChanWaiter::new(1);
    mux.submit(encoded(&["GET", "k"]), waiter)
        .expect("submit refused");
    assert_eq!(reply(rx).await, bulk("v1"));

    // Error replies are ordinary replies: the connection goes on.
    let err = cmd(mux, &["NO-SUCH-COMMAND"]).await;
    assert!(
        matches!(&err, Frame::Error(m) if m.starts_with(b"ERR unknown command")),
        "{err:?}"
    );
    assert_eq!(cmd(mux, &["INCRBY", "n", "41"]).await, Frame::Integer(41));
    assert_eq!(cmd(mux, &["GET", "missing"]).await, Frame::NullBulk);

    // Both paths interleaved, all queued before any reply is awaited.
    let mut pending = Vec::new();
    for i in 0..20 {
        let value = format!("v{i}");
        if i % 2 == 0 {
            pending.push(send(mux, &["ECHO", value.as_str()]));
        } else {
            let (waiter, rx) = ChanWaiter::new(1);
            mux.submit(encoded(&["ECHO", value.as_str()]), waiter)
                .expect("submit refused");
            pending.push(rx);
        }
    }
    for (i, rx) in pending.into_iter().enumerate() {
        assert_eq!(reply(rx).await, bulk(format!("v{i}")));
    }
    assert_eq!(mux.pending(), 0);
    assert!(!mux.is_closed());
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_match_callers_fifo_across_200_tasks() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let stats = Stats::new();

    let mut tasks = Vec::new();
    for t in 0..200 {
        let mux = conn.mux.clone();
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("task:{t}");
            for i in 0..50 {
                let value = format!("value-{t}-{i}");
                let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
                if (t + i) % 2 == 0 {
                    mux.submit_with(waiter, |out| {
                        encode_command(&["SET", key.as_str(), value.as_str()], out.buf());
                        Ok::<(), Infallible>(())
                    })
                    .expect("submit_with refused");
                } else {
                    mux.submit(encoded(&["SET", key.as_str(), value.as_str()]), waiter)
                        .expect("submit refused");
                }
                assert_eq!(reply(rx).await, ok());
                let got = cmd(&mux, &["GET", key.as_str()]).await;
                assert_eq!(
                    got,
                    bulk(&value),
                    "task {t} iteration {i} got another's reply"
                );
            }
        }));
    }
    for task in tasks {
        task.await.expect("task panicked");
    }
    assert_eq!(stats.completed(), 200 * 50);
    assert_eq!(stats.failed(), 0);
    assert_eq!(stats.overflow(), 0);
    assert_eq!(conn.mux.pending(), 0);
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_from_100_tasks_100_times_reaches_exactly_10000() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;

    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mux = conn.mux.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(100);
            for _ in 0..100 {
                match cmd(&mux, &["INCR", "counter"]).await {
                    Frame::Integer(n) => seen.push(n),
                    other => panic!("INCR replied {other:?}"),
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let seen = task.await.expect("task panicked");
        // One caller's replies are in its own submission order.
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        all.extend(seen);
    }
    // Every INCR result went to exactly one caller.
    all.sort_unstable();
    assert_eq!(all, (1..=10_000).collect::<Vec<i64>>());
    assert_eq!(cmd(&conn.mux, &["GET", "counter"]).await, bulk("10000"));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_10000_commands_gets_10000_replies_in_order() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let stats = Stats::new();

    let mut out = BytesMut::new();
    for i in 0..10_000 {
        encode_command(&["ECHO", i.to_string().as_str()], &mut out);
    }
    let (waiter, rx) = ChanWaiter::with_stats(10_000, &stats);
    conn.mux.submit(out, waiter).expect("submit refused");
    // A single command queued behind the pipeline gets its own reply.
    let after = send(&conn.mux, &["PING"]);

    let replies = outcome(rx).await.expect("pipeline failed");
    assert_eq!(replies.len(), 10_000);
    for (i, frame) in replies.iter().enumerate() {
        assert_eq!(frame, &bulk(i.to_string()), "reply {i}");
    }
    assert_eq!(reply(after).await, simple("PONG"));
    assert_eq!(stats.completed(), 1);
    assert_eq!(stats.replies(), 10_000);
    assert_eq!(stats.overflow(), 0);

    // The same through submit_with, mixed with other commands in one pipeline.
    let (waiter, rx) = ChanWaiter::new(3);
    conn.mux
        .submit_with(waiter, |out| {
            encode_command(&["SET", "p", "1"], out.buf());
            encode_command(&["INCR", "p"], out.buf());
            encode_command(&["GET", "p"], out.buf());
            Ok::<(), Infallible>(())
        })
        .expect("submit_with refused");
    assert_eq!(
        outcome(rx).await.expect("pipeline failed"),
        vec![ok(), Frame::Integer(2), bulk("2")]
    );
    conn.task.abort();
}

/// 5 MiB with every byte value, NULs and CRLFs included.
fn big_value() -> Vec<u8> {
    let mut value: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    value[..6].copy_from_slice(b"\0\r\n\0\r\n");
    let n = value.len();
    value[n - 3..].copy_from_slice(b"\r\n\0");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_of_5_mib_with_nul_bytes_round_trips() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let mux = &conn.mux;
    let value = big_value();

    // Pre-encoded and larger than a read chunk: taken over without a copy.
    let (waiter, rx) = ChanWaiter::new(1);
    mux.submit(encoded(&[b"SET".as_slice(), b"big", &value]), waiter)
        .expect("submit refused");
    assert_eq!(reply(rx).await, ok());
    assert_eq!(
        cmd(mux, &["STRLEN", "big"]).await,
        Frame::Integer(value.len() as i64)
    );
    let got = cmd(mux, &["GET", "big"]).await;
    assert!(got == bulk(&value), "GET big returned a different value");

    // Encoded into the queue, and two large replies back to back in one pipeline.
    let (waiter, rx) = ChanWaiter::new(3);
    mux.submit_with(waiter, |out| {
        encode_command(&[b"SET".as_slice(), b"big2", &value[1..]], out.buf());
        encode_command(&["GET", "big"], out.buf());
        encode_command(&["GET", "big2"], out.buf());
        Ok::<(), Infallible>(())
    })
    .expect("submit_with refused");
    let replies = outcome(rx).await.expect("pipeline failed");
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0], ok());
    assert!(replies[1] == bulk(&value));
    assert!(replies[2] == bulk(&value[1..]));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_error_queues_nothing_and_the_next_command_works() {
    let server = RedisServer::start();
    let mux: Mux = Multiplexer::new(NO_LIMIT);

    // A half-written command left in the queue would swallow the next one as its argument.
    let failing = |out: &mut Outgoing<'_>| {
        out.buf().extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
        Err("cannot encode")
    };

    // On an empty queue, before the connection runs.
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit_with(waiter, failing) {
        Err(SubmitError::Encode(w, e)) => {
            assert_eq!(e, "cannot encode");
            w.discard();
        }
        other => panic!("expected SubmitError::Encode, got {other:?}"),
    }
    assert_eq!(mux.pending(), 0);

    // On a non-empty queue: only the failed command's bytes are removed.
    let first = send(&mux, &["PING", "first"]);
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit_with(waiter, failing) {
        Err(SubmitError::Encode(w, _)) => w.discard(),
        other => panic!("expected SubmitError::Encode, got {other:?}"),
    }
    assert_eq!(mux.pending(), 1);
    let second = send(&mux, &["PING", "second"]);

    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    assert_eq!(reply(first).await, bulk("first"));
    assert_eq!(reply(second).await, bulk("second"));

    // While running, with the writer idle.
    let (waiter, _rx) = ChanWaiter::new(1);
    match conn.mux.submit_with(waiter, failing) {
        Err(SubmitError::Encode(w, _)) => w.discard(),
        other => panic!("expected SubmitError::Encode, got {other:?}"),
    }
    assert_eq!(cmd(&conn.mux, &["PING", "third"]).await, bulk("third"));
    assert_eq!(conn.mux.pending(), 0);
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_refuses_submissions_once_full() {
    let server = RedisServer::start();
    let mux: Mux = Multiplexer::new(100);

    // Bigger than the limit, but the queue is empty: accepted.
    let value = "x".repeat(200);
    let (waiter, big) = ChanWaiter::new(1);
    mux.submit(encoded(&["SET", "k", value.as_str()]), waiter)
        .expect("a lone oversized submission must be accepted");

    // Anything more is refused and handed back, by either path, leaving the queue as it was.
    let (waiter, _rx) = ChanWaiter::new(1);
    let waiter = match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Full(w)) => w,
        other => panic!("expected SubmitError::Full, got {other:?}"),
    };
    match mux.submit_with(waiter, |out| {
        encode_command(&["PING"], out.buf());
        Ok::<(), Infallible>(())
    }) {
        Err(SubmitError::Full(w)) => w.discard(),
        other => panic!("expected SubmitError::Full, got {other:?}"),
    }
    assert_eq!(mux.pending(), 1);

    // Once the writer drained the queue, submissions are accepted again.
    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    assert_eq!(reply(big).await, ok());
    assert_eq!(cmd(&conn.mux, &["STRLEN", "k"]).await, Frame::Integer(200));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_boundary_is_inclusive() {
    let server = RedisServer::start();
    let ping = encoded(&["PING"]); // 14 bytes
    let mux: Mux = Multiplexer::new(2 * ping.len());

    let a = send(&mux, &["PING"]);
    let (waiter, b) = ChanWaiter::new(1);
    mux.submit(ping.clone(), waiter)
        .expect("exactly at the limit is allowed");
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(ping.clone(), waiter) {
        Err(SubmitError::Full(w)) => w.discard(),
        other => panic!("expected SubmitError::Full, got {other:?}"),
    }
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit_with(waiter, |out| {
        out.buf().extend_from_slice(b"*0\r\n");
        Ok::<(), Infallible>(())
    }) {
        Err(SubmitError::Full(w)) => w.discard(),
        other => panic!("expected SubmitError::Full, got {other:?}"),
    }
    assert_eq!(mux.pending(), 2);

    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    assert_eq!(reply(a).await, simple("PONG"));
    assert_eq!(reply(b).await, simple("PONG"));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_every_queued_waiter_once_and_run_returns_the_reason() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let stats = Stats::new();

    // A pipeline that gets its first reply and then blocks: it is mid-reply when closed.
    let (waiter, mid) = ChanWaiter::with_stats(2, &stats);
    conn.mux
        .submit(
            encoded(&["PING"])
                .into_iter()
                .chain(encoded(&["BLPOP", "never", "0"]))
                .collect(),
            waiter,
        )
        .expect("submit refused");
    // Queued behind the blocked BLPOP, never answered.
    let mut queued = Vec::new();
    for i in 0..10 {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        conn.mux
            .submit(encoded(&["ECHO", &i.to_string()]), waiter)
            .expect("submit refused");
        queued.push(rx);
    }
    eventually("the PONG of the pipeline", || stats.replies() == 1).await;
    assert_eq!(conn.mux.pending(), 10);

    conn.mux.close(Reason::OwnerDown);
    conn.mux.close(Reason::Io("second close, ignored".into()));
    assert!(conn.mux.is_closed());

    // Refused as soon as close was requested, whether or not run() has returned yet.
    let (waiter, _rx) = ChanWaiter::new(1);
    match conn.mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Closed(w)) => w.discard(),
        other => panic!("expected SubmitError::Closed, got {other:?}"),
    }

    let mux = conn.mux.clone();
    assert_eq!(conn.ended().await, Reason::OwnerDown);
    assert_eq!(outcome(mid).await, Err(Reason::OwnerDown));
    for rx in queued {
        assert_eq!(outcome(rx).await, Err(Reason::OwnerDown));
    }
    assert_eq!(stats.failed(), 11);
    assert_eq!(stats.completed(), 0);
    assert_eq!(stats.overflow(), 0);
    assert_eq!(stats.dropped_unresolved(), 0);
    assert_eq!(mux.pending(), 0);

    // After run() returned, both submission paths still refuse.
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit_with(waiter, |out| {
        encode_command(&["PING"], out.buf());
        Ok::<(), Infallible>(())
    }) {
        Err(SubmitError::Closed(w)) => w.discard(),
        other => panic!("expected SubmitError::Closed, got {other:?}"),
    }
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Closed(w)) => w.discard(),
        other => panic!("expected SubmitError::Closed, got {other:?}"),
    }
    // Closing an ended connection changes nothing.
    mux.close(Reason::Closed);
    assert!(mux.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_before_run_ends_it_immediately() {
    let server = RedisServer::start();
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["PING"]), waiter)
        .expect("submit refused");
    mux.close(Reason::OwnerDown);
    // Only the first close request counts.
    mux.close(Reason::Io("second close, ignored".into()));
    assert!(mux.is_closed());

    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    assert_eq!(conn.ended().await, Reason::OwnerDown);
    assert_eq!(outcome(rx).await, Err(Reason::OwnerDown));
    assert_eq!((stats.completed(), stats.failed()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fails_queued_waiters_of_a_connection_that_never_ran() {
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let mut rxs = Vec::new();
    for _ in 0..3 {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        mux.submit(encoded(&["PING"]), waiter)
            .expect("submit refused");
        rxs.push(rx);
    }
    mux.abort(&Reason::Posix(Posix::Econnrefused));
    assert!(mux.is_closed());
    assert_eq!(mux.pending(), 0);
    for rx in rxs {
        assert_eq!(outcome(rx).await, Err(Reason::Posix(Posix::Econnrefused)));
    }
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Closed(w)) => w.discard(),
        other => panic!("expected SubmitError::Closed, got {other:?}"),
    }
    assert_eq!((stats.completed(), stats.failed()), (0, 3));
    assert_eq!(stats.dropped_unresolved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_fails_each_pending_waiter_exactly_once() {
    let mut server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let stats = Stats::new();

    // Some answered before the kill: they must not be failed as well.
    let mut answered = Vec::new();
    for i in 0..5 {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        conn.mux
            .submit(encoded(&["ECHO", &i.to_string()]), waiter)
            .expect("submit refused");
        answered.push(rx);
    }
    // Mid-reply (one of two replies in) when the server dies.
    let (waiter, mid) = ChanWaiter::with_stats(2, &stats);
    conn.mux
        .submit(
            encoded(&["PING"])
                .into_iter()
                .chain(encoded(&["BLPOP", "never", "0"]))
                .collect(),
            waiter,
        )
        .expect("submit refused");
    let mut pending = Vec::new();
    for i in 0..20 {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        conn.mux
            .submit(encoded(&["ECHO", &i.to_string()]), waiter)
            .expect("submit refused");
        pending.push(rx);
    }
    eventually("the replies before BLPOP", || stats.replies() == 6).await;
    assert_eq!(conn.mux.pending(), 20);

    server.kill();
    let mux = conn.mux.clone();
    let reason = conn.ended().await;
    assert!(
        [
            Reason::TcpClosed,
            Reason::Posix(Posix::Econnreset),
            Reason::Posix(Posix::Epipe)
        ]
        .contains(&reason),
        "unexpected reason {reason:?}"
    );
    for (i, rx) in answered.into_iter().enumerate() {
        assert_eq!(outcome(rx).await, Ok(vec![bulk(i.to_string())]));
    }
    assert_eq!(outcome(mid).await, Err(reason.clone()));
    for rx in pending {
        assert_eq!(outcome(rx).await, Err(reason.clone()));
    }
    assert_eq!(stats.completed(), 5);
    assert_eq!(stats.failed(), 21);
    assert_eq!(stats.overflow(), 0);
    assert_eq!(stats.dropped_unresolved(), 0);
    assert!(mux.is_closed());
    let (waiter, _rx) = ChanWaiter::new(1);
    match mux.submit(encoded(&["PING"]), waiter) {
        Err(SubmitError::Closed(w)) => w.discard(),
        other => panic!("expected SubmitError::Closed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_may_submit_from_complete_and_fail() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;

    // From complete(): the multiplexer must not hold its lock while calling it.
    let (chained_tx, chained_rx) = tokio::sync::oneshot::channel();
    let again = conn.mux.clone();
    let (waiter, first) = ChanWaiter::new(1);
    let waiter = waiter.on_done(move |_| {
        let _ = chained_tx.send(send(&again, &["ECHO", "chained"]));
    });
    conn.mux
        .submit(encoded(&["ECHO", "first"]), waiter)
        .expect("submit refused");
    assert_eq!(reply(first).await, bulk("first"));
    let chained = tokio::time::timeout(WAIT, chained_rx)
        .await
        .expect("timed out")
        .expect("hook did not run");
    assert_eq!(reply(chained).await, bulk("chained"));

    // From fail(): the connection is already marked closed, so a retry is refused rather than
    // queued on a dead connection where nobody would ever answer it. The server ends this
    // connection (CLIENT KILL from another one), so no close() was requested beforehand.
    let id = match cmd(&conn.mux, &["CLIENT", "ID"]).await {
        Frame::Integer(id) => id.to_string(),
        other => panic!("CLIENT ID replied {other:?}"),
    };
    let retried = Arc::new(Mutex::new(None));
    let again = conn.mux.clone();
    let record = retried.clone();
    let (waiter, blocked) = ChanWaiter::new(1);
    let waiter = waiter.on_done(move |_| {
        let (w, _rx) = ChanWaiter::new(1);
        let refused = match again.submit(encoded(&["PING"]), w) {
            Err(SubmitError::Closed(w)) => {
                w.discard();
                true
            }
            Err(other) => panic!("unexpected {other:?}"),
            Ok(()) => false,
        };
        *record.lock().unwrap() = Some(refused);
    });
    conn.mux
        .submit(encoded(&["BLPOP", "never", "0"]), waiter)
        .expect("submit refused");
    let killer = Conn::open(&server.tcp_opts()).await;
    assert_eq!(
        cmd(&killer.mux, &["CLIENT", "KILL", "ID", id.as_str()]).await,
        Frame::Integer(1)
    );
    assert_eq!(outcome(blocked).await, Err(Reason::TcpClosed));
    assert_eq!(*retried.lock().unwrap(), Some(true));
    assert_eq!(conn.ended().await, Reason::TcpClosed);
    killer.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_push_frames_are_not_taken_as_replies() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let mux = &conn.mux;

    let hello = cmd(mux, &["HELLO", "3"]).await;
    assert!(matches!(hello, Frame::Map(_)), "{hello:?}");
    assert_eq!(cmd(mux, &["CLIENT", "TRACKING", "on"]).await, ok());
    assert_eq!(cmd(mux, &["GET", "tracked"]).await, Frame::Null);
    // Invalidation pushes go to this very connection (no NOLOOP); each pipeline below interleaves them
    // with replies, and every reply must still reach its own waiter.
    let mut rxs = Vec::new();
    for i in 0..50 {
        let v = i.to_string();
        let (waiter, rx) = ChanWaiter::new(3);
        mux.submit_with(waiter, |out| {
            encode_command(&["SET", "tracked", v.as_str()], out.buf());
            encode_command(&["GET", "tracked"], out.buf());
            encode_command(&["ECHO", v.as_str()], out.buf());
            Ok::<(), Infallible>(())
        })
        .expect("submit_with refused");
        rxs.push(rx);
    }
    for (i, rx) in rxs.into_iter().enumerate() {
        let v = i.to_string();
        assert_eq!(
            outcome(rx).await.expect("pipeline failed"),
            vec![ok(), bulk(&v), bulk(&v)]
        );
    }
    assert_eq!(cmd(mux, &["PING"]).await, simple("PONG"));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_each_keep_their_own_order() {
    let server = RedisServer::start();
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Conn::open(&server.tcp_opts()).await);
    }
    let mut tasks = Vec::new();
    for (c, conn) in conns.iter().enumerate() {
        for t in 0..10 {
            let mux = conn.mux.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let tag = format!("{c}/{t}/{i}");
                    assert_eq!(cmd(&mux, &["ECHO", tag.as_str()]).await, bulk(&tag));
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task panicked");
    }
    let ids: HashSet<String> = client_ids(&conns).await;
    assert_eq!(ids.len(), 8, "each multiplexer owns a distinct connection");
    for conn in conns {
        conn.task.abort();
    }
}

/// The server-side client id of every connection.
async fn client_ids(conns: &[Conn]) -> HashSet<String> {
    let mut ids = HashSet::new();
    for conn in conns {
        match cmd(&conn.mux, &["CLIENT", "ID"]).await {
            Frame::Integer(id) => ids.insert(id.to_string()),
            other => panic!("CLIENT ID replied {other:?}"),
        };
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_ends_run_with_tcp_closed() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    // The server answers QUIT and then closes: the reply is delivered, then run() ends.
    assert_eq!(cmd(&conn.mux, &["QUIT"]).await, ok());
    let mux = conn.mux.clone();
    assert_eq!(conn.ended().await, Reason::TcpClosed);
    assert!(mux.is_closed());
}

/// The write queue is a queue of chunks: a large pre-encoded submission joins a non-empty queue
/// without being copied under the lock (only small ones are, up to `COPY_MAX` each), and every
/// reply still matches its caller when chunks and small submissions interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_submissions_are_queued_without_a_copy_under_the_lock() {
    use redix_rs_core::conn::COPY_MAX;
    let server = RedisServer::start();
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let big: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 3 * 1024 * 1024]).collect();
    let mut replies = Vec::new();
    // Queued before the connection runs, so the queue is never empty when the next one arrives.
    for (i, value) in big.iter().enumerate() {
        replies.push(send(&mux, &["SET", &format!("small:{i}"), "x"]));
        let key = format!("big:{i}");
        let before = mux.bytes_copied_under_lock();
        let (waiter, rx) = ChanWaiter::new(1);
        mux.submit(encoded(&[b"SET".as_slice(), key.as_bytes(), value]), waiter)
            .expect("submit refused");
        assert_eq!(
            mux.bytes_copied_under_lock(),
            before,
            "a large submission was copied"
        );
        replies.push(rx);
        let small = encoded(&["SET", &format!("pre:{i}"), "y"]);
        let len = small.len() as u64;
        let (waiter, rx) = ChanWaiter::new(1);
        mux.submit(small, waiter).expect("submit refused");
        assert_eq!(mux.bytes_copied_under_lock(), before + len);
        assert!(len <= COPY_MAX as u64);
        replies.push(rx);
    }
    let conn = Conn::open_with(&server.tcp_opts(), mux).await;
    for rx in replies {
        assert_eq!(reply(rx).await, ok());
    }
    for (i, value) in big.iter().enumerate() {
        let got = cmd(&conn.mux, &["GET", &format!("big:{i}")]).await;
        assert_eq!(got, bulk(value), "big:{i}");
        assert_eq!(
            cmd(&conn.mux, &["GET", &format!("pre:{i}")]).await,
            bulk("y")
        );
    }
    // On a running connection too, with other callers' commands in between.
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push((
            format!("run:{i}"),
            send(&conn.mux, &["INCR", &format!("n:{i}")]),
        ));
        let (waiter, rx) = ChanWaiter::new(1);
        let before = conn.mux.bytes_copied_under_lock();
        conn.mux
            .submit(
                encoded(&[
                    b"SET".as_slice(),
                    format!("run:{i}").as_bytes(),
                    &big[i % 3],
                ]),
                waiter,
            )
            .expect("submit refused");
        assert_eq!(conn.mux.bytes_copied_under_lock(), before);
        pending.push((String::new(), rx));
    }
    for (key, rx) in pending {
        let expected = if key.is_empty() {
            ok()
        } else {
            Frame::Integer(1)
        };
        assert_eq!(reply(rx).await, expected);
    }
    for i in 0..20 {
        let got = cmd(&conn.mux, &["STRLEN", &format!("run:{i}")]).await;
        assert_eq!(got, Frame::Integer(3 * 1024 * 1024));
    }
    conn.task.abort();
}
