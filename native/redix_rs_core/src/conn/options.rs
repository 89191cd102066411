//! What it takes to open one connection: where, how (socket options, TLS) and who (credentials,
//! database).

use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

impl std::fmt::Display for Address {
    /// `host:port` or the socket path, as Redix shows addresses in telemetry and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix { path } => f.write_str(path),
        }
    }
}

/// The TCP socket options users set through Redix's `socket_opts` (`:gen_tcp`'s names in brackets).
/// `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Prefer IPv6 addresses when the host resolves to both families (`:inet6`).
    pub inet6: bool,
    /// SO_KEEPALIVE (`keepalive`).
    pub keepalive: bool,
    /// SO_SNDBUF (`sndbuf`).
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF (`recbuf`, `buffer`).
    pub recv_buffer: Option<usize>,
    /// TCP_NODELAY; on by default because commands are already coalesced by the writer (`nodelay`;
    /// `delay_send: true` turns it off).
    pub nodelay: bool,
    /// The local address to bind before connecting (`ip`, `ifaddr`); the server's addresses of the other
    /// family are then skipped.
    pub local_address: Option<std::net::IpAddr>,
    /// The local port to bind before connecting (`port`).
    pub local_port: Option<u16>,
    /// SO_LINGER on, with this timeout (`linger: {true, 0}`: close with a reset). A non-zero
    /// timeout makes closing the socket block the closing thread (a tokio worker) for up to that
    /// long when the server does not acknowledge: the Elixir side takes only zero.
    pub linger: Option<Duration>,
    /// IP_TOS, for IPv4 (`tos`).
    pub tos: Option<u32>,
    /// IPV6_TCLASS, for IPv6 (`tclass`).
    pub tclass: Option<u32>,
    /// IP_TTL, or IPV6_UNICAST_HOPS for IPv6 (`ttl`).
    pub ttl: Option<u32>,
    /// SO_PRIORITY (`priority`).
    pub priority: Option<u32>,
    /// SO_DONTROUTE (`dontroute`).
    pub dontroute: bool,
    /// SO_BINDTODEVICE: the interface name (`bind_to_device`).
    pub bind_device: Option<Vec<u8>>,
    /// TCP_KEEPIDLE, seconds (`{:raw, 6, 4, <<n::native-32>>}`).
    pub keepalive_idle: Option<u32>,
    /// TCP_KEEPINTVL, seconds (`{:raw, 6, 5, <<n::native-32>>}`).
    pub keepalive_interval: Option<u32>,
    /// TCP_KEEPCNT, probes (`{:raw, 6, 6, <<n::native-32>>}`).
    pub keepalive_count: Option<u32>,
    /// TCP_USER_TIMEOUT (`send_timeout`): when written data stays unacknowledged, or cannot be sent
    /// because the server reads nothing, for this long, the kernel closes the connection (ETIMEDOUT).
    pub send_timeout: Option<Duration>,
}

/// TLS settings, in the vocabulary of Redix's `:ssl` socket options (`verify`, `cacerts`,
/// `cacertfile`, `cert`/`certfile`, `key`/`keyfile`, `certs_keys`, `server_name_indication`,
/// `versions`, `ciphers`, `eccs`/`supported_groups`, `alpn_advertised_protocols`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The name the server's certificate must be valid for, also sent as SNI; `None` means the host
    /// connected to (an IP address is checked against the certificate's IP addresses, and is never
    /// sent as SNI).
    pub server_name: Option<String>,
    /// Send the SNI extension (`server_name_indication: :disable` turns it off).
    pub sni: bool,
    /// Check the server's certificate chain and name (`verify: :verify_peer`, the default). `false`
    /// (`verify: :verify_none`) accepts any certificate: encryption without authentication.
    pub verify: bool,
    /// The certificates trusted to sign the server's certificate.
    pub roots: Roots,
    /// Client certificates for mutual TLS, each with its key: the first one whose key can sign with
    /// a scheme the server accepts is used (as `:ssl` picks among `certs_keys`).
    pub client_certs: Vec<ClientCert>,
    /// The protocol versions offered; `None` means TLS 1.2 and 1.3.
    pub versions: Option<Vec<TlsVersion>>,
    /// The cipher suites offered, by IANA number (`0x1301`, `0xC02F`, ...), in the order given;
    /// `None` means every suite rustls has. Numbers rustls does not know are ignored.
    pub cipher_suites: Option<Vec<u16>>,
    /// The key-exchange groups offered, by IANA number (`0x001D` X25519, `0x0017` secp256r1, `0x0018`
    /// secp384r1); `None` means rustls's defaults.
    pub groups: Option<Vec<u16>>,
    /// ALPN protocol names to offer (none by default).
    pub alpn: Vec<Vec<u8>>,
}

impl Default for TlsOptions {
    /// Verification against the system's trusted CAs, SNI on, no client certificate, rustls's
    /// versions, cipher suites and groups, no ALPN.
    fn default() -> Self {
        TlsOptions {
            server_name: None,
            sni: true,
            verify: true,
            roots: Roots::System,
            client_certs: Vec::new(),
            versions: None,
            cipher_suites: None,
            groups: None,
            alpn: Vec::new(),
        }
    }
}

/// A TLS protocol version rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store (`/etc/ssl/certs` on Debian; `SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// override it), read once per process.
    #[default]
    System,
    /// DER-encoded certificates (`cacerts`).
    Der(Vec<Vec<u8>>),
    /// A PEM file of one or more certificates (`cacertfile`), read at each connection.
    PemFile(PathBuf),
}

/// A client certificate chain and its private key. Files are read at each connection (so renewed
/// certificates are picked up on reconnection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub chain: CertChain,
    pub key: PrivateKey,
}

impl ClientCert {
    /// A certificate (chain) file and its key file, both PEM.
    pub fn files(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> ClientCert {
        ClientCert {
            chain: CertChain::PemFile(cert_file.into()),
            key: PrivateKey::PemFile(key_file.into()),
        }
    }
}

/// A client certificate, with the intermediate certificates that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertChain {
    /// A PEM file (`certfile`): every certificate in it, the client's first.
    PemFile(PathBuf),
    /// DER certificates (`cert: der | [der]`), the client's first.
    Der(Vec<Vec<u8>>),
}

/// A client certificate's private key, unencrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateKey {
    /// A PEM file (`keyfile`) holding a PKCS#8, RSA (PKCS#1) or EC (SEC1) key; it may be the
    /// certificate's own file.
    PemFile(PathBuf),
    /// DER (`key: {:RSAPrivateKey | :ECPrivateKey | :PrivateKeyInfo, der}`).
    Der(KeyFormat, Vec<u8>),
}

/// The DER encodings of a private key `:ssl` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#1 (`:RSAPrivateKey`).
    Pkcs1,
    /// SEC1 (`:ECPrivateKey`).
    Sec1,
    /// PKCS#8 (`:PrivateKeyInfo`).
    Pkcs8,
}

/// The protocol spoken after the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, Redix's protocol and the default.
    #[default]
    Resp2,
    /// RESP3, negotiated with `HELLO 3` (Redis 6+).
    Resp3,
}

/// Everything needed to connect and complete the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub address: Address,
    pub tcp: TcpOptions,
    /// TLS over the TCP connection (`ssl: true`); not available on Unix sockets.
    pub tls: Option<TlsOptions>,
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub database: Option<Vec<u8>>,
    pub client_name: Option<Vec<u8>>,
    pub protocol: Protocol,
    /// Send `READONLY` after the handshake (Redix's `:readonly`): a Redis Cluster replica then serves
    /// reads instead of redirecting them to its primary.
    pub readonly: bool,
    /// Find the server through these sentinels (`address` is then ignored).
    pub sentinel: Option<super::SentinelOptions>,
    /// Bounds the TCP connect and the handshake together, like Redix's `:timeout` option.
    pub timeout: Duration,
    /// A client-side cache: the handshake learns the server's commands and turns tracking on.
    pub tracking: Option<crate::cache::Tracking>,
}

impl ConnectOptions {
    /// Options for a plain TCP connection with no credentials.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        ConnectOptions {
            address: Address::Tcp {
                host: host.into(),
                port,
            },
            tcp: TcpOptions {
                nodelay: true,
                ..TcpOptions::default()
            },
            tls: None,
            username: None,
            password: None,
            database: None,
            client_name: None,
            protocol: Protocol::Resp2,
            readonly: false,
            sentinel: None,
            timeout: Duration::from_secs(5),
            tracking: None,
        }
    }
}
