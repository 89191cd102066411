//! Frames that are not replies: the one place that decides which frames a connection takes out of
//! the reply stream, and of what kind each is, so that none is ever handed to a caller as its reply.
//!
//! The rules:
//! - on every connection, a RESP3 push frame (`>`) is out of band: pub/sub messages and
//!   confirmations, client-tracking `invalidate`, and whatever else Redis may push (dropped);
//! - on a connection in subscribed mode (`RedixRs.PubSub`) a RESP2 array shaped as a pub/sub message
//!   (any payload) or confirmation is out of band too: in RESP2 that is the only way Redis sends them;
//! - on a RESP2 command connection nothing is classified by shape: `LRANGE` returning
//!   `["message", "a", "b"]` is its caller's reply.
//!
//! Whether a (un)subscribe confirmation answers a command of this connection or was sent by Redis on
//! its own (a `sunsubscribe` when a slot moves) depends on the reply queue, so the multiplexer makes
//! that last distinction (see [`OutOfBand`]).

use bytes::Bytes;

use crate::pubsub::{self, Event};
use crate::resp::Frame;

/// How a connection's frames are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A command connection: only RESP3 pushes are out of band.
    Commands,
    /// A subscribed (`RedixRs.PubSub`) connection: RESP2 pub/sub arrays are out of band too.
    Subscribed,
}

/// What a frame that is not a reply is, as the classifier sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    /// `message`, `pmessage`, `smessage`, with a payload of any type.
    Message(Event),
    /// A (un)subscribe confirmation: answers this connection's command, or ends a subscription on
    /// Redis's initiative (the multiplexer tells which).
    Subscription(Event),
    /// A client-tracking invalidation (RESP3 `invalidate` push): a list of keys, or null for all.
    Invalidation(Frame),
    /// A push no consumer takes (RESP3 allows new kinds): dropped, never a reply.
    Other,
}

/// What the consumer of out-of-band frames is handed.
#[derive(Debug, Clone, PartialEq)]
pub enum OutOfBand {
    /// A pub/sub message, whatever its payload.
    Message(Event),
    /// Redis confirmed a (un)subscription this connection asked for.
    Confirmation(Event),
    /// Redis ended a subscription on its own (a sharded channel whose slot moved elsewhere).
    Ended(Event),
    /// A client-tracking invalidation: a list of keys, or null when every key is invalid (FLUSHALL).
    Invalidation(Frame),
}

/// Classifies `frame` read on a connection in `mode`: `None` for a reply to a caller.
pub fn classify(frame: &Frame, mode: Mode) -> Option<Classified> {
    match frame {
        Frame::Push(items) => Some(classify_push(frame, items)),
        Frame::Array(_) if mode == Mode::Subscribed => pubsub::classify(frame).map(by_event),
        _ => None,
    }
}

fn classify_push(frame: &Frame, items: &[Frame]) -> Classified {
    if let Some(event) = pubsub::classify(frame) {
        return by_event(event);
    }
    match items {
        [Frame::Bulk(tag) | Frame::Simple(tag), keys] if tag_is(tag, b"invalidate") => {
            Classified::Invalidation(keys.clone())
        }
        _ => Classified::Other,
    }
}

fn by_event(event: Event) -> Classified {
    match event {
        Event::Message { .. } | Event::PMessage { .. } => Classified::Message(event),
        Event::Subscribed { .. } | Event::Unsubscribed { .. } => Classified::Subscription(event),
    }
}

fn tag_is(tag: &Bytes, expected: &[u8]) -> bool {
    tag.eq_ignore_ascii_case(expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Kind;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn message(payload: Frame) -> Vec<Frame> {
        vec![b("message"), b("ch"), payload]
    }

    #[test]
    fn a_resp2_command_connection_classifies_nothing_by_shape() {
        let lrange = Frame::Array(vec![b("message"), b("a"), b("b")]);
        assert_eq!(classify(&lrange, Mode::Commands), None);
        let confirmation = Frame::Array(vec![b("sunsubscribe"), b("s"), Frame::Integer(0)]);
        assert_eq!(classify(&confirmation, Mode::Commands), None);
    }

    #[test]
    fn a_subscribed_connection_takes_messages_of_any_payload() {
        for payload in [
            b("hi"),
            Frame::Array(vec![b("k1"), b("k2")]),
            Frame::NullArray,
            Frame::NullBulk,
            Frame::Integer(7),
        ] {
            let frame = Frame::Array(message(payload.clone()));
            assert_eq!(
                classify(&frame, Mode::Subscribed),
                Some(Classified::Message(Event::Message {
                    kind: Kind::Channel,
                    channel: bytes("ch"),
                    payload
                }))
            );
        }
    }

    #[test]
    fn a_pong_is_a_reply_even_when_subscribed() {
        let pong = Frame::Array(vec![b("pong"), b("")]);
        assert_eq!(classify(&pong, Mode::Subscribed), None);
        assert_eq!(classify(&b("PONG"), Mode::Subscribed), None);
    }

    #[test]
    fn confirmations_are_subscriptions() {
        let frame = Frame::Array(vec![b("sunsubscribe"), b("s"), Frame::Integer(0)]);
        assert_eq!(
            classify(&frame, Mode::Subscribed),
            Some(Classified::Subscription(Event::Unsubscribed {
                kind: Kind::Shard,
                name: bytes("s")
            }))
        );
    }

    #[test]
    fn every_push_is_out_of_band_on_every_connection() {
        for mode in [Mode::Commands, Mode::Subscribed] {
            let invalidate = Frame::Push(vec![b("invalidate"), Frame::Array(vec![b("k")])]);
            assert_eq!(
                classify(&invalidate, mode),
                Some(Classified::Invalidation(Frame::Array(vec![b("k")])))
            );
            let flush = Frame::Push(vec![b("invalidate"), Frame::Null]);
            assert_eq!(
                classify(&flush, mode),
                Some(Classified::Invalidation(Frame::Null))
            );
            let msg = Frame::Push(message(Frame::Array(vec![])));
            assert!(matches!(classify(&msg, mode), Some(Classified::Message(_))));
            let unknown = Frame::Push(vec![b("something-new"), Frame::Integer(1)]);
            assert_eq!(classify(&unknown, mode), Some(Classified::Other));
            assert_eq!(
                classify(&Frame::Push(vec![]), mode),
                Some(Classified::Other)
            );
        }
    }
}
