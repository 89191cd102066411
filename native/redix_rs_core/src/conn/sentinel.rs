//! Finding the server through Redis Sentinel, as Redis's guidelines for Sentinel clients say: ask the
//! sentinels in order (each within a short timeout) for the group's primary (or a replica), connect to
//! it, and confirm with `ROLE` that it is what was asked for. Done again at every (re)connection, so
//! after a failover the client follows the new primary; while connected, `watch` listens to the
//! sentinels' announcements so that the connection moves as soon as a failover is announced.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::handshake::Exchange;
use super::transport::connect;
use super::{
    Address, ConnectError, ConnectOptions, Reason, SentinelFailure, Stream, TcpOptions, TlsOptions,
};
use crate::resp::Frame;

mod watch;
pub(crate) use watch::follow;

/// Which server of the group to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// One sentinel: where it is, and its own password (else the global one is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinel {
    pub host: String,
    pub port: u16,
    pub password: Option<Vec<u8>>,
}

/// How to reach the sentinels and what to ask them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    /// Tried in this order.
    pub sentinels: Vec<Sentinel>,
    pub group: Vec<u8>,
    pub role: Role,
    /// The password of every sentinel that has none of its own.
    pub password: Option<Vec<u8>>,
    /// Bounds connecting to one sentinel and its answer.
    pub timeout: Duration,
    pub tls: Option<TlsOptions>,
    pub tcp: TcpOptions,
}

/// What happened with the sentinels while connecting, for the owner (telemetry, reordering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelEvent {
    /// This sentinel (`host:port`) could not be used.
    Failed { address: String, reason: Reason },
    /// The sentinel at this index of the list led to the server at `server`: that sentinel should be
    /// asked first next time, and health checks probe that server.
    Answered { index: usize, server: Address },
}

/// A connection attempt to one server (the handshake included), which whoever asks Sentinel gives it:
/// Sentinel only resolves where the server is, and confirms its role.
pub(crate) type Direct = fn(ConnectOptions) -> Attempt;

/// A connection attempt in progress: the stream and the bytes read past the handshake.
pub(crate) type Attempt =
    Pin<Box<dyn Future<Output = Result<(Stream, BytesMut), ConnectError>> + Send>>;

/// Connects to the server of `sentinel.group` that has `sentinel.role`, with the rest of `opts`.
pub async fn establish_via_sentinels(
    opts: &ConnectOptions,
    sentinel: &SentinelOptions,
    on_event: &mut (dyn FnMut(SentinelEvent) + Send),
    direct: Direct,
) -> Result<(Stream, BytesMut), ConnectError> {
    let mut no_server_known = false;
    for (index, one) in sentinel.sentinels.iter().enumerate() {
        let address = format!("{}:{}", one.host, one.port);
        let server = async {
            let mut opts = opts.clone();
            opts.address = ask(one, sentinel).await?;
            let address = opts.address.clone();
            // The server must answer ROLE within the connection's own timeout, like a handshake.
            let connect = async {
                let (mut stream, leftover) = direct(opts.clone()).await?;
                let leftover = confirm_role(&mut stream, leftover, sentinel.role).await?;
                Ok::<_, ConnectError>((stream, leftover, address))
            };
            tokio::time::timeout(opts.timeout, connect)
                .await
                .map_err(|_| ConnectError::Timeout)?
        };
        match server.await {
            Ok((stream, leftover, server)) => {
                on_event(SentinelEvent::Answered { index, server });
                return Ok((stream, leftover));
            }
            Err(err) => {
                no_server_known |= matches!(err, ConnectError::Sentinel(_));
                on_event(SentinelEvent::Failed {
                    address,
                    reason: err.reason(),
                });
            }
        }
    }
    Err(ConnectError::Sentinel(
        match (no_server_known, sentinel.role) {
            (true, Role::Primary) => SentinelFailure::NoPrimaryFound,
            (true, Role::Replica) => SentinelFailure::NoReplicasFound,
            (false, _) => SentinelFailure::NoViableSentinelConnection,
        },
    ))
}

/// Asks one sentinel where the server is.
async fn ask(one: &Sentinel, sentinel: &SentinelOptions) -> Result<Address, ConnectError> {
    ask_as(one, sentinel, sentinel.role).await
}

/// Connects to one sentinel, authenticating when a password is set: the stream, and what was read
/// past the `AUTH` reply (for the next `Exchange`).
async fn open_sentinel(
    one: &Sentinel,
    sentinel: &SentinelOptions,
) -> Result<(Stream, BytesMut), ConnectError> {
    let opts = ConnectOptions {
        tcp: sentinel.tcp.clone(),
        tls: sentinel.tls.clone(),
        timeout: sentinel.timeout,
        ..ConnectOptions::tcp(one.host.clone(), one.port)
    };
    let mut stream = connect(&opts).await?;
    let mut io = Exchange::new(&mut stream, BytesMut::new());
    if let Some(password) = one.password.as_ref().or(sentinel.password.as_ref()) {
        io.auth(None, password).await?;
    }
    let leftover = io.into_leftover();
    Ok((stream, leftover))
}

/// Asks one sentinel where the server with `role` is.
async fn ask_as(
    one: &Sentinel,
    sentinel: &SentinelOptions,
    role: Role,
) -> Result<Address, ConnectError> {
    let query = async {
        let (mut stream, leftover) = open_sentinel(one, sentinel).await?;
        let mut io = Exchange::new(&mut stream, leftover);
        match role {
            Role::Primary => primary(&mut io, &sentinel.group).await,
            Role::Replica => replica(&mut io, &sentinel.group).await,
        }
    };
    tokio::time::timeout(sentinel.timeout, query)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn primary<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Exchange<'_, S>,
    group: &[u8],
) -> Result<Address, ConnectError> {
    match io
        .request(&[b"SENTINEL".as_slice(), b"get-master-addr-by-name", group])
        .await?
    {
        Frame::Array(items) => match items.as_slice() {
            [host, port] => address(host, port),
            _ => Err(unexpected("get-master-addr-by-name")),
        },
        Frame::NullArray | Frame::NullBulk | Frame::Null => {
            Err(ConnectError::Sentinel(SentinelFailure::NoPrimaryFound))
        }
        Frame::Error(msg) => Err(ConnectError::Redis(
            String::from_utf8_lossy(&msg).into_owned(),
        )),
        _ => Err(unexpected("get-master-addr-by-name")),
    }
}

/// A replica that the sentinel does not consider down, picked at random (as Redix does) so that
/// clients spread over the replicas.
async fn replica<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Exchange<'_, S>,
    group: &[u8],
) -> Result<Address, ConnectError> {
    let reply = io
        .request(&[b"SENTINEL".as_slice(), b"replicas", group])
        .await?;
    let Frame::Array(replicas) = reply else {
        return match reply {
            Frame::Error(msg) => Err(ConnectError::Redis(
                String::from_utf8_lossy(&msg).into_owned(),
            )),
            _ => Err(unexpected("replicas")),
        };
    };
    let healthy: Vec<Address> = replicas.iter().filter_map(healthy_replica).collect();
    if healthy.is_empty() {
        return Err(ConnectError::Sentinel(SentinelFailure::NoReplicasFound));
    }
    let pick = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize)
        % healthy.len();
    Ok(healthy[pick].clone())
}

/// A replica's address from its field list (`ip`, `port`, `flags`, ... as name/value pairs), unless
/// its flags say it is down or disconnected.
fn healthy_replica(fields: &Frame) -> Option<Address> {
    let pairs: Vec<(Bytes, &Frame)> = match fields {
        Frame::Array(items) => items
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?)))
            .collect(),
        Frame::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        _ => return None,
    };
    let field = |name: &[u8]| {
        pairs
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| *v)
    };
    let flags = field(b"flags").and_then(text).unwrap_or_default();
    let down = [b"s_down".as_slice(), b"o_down", b"disconnected"]
        .iter()
        .any(|flag| flags.split(|&b| b == b',').any(|f| f == *flag));
    if down {
        return None;
    }
    address(field(b"ip")?, field(b"port")?).ok()
}

/// `ROLE` must say `master` for a primary and `slave` for a replica: a sentinel may be out of date.
async fn confirm_role(
    stream: &mut Stream,
    leftover: BytesMut,
    role: Role,
) -> Result<BytesMut, ConnectError> {
    let mut io = Exchange::new(stream, leftover);
    let reply = io.request(&[b"ROLE".as_slice()]).await?;
    let actual = match &reply {
        Frame::Array(items) | Frame::Push(items) => items.first().and_then(text),
        _ => None,
    }
    .ok_or_else(|| unexpected("ROLE"))?;
    let expected: &[u8] = match role {
        Role::Primary => b"master",
        Role::Replica => b"slave",
    };
    if actual.as_ref() != expected {
        return Err(ConnectError::WrongRole(
            String::from_utf8_lossy(&actual).into_owned(),
        ));
    }
    Ok(io.into_leftover())
}

fn address(host: &Frame, port: &Frame) -> Result<Address, ConnectError> {
    let host = text(host).and_then(|h| String::from_utf8(h.to_vec()).ok());
    let port = text(port).and_then(|p| std::str::from_utf8(&p).ok()?.parse::<u16>().ok());
    match (host, port) {
        (Some(host), Some(port)) => Ok(Address::Tcp { host, port }),
        _ => Err(unexpected("an address")),
    }
}

fn text(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b.clone()),
        _ => None,
    }
}

fn unexpected(what: &str) -> ConnectError {
    ConnectError::Redis(format!("unexpected reply from a sentinel to {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn healthy_replicas_are_those_not_flagged_down() {
        let fields = |flags: &str| {
            Frame::Array(vec![
                bulk("ip"),
                bulk("10.0.0.2"),
                bulk("port"),
                bulk("6380"),
                bulk("flags"),
                bulk(flags),
            ])
        };
        assert_eq!(
            healthy_replica(&fields("slave")),
            Some(Address::Tcp {
                host: "10.0.0.2".into(),
                port: 6380
            })
        );
        assert_eq!(healthy_replica(&fields("slave,s_down")), None);
        assert_eq!(healthy_replica(&fields("slave,disconnected")), None);
        assert_eq!(
            healthy_replica(&Frame::Array(vec![bulk("ip"), bulk("h")])),
            None
        );
    }
}
