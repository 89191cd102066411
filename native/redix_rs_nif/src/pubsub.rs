//! The pub/sub side of a connection: the fan-out table and the messages subscribers receive,
//! `{:redix_pubsub, pubsub_pid, ref, type, properties}`, exactly as Redix sends them.
//!
//! Every message to a subscriber is sent from a tokio thread while holding the registry lock, whether
//! it answers a frame from Redis or an operation from the `RedixRs.PubSub` process. One sender side,
//! in one order: a subscriber never sees a message before its `:subscribed`, nor after its
//! `:unsubscribed`.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use redix_rs_core::conn::{Multiplexer, Reason, Routed, Router};
use redix_rs_core::pubsub::{classify, Event, Kind, Registry};
use redix_rs_core::resp::{encode_array_header, encode_bulk, Frame};
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Term};

use crate::handle::ReplyWaiter;
use crate::{atoms, reply};

/// A subscriber: its pid and the reference Redix's messages carry (kept in external term format, as
/// terms cannot outlive the environment they were made in).
#[derive(Clone)]
pub struct Subscriber {
    pid: LocalPid,
    reference: Vec<u8>,
}

impl PartialEq for Subscriber {
    fn eq(&self, other: &Self) -> bool {
        self.pid == other.pid
    }
}

impl Subscriber {
    pub fn new(pid: LocalPid, reference: Term<'_>) -> Self {
        Subscriber {
            pid,
            reference: reference.to_binary().as_slice().to_vec(),
        }
    }
}

/// A change asked for by the `RedixRs.PubSub` process, applied in order on a tokio thread.
pub struct Op {
    pub action: Action,
    pub kind: Kind,
    pub names: Vec<Bytes>,
    pub subscriber: Subscriber,
    /// The names Redis must be told about (first subscriber in, last one out).
    pub redis_names: Vec<Bytes>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Unsubscribe,
    /// A subscriber died: removed without a message.
    Drop,
}

/// The router of a pub/sub connection.
pub struct PubSubRouter {
    /// The `RedixRs.PubSub` process, named in every message.
    owner: LocalPid,
    inner: Mutex<Inner>,
}

/// What the lock guards: the table, and the one environment every message is built in (reused, as
/// `send_and_clear` leaves it empty).
struct Inner {
    registry: Registry<Subscriber>,
    env: OwnedEnv,
}

impl PubSubRouter {
    pub fn new(owner: LocalPid) -> Self {
        let inner = Inner {
            registry: Registry::default(),
            env: OwnedEnv::new(),
        };
        PubSubRouter {
            owner,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `op`, telling subscribers what it means for them, then writes what Redis must hear.
    pub fn apply(&self, op: Op, mux: &Multiplexer<ReplyWaiter>) {
        let to_redis: HashSet<&Bytes> = op.redis_names.iter().collect();
        let mut guard = self.lock();
        let Inner { registry, env } = &mut *guard;
        for name in &op.names {
            let sub = op.subscriber.clone();
            match op.action {
                Action::Subscribe if to_redis.contains(name) => {
                    registry.add_pending(op.kind, name.clone(), sub);
                }
                Action::Subscribe => {
                    registry.add_confirmed(op.kind, name.clone(), sub);
                    self.notify(env, &op.subscriber, subscribed(op.kind), op.kind, name);
                }
                Action::Unsubscribe => {
                    registry.remove(op.kind, name, &sub);
                    self.notify(env, &op.subscriber, unsubscribed(op.kind), op.kind, name);
                }
                Action::Drop => {
                    registry.remove(op.kind, name, &sub);
                }
            }
        }
        drop(guard);
        if !op.redis_names.is_empty() {
            let command = redis_command(op.action, op.kind, &op.redis_names);
            // A closed connection is fine: the PubSub process replays subscriptions on reconnect.
            let _ = mux.submit_unanswered(&command, op.redis_names.len());
        }
    }

    /// `{:redix_pubsub, owner, ref, type, %{channel | pattern: name}}`.
    fn notify(&self, env: &mut OwnedEnv, to: &Subscriber, type_: Atom, kind: Kind, name: &Bytes) {
        let key = if kind == Kind::Pattern {
            atoms::pattern()
        } else {
            atoms::channel()
        };
        self.send(env, to, type_, |env| {
            map(env, [(key, reply::binary(env, name))])
        });
    }

    fn deliver(&self, inner: &mut Inner, event: &Event) {
        let Inner { registry, env } = inner;
        match event {
            Event::Message {
                kind,
                channel,
                payload,
            } => {
                let type_ = if *kind == Kind::Shard {
                    atoms::smessage()
                } else {
                    atoms::message()
                };
                for sub in registry.recipients(*kind, channel) {
                    self.send(env, sub, type_, |env| {
                        map(
                            env,
                            [
                                (atoms::channel(), reply::binary(env, channel)),
                                (atoms::payload(), reply::binary(env, payload)),
                            ],
                        )
                    });
                }
            }
            Event::PMessage {
                pattern,
                channel,
                payload,
            } => {
                for sub in registry.recipients(Kind::Pattern, pattern) {
                    self.send(env, sub, atoms::pmessage(), |env| {
                        map(
                            env,
                            [
                                (atoms::channel(), reply::binary(env, channel)),
                                (atoms::pattern(), reply::binary(env, pattern)),
                                (atoms::payload(), reply::binary(env, payload)),
                            ],
                        )
                    });
                }
            }
            Event::Subscribed { .. } | Event::Unsubscribed { .. } => {}
        }
    }

    fn send(
        &self,
        env: &mut OwnedEnv,
        to: &Subscriber,
        type_: Atom,
        properties: impl for<'a> FnOnce(Env<'a>) -> Term<'a>,
    ) {
        let _ = env.send_and_clear(&to.pid, |env| {
            let reference = env.binary_to_term(&to.reference).map(|(t, _)| t);
            let reference = reference.unwrap_or_else(|| atoms::nil().encode(env));
            (
                atoms::redix_pubsub(),
                self.owner,
                reference,
                type_,
                properties(env),
            )
                .encode(env)
        });
    }
}

impl Router for PubSubRouter {
    fn route(&self, frame: &Frame) -> Routed {
        let Some(event) = classify(frame) else {
            return Routed::NotMine;
        };
        // Everything under the lock: an operation applied meanwhile would send out of order.
        let mut guard = self.lock();
        if let Event::Subscribed { kind, name } = &event {
            let Inner { registry, env } = &mut *guard;
            for sub in registry.confirm(*kind, name) {
                self.notify(env, &sub, subscribed(*kind), *kind, name);
            }
        }
        self.deliver(&mut guard, &event);
        match event {
            Event::Subscribed { .. } | Event::Unsubscribed { .. } => Routed::Confirmation,
            Event::Message { .. } | Event::PMessage { .. } => Routed::Message,
        }
    }

    /// Tells the `RedixRs.PubSub` process, which logs it: `{:redix_rs_pubsub_rejected, error}`.
    fn rejected(&self, error: &Frame) {
        let mut guard = self.lock();
        let _ = guard.env.send_and_clear(&self.owner, |env| {
            (atoms::redix_rs_pubsub_rejected(), reply::frame(env, error)).encode(env)
        });
    }

    /// Each subscriber hears of the disconnection once, however many channels it had.
    fn closed(&self, reason: &Reason) {
        let mut guard = self.lock();
        let Inner { registry, env } = &mut *guard;
        for sub in registry.subscribers() {
            self.send(env, &sub, atoms::disconnected(), |env| {
                let error = reply::connection_error(env, reason);
                map(env, [(atoms::error(), error)])
            });
        }
    }
}

fn subscribed(kind: Kind) -> Atom {
    match kind {
        Kind::Channel => atoms::subscribed(),
        Kind::Pattern => atoms::psubscribed(),
        Kind::Shard => atoms::ssubscribed(),
    }
}

fn unsubscribed(kind: Kind) -> Atom {
    match kind {
        Kind::Channel => atoms::unsubscribed(),
        Kind::Pattern => atoms::punsubscribed(),
        Kind::Shard => atoms::sunsubscribed(),
    }
}

/// `SUBSCRIBE a b …` and its siblings, as RESP.
fn redis_command(action: Action, kind: Kind, names: &[Bytes]) -> BytesMut {
    let verb: &[u8] = match (action, kind) {
        (Action::Subscribe, Kind::Channel) => b"SUBSCRIBE",
        (Action::Subscribe, Kind::Pattern) => b"PSUBSCRIBE",
        (Action::Subscribe, Kind::Shard) => b"SSUBSCRIBE",
        (_, Kind::Channel) => b"UNSUBSCRIBE",
        (_, Kind::Pattern) => b"PUNSUBSCRIBE",
        (_, Kind::Shard) => b"SUNSUBSCRIBE",
    };
    let mut out = BytesMut::new();
    encode_array_header(names.len() + 1, &mut out);
    encode_bulk(verb, &mut out);
    names.iter().for_each(|name| encode_bulk(name, &mut out));
    out
}

/// A map with atom keys, built without allocating.
fn map<'a, const N: usize>(env: Env<'a>, fields: [(Atom, Term<'a>); N]) -> Term<'a> {
    let keys = fields.map(|(k, _)| k.encode(env));
    let values = fields.map(|(_, v)| v);
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}
