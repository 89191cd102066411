//! Writes made by the submitting thread when the writer task is idle: a long pipeline reaches Redis
//! while it is still being encoded, replies stay in order with concurrent callers, and an encoder that
//! fails after part of its submission was written closes the connection rather than leave it out of
//! step. Against a real redis-server.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::TcpStream;

use redix_rs_core::conn::{Outgoing, Reason, SubmitError};
use redix_rs_core::resp::{encode_command, Frame};
use support::*;

/// Asks Redis, on a separate blocking socket, for `key` (RESP2 bulk reply text, or "" when missing).
fn peek(port: u16, key: &str) -> String {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("side connection");
    let mut request = bytes::BytesMut::new();
    encode_command(&["GET", key], &mut request);
    sock.write_all(&request).expect("write GET");
    let mut buf = [0u8; 128];
    let n = sock.read(&mut buf).expect("read GET reply");
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    reply.split("\r\n").nth(1).unwrap_or("").to_string()
}

/// Encodes SETs of `prefix:i` until `out` has been flushed at least once.
fn encode_until_flushed(out: &mut Outgoing<'_>, prefix: &str, count: &mut usize) {
    let value = "x".repeat(64);
    for _ in 0..1_000 {
        let key = format!("{prefix}:{count}");
        encode_command(&["SET", key.as_str(), value.as_str()], out.buf());
        *count += 1;
        out.flush_large();
        if out.buf().is_empty() {
            return;
        }
    }
    panic!("the queue was never written directly");
}

/// A caller waiting for a reply that does not come (a `BLPOP` on a missing key), once the `BLPOP`
/// has reached Redis and the writer is idle again.
async fn caller_waiting(conn: &Conn) -> tokio::sync::oneshot::Receiver<Outcome> {
    let earlier = send(&conn.mux, &["BLPOP", "never", "0"]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    earlier
}

/// The caller already waiting is failed, not handed a reply meant for the partial submission.
async fn assert_failed_by_partial_submission(earlier: tokio::sync::oneshot::Receiver<Outcome>) {
    let failed = outcome(earlier).await;
    assert!(
        matches!(&failed, Err(Reason::PartialSubmission)),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pipeline_reaches_redis_while_it_is_being_encoded() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let port = server.port;
    let sets = 600; // ~90 KiB of commands: several direct writes
    let expected = sets + 2;
    let mut seen_mid_encoding = None;
    // Once a reply came back, the connection runs and its writer is idle.
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));

    let (waiter, rx) = ChanWaiter::new(expected);
    conn.mux
        .submit_with(waiter, |out| {
            encode_command(&["SET", "streamed:first", "yes"], out.buf());
            let value = "x".repeat(64);
            for i in 0..sets {
                let key = format!("streamed:{i}");
                encode_command(&["SET", key.as_str(), value.as_str()], out.buf());
                out.flush_large();
                if out.buf().is_empty() && seen_mid_encoding.is_none() {
                    // Still inside the submission: Redis has already run its first command.
                    seen_mid_encoding = Some(wait_for(port, "streamed:first", "yes"));
                }
            }
            encode_command(&["GET", "streamed:first"], out.buf());
            Ok::<(), Infallible>(())
        })
        .expect("submit_with refused");
    assert_eq!(seen_mid_encoding.as_deref(), Some("yes"));

    let replies = outcome(rx).await.expect("pipeline failed");
    assert_eq!(replies.len(), expected);
    assert!(replies[..expected - 1].iter().all(|r| *r == ok()));
    assert_eq!(replies[expected - 1], bulk("yes"));
    // The connection is in step afterwards.
    assert_eq!(cmd(&conn.mux, &["ECHO", "after"]).await, bulk("after"));
    conn.task.abort();
}

/// Polls `key` on a side connection for up to a second; returns its last value.
fn wait_for(port: u16, key: &str, want: &str) -> String {
    let mut seen = String::new();
    for _ in 0..200 {
        seen = peek(port, key);
        if seen == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pipelines_and_concurrent_callers_keep_their_replies() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let mux = conn.mux.clone();

    let callers: Vec<_> = (0..8)
        .map(|c| {
            let mux = mux.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let v = format!("c{c}-{i}");
                    assert_eq!(cmd(&mux, &["ECHO", v.as_str()]).await, bulk(&v));
                }
            })
        })
        .collect();
    for round in 0..20 {
        let n = 2_000;
        let (waiter, rx) = ChanWaiter::new(n);
        mux.submit_with(waiter, |out| {
            for i in 0..n {
                let v = format!("r{round}-{i}");
                encode_command(&["ECHO", v.as_str()], out.buf());
                out.flush_large();
            }
            Ok::<(), Infallible>(())
        })
        .expect("submit_with refused");
        let replies = outcome(rx).await.expect("pipeline failed");
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(*r, bulk(format!("r{round}-{i}")));
        }
    }
    for caller in callers {
        caller.await.expect("caller panicked");
    }
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_failing_after_a_direct_write_closes_the_connection() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let earlier = caller_waiting(&conn).await;

    let (waiter, _rx) = ChanWaiter::new(1);
    let mut count = 0;
    let refused = conn.mux.submit_with(waiter, |out| {
        encode_until_flushed(out, "partial", &mut count);
        Err("cannot encode the rest")
    });
    match refused {
        Err(SubmitError::Encode(w, e)) => {
            assert_eq!(e, "cannot encode the rest");
            w.discard();
        }
        other => panic!("expected SubmitError::Encode, got {other:?}"),
    }
    assert!(conn.mux.is_closed());
    assert_failed_by_partial_submission(earlier).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_caller_slips_in_between_a_partial_submission_and_the_close() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));

    let (waiter, _rx) = ChanWaiter::new(1);
    let mut count = 0;
    let mut other = None;
    let refused = conn.mux.submit_with(waiter, |out| {
        encode_until_flushed(out, "slip", &mut count);
        // Another caller submits now: it waits for the queue's lock, held by this submission.
        let mux = conn.mux.clone();
        other = Some(std::thread::spawn(move || {
            let (waiter, _rx) = ChanWaiter::new(1);
            mux.submit_with(waiter, |out| {
                encode_command(&["GET", "slip:0"], out.buf());
                Ok::<(), &str>(())
            })
            .map_err(|e| format!("{e:?}"))
        }));
        std::thread::sleep(std::time::Duration::from_millis(50));
        Err("cannot encode the rest")
    });
    assert!(matches!(refused, Err(SubmitError::Encode(..))));
    let other = other.expect("spawned").join().expect("other caller");
    // Queued after the partial submission, it would have been handed the replies of its SETs.
    assert!(
        matches!(&other, Err(e) if e.contains("Closed")),
        "{other:?}"
    );
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_panicking_after_a_direct_write_closes_the_connection() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let earlier = caller_waiting(&conn).await;

    let (waiter, _rx) = ChanWaiter::new(1);
    let mut count = 0;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = conn
            .mux
            .submit_with(waiter, |out| -> Result<(), Infallible> {
                encode_until_flushed(out, "panicked", &mut count);
                panic!("encoder bug");
            });
    }));
    assert!(panicked.is_err(), "the panic goes on to the caller");
    assert!(conn.mux.is_closed());
    assert_failed_by_partial_submission(earlier).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_panicking_before_any_write_leaves_nothing_queued() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));

    let (waiter, _rx) = ChanWaiter::new(1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = conn
            .mux
            .submit_with(waiter, |out| -> Result<(), Infallible> {
                // A partial command: were it left queued, Redis would take the next one as its rest.
                out.buf().extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
                panic!("encoder bug");
            });
    }));
    assert!(panicked.is_err());
    assert!(!conn.mux.is_closed());
    assert_eq!(cmd(&conn.mux, &["ECHO", "in step"]).await, bulk("in step"));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_queued_behind_an_awaited_reply_go_out_when_it_arrives() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));

    // Submitted while a reply is awaited: none may be left behind, whatever the timing.
    let blocked = send(&conn.mux, &["BLPOP", "direct:none", "0.2"]);
    let queued: Vec<_> = (0..50)
        .map(|i| {
            let v = format!("q{i}");
            (v.clone(), send(&conn.mux, &["ECHO", v.as_str()]))
        })
        .collect();
    assert_eq!(reply(blocked).await, Frame::NullArray);
    for (v, rx) in queued {
        assert_eq!(reply(rx).await, bulk(&v));
    }
    assert_eq!(conn.mux.pending(), 0);
    conn.task.abort();
}

/// The unwritten bytes Redis holds for client `id` (its query buffer): a blocked client's later
/// commands wait there.
async fn query_buffer(side: &Conn, id: i64) -> usize {
    let id = id.to_string();
    let list = text(&cmd(&side.mux, &["CLIENT", "LIST", "ID", id.as_str()]).await);
    let qbuf = list
        .split(' ')
        .find_map(|field| field.strip_prefix("qbuf="))
        .unwrap_or_else(|| panic!("no qbuf in {list:?}"));
    qbuf.parse().expect("qbuf is a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_behind_an_awaited_reply_is_written_before_that_reply_arrives() {
    let server = RedisServer::start();
    let conn = Conn::open(&server.tcp_opts()).await;
    let side = Conn::open(&server.tcp_opts()).await;
    let Frame::Integer(id) = cmd(&conn.mux, &["CLIENT", "ID"]).await else {
        panic!("CLIENT ID is an integer")
    };

    // The BLPOP's reply does not come until it is unblocked below; an ECHO submitted meanwhile must
    // reach Redis all the same (it waits in the blocked client's query buffer), not only once that
    // reply has been read: on a network, that wait would be a round trip added to an unrelated call.
    let blocked = send(&conn.mux, &["BLPOP", "handover:none", "0"]);
    let echo = send(&conn.mux, &["ECHO", "written"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while query_buffer(&side, id).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ECHO was not written while the BLPOP's reply was awaited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let unblocked = cmd(&side.mux, &["CLIENT", "UNBLOCK", id.to_string().as_str()]).await;
    assert_eq!(unblocked, Frame::Integer(1));
    assert_eq!(reply(blocked).await, Frame::NullArray);
    assert_eq!(reply(echo).await, bulk("written"));
    conn.task.abort();
    side.task.abort();
}
