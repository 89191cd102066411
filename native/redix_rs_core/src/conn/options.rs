//! What it takes to open one connection: where, how (socket options) and who (credentials, database).

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
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub database: Option<Vec<u8>>,
    pub client_name: Option<Vec<u8>>,
    pub protocol: Protocol,
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
            username: None,
            password: None,
            database: None,
            client_name: None,
            protocol: Protocol::Resp2,
            timeout: Duration::from_secs(5),
        }
    }
}
