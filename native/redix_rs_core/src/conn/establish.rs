//! Establishing a connection: the socket (`transport`), then the handshake (`handshake`), within the
//! connection's timeout; through the sentinels first when `opts.sentinel` is set. Sentinel is a
//! resolver here: it finds the server and is handed the way to connect to it directly, so the layers
//! run one way only (transport ← handshake ← establish, sentinel beside them).

use bytes::BytesMut;

use super::handshake::handshake;
use super::sentinel::{establish_via_sentinels, follow, Attempt, SentinelEvent};
use super::tls;
use super::transport::{connect, Stream};
use super::{Address, ConnectError, ConnectOptions, Protocol, Reason, SentinelOptions};

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
        Some(sentinel) => establish_via_sentinels(opts, sentinel, on_sentinel, direct).await,
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

/// While connected through sentinels to `server` (named by the sentinel at `index`): resolves when
/// the connection must move to another server, with the reason to close it with (see
/// `sentinel::watch`). `readonly` resolves at each `-READONLY` reply of the connection.
pub(crate) async fn sentinel_follow<R, F>(
    opts: &ConnectOptions,
    sentinel: &SentinelOptions,
    index: usize,
    server: &Address,
    readonly: R,
) -> Reason
where
    R: FnMut() -> F,
    F: std::future::Future<Output = ()>,
{
    follow(opts, sentinel, index, server, direct, readonly).await
}

/// `establish_direct` with owned options, as Sentinel calls it.
fn direct(opts: ConnectOptions) -> Attempt {
    Box::pin(async move { establish_direct(&opts).await })
}
