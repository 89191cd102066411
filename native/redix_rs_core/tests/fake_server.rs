//! `Multiplexer` against scripted fake servers, only for what a real redis-server cannot be made to do:
//! malformed replies, unsolicited replies, a reset or EOF in the middle of a reply, replies dribbled
//! one byte at a time, and a peer that stops reading.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use redix_rs_core::conn::{Multiplexer, Posix, Reason, SubmitError};
use redix_rs_core::resp::{encode_command, Frame};
use support::*;
use tokio::io::AsyncWriteExt;

fn is_protocol_error(reason: &Reason) -> bool {
    matches!(reason, Reason::Protocol(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_reply_is_a_protocol_error() {
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let mut rxs = Vec::new();
    for _ in 0..3 {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        mux.submit(encoded(&["PING"]), waiter).unwrap();
        rxs.push(rx);
    }
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;
    read_n(&mut sock, 3 * encoded(&["PING"]).len()).await;
    sock.write_all(b"?x\r\n").await.unwrap();

    let reason = conn.ended().await;
    assert!(is_protocol_error(&reason), "{reason:?}");
    let Reason::Protocol(message) = &reason else {
        unreachable!()
    };
    assert!(message.contains("invalid type byte"), "{message}");
    for rx in rxs {
        assert_eq!(outcome(rx).await, Err(reason.clone()));
    }
    assert_eq!((stats.completed(), stats.failed()), (0, 3));
    assert_eq!(stats.dropped_unresolved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_before_garbage_complete_and_are_not_failed_too() {
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let (w1, first) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["PING"]), w1).unwrap();
    let (w2, second) = ChanWaiter::with_stats(2, &stats); // mid-reply when the garbage arrives
    mux.submit(encoded(&["PING"]), w2).unwrap();
    let (w3, third) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["PING"]), w3).unwrap();

    let (conn, mut sock) = connect_fake(&listener, port, mux).await;
    // All in one write: one good reply, half of the next waiter's, then a bad integer.
    sock.write_all(b"+ONE\r\n:2\r\n:x\r\n").await.unwrap();

    let reason = conn.ended().await;
    assert!(is_protocol_error(&reason), "{reason:?}");
    assert_eq!(outcome(first).await, Ok(vec![simple("ONE")]));
    assert_eq!(outcome(second).await, Err(reason.clone()));
    assert_eq!(outcome(third).await, Err(reason.clone()));
    assert_eq!((stats.completed(), stats.failed()), (1, 2));
    assert_eq!(stats.overflow(), 0);
    assert_eq!(stats.dropped_unresolved(), 0);
    drop(sock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_reply_without_a_waiter() {
    let (listener, port) = fake_listener().await;
    let (conn, mut sock) = connect_fake(&listener, port, Multiplexer::new(NO_LIMIT)).await;
    sock.write_all(b"+HI\r\n").await.unwrap();
    let mux = conn.mux.clone();
    assert_eq!(conn.ended().await, Reason::UnexpectedReply);
    assert!(mux.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_reply_after_the_last_waiter() {
    let (listener, port) = fake_listener().await;
    let (conn, mut sock) = connect_fake(&listener, port, Multiplexer::new(NO_LIMIT)).await;
    let rx = send(&conn.mux, &["PING"]);
    read_n(&mut sock, encoded(&["PING"]).len()).await;
    sock.write_all(b"+PONG\r\n+AGAIN\r\n").await.unwrap();
    assert_eq!(outcome(rx).await, Ok(vec![simple("PONG")]));
    assert_eq!(conn.ended().await, Reason::UnexpectedReply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_frames_without_a_waiter_are_ignored() {
    let (listener, port) = fake_listener().await;
    let (conn, mut sock) = connect_fake(&listener, port, Multiplexer::new(NO_LIMIT)).await;
    // An out-of-band push before any command is not an unexpected reply.
    sock.write_all(b">2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!conn.mux.is_closed());
    let rx = send(&conn.mux, &["GET", "k"]);
    read_n(&mut sock, encoded(&["GET", "k"]).len()).await;
    sock.write_all(b">1\r\n+noise\r\n$1\r\nv\r\n")
        .await
        .unwrap();
    assert_eq!(outcome(rx).await, Ok(vec![bulk("v")]));
    assert!(!conn.mux.is_closed());
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_dribbled_one_byte_at_a_time() {
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let (w1, first) = ChanWaiter::new(1);
    mux.submit(encoded(&["CMD1"]), w1).unwrap();
    let (w2, pipeline) = ChanWaiter::new(3);
    mux.submit_with(w2, |out| {
        for c in ["A", "B", "C"] {
            encode_command(&[c], out.buf());
        }
        Ok::<(), Infallible>(())
    })
    .unwrap();
    let (w3, last) = ChanWaiter::new(1);
    mux.submit(encoded(&["CMD3"]), w3).unwrap();
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;

    let replies: &[u8] = b"*3\r\n$5\r\nhe\r\nl\r\n:-42\r\n*1\r\n+OK\r\n\
        $-1\r\n-ERR bad\r\n%1\r\n+k\r\n,1.5\r\n\
        $0\r\n\r\n";
    for byte in replies {
        sock.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    assert_eq!(
        outcome(first).await,
        Ok(vec![Frame::Array(vec![
            bulk("he\r\nl"),
            Frame::Integer(-42),
            Frame::Array(vec![ok()]),
        ])])
    );
    assert_eq!(
        outcome(pipeline).await,
        Ok(vec![
            Frame::NullBulk,
            Frame::Error(Bytes::from_static(b"ERR bad")),
            Frame::Map(vec![(simple("k"), Frame::Double(1.5))]),
        ])
    );
    assert_eq!(outcome(last).await, Ok(vec![bulk("")]));
    assert!(!conn.mux.is_closed());
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reply_in_small_uneven_pieces() {
    let (listener, port) = fake_listener().await;
    let (conn, mut sock) = connect_fake(&listener, port, Multiplexer::new(NO_LIMIT)).await;
    let rx = send(&conn.mux, &["GET", "big"]);
    let value: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let wire = {
        let mut out = bytes::BytesMut::new();
        Frame::Bulk(Bytes::from(value.clone())).encode(&mut out);
        out
    };
    let mut sizes = [1usize, 7, 4093, 65_537, 13].iter().cycle();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        sock.write_all(&rest[..n]).await.unwrap();
        rest = &rest[n..];
        tokio::task::yield_now().await;
    }
    assert!(outcome(rx).await == Ok(vec![bulk(&value)]));
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_in_the_middle_of_a_reply() {
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let (w1, done) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["PING"]), w1).unwrap();
    let (w2, cut) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["GET", "k"]), w2).unwrap();
    let (w3, queued) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["GET", "k"]), w3).unwrap();
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;

    sock.write_all(b"+PONG\r\n$10\r\nabc").await.unwrap();
    eventually("the first reply", || stats.completed() == 1).await;
    sock.set_zero_linger().unwrap();
    drop(sock); // RST instead of FIN

    let reason = conn.ended().await;
    assert!(
        [Reason::Posix(Posix::Econnreset), Reason::TcpClosed].contains(&reason),
        "{reason:?}"
    );
    assert_eq!(outcome(done).await, Ok(vec![simple("PONG")]));
    assert_eq!(outcome(cut).await, Err(reason.clone()));
    assert_eq!(outcome(queued).await, Err(reason.clone()));
    assert_eq!((stats.completed(), stats.failed()), (1, 2));
    assert_eq!(stats.dropped_unresolved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_in_the_middle_of_a_multi_reply_waiter() {
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let stats = Stats::new();
    let (w1, pipeline) = ChanWaiter::with_stats(3, &stats);
    mux.submit_with(w1, |out| {
        for _ in 0..3 {
            encode_command(&["PING"], out.buf());
        }
        Ok::<(), Infallible>(())
    })
    .unwrap();
    let (w2, queued) = ChanWaiter::with_stats(1, &stats);
    mux.submit(encoded(&["PING"]), w2).unwrap();
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;

    read_n(&mut sock, 4 * encoded(&["PING"]).len()).await;
    // One whole reply and half of an array, then a clean close.
    sock.write_all(b"+PONG\r\n*2\r\n:1\r\n").await.unwrap();
    eventually("the first reply", || stats.replies() == 1).await;
    sock.shutdown().await.unwrap();

    let reason = conn.ended().await;
    assert_eq!(reason, Reason::TcpClosed);
    assert_eq!(outcome(pipeline).await, Err(reason.clone()));
    assert_eq!(outcome(queued).await, Err(reason.clone()));
    assert_eq!((stats.completed(), stats.failed()), (0, 2));
    assert_eq!(stats.replies(), 1);
    assert_eq!(stats.dropped_unresolved(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_while_the_peer_stops_reading() {
    // Fake server: a stall. It never reads, so the writer blocks once the socket buffers are full and
    // submissions pile up in the queue until the limit refuses them.
    let (listener, port) = fake_listener().await;
    let (conn, sock) = connect_fake(&listener, port, Multiplexer::new(1000)).await;
    let stats = Stats::new();

    // Far more than the socket buffers hold: the writer takes it and stays blocked writing it.
    let huge = vec![b'x'; 32 * 1024 * 1024];
    let (waiter, huge_rx) = ChanWaiter::with_stats(1, &stats);
    conn.mux
        .submit(encoded(&[b"SET".as_slice(), b"k", &huge]), waiter)
        .expect("lone oversized submission refused");

    // Once the writer has taken the huge buffer, the queue is empty again and takes one more
    // submission even though it is over the limit by itself...
    let mut accepted = Vec::new();
    eventually("the writer to take the huge buffer", || {
        let (waiter, rx) = ChanWaiter::with_stats(1, &stats);
        match conn
            .mux
            .submit(encoded(&["SET", "k", &"y".repeat(1200)]), waiter)
        {
            Ok(()) => {
                accepted.push(rx);
                true
            }
            Err(SubmitError::Full(w)) => {
                w.discard();
                false
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    })
    .await;
    // ...but nothing after it while the writer cannot drain.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let (waiter, _rx) = ChanWaiter::with_stats(1, &stats);
        match conn.mux.submit(encoded(&["PING"]), waiter) {
            Err(SubmitError::Full(w)) => w.discard(),
            other => panic!("expected SubmitError::Full, got {other:?}"),
        }
        let (waiter, _rx) = ChanWaiter::with_stats(1, &stats);
        match conn.mux.submit_with(waiter, |out| {
            encode_command(&["PING"], out.buf());
            Ok::<(), Infallible>(())
        }) {
            Err(SubmitError::Full(w)) => w.discard(),
            other => panic!("expected SubmitError::Full, got {other:?}"),
        }
    }
    assert_eq!(conn.mux.pending(), 2);

    conn.mux.close(Reason::HealthCheckTimeout);
    assert_eq!(conn.ended().await, Reason::HealthCheckTimeout);
    assert_eq!(outcome(huge_rx).await, Err(Reason::HealthCheckTimeout));
    for rx in accepted {
        assert_eq!(outcome(rx).await, Err(Reason::HealthCheckTimeout));
    }
    assert_eq!((stats.completed(), stats.failed()), (0, 2));
    assert_eq!(stats.dropped_unresolved(), 0);
    drop(sock);
}

/// One reply past a configured limit: its caller is told which limit, the connection ends, every
/// other caller is failed with the connection's reason, and a reply already complete is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_past_a_limit_fails_its_caller_with_that_limit() {
    use redix_rs_core::resp::{Limit, Limits};
    let small = Limits {
        max_bulk_len: 10,
        max_aggregate_len: 10,
        max_depth: 3,
        max_reply_bytes: 64,
    };
    let cases: [(&[u8], Limit); 4] = [
        (b"$11\r\n", Limit::BulkLength),
        (b"*11\r\n", Limit::AggregateLength),
        (b"*1\r\n*1\r\n*1\r\n*1\r\n", Limit::Depth),
        // 10 elements of 8 bytes each: 4 + 80 > 64, though each element is small.
        (&b"*10\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n$2\r\nab\r\n"[..], Limit::ReplyBytes),
    ];
    for (too_large, limit) in cases {
        let (listener, port) = fake_listener().await;
        let mux: Mux = Multiplexer::new(NO_LIMIT);
        mux.set_reply_limits(small);
        let mut rxs = Vec::new();
        for _ in 0..3 {
            let (waiter, rx) = ChanWaiter::new(1);
            mux.submit(encoded(&["PING"]), waiter).unwrap();
            rxs.push(rx);
        }
        let (conn, mut sock) = connect_fake(&listener, port, mux).await;
        read_n(&mut sock, 3 * encoded(&["PING"]).len()).await;
        sock.write_all(b"+PONG\r\n").await.unwrap();
        sock.write_all(too_large).await.unwrap();
        let reason = conn.ended().await;
        assert!(is_protocol_error(&reason), "{limit:?}: {reason:?}");
        let mut rxs = rxs.into_iter();
        let first = rxs.next().unwrap();
        assert_eq!(outcome(first).await, Ok(vec![simple("PONG")]), "{limit:?}");
        let second = rxs.next().unwrap();
        assert_eq!(outcome(second).await, Err(Reason::ReplyLimit(limit)));
        let third = rxs.next().unwrap();
        assert_eq!(outcome(third).await, Err(reason));
    }
}

/// A push past a limit is nobody's reply: the caller at the head of the queue gets the connection's
/// reason, not the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_a_limit_is_not_blamed_on_a_caller() {
    use redix_rs_core::resp::Limits;
    let (listener, port) = fake_listener().await;
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    mux.set_reply_limits(Limits {
        max_aggregate_len: 10,
        ..Limits::default()
    });
    let (waiter, rx) = ChanWaiter::new(1);
    mux.submit(encoded(&["PING"]), waiter).unwrap();
    let (conn, mut sock) = connect_fake(&listener, port, mux).await;
    read_n(&mut sock, encoded(&["PING"]).len()).await;
    sock.write_all(b">11\r\n").await.unwrap();
    let reason = conn.ended().await;
    assert!(is_protocol_error(&reason), "{reason:?}");
    assert_eq!(outcome(rx).await, Err(reason));
}
