//! Pub/sub: recognising what a subscribed connection receives, and who should get it.
//!
//! On a subscribed connection Redis sends confirmations (`subscribe`, `unsubscribe`, ...) and messages
//! (`message`, `pmessage`, `smessage`) as arrays (RESP2) or push frames (RESP3). [`classify`] turns those
//! frames into [`Event`]s; [`Registry`] maps channels and patterns to subscribers.

mod registry;

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
    Message {
        kind: Kind,
        channel: Bytes,
        payload: Bytes,
    },
    PMessage {
        pattern: Bytes,
        channel: Bytes,
        payload: Bytes,
    },
}

/// Recognises a pub/sub frame; anything else (a PONG for a caller, say) gives `None`.
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
            payload: bulk(payload)?,
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
        payload: bulk(payload)?,
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
                payload: b("hi")
            })
        );
        assert_eq!(
            classify(&arr(&["smessage", "ch", "hi"])),
            Some(Event::Message {
                kind: Kind::Shard,
                channel: b("ch"),
                payload: b("hi")
            })
        );
        assert_eq!(
            classify(&arr(&["pmessage", "c*", "ch", "hi"])),
            Some(Event::PMessage {
                pattern: b("c*"),
                channel: b("ch"),
                payload: b("hi")
            })
        );
    }

    #[test]
    fn leaves_other_frames_alone() {
        assert_eq!(classify(&arr(&["pong", ""])), None);
        assert_eq!(classify(&Frame::Simple(b("PONG"))), None);
        assert_eq!(classify(&arr(&["message", "only-channel"])), None);
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
