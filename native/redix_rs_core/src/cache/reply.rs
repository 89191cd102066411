//! A cached reply: a parsed [`Frame`] re-packed so that it owns exactly its bytes, shared by every hit.
//!
//! Why a parsed frame and not the reply's wire bytes: the NIF already turns a `&Frame` into an
//! Erlang term (that is how every reply reaches a caller), so a hit on a frame goes straight to the
//! term, while wire bytes would be parsed again on every hit (the parser needs a `BytesMut`, so a
//! copy and an allocation each time). Why re-packed: the parser hands out slices of its receive
//! buffer, and a cached slice would keep that whole buffer (64 KiB or more) alive for as long as the
//! entry lives, unaccounted. [`Reply::new`] copies every string of the frame into one allocation
//! and rebuilds the frame over slices of it, so an entry costs what [`Reply::size`] says.
//!
//! A hit clones a [`Reply`] (one reference count), never the frame. The reply also carries what
//! the eviction policy keeps per entry (its id and read frequency), so that an entry is one
//! allocation besides its strings.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::resp::Frame;

/// Nesting deeper than this is not cached (the parser allows 256 by default; the rebuild recurses).
pub const MAX_DEPTH: usize = 256;

/// Why a reply cannot be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// Error replies are never cached: many are transient (`LOADING`, `BUSY`, `OOM`, `MOVED`, ...).
    #[error("error replies are not cached")]
    Error,
    /// A push frame is not a reply.
    #[error("a push frame is not a reply")]
    Push,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("reply nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// A reply as the cache holds it; cloning it shares it.
#[derive(Debug, Clone)]
pub struct Reply(Arc<Packed>);

#[derive(Debug)]
struct Packed {
    frame: Frame,
    size: usize,
    /// The entry's place in the policy's slab, set when it is inserted.
    id: AtomicU32,
    /// Reads since it was filled (or since the policy last lowered it), up to [`MAX_FREQ`].
    freq: AtomicU8,
}

/// The highest read frequency an entry records (two bits' worth).
pub(super) const MAX_FREQ: u8 = 3;

impl Reply {
    /// Re-packs `frame` into one allocation of its own (attributes are dropped: the NIF shows only
    /// the value they annotate).
    pub fn new(frame: &Frame) -> Result<Reply, ReplyError> {
        match frame {
            Frame::Error(_) | Frame::BulkError(_) => return Err(ReplyError::Error),
            Frame::Push(_) => return Err(ReplyError::Push),
            _ => {}
        }
        let mut measure = Measure::default();
        measure.walk(frame, 0)?;
        let frame = match frame {
            // One string (a GET's reply): its own copy, no slicing to share.
            Frame::Bulk(b) => Frame::Bulk(Bytes::copy_from_slice(b)),
            Frame::Simple(b) => Frame::Simple(Bytes::copy_from_slice(b)),
            aggregate => pack(aggregate, measure.strings),
        };
        let size = measure.strings + measure.nodes * std::mem::size_of::<Frame>();
        Ok(Reply(Arc::new(Packed {
            frame,
            size,
            id: AtomicU32::new(u32::MAX),
            freq: AtomicU8::new(0),
        })))
    }

    /// The cached frame.
    pub fn frame(&self) -> &Frame {
        &self.0.frame
    }

    /// Bytes the reply occupies: its strings plus one `Frame` per value. What `max_bytes` counts.
    pub fn size(&self) -> usize {
        self.0.size
    }

    pub(super) fn id(&self) -> u32 {
        self.0.id.load(Ordering::Relaxed)
    }

    /// Set by the policy, with the writer lock held, before the entry is visible.
    pub(super) fn set_id(&self, id: u32) {
        self.0.id.store(id, Ordering::Relaxed);
    }

    /// Counts a hit. Racing readers may lose an increment: it is a hint, not a count.
    pub(super) fn touch(&self) {
        let freq = self.0.freq.load(Ordering::Relaxed);
        if freq < MAX_FREQ {
            self.0.freq.store(freq + 1, Ordering::Relaxed);
        }
    }

    pub(super) fn freq(&self) -> u8 {
        self.0.freq.load(Ordering::Relaxed)
    }

    pub(super) fn set_freq(&self, freq: u8) {
        self.0.freq.store(freq, Ordering::Relaxed);
    }

    /// True if both are the same cached reply (not merely equal).
    pub(super) fn same(&self, other: &Reply) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `frame` rebuilt over one buffer holding its `strings` bytes.
fn pack(frame: &Frame, strings: usize) -> Frame {
    let mut buf = BytesMut::with_capacity(strings);
    copy_strings(frame, &mut buf);
    let mut slicer = Slicer {
        all: buf.freeze(),
        at: 0,
    };
    slicer.rebuild(frame)
}

/// The strings' total length and the number of values, checked for depth.
#[derive(Default)]
struct Measure {
    strings: usize,
    nodes: usize,
}

impl Measure {
    fn walk(&mut self, frame: &Frame, depth: usize) -> Result<(), ReplyError> {
        if depth > MAX_DEPTH {
            return Err(ReplyError::TooDeep);
        }
        self.nodes += 1;
        match frame {
            Frame::Attribute { value, .. } => {
                self.nodes -= 1;
                self.walk(value, depth + 1)
            }
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                items.iter().try_for_each(|f| self.walk(f, depth + 1))
            }
            Frame::Map(pairs) => pairs.iter().try_for_each(|(k, v)| {
                self.walk(k, depth + 1)?;
                self.walk(v, depth + 1)
            }),
            other => {
                self.strings += string_of(other).map_or(0, <[u8]>::len);
                Ok(())
            }
        }
    }
}

/// The string a scalar frame holds, if any.
fn string_of(frame: &Frame) -> Option<&[u8]> {
    match frame {
        Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) => Some(b),
        Frame::BigNumber(b) | Frame::BulkError(b) => Some(b),
        Frame::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

/// Appends every string of `frame` to `out`, depth first (the order [`Slicer::rebuild`] reads).
fn copy_strings(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Attribute { value, .. } => copy_strings(value, out),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            items.iter().for_each(|f| copy_strings(f, out));
        }
        Frame::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            copy_strings(k, out);
            copy_strings(v, out);
        }),
        other => out.extend_from_slice(string_of(other).unwrap_or_default()),
    }
}

/// Hands out consecutive slices of the packed strings.
struct Slicer {
    all: Bytes,
    at: usize,
}

impl Slicer {
    fn next(&mut self, len: usize) -> Bytes {
        let start = self.at;
        self.at += len;
        self.all.slice(start..self.at)
    }

    /// `frame` again, its strings taken from the packed buffer in the order they were copied.
    fn rebuild(&mut self, frame: &Frame) -> Frame {
        match frame {
            Frame::Simple(b) => Frame::Simple(self.next(b.len())),
            Frame::Error(b) => Frame::Error(self.next(b.len())),
            Frame::Bulk(b) => Frame::Bulk(self.next(b.len())),
            Frame::BigNumber(b) => Frame::BigNumber(self.next(b.len())),
            Frame::BulkError(b) => Frame::BulkError(self.next(b.len())),
            Frame::Verbatim { format, text } => Frame::Verbatim {
                format: *format,
                text: self.next(text.len()),
            },
            Frame::Array(items) => Frame::Array(self.rebuild_all(items)),
            Frame::Set(items) => Frame::Set(self.rebuild_all(items)),
            Frame::Push(items) => Frame::Push(self.rebuild_all(items)),
            Frame::Map(pairs) => Frame::Map(
                pairs
                    .iter()
                    .map(|(k, v)| (self.rebuild(k), self.rebuild(v)))
                    .collect(),
            ),
            Frame::Attribute { value, .. } => self.rebuild(value),
            scalar => scalar.clone(),
        }
    }

    fn rebuild_all(&mut self, items: &[Frame]) -> Vec<Frame> {
        items.iter().map(|f| self.rebuild(f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_packed_reply_equals_its_frame_and_owns_one_buffer() {
        let receive_buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let frame = Frame::Map(vec![
            (b("field"), Frame::Bulk(receive_buffer.slice(0..5))),
            (
                b("list"),
                Frame::Array(vec![Frame::Integer(1), Frame::Null, b("")]),
            ),
            (
                b("v"),
                Frame::Verbatim {
                    format: *b"txt",
                    text: Bytes::from_static(b"hi"),
                },
            ),
        ]);
        let reply = Reply::new(&frame).unwrap();
        assert_eq!(reply.frame(), &frame);
        // 5 + 5 + 4 + 0 + 1 + 2 string bytes, 10 values.
        assert_eq!(reply.size(), 17 + 10 * std::mem::size_of::<Frame>());
        let Frame::Map(pairs) = reply.frame() else {
            panic!("not a map")
        };
        let Frame::Bulk(value) = &pairs[0].1 else {
            panic!("not a bulk")
        };
        // The receive buffer is no longer referenced: the slice points into the packed strings.
        assert!(!receive_buffer.as_ptr_range().contains(&value.as_ptr()));
    }

    #[test]
    fn attributes_are_dropped_and_errors_refused() {
        let annotated = Frame::Attribute {
            attrs: vec![(b("ttl"), Frame::Integer(3))],
            value: Box::new(b("v")),
        };
        assert_eq!(Reply::new(&annotated).unwrap().frame(), &b("v"));
        let err = Frame::Error(Bytes::from_static(b"LOADING"));
        assert_eq!(Reply::new(&err).unwrap_err(), ReplyError::Error);
        let bulk_err = Frame::BulkError(Bytes::from_static(b"ERR"));
        assert_eq!(Reply::new(&bulk_err).unwrap_err(), ReplyError::Error);
        let push = Frame::Push(vec![b("invalidate"), Frame::Null]);
        assert_eq!(Reply::new(&push).unwrap_err(), ReplyError::Push);
        // An error inside an aggregate is data (EXEC results, say), kept as is.
        let nested = Frame::Array(vec![Frame::Error(Bytes::from_static(b"E"))]);
        assert_eq!(Reply::new(&nested).unwrap().frame(), &nested);
    }

    #[test]
    fn too_deep_is_refused() {
        let mut frame = Frame::Integer(1);
        for _ in 0..=MAX_DEPTH {
            frame = Frame::Array(vec![frame]);
        }
        assert_eq!(Reply::new(&frame).unwrap_err(), ReplyError::TooDeep);
    }
}
