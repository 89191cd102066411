//! RESP2/RESP3 wire protocol: the [`Frame`] value type, an incremental
//! [`Parser`] that resumes exactly where the previous call stopped, and
//! allocation-light command encoding ([`encode_command`]).
//!
//! Everything here is synchronous and I/O-free so the connection code can feed
//! it whatever the socket delivered and the tests can feed it any byte split.

mod aggregate;
mod command;
mod frame;
mod parser;
mod server_error;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use command::{encode_array_header, encode_bulk, encode_command, encoded_len};
pub use frame::Frame;
pub use parser::{Limit, Limits, Parsed, Parser, ProtocolError};
pub use server_error::{ServerError, ServerErrorKind};
