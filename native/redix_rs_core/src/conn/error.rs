//! Why a connection could not be made or was lost, in the vocabulary Redix users match on.

use crate::resp::ProtocolError;

/// A disconnection or connection-failure reason, shaped to become an Erlang term:
/// a bare atom (`:tcp_closed`, `:econnrefused`), a tagged tuple (`{:protocol_error, "..."}`), or a
/// TLS alert in `:ssl`'s shape (`{:tls_alert, {:unknown_ca, "..."}}`, where the alert is the name
/// `:ssl` gives it). TLS settings that cannot be used (an unreadable `certfile`, ...) are
/// `Tagged("tls_config", message)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Atom(&'static str),
    Tagged(&'static str, String),
    TlsAlert {
        alert: &'static str,
        message: String,
    },
}

/// The tag of unusable TLS settings.
pub const TLS_CONFIG: &str = "tls_config";

impl Reason {
    /// A TLS alert reason: `alert` is `:ssl`'s name for it (`unknown_ca`, ...).
    pub fn tls(alert: &'static str, message: impl std::fmt::Display) -> Reason {
        Reason::TlsAlert {
            alert,
            message: message.to_string(),
        }
    }

    /// `Some((alert, message))` for a TLS alert reason.
    pub fn tls_alert(&self) -> Option<(&str, &str)> {
        match self {
            Reason::TlsAlert { alert, message } => Some((alert, message)),
            _ => None,
        }
    }

    /// Maps an I/O error to the POSIX atom `:gen_tcp` would report (`econnrefused`, `ehostunreach`, ...),
    /// or, for an error of the TLS layer, to the TLS alert `:ssl` would report.
    pub fn from_io(err: &std::io::Error) -> Reason {
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return super::tls::reason(tls);
        }
        if let Some(name) = err.raw_os_error().and_then(posix_name) {
            return Reason::Atom(name);
        }
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => Reason::Atom("econnrefused"),
            ConnectionReset => Reason::Atom("econnreset"),
            ConnectionAborted => Reason::Atom("econnaborted"),
            BrokenPipe => Reason::Atom("epipe"),
            TimedOut => Reason::Atom("timeout"),
            UnexpectedEof => Reason::Atom("tcp_closed"),
            NotFound => Reason::Atom("enoent"),
            PermissionDenied => Reason::Atom("eacces"),
            _ => Reason::Tagged("io_error", err.to_string()),
        }
    }
}

/// Errno values Linux uses for the failures a client meets; others fall back to the error kind.
fn posix_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        1 => "eperm",
        2 => "enoent",
        13 => "eacces",
        22 => "einval",
        32 => "epipe",
        98 => "eaddrinuse",
        99 => "eaddrnotavail",
        100 => "enetdown",
        101 => "enetunreach",
        103 => "econnaborted",
        104 => "econnreset",
        110 => "etimedout",
        111 => "econnrefused",
        113 => "ehostunreach",
        _ => return None,
    })
}

/// Why connecting (socket + handshake) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("host not found")]
    NotFound,
    #[error("timed out")]
    Timeout,
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// The server answered the handshake (AUTH, SELECT, ...) with an error: fatal, as in Redix.
    #[error("{0}")]
    Redis(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The TLS settings cannot be used (a file cannot be read, holds no certificate, ...).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// Sentinel could not give a usable server: `no_viable_sentinel_connection`,
    /// `sentinel_no_primary_found`, `sentinel_no_replicas_found_for_given_primary`.
    #[error("{0}")]
    Sentinel(&'static str),
    /// The server a sentinel named does not have the role asked for (its `ROLE` reply).
    #[error("wrong role: {0}")]
    WrongRole(String),
}

impl ConnectError {
    /// The reason term for everything but `Redis`, which becomes a `%RedixRs.Error{}` instead.
    pub fn reason(&self) -> Reason {
        match self {
            ConnectError::Io(e) => Reason::from_io(e),
            ConnectError::NotFound => Reason::Atom("nxdomain"),
            ConnectError::Timeout => Reason::Atom("timeout"),
            ConnectError::Closed => Reason::Atom("tcp_closed"),
            ConnectError::Redis(msg) => Reason::Tagged("redis_error", msg.clone()),
            ConnectError::Protocol(e) => Reason::Tagged("protocol_error", e.to_string()),
            ConnectError::TlsConfig(msg) => Reason::Tagged(TLS_CONFIG, msg.clone()),
            ConnectError::Sentinel(reason) => Reason::Atom(reason),
            ConnectError::WrongRole(role) => Reason::Tagged("wrong_role", role.clone()),
        }
    }
}
