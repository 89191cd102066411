//! `establish`, `connect` and `handshake` against a real redis-server: TCP and Unix addresses, AUTH
//! (password, ACL user), SELECT, CLIENT SETNAME, socket options and the ways connecting fails.
//! Fake servers are used only for a stall (timeout), an EOF during the handshake and the pre-Redis-6
//! AUTH reply that a Redis 7 server cannot produce.

mod support;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use redix_rs_core::conn::{
    connect, establish, handshake, Address, ConnectError, ConnectOptions, Multiplexer, Posix,
    Reason, Stream, TcpOptions,
};
use redix_rs_core::resp::Frame;
use support::*;
use tokio::io::AsyncWriteExt;

fn client_info(frame: &Frame) -> String {
    let info = text(frame);
    assert!(info.starts_with("id="), "unexpected CLIENT INFO: {info}");
    info
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn establish_tcp_without_credentials() {
    let server = RedisServer::start();
    let (stream, leftover) = establish(&server.tcp_opts()).await.expect("establish");
    assert!(matches!(stream, Stream::Tcp(_)));
    assert!(leftover.is_empty());

    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, leftover).await });
    assert_eq!(cmd(&mux, &["PING"]).await, simple("PONG"));
    let info = client_info(&cmd(&mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(" db=0 "), "{info}");
    assert!(info.contains(" name= "), "{info}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_address() {
    let server = RedisServer::start_with(ServerConfig {
        unix_socket: true,
        ..ServerConfig::default()
    });
    let opts = server.unix_opts();
    let path = server.unix_path.clone().unwrap();
    assert_eq!(opts.address.to_string(), path.to_string_lossy());

    let (stream, leftover) = establish(&opts).await.expect("establish over unix socket");
    assert!(matches!(stream, Stream::Unix(_)));
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, leftover).await });

    assert_eq!(cmd(&mux, &["SET", "via", "unix"]).await, ok());
    let info = client_info(&cmd(&mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(&*path.to_string_lossy()), "{info}");
    // Same server over TCP sees the key.
    let tcp = Conn::open(&server.tcp_opts()).await;
    assert_eq!(cmd(&tcp.mux, &["GET", "via"]).await, bulk("unix"));

    // Many concurrent callers over the Unix socket keep their order too.
    let mut tasks = Vec::new();
    for t in 0..20 {
        let mux = mux.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let tag = format!("{t}:{i}");
                assert_eq!(cmd(&mux, &["ECHO", tag.as_str()]).await, bulk(&tag));
            }
        }));
    }
    for t in tasks {
        t.await.expect("task panicked");
    }

    // A large value through the Unix socket.
    let value = vec![0u8; 3 * 1024 * 1024 + 7];
    let (waiter, rx) = ChanWaiter::new(2);
    let mut out = encoded(&[b"SET".as_slice(), b"zeros", &value]);
    out.extend_from_slice(&encoded(&["GET", "zeros"]));
    mux.submit(out, waiter).expect("submit refused");
    assert!(outcome(rx).await.expect("failed") == vec![ok(), bulk(&value)]);

    mux.close(Reason::Closed);
    assert_eq!(task.await.unwrap(), Reason::Closed);
    tcp.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_password() {
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        password: Some(b"s3cret".to_vec()),
        ..server.tcp_opts()
    };
    let conn = Conn::open(&opts).await;
    assert_eq!(cmd(&conn.mux, &["PING"]).await, simple("PONG"));
    assert_eq!(cmd(&conn.mux, &["ACL", "WHOAMI"]).await, bulk("default"));

    // Without credentials the connection is made but commands are refused.
    let anon = Conn::open(&server.tcp_opts()).await;
    let refused = cmd(&anon.mux, &["GET", "x"]).await;
    assert!(
        matches!(&refused, Frame::Error(m) if m.starts_with(b"NOAUTH")),
        "{refused:?}"
    );
    conn.task.abort();
    anon.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_acl_username_and_password() {
    let server = RedisServer::start_with(ServerConfig {
        users: vec!["alice on >pw ~* &* +@all".into()],
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        username: Some(b"alice".to_vec()),
        password: Some(b"pw".to_vec()),
        ..server.tcp_opts()
    };
    let conn = Conn::open(&opts).await;
    assert_eq!(cmd(&conn.mux, &["ACL", "WHOAMI"]).await, bulk("alice"));
    let info = client_info(&cmd(&conn.mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(" user=alice "), "{info}");

    // Right user, wrong password.
    let wrong = ConnectOptions {
        password: Some(b"not-pw".to_vec()),
        ..opts.clone()
    };
    match establish(&wrong).await {
        Err(ConnectError::Redis(msg)) => assert!(msg.starts_with("WRONGPASS"), "{msg}"),
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
    // Unknown user.
    let unknown = ConnectOptions {
        username: Some(b"mallory".to_vec()),
        ..opts
    };
    match establish(&unknown).await {
        Err(ConnectError::Redis(msg)) => assert!(msg.starts_with("WRONGPASS"), "{msg}"),
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_redis_error() {
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        password: Some(b"wrong".to_vec()),
        ..server.tcp_opts()
    };
    let err = establish(&opts).await.expect_err("wrong password accepted");
    let ConnectError::Redis(msg) = &err else {
        panic!("expected ConnectError::Redis, got {err:?}");
    };
    assert!(msg.starts_with("WRONGPASS"), "{msg}");
    assert_eq!(err.reason(), Reason::Redis(msg.clone()));
    assert_eq!(err.to_string(), *msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_for_a_server_without_one_is_a_redis_error() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        password: Some(b"unneeded".to_vec()),
        ..server.tcp_opts()
    };
    match establish(&opts).await {
        Err(ConnectError::Redis(msg)) => assert!(msg.starts_with("ERR"), "{msg}"),
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_database() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        database: Some(b"3".to_vec()),
        ..server.tcp_opts()
    };
    let db3 = Conn::open(&opts).await;
    let info = client_info(&cmd(&db3.mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(" db=3 "), "{info}");
    assert_eq!(cmd(&db3.mux, &["SET", "where", "three"]).await, ok());

    let db0 = Conn::open(&server.tcp_opts()).await;
    assert_eq!(cmd(&db0.mux, &["GET", "where"]).await, Frame::NullBulk);
    assert_eq!(cmd(&db0.mux, &["SELECT", "3"]).await, ok());
    assert_eq!(cmd(&db0.mux, &["GET", "where"]).await, bulk("three"));

    let out_of_range = ConnectOptions {
        database: Some(b"99".to_vec()),
        ..server.tcp_opts()
    };
    match establish(&out_of_range).await {
        Err(ConnectError::Redis(msg)) => assert!(msg.contains("out of range"), "{msg}"),
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
    db3.task.abort();
    db0.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_setname() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        client_name: Some(b"redix-rs-test".to_vec()),
        ..server.tcp_opts()
    };
    let conn = Conn::open(&opts).await;
    assert_eq!(
        cmd(&conn.mux, &["CLIENT", "GETNAME"]).await,
        bulk("redix-rs-test")
    );
    // Names cannot contain spaces: the server's refusal is fatal.
    let bad = ConnectOptions {
        client_name: Some(b"has space".to_vec()),
        ..server.tcp_opts()
    };
    match establish(&bad).await {
        Err(ConnectError::Redis(msg)) => assert!(msg.starts_with("ERR"), "{msg}"),
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_handshake_over_unix_socket() {
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("defaultpw".into()),
        users: vec!["alice on >pw ~* &* +@all".into()],
        unix_socket: true,
    });
    let opts = ConnectOptions {
        username: Some(b"alice".to_vec()),
        password: Some(b"pw".to_vec()),
        database: Some(b"5".to_vec()),
        client_name: Some(b"everything".to_vec()),
        ..server.unix_opts()
    };
    let conn = Conn::open(&opts).await;
    let info = client_info(&cmd(&conn.mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(" db=5 "), "{info}");
    assert!(info.contains(" name=everything "), "{info}");
    assert!(info.contains(" user=alice "), "{info}");
    conn.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_handshake_called_separately() {
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("pw".into()),
        ..ServerConfig::default()
    });
    let opts = ConnectOptions {
        password: Some(b"pw".to_vec()),
        database: Some(b"2".to_vec()),
        ..server.tcp_opts()
    };
    let mut stream = connect(&opts).await.expect("connect");
    let leftover = handshake(&mut stream, &opts).await.expect("handshake");
    assert!(leftover.is_empty());
    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, leftover).await });
    let info = client_info(&cmd(&mux, &["CLIENT", "INFO"]).await);
    assert!(info.contains(" db=2 "), "{info}");

    // handshake() only needs AsyncRead + AsyncWrite: a second one on a fresh stream, no options.
    let mut plain = connect(&server.tcp_opts()).await.expect("connect");
    let leftover = handshake(&mut plain, &server.tcp_opts())
        .await
        .expect("empty handshake");
    assert!(leftover.is_empty());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_socket_options_are_applied() {
    let server = RedisServer::start();
    let opts = ConnectOptions {
        tcp: TcpOptions {
            inet6: true, // prefers IPv6 but falls back to whatever "localhost" offers
            keepalive: true,
            send_buffer: Some(64 * 1024),
            recv_buffer: Some(64 * 1024),
            nodelay: false,
            ..TcpOptions::default()
        },
        ..ConnectOptions::tcp("localhost", server.port)
    };
    assert_eq!(
        opts.address.to_string(),
        format!("localhost:{}", server.port)
    );
    let stream = connect(&opts).await.expect("connect with socket options");
    let Stream::Tcp(tcp) = &stream else {
        panic!("expected a TCP stream");
    };
    assert!(!tcp.nodelay().unwrap());
    let sock = socket2::SockRef::from(tcp);
    assert!(sock.keepalive().unwrap());
    assert!(sock.send_buffer_size().unwrap() >= 64 * 1024);
    assert!(sock.recv_buffer_size().unwrap() >= 64 * 1024);

    let default = connect(&server.tcp_opts()).await.expect("connect");
    let Stream::Tcp(tcp) = &default else {
        panic!("expected a TCP stream");
    };
    assert!(tcp.nodelay().unwrap(), "nodelay is on by default");

    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, BytesMut::new()).await });
    assert_eq!(cmd(&mux, &["PING"]).await, simple("PONG"));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    let port = free_port(); // nothing listens there any more
    let err = establish(&ConnectOptions::tcp("127.0.0.1", port))
        .await
        .expect_err("connected to a closed port");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
    assert_eq!(err.reason(), Reason::Posix(Posix::Econnrefused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_nxdomain() {
    let err = establish(&ConnectOptions::tcp("no-such-host.invalid", 6390))
        .await
        .expect_err("resolved an .invalid name");
    assert!(matches!(err, ConnectError::NotFound), "{err:?}");
    assert_eq!(err.reason(), Reason::Nxdomain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unix_socket_is_enoent() {
    let dir = TempDir::new("nosock");
    let opts = ConnectOptions {
        address: Address::Unix {
            path: dir
                .path()
                .join("absent.sock")
                .to_string_lossy()
                .into_owned(),
        },
        ..ConnectOptions::tcp("unused", 0)
    };
    let err = establish(&opts)
        .await
        .expect_err("connected to a missing socket");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
    assert_eq!(err.reason(), Reason::Posix(Posix::Enoent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_times_out_when_the_server_never_answers() {
    // Fake server: a stall. It accepts, reads whatever comes, and never answers.
    let (listener, port) = fake_listener().await;
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut sock, &mut sink).await;
        sink
    });
    let timeout = Duration::from_millis(300);
    let opts = ConnectOptions {
        password: Some(b"pw".to_vec()),
        timeout,
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    let started = Instant::now();
    let err = tokio::time::timeout(WAIT, establish(&opts))
        .await
        .expect("establish ignored its timeout")
        .expect_err("handshake completed");
    let elapsed = started.elapsed();
    assert!(matches!(err, ConnectError::Timeout), "{err:?}");
    assert_eq!(err.reason(), Reason::Timeout);
    assert!(elapsed >= timeout - Duration::from_millis(5), "{elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(2), "{elapsed:?}");
    // The AUTH was sent; the client dropped the socket when it gave up.
    let sent = tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
    assert_eq!(sent, encoded(&["AUTH", "pw"]).to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_during_handshake_is_closed() {
    // Fake server: closes the connection after reading AUTH, mid-handshake.
    let (listener, port) = fake_listener().await;
    let auth = encoded(&["AUTH", "pw"]);
    let expected = auth.len();
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        read_n(&mut sock, expected).await
    });
    let opts = ConnectOptions {
        password: Some(b"pw".to_vec()),
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    let err = establish(&opts).await.expect_err("handshake completed");
    assert!(matches!(err, ConnectError::Closed), "{err:?}");
    assert_eq!(err.reason(), Reason::TcpClosed);
    assert_eq!(fake.await.unwrap(), auth.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_falls_back_to_password_only_on_pre_6_servers() {
    // Fake server: answers AUTH user pass the way Redis 5 does, which a Redis 7 server cannot.
    // With the last handshake reply it also sends a reply ahead of time, which must come back as
    // the handshake's leftover and reach the first waiter.
    let (listener, port) = fake_listener().await;
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let with_user = encoded(&["AUTH", "alice", "pw"]);
        assert_eq!(read_n(&mut sock, with_user.len()).await, with_user.to_vec());
        sock.write_all(b"-ERR wrong number of arguments for 'auth' command\r\n")
            .await
            .unwrap();
        let without_user = encoded(&["AUTH", "pw"]);
        assert_eq!(
            read_n(&mut sock, without_user.len()).await,
            without_user.to_vec()
        );
        sock.write_all(b"+OK\r\n+EARLY\r\n").await.unwrap();
        let ping = encoded(&["PING"]);
        assert_eq!(read_n(&mut sock, ping.len()).await, ping.to_vec());
        sock.write_all(b"+PONG\r\n").await.unwrap();
        sock
    });
    let opts = ConnectOptions {
        username: Some(b"alice".to_vec()),
        password: Some(b"pw".to_vec()),
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    let (stream, leftover) = establish(&opts).await.expect("establish");
    assert_eq!(&leftover[..], b"+EARLY\r\n");

    let mux: Mux = Multiplexer::new(NO_LIMIT);
    let first = send(&mux, &["PING"]);
    let second = send(&mux, &["PING"]);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, leftover).await });
    assert_eq!(reply(first).await, simple("EARLY"));
    assert_eq!(reply(second).await, simple("PONG"));
    let _sock = fake.await.expect("fake server panicked");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_auth_errors_do_not_trigger_the_fallback() {
    // Fake server: only "wrong number of arguments" means an old server; any other error is final.
    let (listener, port) = fake_listener().await;
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let with_user = encoded(&["AUTH", "alice", "pw"]);
        assert_eq!(read_n(&mut sock, with_user.len()).await, with_user.to_vec());
        sock.write_all(b"-WRONGPASS invalid username-password pair\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut sock, &mut rest).await;
        rest
    });
    let opts = ConnectOptions {
        username: Some(b"alice".to_vec()),
        password: Some(b"pw".to_vec()),
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    match establish(&opts).await {
        Err(ConnectError::Redis(msg)) => {
            assert_eq!(msg, "WRONGPASS invalid username-password pair")
        }
        other => panic!("expected ConnectError::Redis, got {other:?}"),
    }
    assert!(
        fake.await.unwrap().is_empty(),
        "nothing sent after the error"
    );
}
