//! The TCP socket options of `socket_opts`, read back from the socket with `getsockopt` (Redis sees
//! none of them but the local address), and the effect of `send_timeout` on a server that reads
//! nothing.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use redix_rs_core::conn::{
    connect, establish, ConnectError, ConnectOptions, Reason, Stream, TcpOptions,
};
use socket2::SockRef;
use support::*;

/// `getsockopt` of an `int` option (for those socket2 has no getter for).
fn get_int(fd: &impl AsRawFd, level: i32, name: i32) -> i32 {
    let mut value: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket; `value` and `len` are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    value
}

fn tcp(stream: &Stream) -> &tokio::net::TcpStream {
    match stream {
        Stream::Tcp(tcp) => tcp,
        Stream::Tls(tls) => tls.tcp(),
        Stream::Unix(_) => panic!("not a TCP stream"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_tcp_option_reaches_the_socket() {
    // Protected mode refuses clients from 127.0.0.2 when the server has no password.
    let server = RedisServer::start_with(ServerConfig {
        requirepass: Some("pw".into()),
        ..ServerConfig::default()
    });
    let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut attempt = 0;
    let (stream, local_port) = loop {
        // A port that was free a moment ago may have been taken since: try another.
        let local_port = free_port();
        let opts = ConnectOptions {
            tcp: TcpOptions {
                inet6: false,
                keepalive: true,
                send_buffer: Some(96 * 1024),
                recv_buffer: Some(96 * 1024),
                nodelay: false,
                local_address: Some(local),
                local_port: Some(local_port),
                linger: Some(Duration::ZERO),
                tos: Some(0x10),
                tclass: None,
                ttl: Some(42),
                priority: Some(5),
                dontroute: true,
                bind_device: Some(b"lo".to_vec()),
                keepalive_idle: Some(33),
                keepalive_interval: Some(11),
                keepalive_count: Some(4),
                send_timeout: Some(Duration::from_millis(1500)),
            },
            password: Some(b"pw".to_vec()),
            ..server.tcp_opts()
        };
        match establish(&opts).await {
            Ok((stream, _)) => break (stream, local_port),
            Err(ConnectError::Io(e))
                if e.raw_os_error() == Some(libc::EADDRINUSE) && attempt < 5 =>
            {
                attempt += 1;
            }
            Err(e) => panic!("connect with every TCP option: {e}"),
        }
    };
    let tcp = tcp(&stream);
    let sock = SockRef::from(tcp);
    assert_eq!(
        tcp.local_addr().unwrap(),
        SocketAddr::new(local, local_port)
    );
    assert!(!tcp.nodelay().unwrap());
    assert!(sock.keepalive().unwrap());
    assert!(sock.send_buffer_size().unwrap() >= 96 * 1024);
    assert!(sock.recv_buffer_size().unwrap() >= 96 * 1024);
    assert_eq!(sock.linger().unwrap(), Some(Duration::ZERO));
    assert_eq!(sock.tos_v4().unwrap(), 0x10);
    assert_eq!(sock.ttl_v4().unwrap(), 42);
    assert_eq!(sock.priority().unwrap(), 5);
    assert_eq!(get_int(tcp, libc::SOL_SOCKET, libc::SO_DONTROUTE), 1);
    assert_eq!(sock.device().unwrap().as_deref(), Some(&b"lo"[..]));
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(33));
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(11)
    );
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    assert_eq!(
        sock.tcp_user_timeout().unwrap(),
        Some(Duration::from_millis(1500))
    );

    // The server sees the local address and port.
    let mux: Mux = redix_rs_core::conn::Multiplexer::new(NO_LIMIT);
    let runner = mux.clone();
    let task = tokio::spawn(async move { runner.run(stream, Default::default()).await });
    let info = text(&cmd(&mux, &["CLIENT", "INFO"]).await);
    assert!(
        info.contains(&format!(" addr=127.0.0.2:{local_port} ")),
        "{info}"
    );
    task.abort();
}

/// A local port can be bound again while a connection from it that this side closed is in
/// TIME_WAIT (SO_REUSEADDR), as a connection to another server (a new primary) needs. The kernel
/// still refuses the same server from the same port until the TIME_WAIT ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_port_is_bound_again_while_in_time_wait() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let port = free_port();
    for server in [&first, &second] {
        let mut opts = server.tcp_opts();
        opts.tcp.local_port = Some(port);
        let conn = Conn::open(&opts).await;
        let info = text(&cmd(&conn.mux, &["CLIENT", "INFO"]).await);
        assert!(info.contains(&format!(" addr=127.0.0.1:{port} ")), "{info}");
        // Closed by this side first: the port's connection to `server` stays in TIME_WAIT.
        conn.task.abort();
        let _ = conn.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_leave_the_kernel_alone() {
    let server = RedisServer::start();
    let stream = connect(&server.tcp_opts()).await.expect("connect");
    let tcp = tcp(&stream);
    let sock = SockRef::from(tcp);
    assert!(tcp.nodelay().unwrap(), "nodelay is on by default");
    assert!(!sock.keepalive().unwrap());
    assert_eq!(sock.linger().unwrap(), None);
    assert_eq!(sock.tcp_user_timeout().unwrap(), None);
    assert_eq!(sock.device().unwrap(), None);
    assert_eq!(get_int(tcp, libc::SOL_SOCKET, libc::SO_DONTROUTE), 0);
    assert_eq!(tcp.local_addr().unwrap().ip(), IpAddr::from([127, 0, 0, 1]));
}

/// Keepalive timing set with raw options does not turn keepalive on by itself (as with `:gen_tcp`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timing_alone_leaves_keepalive_off() {
    let server = RedisServer::start();
    let mut opts = server.tcp_opts();
    opts.tcp.keepalive_idle = Some(45);
    let stream = connect(&opts).await.expect("connect");
    let sock = SockRef::from(tcp(&stream));
    assert!(!sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_traffic_class_hops_and_families() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            kept.push(sock);
        }
    });

    let mut opts = ConnectOptions::tcp("::1", port);
    opts.tcp.tclass = Some(0x20);
    opts.tcp.tos = Some(0x10); // IPv4 only: not applied to an IPv6 socket
    opts.tcp.ttl = Some(17);
    opts.tcp.local_address = Some("::1".parse().unwrap());
    let stream = connect(&opts).await.expect("connect over IPv6");
    let sock = SockRef::from(tcp(&stream));
    assert_eq!(sock.tclass_v6().unwrap(), 0x20);
    assert_eq!(sock.unicast_hops_v6().unwrap(), 17);

    // A local IPv4 address cannot reach an IPv6 server.
    opts.tcp.local_address = Some("127.0.0.1".parse().unwrap());
    match connect(&opts).await {
        Err(ConnectError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EAFNOSUPPORT)),
        other => panic!("expected EAFNOSUPPORT, got {other:?}"),
    }
    accept.abort();
}

/// `send_timeout` (TCP_USER_TIMEOUT): a server that reads nothing makes the kernel close the
/// connection once the unsent data has waited that long, and the connection ends with `:etimedout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_timeout_closes_a_connection_whose_server_reads_nothing() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        // Never read; keep the socket open.
        tokio::time::sleep(WAIT).await;
        drop(sock);
    });

    let mut opts = ConnectOptions::tcp("127.0.0.1", port);
    opts.tcp.send_buffer = Some(4096);
    opts.tcp.send_timeout = Some(Duration::from_millis(300));
    let conn = Conn::open(&opts).await;
    let value = vec![b'x'; 8 << 20];
    let started = Instant::now();
    let rx = send(&conn.mux, &[&b"SET"[..], b"k", &value]);
    let etimedout = Reason::from_io(&std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
    assert_eq!(outcome(rx).await, Err(etimedout.clone()));
    let elapsed = started.elapsed();
    assert_eq!(conn.ended().await, etimedout);
    // Not before the timeout; and well before the kernel's own limit (~15 minutes).
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    server.abort();
}
