//! `ConnectOptions::readonly` against a real redis-server: a standalone server (no cluster support)
//! answers READONLY with an error, which fails the connection like an AUTH error (Redix's behaviour);
//! without the option nothing is sent. (A server with cluster support, which accepts it, is tested
//! from Elixir, whose test helper starts servers with extra arguments.)

mod support;

use redix_rs_core::conn::{establish, ConnectError, ConnectOptions, Reason};
use redix_rs_core::resp::Frame;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_on_a_server_without_cluster_support_is_a_redis_error() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        readonly: true,
        client_name: Some(b"before-readonly".to_vec()),
        ..server.tcp_opts()
    };
    let err = establish(&opts).await.expect_err("READONLY accepted");
    let ConnectError::Redis(msg) = &err else {
        panic!("expected ConnectError::Redis, got {err:?}");
    };
    assert_eq!(msg, "ERR This instance has cluster support disabled");
    assert_eq!(err.reason(), Reason::Redis(msg.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_readonly_the_client_is_not_readonly() {
    let server = RedisServer::start();
    assert!(!server.tcp_opts().readonly);
    let conn = Conn::open(&server.tcp_opts()).await;
    let info = cmd(&conn.mux, &["CLIENT", "INFO"]).await;
    let Frame::Bulk(info) = info else {
        panic!("unexpected CLIENT INFO reply: {info:?}");
    };
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains(" flags=N "), "{info}");
    conn.task.abort();
}
