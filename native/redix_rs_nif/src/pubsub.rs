//! The pub/sub side of a connection: the fan-out table and the messages subscribers receive,
//! `{:redix_pubsub, pubsub_pid, ref, type, properties}`, exactly as Redix sends them.
//!
//! Every message to a subscriber is sent from a tokio thread while holding the registry lock, whether
//! it answers a frame from Redis or an operation from the `RedixRs.PubSub` process. One sender side,
//! in one order: a subscriber never sees a message before its `:subscribed`, nor after its
//! `:unsubscribed`.

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use redix_rs_core::conn::{Multiplexer, Reason, Router};
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
    registry: Mutex<Registry<Subscriber>>,
}

impl PubSubRouter {
    pub fn new(owner: LocalPid) -> Self {
        PubSubRouter {
            owner,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry<Subscriber>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `op`, telling subscribers what it means for them, then writes what Redis must hear.
    pub fn apply(&self, op: Op, mux: &Multiplexer<ReplyWaiter>) {
        let mut registry = self.lock();
        for name in &op.names {
            match op.action {
                Action::Subscribe if op.redis_names.contains(name) => {
                    registry.add_pending(op.kind, name.clone(), op.subscriber.clone());
                }
                Action::Subscribe => {
                    registry.add_confirmed(op.kind, name.clone(), op.subscriber.clone());
                    self.notify(&op.subscriber, subscribed(op.kind), op.kind, name);
                }
                Action::Unsubscribe => {
                    registry.remove(op.kind, name, &op.subscriber);
                    self.notify(&op.subscriber, unsubscribed(op.kind), op.kind, name);
                }
                Action::Drop => {
                    registry.remove(op.kind, name, &op.subscriber);
                }
            }
        }
        drop(registry);
        if !op.redis_names.is_empty() {
            let command = redis_command(op.action, op.kind, &op.redis_names);
            // A closed connection is fine: the PubSub process replays subscriptions on reconnect.
            let _ = mux.submit_unanswered(&command);
        }
    }

    /// `{:redix_pubsub, owner, ref, type, %{channel | pattern: name}}`.
    fn notify(&self, to: &Subscriber, kind_atom: Atom, kind: Kind, name: &Bytes) {
        self.send(to, kind_atom, |env| {
            let key = if kind == Kind::Pattern {
                atoms::pattern()
            } else {
                atoms::channel()
            };
            map(env, &[(key, reply::binary(env, name))])
        });
    }

    fn deliver(&self, registry: &Registry<Subscriber>, event: &Event) {
        match event {
            Event::Message {
                kind,
                channel,
                payload,
            } => {
                let tag = if *kind == Kind::Shard {
                    atoms::smessage()
                } else {
                    atoms::message()
                };
                for sub in registry.recipients(*kind, channel) {
                    self.send(sub, tag, |env| {
                        let channel = reply::binary(env, channel);
                        map(
                            env,
                            &[
                                (atoms::channel(), channel),
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
                    self.send(sub, atoms::pmessage(), |env| {
                        let fields = [
                            (atoms::channel(), reply::binary(env, channel)),
                            (atoms::pattern(), reply::binary(env, pattern)),
                            (atoms::payload(), reply::binary(env, payload)),
                        ];
                        map(env, &fields)
                    });
                }
            }
            Event::Subscribed { .. } | Event::Unsubscribed { .. } => {}
        }
    }

    fn send(
        &self,
        to: &Subscriber,
        kind: Atom,
        properties: impl for<'a> FnOnce(Env<'a>) -> Term<'a>,
    ) {
        let mut env = OwnedEnv::new();
        let _ = env.send_and_clear(&to.pid, |env| {
            let reference = env.binary_to_term(&to.reference).map(|(t, _)| t);
            let reference = reference.unwrap_or_else(|| atoms::nil().encode(env));
            (
                atoms::redix_pubsub(),
                self.owner,
                reference,
                kind,
                properties(env),
            )
                .encode(env)
        });
    }
}

impl Router for PubSubRouter {
    fn route(&self, frame: &Frame) -> bool {
        let Some(event) = classify(frame) else {
            return false;
        };
        let mut registry = self.lock();
        if let Event::Subscribed { kind, name } = &event {
            for sub in registry.confirm(*kind, name) {
                self.notify(&sub, subscribed(*kind), *kind, name);
            }
        }
        self.deliver(&registry, &event);
        // Keep the lock to the end: an operation applied meanwhile would send out of order.
        drop(registry);
        true
    }

    /// Each subscriber hears of the disconnection once, however many channels it had.
    fn closed(&self, reason: &Reason) {
        let registry = self.lock();
        for sub in registry.subscribers() {
            self.send(&sub, atoms::disconnected(), |env| {
                let error = reply::connection_error(env, reason);
                map(env, &[(atoms::error(), error)])
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

fn map<'a>(env: Env<'a>, fields: &[(Atom, Term<'a>)]) -> Term<'a> {
    let keys: Vec<Term<'a>> = fields.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term<'a>> = fields.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}
