//! A connection to one Redis server: options, transport, handshake and the multiplexer that lets many
//! callers share one socket.
//!
//! The flow is `transport::connect` → `handshake::run` → `Multiplexer::run`, driven by whoever owns the
//! connection (the NIF crate spawns it on its tokio runtime).

mod error;
mod handshake;
mod multiplexer;
mod options;
mod transport;

pub use error::{ConnectError, Reason};
pub use handshake::handshake;
pub use multiplexer::{Multiplexer, Routed, Router, SubmitError, Waiter};
pub use options::{Address, ConnectOptions, Protocol, TcpOptions};
pub use transport::{connect, establish, Stream};
