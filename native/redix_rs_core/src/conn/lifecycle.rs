//! The life of one connection attempt: establish (directly or through sentinels), serve until the
//! connection ends, and report each step to whoever owns the connection (the `RedixRs` process, through
//! the NIF crate; a test here). Reconnecting is the owner's decision (backoff, `exit_on_disconnection`),
//! so one call of [`supervise`] is one attempt.
//!
//! A panic anywhere in the attempt (a waiter's code, the parser) fails only this connection: every
//! waiter is answered, and the owner hears of a disconnection with reason `{:panic, message}`.

use std::sync::Arc;

use super::establish::sentinel_follow;
use super::{
    establish_with, ConnectError, ConnectOptions, Multiplexer, Reason, SentinelEvent, Waiter,
};

/// What the owner of a connection hears, in order: any number of `Sentinel` events, then `Connected`
/// followed by `Disconnected`, or `ConnectFailed` alone.
#[derive(Debug)]
pub enum Lifecycle {
    /// A sentinel failed, or answered (which one to ask first next time).
    Sentinel(SentinelEvent),
    /// The handshake is done: commands are being served.
    Connected,
    /// An established connection ended; every waiter has been failed with this reason.
    Disconnected(Reason),
    /// The attempt failed before the connection was established; waiters were failed with
    /// `ConnectError::reason`.
    ConnectFailed(ConnectError),
}

/// Hears a connection's lifecycle (from a tokio thread).
pub trait LifecycleListener: Send + Sync + 'static {
    fn event(&self, event: Lifecycle);
}

/// Runs one connection attempt in its own task, so that a panic fails only this connection, reported
/// as a disconnection with every waiter answered.
pub async fn supervise<W: Waiter, L: LifecycleListener>(
    mux: Multiplexer<W>,
    opts: ConnectOptions,
    listener: Arc<L>,
) {
    let task = tokio::spawn(serve(mux.clone(), opts, listener.clone()));
    if let Err(err) = task.await {
        let reason = Reason::Panic(panic_message(err));
        mux.abort(&reason);
        listener.event(Lifecycle::Disconnected(reason));
    }
}

/// Establishes the connection (abandoned at once if its owner closes it meanwhile), then serves it.
async fn serve<W: Waiter, L: LifecycleListener>(
    mux: Multiplexer<W>,
    opts: ConnectOptions,
    listener: Arc<L>,
) {
    // Through sentinels: which one named the server, and the server, for the watcher.
    let mut named = None;
    let mut on_sentinel = |event: SentinelEvent| {
        if let SentinelEvent::Answered { index, server } = &event {
            named = Some((*index, server.clone()));
        }
        listener.event(Lifecycle::Sentinel(event))
    };
    let attempt = tokio::select! {
        result = establish_with(&opts, &mut on_sentinel) => result,
        _closed = mux.closed_by_owner() => Err(ConnectError::Closed),
    };
    match attempt {
        Ok((stream, leftover)) => {
            listener.event(Lifecycle::Connected);
            let run = mux.run(stream, leftover);
            let reason = match (&opts.sentinel, named) {
                // The watcher runs as long as the connection, in this task: when it says the
                // connection must move, the connection is closed with its reason (and `run`
                // returns); when the connection ends first, the watcher is dropped.
                (Some(sentinel), Some((index, server))) => {
                    let watch = async {
                        let readonly = || mux.readonly_reply();
                        let follow = sentinel_follow(&opts, sentinel, index, &server, readonly);
                        mux.close(follow.await);
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        reason = run => reason,
                        () = watch => unreachable!("the watcher never ends by itself"),
                    }
                }
                _ => run.await,
            };
            listener.event(Lifecycle::Disconnected(reason));
        }
        Err(err) => {
            mux.abort(&err.reason());
            listener.event(Lifecycle::ConnectFailed(err));
        }
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    if !err.is_panic() {
        return "connection task cancelled".to_string();
    }
    let payload = err.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}
