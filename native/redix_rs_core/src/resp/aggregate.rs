//! Aggregates under construction, kept on the parser's explicit stack.
//!
//! Each entry knows how many elements it still expects, so elements can be
//! handed over one at a time as they are parsed and nothing is re-read.

use super::frame::Frame;

/// Never pre-allocate more than this many elements on the peer's word alone:
/// a declared length of two billion costs nothing until the elements arrive.
const MAX_PREALLOC: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub(super) enum ListKind {
    Array,
    Set,
    Push,
}

/// An aggregate under construction.
#[derive(Debug)]
pub(super) enum Building {
    List {
        kind: ListKind,
        remaining: usize,
        items: Vec<Frame>,
    },
    Pairs {
        /// Attributes continue with one more frame once their pairs are in.
        attribute: bool,
        remaining: usize,
        pairs: Vec<(Frame, Frame)>,
        key: Option<Frame>,
    },
    /// Attribute pairs are complete; waiting for the frame they annotate.
    AttrValue { attrs: Vec<(Frame, Frame)> },
}

impl Building {
    /// Opens the aggregate of type `tag` declaring `len` elements (pairs for
    /// `%` and `|`); `len` has already been checked against the limits.
    pub(super) fn new(tag: u8, len: usize) -> Self {
        let capacity = len.min(MAX_PREALLOC);
        let kind = match tag {
            b'|' if len == 0 => return Building::AttrValue { attrs: Vec::new() },
            b'%' | b'|' => {
                return Building::Pairs {
                    attribute: tag == b'|',
                    remaining: len,
                    pairs: Vec::with_capacity(capacity),
                    key: None,
                };
            }
            b'~' => ListKind::Set,
            b'>' => ListKind::Push,
            _ => ListKind::Array,
        };
        Building::List {
            kind,
            remaining: len,
            items: Vec::with_capacity(capacity),
        }
    }

    /// Zero-length aggregates are complete as soon as their header is read.
    pub(super) fn finish_if_empty(&mut self) -> Option<Frame> {
        match self {
            Building::List {
                kind,
                remaining: 0,
                items,
            } => Some(kind.wrap(std::mem::take(items))),
            Building::Pairs {
                attribute: false,
                remaining: 0,
                pairs,
                ..
            } => Some(Frame::Map(std::mem::take(pairs))),
            _ => None,
        }
    }

    /// Adds one element; returns the finished frame when this was the last.
    pub(super) fn accept(&mut self, frame: Frame) -> Option<Frame> {
        match self {
            Building::List {
                kind,
                remaining,
                items,
            } => {
                grow(items, *remaining);
                items.push(frame);
                *remaining = remaining.saturating_sub(1);
                (*remaining == 0).then(|| kind.wrap(std::mem::take(items)))
            }
            Building::Pairs {
                attribute,
                remaining,
                pairs,
                key,
            } => {
                let Some(k) = key.take() else {
                    *key = Some(frame);
                    return None;
                };
                grow(pairs, *remaining);
                pairs.push((k, frame));
                *remaining = remaining.saturating_sub(1);
                if *remaining > 0 {
                    return None;
                }
                let pairs = std::mem::take(pairs);
                if !*attribute {
                    return Some(Frame::Map(pairs));
                }
                // The pairs only annotate; the attribute completes with the
                // next frame, so this level stays open.
                *self = Building::AttrValue { attrs: pairs };
                None
            }
            Building::AttrValue { attrs } => Some(Frame::Attribute {
                attrs: std::mem::take(attrs),
                value: Box::new(frame),
            }),
        }
    }
}

/// Makes room for the next element of an aggregate that still expects `remaining` of them, growing
/// by an eighth at a time (at least `MAX_PREALLOC`, never past what is still declared) rather than
/// doubling: a reply's parsed form then stays within a fixed multiple of its size on the wire, where
/// doubling could leave half of a large aggregate's capacity unused.
fn grow<T>(items: &mut Vec<T>, remaining: usize) {
    if items.len() == items.capacity() {
        let step = (items.len() / 8).max(MAX_PREALLOC).min(remaining.max(1));
        items.reserve_exact(step);
    }
}

impl ListKind {
    fn wrap(self, items: Vec<Frame>) -> Frame {
        match self {
            ListKind::Array => Frame::Array(items),
            ListKind::Set => Frame::Set(items),
            ListKind::Push => Frame::Push(items),
        }
    }
}
