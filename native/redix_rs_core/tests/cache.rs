//! Client-side caching against a real redis-server: which commands `COMMAND INFO` makes cacheable
//! (RESP2 and RESP3), and the tracking protocol the cache relies on: a RESP3 connection with
//! `CLIENT TRACKING on OPTIN`, `CLIENT CACHING yes` right before each cached read, invalidations
//! handed to the store (its `OutOfBandSink`) in wire order with the replies.

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redix_rs_core::cache::{
    encode_key, Cacheable, Exclusion, FillError, Limits, NotCacheable, Store,
};
use redix_rs_core::conn::{ConnectOptions, Mode, Multiplexer, OutOfBandSink, Protocol, Reason};
use redix_rs_core::resp::{encode_command, Frame};
use support::*;

const CACHEABLE: &[&str] = &[
    "GET",
    "HGET",
    "HGETALL",
    "HMGET",
    "SMEMBERS",
    "SISMEMBER",
    "ZSCORE",
    "ZRANGE",
    "LRANGE",
    "STRLEN",
    "EXISTS",
    "MGET",
];

const NOT_CACHEABLE: &[&str] = &[
    "SET",
    "INCR",
    "TTL",
    "PTTL",
    "OBJECT",
    "RANDOMKEY",
    "SRANDMEMBER",
    "BLPOP",
    "XREAD",
    "SCAN",
    "TIME",
    "PING",
    "KEYS",
];

fn resp3(server: &RedisServer) -> ConnectOptions {
    ConnectOptions {
        protocol: Protocol::Resp3,
        ..server.tcp_opts()
    }
}

/// The table built from the whole command table (`COMMAND`), and from `COMMAND INFO` of a few.
async fn tables(opts: &ConnectOptions) -> (Cacheable, Cacheable) {
    let conn = Conn::open(opts).await;
    let all = Cacheable::from_command_info(&cmd(&conn.mux, &["COMMAND"]).await).unwrap();
    let mut info = vec!["COMMAND", "INFO"];
    info.extend(CACHEABLE.iter().chain(NOT_CACHEABLE));
    info.push("NOSUCHCOMMAND");
    let some = Cacheable::from_command_info(&cmd(&conn.mux, &info).await).unwrap();
    conn.task.abort();
    (all, some)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_commands_come_from_command_info_in_resp2_and_resp3() {
    let server = RedisServer::start();
    let (resp2_all, resp2_some) = tables(&server.tcp_opts()).await;
    let (resp3_all, resp3_some) = tables(&resp3(&server)).await;
    assert_eq!(resp2_all, resp3_all, "both protocols read alike");
    assert_eq!(resp2_some, resp3_some);
    assert!(resp2_all.len() > 200, "{} commands", resp2_all.len());
    for table in [&resp2_all, &resp2_some] {
        for name in CACHEABLE {
            assert_eq!(table.verdict(name.as_bytes()), Ok(()), "{name}");
        }
        for name in NOT_CACHEABLE {
            assert!(
                matches!(
                    table.verdict(name.as_bytes()),
                    Err(NotCacheable::Excluded { .. })
                ),
                "{name}: {:?}",
                table.verdict(name.as_bytes())
            );
        }
        assert!(matches!(
            table.verdict(b"NOSUCHCOMMAND"),
            Err(NotCacheable::Unknown(_))
        ));
    }
    let why = |name: &str| match resp2_all.verdict(name.as_bytes()) {
        Err(NotCacheable::Excluded { why, .. }) => why,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(why("set"), Exclusion::NotReadonly);
    assert_eq!(why("ttl"), Exclusion::Nondeterministic);
    assert_eq!(why("blpop"), Exclusion::NotReadonly);
    assert_eq!(why("xread"), Exclusion::Flag("blocking".into()));
    assert_eq!(why("object"), Exclusion::Subcommands);
    assert_eq!(why("keys"), Exclusion::Category("@dangerous".into()));
    assert_eq!(why("ping"), Exclusion::NotReadonly);
    assert_eq!(why("dbsize"), Exclusion::NoKeys);
    assert!(matches!(why("expiretime"), Exclusion::Listed(_)));
    assert!(matches!(why("touch"), Exclusion::Listed(_)));

    let mut names: Vec<String> = resp2_all
        .names()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    println!(
        "cacheable on this server ({}): {}",
        names.len(),
        names.join(" ")
    );

    let mget: [&[u8]; 4] = [b"MGET", b"a", b"b", b"c"];
    assert_eq!(resp2_all.keys(&mget).unwrap(), vec![&b"a"[..], b"b", b"c"]);
    let hmget: [&[u8]; 4] = [b"hmget", b"h", b"f1", b"f2"];
    assert_eq!(resp2_all.keys(&hmget).unwrap(), vec![&b"h"[..]]);
    let zrange: [&[u8]; 5] = [b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"];
    assert_eq!(resp2_all.keys(&zrange).unwrap(), vec![&b"z"[..]]);
    let bad: [&[u8]; 3] = [b"GET", b"a", b"b"];
    assert!(matches!(resp2_all.keys(&bad), Err(NotCacheable::Arity(_))));
}

/// A RESP3 connection whose out-of-band frames go to `store`, with tracking on in OPTIN mode.
async fn caching_conn(server: &RedisServer, store: &Arc<Store>) -> Conn {
    let sink = store.clone() as Arc<dyn OutOfBandSink>;
    let mux = Multiplexer::with_sink(NO_LIMIT, Mode::Commands, sink);
    let conn = Conn::open_with(&resp3(server), mux).await;
    let on = cmd(&conn.mux, &["CLIENT", "TRACKING", "on", "OPTIN"]).await;
    assert_eq!(on, ok());
    conn
}

fn store() -> Arc<Store> {
    Arc::new(
        Store::new(Limits {
            max_entries: 10_000,
            max_bytes: 10 * 1024 * 1024,
        })
        .unwrap(),
    )
}

fn cache_key(command: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    encode_key(command, &mut out);
    out.freeze()
}

fn cached(store: &Store, command: &[&str]) -> Option<Frame> {
    store.get(&cache_key(command)).map(|r| r.frame().clone())
}

/// Sends `CLIENT CACHING yes` and `command` in one submission (contiguous on the wire, as OPTIN
/// requires) and returns the command's reply; the ticket is taken before anything is queued.
async fn read_tracked(
    conn: &Conn,
    store: &Store,
    command: &[&str],
    keys: &[&str],
) -> (redix_rs_core::cache::Ticket, Frame) {
    let keys = keys.iter().map(|k| Bytes::copy_from_slice(k.as_bytes()));
    let ticket = store.ticket(cache_key(command), keys);
    let (waiter, rx) = ChanWaiter::new(2);
    conn.mux
        .submit_with(waiter, |out| {
            encode_command(&["CLIENT", "CACHING", "yes"], out.buf());
            encode_command(command, out.buf());
            Ok::<(), Infallible>(())
        })
        .expect("submit_with refused");
    let mut replies = outcome(rx).await.expect("tracked read failed");
    assert_eq!(replies[0], ok(), "CLIENT CACHING yes");
    let reply = replies.pop().unwrap();
    (ticket, reply)
}

/// Write on B, PING on A: the value A cached is gone; a fill whose invalidation came first (write
/// on B between A's read and its fill) is refused. A thousand times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_elsewhere_then_a_round_trip_leaves_no_stale_entry() {
    let server = RedisServer::start();
    let store = store();
    let a = caching_conn(&server, &store).await;
    let b = Conn::open(&server.tcp_opts()).await;
    let get = ["GET", "k"];
    for i in 0..1000 {
        let value = format!("v{i}");
        assert_eq!(cmd(&b.mux, &["SET", "k", &value]).await, ok());
        assert_eq!(cmd(&a.mux, &["PING"]).await, simple("PONG"));
        assert_eq!(cached(&store, &get), None, "round {i}: stale entry");
        let (ticket, reply) = read_tracked(&a, &store, &get, &["k"]).await;
        assert_eq!(reply, bulk(&value));
        if i % 2 == 0 {
            store.fill(ticket, &reply).unwrap();
            assert_eq!(cached(&store, &get), Some(bulk(&value)), "round {i}");
        } else {
            // The reply is in hand but not yet cached when B writes: by the time A's next round
            // trip is back, the invalidation has gone through the sink and the fill is refused.
            assert_eq!(cmd(&b.mux, &["SET", "k", "newer"]).await, ok());
            assert_eq!(cmd(&a.mux, &["PING"]).await, simple("PONG"));
            assert_eq!(store.fill(ticket, &reply), Err(FillError::Stale));
            assert_eq!(cached(&store, &get), None);
        }
    }
    let stats = store.stats();
    assert_eq!(stats.refused_fills, 500);
    assert_eq!(stats.hits, 500);
    assert_eq!(stats.invalidations, 500, "{stats:?}");
    a.task.abort();
    b.task.abort();
}

/// Each key of a multi-key read invalidates it; FLUSHALL (an invalidation with null) and the end of
/// the connection empty the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_reads_flushall_and_disconnection() {
    let server = RedisServer::start();
    let store = store();
    let a = caching_conn(&server, &store).await;
    let b = Conn::open(&server.tcp_opts()).await;
    let mget = ["MGET", "x", "y", "z"];
    for written in ["x", "y", "z"] {
        let (ticket, reply) = read_tracked(&a, &store, &mget, &["x", "y", "z"]).await;
        store.fill(ticket, &reply).unwrap();
        assert!(cached(&store, &mget).is_some());
        assert_eq!(cmd(&b.mux, &["SET", written, "1"]).await, ok());
        assert_eq!(cmd(&a.mux, &["PING"]).await, simple("PONG"));
        assert_eq!(cached(&store, &mget), None, "after a write of {written}");
    }

    for key in ["p", "q", "r"] {
        let (ticket, reply) = read_tracked(&a, &store, &["GET", key], &[key]).await;
        store.fill(ticket, &reply).unwrap();
    }
    assert_eq!(store.stats().entries, 3);
    let (pending, reply) = read_tracked(&a, &store, &["STRLEN", "p"], &["p"]).await;
    assert_eq!(cmd(&b.mux, &["FLUSHALL"]).await, ok());
    assert_eq!(cmd(&a.mux, &["PING"]).await, simple("PONG"));
    assert_eq!(store.stats().entries, 0, "FLUSHALL empties the cache");
    assert_eq!(store.fill(pending, &reply), Err(FillError::Flushed));

    let (ticket, reply) = read_tracked(&a, &store, &["GET", "p"], &["p"]).await;
    store.fill(ticket, &reply).unwrap();
    let (pending, reply) = read_tracked(&a, &store, &["GET", "q"], &["q"]).await;
    assert_eq!(store.stats().entries, 1);
    a.mux.close(Reason::Closed);
    assert_eq!(a.ended().await, Reason::Closed);
    assert_eq!(
        store.stats().entries,
        0,
        "a disconnection empties the cache"
    );
    assert_eq!(store.fill(pending, &reply), Err(FillError::Flushed));
    b.task.abort();
}
