//! Opening the socket: TCP (with the user's socket options, set before it connects), TLS over it, or
//! a Unix domain socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use super::tls::{self, TlsStream};
use super::{Address, ConnectError, ConnectOptions, TcpOptions};

/// A connected byte stream to a server.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and this enum is moved around.
    Tls(Box<TlsStream>),
    Unix(UnixStream),
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
        if tcp
            .local_address
            .is_some_and(|local| local.is_ipv6() != addr.is_ipv6())
        {
            // A local address of the other family cannot reach this one.
            last_err.get_or_insert(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
            continue;
        }
        match connect_addr(addr, tcp).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.map_or(ConnectError::NotFound, ConnectError::Io))
}

/// Opens a socket for `addr`, sets the options that must be in place before the SYN (buffers, local
/// address, device, ...), connects, then sets the rest.
async fn connect_addr(addr: SocketAddr, tcp: &TcpOptions) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    configure(&socket2::SockRef::from(&socket), addr.is_ipv6(), tcp)?;
    if tcp.local_address.is_some() || tcp.local_port.is_some() {
        let ip = tcp.local_address.unwrap_or(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if tcp.local_port.is_some() {
            // The previous connection from this port may still be in TIME_WAIT (we closed it
            // first): a reconnection must be able to bind the port again.
            socket.set_reuseaddr(true)?;
        }
        socket.bind(SocketAddr::new(ip, tcp.local_port.unwrap_or(0)))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(tcp.nodelay)?;
    Ok(stream)
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

fn configure(sock: &socket2::SockRef<'_>, ipv6: bool, tcp: &TcpOptions) -> io::Result<()> {
    if tcp.keepalive {
        sock.set_keepalive(true)?;
    }
    // `:gen_tcp`'s raw options set these alone, whether keepalive is on or not.
    let keepalive_timing = [
        (libc::TCP_KEEPIDLE, tcp.keepalive_idle),
        (libc::TCP_KEEPINTVL, tcp.keepalive_interval),
        (libc::TCP_KEEPCNT, tcp.keepalive_count),
    ];
    for (name, value) in keepalive_timing {
        if let Some(value) = value {
            set_int(sock, libc::IPPROTO_TCP, name, value)?;
        }
    }
    if let Some(size) = tcp.send_buffer {
        sock.set_send_buffer_size(size)?;
    }
    if let Some(size) = tcp.recv_buffer {
        sock.set_recv_buffer_size(size)?;
    }
    if let Some(linger) = tcp.linger {
        sock.set_linger(Some(linger))?;
    }
    if tcp.dontroute {
        set_int(sock, libc::SOL_SOCKET, libc::SO_DONTROUTE, 1)?;
    }
    if let Some(device) = &tcp.bind_device {
        sock.bind_device(Some(device))?;
    }
    if let Some(timeout) = tcp.send_timeout {
        sock.set_tcp_user_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    }
    match (ipv6, tcp.tos, tcp.tclass, tcp.ttl) {
        (false, tos, _, ttl) => {
            if let Some(tos) = tos {
                sock.set_tos_v4(tos)?;
            }
            if let Some(ttl) = ttl {
                sock.set_ttl_v4(ttl)?;
            }
        }
        (true, _, tclass, ttl) => {
            if let Some(tclass) = tclass {
                sock.set_tclass_v6(tclass)?;
            }
            if let Some(hops) = ttl {
                sock.set_unicast_hops_v6(hops)?;
            }
        }
    }
    // After IP_TOS, which sets the priority from the TOS bits: an explicit priority wins.
    if let Some(priority) = tcp.priority {
        sock.set_priority(priority)?;
    }
    Ok(())
}

/// `setsockopt` of an `int` option that socket2 has no setter for.
fn set_int(sock: &socket2::SockRef<'_>, level: i32, name: i32, value: u32) -> io::Result<()> {
    let value =
        libc::c_int::try_from(value).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the descriptor is open for the lifetime of `sock`; the option value is a plain `int`
    // whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
