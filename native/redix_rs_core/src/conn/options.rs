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

/// The plain-TCP socket options users set through Redix's `socket_opts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Prefer IPv6 addresses when the host resolves to both families.
    pub inet6: bool,
    pub keepalive: bool,
    pub send_buffer: Option<usize>,
    pub recv_buffer: Option<usize>,
    /// TCP_NODELAY; on by default because commands are already coalesced by the writer.
    pub nodelay: bool,
}

/// TLS settings, in the vocabulary of Redix's `:ssl` socket options (`verify`, `cacerts`,
/// `cacertfile`, `certfile`, `keyfile`, `server_name_indication`).
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
    /// A client certificate for mutual TLS.
    pub client_cert: Option<ClientCert>,
}

impl Default for TlsOptions {
    /// Verification against the system's trusted CAs, SNI on, no client certificate.
    fn default() -> Self {
        TlsOptions {
            server_name: None,
            sni: true,
            verify: true,
            roots: Roots::System,
            client_cert: None,
        }
    }
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

/// A client certificate chain and its private key, PEM files read at each connection (so renewed
/// certificates are picked up on reconnection). The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC),
/// unencrypted; it may sit in the certificate file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
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
        }
    }
}
