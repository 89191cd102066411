//! The [`Frame`] type: one RESP2 or RESP3 value, plus its exact wire encoding.
//!
//! String-like payloads are [`Bytes`] so the parser can hand out slices of the
//! receive buffer without copying them.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::command::{put_i64, put_u64};

/// One protocol value, as received from (or sent by a fake) server.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`: a status line; cannot contain CR or LF.
    Simple(Bytes),
    /// `-ERR ...`: an error line, without the `-` and the CRLF.
    Error(Bytes),
    /// `:123`: a signed 64-bit integer.
    Integer(i64),
    /// `$len`: a binary-safe string.
    Bulk(Bytes),
    /// `$-1`: the RESP2 null string.
    NullBulk,
    /// `*-1`: the RESP2 null array.
    NullArray,
    /// `*n`: an array of frames.
    Array(Vec<Frame>),
    /// `_`: the RESP3 null.
    Null,
    /// `,1.5`: a double, including `inf`, `-inf` and `nan`.
    Double(f64),
    /// `#t` / `#f`.
    Boolean(bool),
    /// `(123...`: decimal digits with an optional leading `-`, kept as text.
    BigNumber(Bytes),
    /// `!len`: a binary-safe error.
    BulkError(Bytes),
    /// `=len`: a string tagged with a 3-byte format such as `txt` or `mkd`.
    Verbatim {
        /// The format tag (the bytes before the `:`).
        format: [u8; 3],
        /// The text after the `fmt:` prefix.
        text: Bytes,
    },
    /// `%n`: `n` key/value pairs, in wire order.
    Map(Vec<(Frame, Frame)>),
    /// `~n`: an unordered collection, in wire order.
    Set(Vec<Frame>),
    /// `>n`: out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Frame>),
    /// `|n`: `n` key/value pairs annotating the frame that follows them.
    Attribute {
        /// The annotation pairs.
        attrs: Vec<(Frame, Frame)>,
        /// The frame the attributes describe.
        value: Box<Frame>,
    },
}

impl Frame {
    /// True for the two error kinds (`-` and `!`).
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BulkError(_))
    }

    /// Bytes of data the frame holds (strings and their nested elements, plus a few bytes per scalar):
    /// a cheap measure of what converting it will cost, not its wire size.
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Simple(b) | Frame::Error(b) | Frame::Bulk(b) => b.len(),
            Frame::BigNumber(b) | Frame::BulkError(b) => b.len(),
            Frame::Verbatim { text, .. } => text.len(),
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                items.iter().map(|f| 8 + f.payload_len()).sum()
            }
            Frame::Map(pairs) => pairs
                .iter()
                .map(|(k, v)| 16 + k.payload_len() + v.payload_len())
                .sum(),
            Frame::Attribute { value, .. } => value.payload_len(),
            Frame::Integer(_) | Frame::Double(_) | Frame::Boolean(_) => 8,
            Frame::NullBulk | Frame::NullArray | Frame::Null => 0,
        }
    }

    /// Appends the exact wire bytes of this frame to `out`.
    ///
    /// Simple strings and errors are written as-is: the caller must not put
    /// CR or LF in them, or the result will not parse back.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => put_line(out, b'+', s),
            Frame::Error(s) => put_line(out, b'-', s),
            Frame::Integer(n) => put_integer(out, b':', *n),
            Frame::Bulk(b) => put_blob(out, b'$', &[b]),
            Frame::NullBulk => out.put_slice(b"$-1\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => put_list(out, b'*', items),
            Frame::Null => out.put_slice(b"_\r\n"),
            Frame::Double(v) => put_double(out, *v),
            Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::BigNumber(digits) => put_line(out, b'(', digits),
            Frame::BulkError(b) => put_blob(out, b'!', &[b]),
            Frame::Verbatim { format, text } => put_blob(out, b'=', &[format, b":", text]),
            Frame::Map(pairs) => put_pairs(out, b'%', pairs),
            Frame::Set(items) => put_list(out, b'~', items),
            Frame::Push(items) => put_list(out, b'>', items),
            Frame::Attribute { attrs, value } => {
                put_pairs(out, b'|', attrs);
                value.encode(out);
            }
        }
    }
}

/// `<tag><text>\r\n`
fn put_line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.put_u8(tag);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// `<tag><n>\r\n`
fn put_integer(out: &mut BytesMut, tag: u8, n: i64) {
    out.put_u8(tag);
    put_i64(out, n);
    out.put_slice(b"\r\n");
}

/// `<tag><count>\r\n` header of an aggregate (counts are never negative here).
fn put_count(out: &mut BytesMut, tag: u8, n: usize) {
    out.put_u8(tag);
    put_u64(out, n as u64);
    out.put_slice(b"\r\n");
}

/// A length-prefixed payload made of several parts (verbatim needs three).
fn put_blob(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    put_count(out, tag, len);
    for part in parts {
        out.put_slice(part);
    }
    out.put_slice(b"\r\n");
}

fn put_list(out: &mut BytesMut, tag: u8, items: &[Frame]) {
    put_count(out, tag, items.len());
    for item in items {
        item.encode(out);
    }
}

fn put_pairs(out: &mut BytesMut, tag: u8, pairs: &[(Frame, Frame)]) {
    put_count(out, tag, pairs.len());
    for (key, value) in pairs {
        key.encode(out);
        value.encode(out);
    }
}

/// Writes a double so that parsing the text gives back the same bits (except
/// for NaN payloads, which RESP cannot express).
fn put_double(out: &mut BytesMut, v: f64) {
    out.put_u8(b',');
    if v.is_nan() {
        out.put_slice(b"nan");
    } else if v.is_infinite() {
        out.put_slice(if v > 0.0 { b"inf" } else { b"-inf" });
    } else {
        // Rust prints the shortest text that round-trips. Plain notation for
        // ordinary magnitudes (what Redis sends, e.g. `10`), exponent form
        // otherwise so 1e300 is not 301 characters long. Writing into a
        // BytesMut cannot fail, so the fmt::Result carries no information.
        let _ = if v == 0.0 || (1e-5..1e16).contains(&v.abs()) {
            write!(out, "{v}")
        } else {
            write!(out, "{v:e}")
        };
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out.to_vec()
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn encodes_resp2_types() {
        assert_eq!(wire(&Frame::Simple(b("OK"))), b"+OK\r\n");
        assert_eq!(wire(&Frame::Error(b("ERR x"))), b"-ERR x\r\n");
        assert_eq!(wire(&Frame::Integer(-42)), b":-42\r\n");
        assert_eq!(
            wire(&Frame::Integer(i64::MIN)),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(wire(&Frame::Bulk(b(""))), b"$0\r\n\r\n");
        assert_eq!(wire(&Frame::Bulk(b("a\0b"))), b"$3\r\na\0b\r\n");
        assert_eq!(wire(&Frame::NullBulk), b"$-1\r\n");
        assert_eq!(wire(&Frame::NullArray), b"*-1\r\n");
        let array = Frame::Array(vec![Frame::Integer(1), Frame::Bulk(b("x"))]);
        assert_eq!(wire(&array), b"*2\r\n:1\r\n$1\r\nx\r\n");
    }

    #[test]
    fn encodes_resp3_scalars() {
        assert_eq!(wire(&Frame::Null), b"_\r\n");
        assert_eq!(wire(&Frame::Boolean(true)), b"#t\r\n");
        assert_eq!(wire(&Frame::Boolean(false)), b"#f\r\n");
        assert_eq!(wire(&Frame::BigNumber(b("-123"))), b"(-123\r\n");
        assert_eq!(wire(&Frame::BulkError(b("ERR\r\n"))), b"!5\r\nERR\r\n\r\n");
        let verbatim = Frame::Verbatim {
            format: *b"txt",
            text: b("hi"),
        };
        assert_eq!(wire(&verbatim), b"=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn encodes_doubles() {
        assert_eq!(wire(&Frame::Double(1.5)), b",1.5\r\n");
        assert_eq!(wire(&Frame::Double(10.0)), b",10\r\n");
        assert_eq!(wire(&Frame::Double(-0.25)), b",-0.25\r\n");
        assert_eq!(wire(&Frame::Double(-0.0)), b",-0\r\n");
        assert_eq!(wire(&Frame::Double(1e300)), b",1e300\r\n");
        assert_eq!(wire(&Frame::Double(f64::INFINITY)), b",inf\r\n");
        assert_eq!(wire(&Frame::Double(f64::NEG_INFINITY)), b",-inf\r\n");
        assert_eq!(wire(&Frame::Double(f64::NAN)), b",nan\r\n");
    }

    #[test]
    fn encodes_resp3_aggregates() {
        let map = Frame::Map(vec![(Frame::Simple(b("k")), Frame::Integer(1))]);
        assert_eq!(wire(&map), b"%1\r\n+k\r\n:1\r\n");
        assert_eq!(wire(&Frame::Set(vec![Frame::Null])), b"~1\r\n_\r\n");
        assert_eq!(wire(&Frame::Push(vec![])), b">0\r\n");
        let attr = Frame::Attribute {
            attrs: vec![(Frame::Simple(b("ttl")), Frame::Integer(3))],
            value: Box::new(Frame::Simple(b("OK"))),
        };
        assert_eq!(wire(&attr), b"|1\r\n+ttl\r\n:3\r\n+OK\r\n");
    }

    #[test]
    fn payload_len_counts_nested_strings() {
        assert_eq!(Frame::Bulk(b("abc")).payload_len(), 3);
        let keys = Frame::Array(vec![Frame::Bulk(b("k1")), Frame::Bulk(b("k22"))]);
        assert_eq!(keys.payload_len(), 8 + 2 + 8 + 3);
        assert_eq!(Frame::NullArray.payload_len(), 0);
    }

    #[test]
    fn is_error_covers_both_error_kinds() {
        assert!(Frame::Error(b("ERR")).is_error());
        assert!(Frame::BulkError(b("ERR")).is_error());
        assert!(!Frame::Simple(b("ERR")).is_error());
        assert!(!Frame::Null.is_error());
    }
}
