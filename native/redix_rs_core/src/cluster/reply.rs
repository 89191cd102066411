//! Reading structured replies (`CLUSTER SHARDS`, `CLUSTER SLOTS`, `COMMAND INFO`) the same way in
//! RESP2 and RESP3: RESP3 sends maps and sets where RESP2 sends flat arrays, and status strings where
//! a bulk string could be; these helpers hide the difference so the parsers read one shape.

use crate::resp::Frame;

/// A frame stripped of RESP3 attributes, which annotate a value without changing it.
fn value(frame: &Frame) -> &Frame {
    match frame {
        Frame::Attribute { value, .. } => value,
        other => other,
    }
}

/// The bytes of a string-like frame (bulk, simple or verbatim).
pub(crate) fn text(frame: &Frame) -> Option<&[u8]> {
    match value(frame) {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        Frame::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

/// An integer frame, or a string holding a decimal integer (some servers and proxies send numbers
/// as strings).
pub(crate) fn int(frame: &Frame) -> Option<i64> {
    match value(frame) {
        Frame::Integer(n) => Some(*n),
        other => std::str::from_utf8(text(other)?).ok()?.parse().ok(),
    }
}

/// True for the null kinds of both protocols.
pub(crate) fn is_null(frame: &Frame) -> bool {
    matches!(
        value(frame),
        Frame::Null | Frame::NullBulk | Frame::NullArray
    )
}

/// The elements of an array or a set.
pub(crate) fn items(frame: &Frame) -> Option<&[Frame]> {
    match value(frame) {
        Frame::Array(items) | Frame::Set(items) => Some(items),
        _ => None,
    }
}

/// The message of an error reply, so a parser can report what the server said instead of a shape
/// mismatch.
pub(crate) fn error_text(frame: &Frame) -> Option<String> {
    match value(frame) {
        Frame::Error(b) | Frame::BulkError(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Key/value pairs: a RESP3 map, or a RESP2 array of even length read two by two.
pub(crate) enum Fields<'a> {
    Map(&'a [(Frame, Frame)]),
    Flat(&'a [Frame]),
}

impl<'a> Fields<'a> {
    pub(crate) fn of(frame: &'a Frame) -> Option<Fields<'a>> {
        match value(frame) {
            Frame::Map(pairs) => Some(Fields::Map(pairs)),
            Frame::Array(items) if items.len() % 2 == 0 => Some(Fields::Flat(items)),
            _ => None,
        }
    }

    /// Every pair whose key is a string, in wire order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a Frame)> + '_ {
        let pairs: Box<dyn Iterator<Item = (&'a Frame, &'a Frame)>> = match self {
            Fields::Map(pairs) => Box::new(pairs.iter().map(|(k, v)| (k, v))),
            Fields::Flat(items) => Box::new(items.chunks_exact(2).map(|kv| (&kv[0], &kv[1]))),
        };
        pairs.filter_map(|(k, v)| Some((text(k)?, v)))
    }

    /// The value of the first field named `name` (exact, case-sensitive: Redis sends lower case).
    pub(crate) fn get(&self, name: &str) -> Option<&'a Frame> {
        self.iter()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bulk(s: &'static str) -> Frame {
        Frame::Bulk(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn fields_read_maps_and_flat_arrays_alike() {
        let flat = Frame::Array(vec![bulk("a"), Frame::Integer(1), bulk("b"), bulk("x")]);
        let map = Frame::Map(vec![(bulk("a"), Frame::Integer(1)), (bulk("b"), bulk("x"))]);
        for frame in [&flat, &map] {
            let fields = Fields::of(frame).expect("fields");
            assert_eq!(fields.get("a").and_then(int), Some(1));
            assert_eq!(fields.get("b").and_then(text), Some(&b"x"[..]));
            assert!(fields.get("c").is_none());
        }
        assert!(Fields::of(&Frame::Array(vec![bulk("odd")])).is_none());
    }

    #[test]
    fn scalars_accept_both_protocols() {
        assert_eq!(int(&bulk("42")), Some(42));
        assert_eq!(int(&bulk("x")), None);
        assert_eq!(
            text(&Frame::Simple(Bytes::from_static(b"RW"))),
            Some(&b"RW"[..])
        );
        assert!(is_null(&Frame::Null) && is_null(&Frame::NullBulk));
        let attr = Frame::Attribute {
            attrs: vec![],
            value: Box::new(Frame::Integer(7)),
        };
        assert_eq!(int(&attr), Some(7));
        assert_eq!(
            error_text(&Frame::Error(Bytes::from_static(b"ERR no"))),
            Some("ERR no".to_owned())
        );
    }
}
