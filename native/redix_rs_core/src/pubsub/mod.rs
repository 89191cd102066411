//! Pub/sub: recognising what a subscribed connection receives, and who should get it.
//!
//! On a subscribed connection Redis sends confirmations (`subscribe`, `unsubscribe`, ...) and messages
//! (`message`, `pmessage`, `smessage`) as arrays (RESP2) or push frames (RESP3). [`classify`] turns those
//! frames into [`Event`]s; [`Registry`] maps channels and patterns to subscribers. Which frames are
//! looked at at all is decided in one place, `conn::out_of_band`.

mod batch;
mod registry;

pub use batch::{take_batch, Deliveries};
pub use registry::Registry;

use bytes::Bytes;

use crate::resp::Frame;

/// The three namespaces of subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Channel,
    Pattern,
    /// Sharded channels (Redis 7 `SSUBSCRIBE`).
    Shard,
}

/// Something Redis said to a subscribed connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Subscribed {
        kind: Kind,
        name: Bytes,
    },
    Unsubscribed {
        kind: Kind,
        name: Bytes,
    },
    /// A message; its payload is any RESP value (a client-tracking invalidation carries a list of
    /// keys, or null).
    Message {
        kind: Kind,
        channel: Bytes,
        payload: Frame,
    },
    PMessage {
        pattern: Bytes,
        channel: Bytes,
        payload: Frame,
    },
}

/// The channel on which Redis publishes client-tracking invalidations (RESP2 `REDIRECT`), and under
/// which RESP3 `invalidate` pushes are delivered to subscribers.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// Recognises a pub/sub frame by its shape; anything else (a PONG for a caller, say) gives `None`.
/// Whether a frame of that shape is out of band at all depends on the connection: see
/// `conn::out_of_band`.
pub fn classify(frame: &Frame) -> Option<Event> {
    let items = match frame {
        Frame::Array(items) | Frame::Push(items) => items,
        _ => return None,
    };
    let (tag, rest) = items.split_first()?;
    let tag = bulk(tag)?;
    match (tag.as_ref(), rest) {
        (b"subscribe", [name, _count]) => subscribed(Kind::Channel, name),
        (b"psubscribe", [name, _count]) => subscribed(Kind::Pattern, name),
        (b"ssubscribe", [name, _count]) => subscribed(Kind::Shard, name),
        (b"unsubscribe", [name, _count]) => unsubscribed(Kind::Channel, name),
        (b"punsubscribe", [name, _count]) => unsubscribed(Kind::Pattern, name),
        (b"sunsubscribe", [name, _count]) => unsubscribed(Kind::Shard, name),
        (b"message", [channel, payload]) => message(Kind::Channel, channel, payload),
        (b"smessage", [channel, payload]) => message(Kind::Shard, channel, payload),
        (b"pmessage", [pattern, channel, payload]) => Some(Event::PMessage {
            pattern: bulk(pattern)?,
            channel: bulk(channel)?,
            payload: payload.clone(),
        }),
        _ => None,
    }
}

fn subscribed(kind: Kind, name: &Frame) -> Option<Event> {
    Some(Event::Subscribed {
        kind,
        name: bulk(name)?,
    })
}

/// `UNSUBSCRIBE` with no subscription at all is confirmed with a null name: nothing to report.
fn unsubscribed(kind: Kind, name: &Frame) -> Option<Event> {
    match name {
        Frame::NullBulk | Frame::Null => Some(Event::Unsubscribed {
            kind,
            name: Bytes::new(),
        }),
        other => Some(Event::Unsubscribed {
            kind,
            name: bulk(other)?,
        }),
    }
}

fn message(kind: Kind, channel: &Frame, payload: &Frame) -> Option<Event> {
    Some(Event::Message {
        kind,
        channel: bulk(channel)?,
        payload: payload.clone(),
    })
}

fn bulk(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(items: &[&str]) -> Frame {
        Frame::Array(
            items
                .iter()
                .map(|s| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes())))
                .collect(),
        )
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn classifies_confirmations() {
        let frame = Frame::Array(vec![
            Frame::Bulk(b("subscribe")),
            Frame::Bulk(b("ch")),
            Frame::Integer(1),
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::Subscribed {
                kind: Kind::Channel,
                name: b("ch")
            })
        );
        let frame = Frame::Push(vec![
            Frame::Bulk(b("psubscribe")),
            Frame::Bulk(b("p*")),
            Frame::Integer(2),
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::Subscribed {
                kind: Kind::Pattern,
                name: b("p*")
            })
        );
        let frame = Frame::Array(vec![
            Frame::Bulk(b("sunsubscribe")),
            Frame::Bulk(b("s")),
            Frame::Integer(0),
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::Unsubscribed {
                kind: Kind::Shard,
                name: b("s")
            })
        );
        let frame = Frame::Array(vec![
            Frame::Bulk(b("unsubscribe")),
            Frame::NullBulk,
            Frame::Integer(0),
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::Unsubscribed {
                kind: Kind::Channel,
                name: Bytes::new()
            })
        );
    }

    #[test]
    fn classifies_messages() {
        assert_eq!(
            classify(&arr(&["message", "ch", "hi"])),
            Some(Event::Message {
                kind: Kind::Channel,
                channel: b("ch"),
                payload: Frame::Bulk(b("hi"))
            })
        );
        assert_eq!(
            classify(&arr(&["smessage", "ch", "hi"])),
            Some(Event::Message {
                kind: Kind::Shard,
                channel: b("ch"),
                payload: Frame::Bulk(b("hi"))
            })
        );
        assert_eq!(
            classify(&arr(&["pmessage", "c*", "ch", "hi"])),
            Some(Event::PMessage {
                pattern: b("c*"),
                channel: b("ch"),
                payload: Frame::Bulk(b("hi"))
            })
        );
    }

    #[test]
    fn a_payload_may_be_any_value() {
        let keys = Frame::Array(vec![Frame::Bulk(b("k1")), Frame::Bulk(b("k2"))]);
        let frame = Frame::Array(vec![
            Frame::Bulk(b("message")),
            Frame::Bulk(b("__redis__:invalidate")),
            keys.clone(),
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::Message {
                kind: Kind::Channel,
                channel: b("__redis__:invalidate"),
                payload: keys
            })
        );
        let frame = Frame::Push(vec![
            Frame::Bulk(b("pmessage")),
            Frame::Bulk(b("p*")),
            Frame::Bulk(b("pc")),
            Frame::NullArray,
        ]);
        assert_eq!(
            classify(&frame),
            Some(Event::PMessage {
                pattern: b("p*"),
                channel: b("pc"),
                payload: Frame::NullArray
            })
        );
    }

    #[test]
    fn leaves_other_frames_alone() {
        assert_eq!(classify(&arr(&["pong", ""])), None);
        assert_eq!(classify(&Frame::Simple(b("PONG"))), None);
        assert_eq!(classify(&arr(&["message", "only-channel"])), None);
        assert_eq!(
            classify(&Frame::Array(vec![
                Frame::Bulk(b("message")),
                Frame::Integer(1),
                Frame::Bulk(b("x"))
            ])),
            None,
            "a channel is a string"
        );
        assert_eq!(classify(&Frame::Array(vec![])), None);
        assert_eq!(
            classify(&Frame::Array(vec![
                Frame::Integer(1),
                Frame::Integer(2),
                Frame::Integer(3)
            ])),
            None
        );
    }
}
