//! What subscribers receive: the properties of each `{:redix_pubsub, pid, ref, type, properties}`
//! message, kept as bytes until the PubSub process builds their terms (once per event) in `drain`.

use std::sync::Arc;

use bytes::Bytes;
use redix_rs_core::conn::Reason;
use redix_rs_core::pubsub::Kind;
use redix_rs_core::resp::Frame;
use rustler::{Atom, Encoder, Env, Resource, ResourceArc, Term};

use crate::{atoms, reply};

/// From this size on, a payload is handed to subscribers without being copied by `drain`; below it a
/// copy there costs tens of microseconds at most.
const SHARED_PAYLOAD: usize = 256 * 1024;

/// A message's payload: usually a string, but any RESP value (a client-tracking invalidation carries a
/// list of keys, or nil). `drain` runs on a normal scheduler, where copying a payload of many megabytes
/// would hold the scheduler for milliseconds (64 MiB measured 90-100 ms): a large string payload is
/// copied once on the tokio thread that parsed it instead, and every subscriber gets a binary over that
/// copy, which costs `drain` the same whatever its size.
pub enum Payload {
    /// Copied into a binary by `drain` (cheaper than a resource for small payloads).
    Copied(Bytes),
    /// Shared by every subscriber's binary; freed when the last of them is garbage-collected.
    Shared(ResourceArc<SharedBytes>),
    /// A payload that is not a string, converted like a reply by `drain`.
    Value(Frame),
}

impl Payload {
    /// Wraps a payload by kind and size; runs where the frame was parsed (a tokio thread).
    pub fn new(frame: Frame) -> Payload {
        match frame {
            Frame::Bulk(bytes) => Payload::string(&bytes),
            other => Payload::Value(other),
        }
    }

    fn string(bytes: &Bytes) -> Payload {
        if bytes.len() >= SHARED_PAYLOAD {
            // A copy, not a view: `bytes` lies in the connection's read buffer, which may be far larger
            // than the payload and would stay allocated for as long as any subscriber keeps its binary.
            Payload::Shared(ResourceArc::new(SharedBytes(bytes[..].into())))
        } else {
            Payload::Copied(bytes.clone())
        }
    }

    /// The bytes of a shared payload (which `drain` does not copy).
    fn shared_len(&self) -> usize {
        match self {
            Payload::Shared(shared) => shared.0.len(),
            _ => 0,
        }
    }

    /// The bytes `drain` copies for it.
    fn copied_len(&self) -> usize {
        match self {
            Payload::Copied(b) => b.len(),
            Payload::Shared(_) => 0,
            Payload::Value(frame) => frame.payload_len(),
        }
    }

    fn term<'a>(&self, env: Env<'a>) -> Term<'a> {
        match self {
            Payload::Copied(b) => reply::binary(env, b),
            Payload::Shared(shared) => shared.make_binary(env, |s| &s.0[..]).encode(env),
            Payload::Value(frame) => reply::frame(env, frame),
        }
    }
}

/// The bytes behind a shared payload's binaries.
pub struct SharedBytes(Box<[u8]>);

#[rustler::resource_impl]
impl Resource for SharedBytes {}

/// The properties map of one event, shared by all of its deliveries.
pub enum Props {
    Name {
        key: Atom,
        name: Bytes,
    },
    Message {
        channel: Bytes,
        payload: Payload,
    },
    PMessage {
        channel: Bytes,
        pattern: Bytes,
        payload: Payload,
    },
    Disconnected(Reason),
}

impl Props {
    /// Bytes the event holds while it waits (names and payload, a shared payload included), for the
    /// backlog's bound.
    pub fn memory(&self) -> usize {
        let shared = match self {
            Props::Message { payload, .. } | Props::PMessage { payload, .. } => {
                payload.shared_len()
            }
            _ => 0,
        };
        self.size() + shared
    }

    /// Bytes of names and payload that `drain` copies, to bound the work of one call.
    pub fn size(&self) -> usize {
        match self {
            Props::Name { name, .. } => name.len(),
            Props::Message { channel, payload } => channel.len() + payload.copied_len(),
            Props::PMessage {
                channel,
                pattern,
                payload,
            } => channel.len() + pattern.len() + payload.copied_len(),
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
                (atoms::payload(), payload.term(env)),
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
                (atoms::payload(), payload.term(env)),
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
