//! What subscribers receive: the properties of each `{:redix_pubsub, pid, ref, type, properties}`
//! message, kept as bytes until the PubSub process builds their terms (once per event) in `drain`.

use std::sync::Arc;

use bytes::Bytes;
use redix_rs_core::conn::Reason;
use redix_rs_core::pubsub::Kind;
use rustler::{Atom, Encoder, Env, Term};

use crate::{atoms, reply};

/// The properties map of one event, shared by all of its deliveries.
pub enum Props {
    Name {
        key: Atom,
        name: Bytes,
    },
    Message {
        channel: Bytes,
        payload: Bytes,
    },
    PMessage {
        channel: Bytes,
        pattern: Bytes,
        payload: Bytes,
    },
    Disconnected(Reason),
}

impl Props {
    /// Bytes of names and payload, to bound the work of one `drain` call.
    pub fn size(&self) -> usize {
        match self {
            Props::Name { name, .. } => name.len(),
            Props::Message { channel, payload } => channel.len() + payload.len(),
            Props::PMessage {
                channel,
                pattern,
                payload,
            } => channel.len() + pattern.len() + payload.len(),
            Props::Disconnected(_) => 0,
        }
    }
}

/// `%{channel: name}` or `%{pattern: name}`.
pub fn name_props(kind: Kind, name: &Bytes) -> Arc<Props> {
    let key = if kind == Kind::Pattern {
        atoms::pattern()
    } else {
        atoms::channel()
    };
    Arc::new(Props::Name {
        key,
        name: name.clone(),
    })
}

/// The properties as a map term.
pub fn props_term<'a>(env: Env<'a>, props: &Props) -> Term<'a> {
    match props {
        Props::Name { key, name } => map(env, [(*key, reply::binary(env, name))]),
        Props::Message { channel, payload } => map(
            env,
            [
                (atoms::channel(), reply::binary(env, channel)),
                (atoms::payload(), reply::binary(env, payload)),
            ],
        ),
        Props::PMessage {
            channel,
            pattern,
            payload,
        } => map(
            env,
            [
                (atoms::channel(), reply::binary(env, channel)),
                (atoms::pattern(), reply::binary(env, pattern)),
                (atoms::payload(), reply::binary(env, payload)),
            ],
        ),
        Props::Disconnected(reason) => map(
            env,
            [(atoms::error(), reply::connection_error(env, reason))],
        ),
    }
}

/// The `:subscribed` message type of `kind`.
pub fn subscribed(kind: Kind) -> Atom {
    match kind {
        Kind::Channel => atoms::subscribed(),
        Kind::Pattern => atoms::psubscribed(),
        Kind::Shard => atoms::ssubscribed(),
    }
}

/// The `:unsubscribed` message type of `kind`.
pub fn unsubscribed(kind: Kind) -> Atom {
    match kind {
        Kind::Channel => atoms::unsubscribed(),
        Kind::Pattern => atoms::punsubscribed(),
        Kind::Shard => atoms::sunsubscribed(),
    }
}

/// A map with atom keys, built without allocating.
fn map<'a, const N: usize>(env: Env<'a>, fields: [(Atom, Term<'a>); N]) -> Term<'a> {
    let keys = fields.map(|(k, _)| k.encode(env));
    let values = fields.map(|(_, v)| v);
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}
