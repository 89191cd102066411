//! Following the group while connected through Sentinel, so that a failover moves the connection at
//! once instead of at its next reconnection.
//!
//! Where it lives: [`follow`] is a future that `lifecycle::serve` runs beside the multiplexer of a
//! connection made through sentinels, in the same task. It ends only by deciding that the
//! connection must move (then `serve` closes the connection with that reason, every caller in
//! flight is failed as on any disconnection, and the owner reconnects at once, through the
//! sentinels again); and it is dropped, with its sockets, as soon as the connection ends for any
//! other reason (the owner stopped, the socket died). So it lives exactly as long as the
//! connection it watches: nothing outlives a stop, and a reconnection starts a new one.
//!
//! What it watches:
//! - `+switch-master` on one sentinel of the list, starting with the one that named our server.
//!   When that sentinel goes away, the next one of the list is used; after a whole round of
//!   failures it waits (`RETRY_INITIAL`, doubling up to `RETRY_MAX`) before the next round. Each
//!   time a subscription is confirmed, that sentinel is also asked where the primary is now, so an
//!   announcement made while no subscription was up is not missed. A primary connection moves
//!   when the announced primary of our group is another server; a replica connection moves when
//!   its replica is the announced primary.
//! - `-READONLY` replies on a primary connection (the multiplexer signals them; the reply itself
//!   still goes to its caller): the server is asked `ROLE` on a fresh connection with the same
//!   options, and the connection moves when it is no longer a master. That covers a primary
//!   demoted without an announcement this client could hear.
//!
//! Nothing is retried: moving is a disconnection like any other for the callers in flight.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{ask_as, confirm_role, open_sentinel, text, Direct, Role, Sentinel};
use super::{Address, ConnectError, ConnectOptions, Reason, SentinelOptions};
use crate::conn::handshake::Exchange;
use crate::resp::{Frame, Limits, Parsed, Parser};

/// The wait after a round in which no sentinel could be subscribed to, doubled each round...
const RETRY_INITIAL: Duration = Duration::from_millis(200);
/// ... up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A subscription that lasted this long ended because its sentinel went away, not because the
/// sentinel drops subscriptions at once.
const STEADY: Duration = Duration::from_secs(1);
/// At most one `ROLE` check per this interval, however many `-READONLY` replies arrive.
const ROLE_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The channel on which sentinels announce a new primary.
const SWITCH_MASTER: &[u8] = b"+switch-master";

/// Resolves when the connection to `server` (which the sentinel at `first` of the list named) must
/// move, with the reason to close it with: `Reason::SentinelFailover` after an announcement,
/// `Reason::WrongRole` when `ROLE` says our primary is no longer one. `readonly` resolves at each
/// `-READONLY` reply the connection received.
pub(crate) async fn follow<R, F>(
    opts: &ConnectOptions,
    sentinel: &SentinelOptions,
    first: usize,
    server: &Address,
    direct: Direct,
    mut readonly: R,
) -> Reason
where
    R: FnMut() -> F,
    F: Future<Output = ()>,
{
    let announced = announcements(sentinel, first, server);
    tokio::pin!(announced);
    let mut next_check = tokio::time::Instant::now();
    loop {
        let readonly = readonly();
        tokio::select! {
            reason = &mut announced => return reason,
            () = async {
                readonly.await;
                tokio::time::sleep_until(next_check).await;
            }, if sentinel.role == Role::Primary => {
                // Announcements are still heard while the check runs.
                tokio::select! {
                    reason = &mut announced => return reason,
                    changed = role_changed(opts, server, direct) => {
                        if let Some(reason) = changed {
                            return reason;
                        }
                    }
                }
                next_check = tokio::time::Instant::now() + ROLE_CHECK_INTERVAL;
            }
        }
    }
}

/// Asks `server` for its `ROLE` on a fresh connection: `Some(WrongRole)` when it is not a master.
/// Any failure to ask is no answer: the connection itself hears of a dead server.
async fn role_changed(opts: &ConnectOptions, server: &Address, direct: Direct) -> Option<Reason> {
    let mut opts = opts.clone();
    opts.address = server.clone();
    opts.sentinel = None;
    // A plain connection: with the cache's tracking, its handshake would read COMMAND again and
    // flush the cache of the connection it checks (`ClientCache::tracking_on`).
    opts.tracking = None;
    let timeout = opts.timeout;
    let check = async {
        let (mut stream, leftover) = direct(opts).await?;
        confirm_role(&mut stream, leftover, Role::Primary).await
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Err(ConnectError::WrongRole(role))) => Some(Reason::WrongRole(role)),
        _ => None,
    }
}

/// Listens to the sentinels, one at a time, until one says our server is not the one to use.
async fn announcements(sentinel: &SentinelOptions, first: usize, server: &Address) -> Reason {
    let count = sentinel.sentinels.len().max(1);
    let mut index = first;
    let mut failed_in_a_row = 0;
    let mut retry = RETRY_INITIAL;
    loop {
        let Some(one) = sentinel.sentinels.get(index % count) else {
            // No sentinel at all (not reachable: options require one): never move.
            return std::future::pending().await;
        };
        let started = tokio::time::Instant::now();
        match listen(one, sentinel, server).await {
            Ok(reason) => return reason,
            // A subscription that held for a while: the sentinel went away, try the next at once.
            Err(Subscribed(true)) if started.elapsed() >= STEADY => {
                failed_in_a_row = 0;
                retry = RETRY_INITIAL;
            }
            // Refused, or confirmed and dropped at once (a sentinel doing so again and again would
            // otherwise be retried in a tight loop): a failure, so a round of them backs off.
            Err(Subscribed(_)) => failed_in_a_row += 1,
        }
        index = index.wrapping_add(1);
        if failed_in_a_row >= count {
            failed_in_a_row = 0;
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

/// Why a subscription ended without a reason to move: whether it had been confirmed.
struct Subscribed(bool);

/// Subscribes to `+switch-master` on `one`, checks where the primary is now, then waits for an
/// announcement that moves us. Ends with `Err` when the sentinel cannot be used or goes away.
async fn listen(
    one: &Sentinel,
    sentinel: &SentinelOptions,
    server: &Address,
) -> Result<Reason, Subscribed> {
    let subscribe = async {
        let (mut stream, leftover) = open_sentinel(one, sentinel).await?;
        let mut io = Exchange::new(&mut stream, leftover);
        match io
            .request(&[b"SUBSCRIBE".as_slice(), SWITCH_MASTER])
            .await?
        {
            Frame::Array(items) | Frame::Push(items)
                if items.first().and_then(text).as_deref() == Some(b"subscribe".as_slice()) => {}
            _ => return Err(ConnectError::Redis("SUBSCRIBE refused".into())),
        }
        let leftover = io.into_leftover();
        Ok::<_, ConnectError>((stream, leftover))
    };
    let (mut stream, mut buf) = tokio::time::timeout(sentinel.timeout, subscribe)
        .await
        .map_err(|_| Subscribed(false))?
        .map_err(|_| Subscribed(false))?;

    // Announcements made before this subscription (while connecting, or while no sentinel could
    // be heard) are not replayed: ask where the primary is now.
    if let Ok(primary) = ask_as(one, sentinel, Role::Primary).await {
        if let Some(reason) = moves(sentinel.role, server, &primary) {
            return Ok(reason);
        }
    }

    let mut parser = Parser::new(Limits::default());
    loop {
        loop {
            match parser.parse(&mut buf) {
                Ok(Parsed::Complete(frame)) => {
                    let announced = switch_master(&frame, &sentinel.group);
                    if let Some(reason) = announced.and_then(|p| moves(sentinel.role, server, &p)) {
                        return Ok(reason);
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(_) => return Err(Subscribed(true)),
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return Err(Subscribed(true)),
        }
    }
}

/// Whether a connection with `role` to `server` must move, the group's primary being `primary`.
fn moves(role: Role, server: &Address, primary: &Address) -> Option<Reason> {
    let moved = match role {
        Role::Primary => primary != server,
        Role::Replica => primary == server,
    };
    moved.then_some(Reason::SentinelFailover)
}

/// The new primary of `group` if `frame` is a `+switch-master` message about it (its payload is
/// `<group> <old ip> <old port> <new ip> <new port>`).
fn switch_master(frame: &Frame, group: &[u8]) -> Option<Address> {
    let (Frame::Array(items) | Frame::Push(items)) = frame else {
        return None;
    };
    let [kind, channel, payload] = items.as_slice() else {
        return None;
    };
    if text(kind)?.as_ref() != b"message" || text(channel)?.as_ref() != SWITCH_MASTER {
        return None;
    }
    let payload: Bytes = text(payload)?;
    let payload = std::str::from_utf8(&payload).ok()?;
    // From the right: the four address fields have no spaces.
    let mut fields = payload.rsplitn(5, ' ');
    let (port, host) = (fields.next()?, fields.next()?);
    let (_old_port, _old_host, name) = (fields.next()?, fields.next()?, fields.next()?);
    if name.as_bytes() != group {
        return None;
    }
    Some(Address::Tcp {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.into(),
            port,
        }
    }

    fn message(payload: &str) -> Frame {
        Frame::Array(vec![bulk("message"), bulk("+switch-master"), bulk(payload)])
    }

    #[test]
    fn switch_master_names_the_new_primary_of_our_group_only() {
        let frame = message("mymaster 10.0.0.1 6379 10.0.0.2 6380");
        assert_eq!(
            switch_master(&frame, b"mymaster"),
            Some(tcp("10.0.0.2", 6380))
        );
        assert_eq!(switch_master(&frame, b"other"), None);
        assert_eq!(
            switch_master(&message("mymaster 10.0.0.1 6379"), b"mymaster"),
            None
        );
        assert_eq!(
            switch_master(&message("mymaster 10.0.0.1 6379 10.0.0.2 x"), b"mymaster"),
            None
        );
        let subscribed = Frame::Array(vec![
            bulk("subscribe"),
            bulk("+switch-master"),
            Frame::Integer(1),
        ]);
        assert_eq!(switch_master(&subscribed, b"mymaster"), None);
    }

    #[test]
    fn a_primary_moves_when_another_server_is_announced_a_replica_when_it_is() {
        let (ours, other) = (tcp("h", 1), tcp("h", 2));
        assert_eq!(moves(Role::Primary, &ours, &ours), None);
        assert_eq!(
            moves(Role::Primary, &ours, &other),
            Some(Reason::SentinelFailover)
        );
        assert_eq!(moves(Role::Replica, &ours, &other), None);
        assert_eq!(
            moves(Role::Replica, &ours, &ours),
            Some(Reason::SentinelFailover)
        );
    }
}
