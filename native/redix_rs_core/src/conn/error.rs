//! Why a connection could not be made or was lost, in the vocabulary Redix users match on.

use crate::resp::{Limit, ProtocolError};

/// A disconnection or connection-failure reason, in the vocabulary Redix users match on. Each
/// variant becomes one Erlang term (see [`Reason::term`]): a bare atom (`:tcp_closed`,
/// `:econnrefused`), a tagged tuple (`{:protocol_error, "..."}`), or a TLS alert in `:ssl`'s shape
/// (`{:tls_alert, {:unknown_ca, "..."}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A socket error, by the POSIX name `:gen_tcp` reports.
    Posix(Posix),
    /// The server closed the connection (`:tcp_closed`).
    TcpClosed,
    /// The server closed a TLS connection (`:ssl_closed`).
    SslClosed,
    /// Connecting took longer than allowed (`:timeout`).
    Timeout,
    /// The host name did not resolve (`:nxdomain`).
    Nxdomain,
    /// Redis sent a reply nobody waited for: replies and commands are out of step.
    UnexpectedReply,
    /// A submission failed after part of it was written: the connection cannot stay in step.
    PartialSubmission,
    /// Subscribers fell too far behind (`RedixRs.PubSub`).
    PubsubBacklog,
    /// The connection's owner process stopped.
    OwnerDown,
    /// A health check was not answered in time.
    HealthCheckTimeout,
    /// The connection handle was dropped.
    Closed,
    /// Sentinel could not give a usable server.
    Sentinel(SentinelFailure),
    /// The peer violated the protocol (`{:protocol_error, message}`).
    Protocol(String),
    /// A reply went past a configured limit (`{:protocol_error, :reply_too_large}`, or the limit's
    /// own name): what the caller whose reply it was is told.
    ReplyLimit(Limit),
    /// The server answered the handshake with an error (`{:redis_error, message}`).
    Redis(String),
    /// The server a sentinel named has another role (`{:wrong_role, role}`).
    WrongRole(String),
    /// Sentinel announced that the group's primary moved: the connection leaves its server for the
    /// new one (`:sentinel_failover`).
    SentinelFailover,
    /// TLS settings that cannot be used: an unreadable `certfile`, ... (`{:tls_config, message}`).
    TlsConfig(String),
    /// An I/O error with no POSIX name (`{:io_error, message}`).
    Io(String),
    /// The connection's task panicked (`{:panic, message}`).
    Panic(String),
    /// A TLS alert: `alert` is the name `:ssl` gives it (`unknown_ca`, ...).
    TlsAlert {
        alert: &'static str,
        message: String,
    },
}

/// The POSIX errors a client meets, named as `:inet` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posix {
    Eperm,
    Enoent,
    Eacces,
    Einval,
    Epipe,
    Eaddrinuse,
    Eaddrnotavail,
    Enetdown,
    Enetunreach,
    Econnaborted,
    Econnreset,
    Etimedout,
    Econnrefused,
    Ehostunreach,
}

impl Posix {
    /// The errno values Linux uses for these; others fall back to the error kind.
    fn from_errno(errno: i32) -> Option<Posix> {
        Some(match errno {
            1 => Posix::Eperm,
            2 => Posix::Enoent,
            13 => Posix::Eacces,
            22 => Posix::Einval,
            32 => Posix::Epipe,
            98 => Posix::Eaddrinuse,
            99 => Posix::Eaddrnotavail,
            100 => Posix::Enetdown,
            101 => Posix::Enetunreach,
            103 => Posix::Econnaborted,
            104 => Posix::Econnreset,
            110 => Posix::Etimedout,
            111 => Posix::Econnrefused,
            113 => Posix::Ehostunreach,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Posix::Eperm => "eperm",
            Posix::Enoent => "enoent",
            Posix::Eacces => "eacces",
            Posix::Einval => "einval",
            Posix::Epipe => "epipe",
            Posix::Eaddrinuse => "eaddrinuse",
            Posix::Eaddrnotavail => "eaddrnotavail",
            Posix::Enetdown => "enetdown",
            Posix::Enetunreach => "enetunreach",
            Posix::Econnaborted => "econnaborted",
            Posix::Econnreset => "econnreset",
            Posix::Etimedout => "etimedout",
            Posix::Econnrefused => "econnrefused",
            Posix::Ehostunreach => "ehostunreach",
        }
    }
}

/// Why Sentinel could not give a usable server (Redix's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentinelFailure {
    /// No sentinel could be reached.
    NoViableSentinelConnection,
    /// No sentinel knew the primary.
    NoPrimaryFound,
    /// No sentinel named a replica of the primary.
    NoReplicasFound,
}

impl SentinelFailure {
    pub fn name(self) -> &'static str {
        match self {
            SentinelFailure::NoViableSentinelConnection => "no_viable_sentinel_connection",
            SentinelFailure::NoPrimaryFound => "sentinel_no_primary_found",
            SentinelFailure::NoReplicasFound => "sentinel_no_replicas_found_for_given_primary",
        }
    }
}

/// The shape of a reason's Erlang term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonTerm<'a> {
    Atom(&'static str),
    Tagged(&'static str, &'a str),
    TaggedAtom(&'static str, &'static str),
    TlsAlert {
        alert: &'static str,
        message: &'a str,
    },
}

/// The atom naming a reply limit.
fn limit_name(limit: Limit) -> &'static str {
    match limit {
        Limit::ReplyBytes => "reply_too_large",
        Limit::BulkLength => "bulk_too_long",
        Limit::AggregateLength => "aggregate_too_long",
        Limit::Depth => "too_deep",
    }
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

    /// The term this reason becomes for Elixir.
    pub fn term(&self) -> ReasonTerm<'_> {
        use ReasonTerm::{Atom, Tagged};
        match self {
            Reason::Posix(posix) => Atom(posix.name()),
            Reason::TcpClosed => Atom("tcp_closed"),
            Reason::SslClosed => Atom("ssl_closed"),
            Reason::Timeout => Atom("timeout"),
            Reason::Nxdomain => Atom("nxdomain"),
            Reason::UnexpectedReply => Atom("unexpected_reply"),
            Reason::PartialSubmission => Atom("partial_submission"),
            Reason::PubsubBacklog => Atom("pubsub_backlog"),
            Reason::OwnerDown => Atom("owner_down"),
            Reason::HealthCheckTimeout => Atom("health_check_timeout"),
            Reason::Closed => Atom("closed"),
            Reason::Sentinel(failure) => Atom(failure.name()),
            Reason::Protocol(m) => Tagged("protocol_error", m),
            Reason::ReplyLimit(limit) => {
                ReasonTerm::TaggedAtom("protocol_error", limit_name(*limit))
            }
            Reason::Redis(m) => Tagged("redis_error", m),
            Reason::WrongRole(role) => Tagged("wrong_role", role),
            Reason::SentinelFailover => Atom("sentinel_failover"),
            Reason::TlsConfig(m) => Tagged(TLS_CONFIG, m),
            Reason::Io(m) => Tagged("io_error", m),
            Reason::Panic(m) => Tagged("panic", m),
            Reason::TlsAlert { alert, message } => ReasonTerm::TlsAlert { alert, message },
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
        if let Some(posix) = err.raw_os_error().and_then(Posix::from_errno) {
            return Reason::Posix(posix);
        }
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => Reason::Posix(Posix::Econnrefused),
            ConnectionReset => Reason::Posix(Posix::Econnreset),
            ConnectionAborted => Reason::Posix(Posix::Econnaborted),
            BrokenPipe => Reason::Posix(Posix::Epipe),
            TimedOut => Reason::Timeout,
            UnexpectedEof => Reason::TcpClosed,
            NotFound => Reason::Posix(Posix::Enoent),
            PermissionDenied => Reason::Posix(Posix::Eacces),
            _ => Reason::Io(err.to_string()),
        }
    }
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
    /// Sentinel could not give a usable server.
    #[error("{}", .0.name())]
    Sentinel(SentinelFailure),
    /// The server a sentinel named does not have the role asked for (its `ROLE` reply).
    #[error("wrong role: {0}")]
    WrongRole(String),
}

impl ConnectError {
    /// The reason term for everything but `Redis`, which becomes a `%RedixRs.Error{}` instead.
    pub fn reason(&self) -> Reason {
        match self {
            ConnectError::Io(e) => Reason::from_io(e),
            ConnectError::NotFound => Reason::Nxdomain,
            ConnectError::Timeout => Reason::Timeout,
            ConnectError::Closed => Reason::TcpClosed,
            ConnectError::Redis(msg) => Reason::Redis(msg.clone()),
            ConnectError::Protocol(e) => Reason::Protocol(e.to_string()),
            ConnectError::TlsConfig(msg) => Reason::TlsConfig(msg.clone()),
            ConnectError::Sentinel(failure) => Reason::Sentinel(*failure),
            ConnectError::WrongRole(role) => Reason::WrongRole(role.clone()),
        }
    }
}
