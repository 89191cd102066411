//! A connection to one Redis server: options, transport, handshake and the multiplexer that lets many
//! callers share one socket.
//!
//! The flow is `establish` (`transport::connect`: TCP, then TLS when asked; then `handshake`; through
//! `sentinel` first when asked) → `Multiplexer::run`, all under `lifecycle::supervise`,
//! driven by whoever owns the connection (the NIF crate spawns it on its tokio runtime).

pub mod call_state;
mod direct;
mod error;
mod establish;
mod handshake;
pub mod lifecycle;
mod multiplexer;
mod options;
pub mod out_of_band;
mod sentinel;
pub mod side;
pub mod submission;
mod tls;
mod transport;

pub use direct::Outgoing;
pub use error::{ConnectError, Posix, Reason, ReasonTerm, SentinelFailure, TLS_CONFIG};
pub use establish::{establish, establish_with};
pub use handshake::handshake;
pub use multiplexer::{
    Confirmations, Multiplexer, OutOfBandSink, SubmitError, Taken, Waiter, COPY_MAX,
};
pub use options::{Address, ClientCert, ConnectOptions, Protocol, Roots, TcpOptions, TlsOptions};
pub use out_of_band::{Mode, OutOfBand};
pub use sentinel::{Role, Sentinel, SentinelEvent, SentinelOptions};
pub use tls::TlsStream;
pub use transport::{connect, Stream};

// The parts of `TlsOptions` (client certificates, versions), and what rustls offers.
pub use options::{CertChain, KeyFormat, PrivateKey, TlsVersion};
pub use tls::{supported_cipher_suites, supported_groups};
