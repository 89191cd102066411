//! Opening the socket: TCP (with the user's socket options), TLS over it, or a Unix domain socket.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::sentinel::{establish_via_sentinels, SentinelEvent};
use super::tls::{self, TlsStream};
use super::{handshake, Address, ConnectError, ConnectOptions, Protocol, TcpOptions};

/// A connected byte stream to a server.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and this enum is moved around.
    Tls(Box<TlsStream>),
    Unix(UnixStream),
}

/// Opens the socket and runs the handshake, all within `opts.timeout`; through the sentinels first
/// when `opts.sentinel` is set (their events are dropped: see `establish_with`).
///
/// Returns the stream and any bytes read past the handshake replies (normally none).
pub async fn establish(opts: &ConnectOptions) -> Result<(Stream, BytesMut), ConnectError> {
    establish_with(opts, &mut |_| {}).await
}

/// `establish`, telling `on_sentinel` what happened with each sentinel tried.
pub async fn establish_with(
    opts: &ConnectOptions,
    on_sentinel: &mut (dyn FnMut(SentinelEvent) + Send),
) -> Result<(Stream, BytesMut), ConnectError> {
    match &opts.sentinel {
        Some(sentinel) => establish_via_sentinels(opts, sentinel, on_sentinel).await,
        None => establish_direct(opts).await,
    }
}

/// Connects to `opts.address` itself (no sentinel).
pub(crate) async fn establish_direct(
    opts: &ConnectOptions,
) -> Result<(Stream, BytesMut), ConnectError> {
    let attempt = async {
        let mut stream = connect(opts).await?;
        let mut leftover = handshake(&mut stream, opts).await?;
        if matches!(stream, Stream::Tls(_)) && !handshake_sends_commands(opts) {
            leftover = tls::confirm(&mut stream, leftover).await?;
        }
        Ok((stream, leftover))
    };
    tokio::time::timeout(opts.timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Whether `handshake` exchanges anything with the server (AUTH, HELLO, SELECT, CLIENT SETNAME or
/// READONLY).
fn handshake_sends_commands(opts: &ConnectOptions) -> bool {
    opts.protocol == Protocol::Resp3
        || opts.password.is_some()
        || opts.database.is_some()
        || opts.client_name.is_some()
        || opts.readonly
}

/// Opens the socket (and runs the TLS handshake, with `opts.tls`) only.
pub async fn connect(opts: &ConnectOptions) -> Result<Stream, ConnectError> {
    match (&opts.address, &opts.tls) {
        (Address::Tcp { host, port }, None) => {
            connect_tcp(host, *port, &opts.tcp).await.map(Stream::Tcp)
        }
        (Address::Tcp { host, port }, Some(tls_opts)) => {
            let tcp = connect_tcp(host, *port, &opts.tcp).await?;
            let stream = tls::connect(tcp, host, tls_opts).await?;
            Ok(Stream::Tls(Box::new(stream)))
        }
        (Address::Unix { .. }, Some(_)) => Err(ConnectError::TlsConfig(
            "TLS is not available over a Unix domain socket".to_string(),
        )),
        (Address::Unix { path }, None) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
    }
}

async fn connect_tcp(host: &str, port: u16, tcp: &TcpOptions) -> Result<TcpStream, ConnectError> {
    let addrs = resolve(host, port, tcp.inet6).await?;
    let mut last_err = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return configure(stream, tcp).map_err(ConnectError::Io),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.map_or(ConnectError::NotFound, ConnectError::Io))
}

/// Resolves `host`, ordering addresses so the preferred family (IPv6 with `inet6`, else IPv4) comes first.
async fn resolve(host: &str, port: u16, inet6: bool) -> Result<Vec<SocketAddr>, ConnectError> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ConnectError::NotFound)?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NotFound);
    }
    addrs.sort_by_key(|a| a.is_ipv6() != inet6);
    Ok(addrs)
}

fn configure(stream: TcpStream, tcp: &TcpOptions) -> io::Result<TcpStream> {
    stream.set_nodelay(tcp.nodelay)?;
    let sock = socket2::SockRef::from(&stream);
    if tcp.keepalive {
        sock.set_keepalive(true)?;
    }
    if let Some(size) = tcp.send_buffer {
        sock.set_send_buffer_size(size)?;
    }
    if let Some(size) = tcp.recv_buffer {
        sock.set_recv_buffer_size(size)?;
    }
    Ok(stream)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
