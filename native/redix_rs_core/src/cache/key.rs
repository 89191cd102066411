//! The cache key of a command: its RESP encoding with the command name in upper case.
//!
//! RESP's length prefixes make the encoding unambiguous for any binary arguments (`GET "a b"` and
//! `MGET a b` cannot meet), and the name is folded because Redis reads names case-insensitively
//! (`get k` and `GET k` are one entry). Arguments are kept as given: `ZRANGE z 0 1 withscores` and
//! `... WITHSCORES` are two entries of the same reply, which costs memory but is never wrong.

use bytes::BytesMut;

use crate::resp::{encode_array_header, encode_bulk};

/// Appends the cache key of `command` (its name, then its arguments) to `out`. Lookups encode into
/// a reused buffer; a ticket keeps the bytes (`out.split().freeze()`).
pub fn encode_key<A: AsRef<[u8]>>(command: &[A], out: &mut BytesMut) {
    encode_array_header(command.len(), out);
    let mut args = command.iter();
    if let Some(name) = args.next() {
        let name = name.as_ref();
        encode_bulk(name, out);
        // The name sits just before the trailing CRLF.
        let end = out.len() - 2;
        if let Some(written) = out.get_mut(end - name.len()..end) {
            written.make_ascii_uppercase();
        }
    }
    args.for_each(|arg| encode_bulk(arg.as_ref(), out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(command: &[&str]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_key(command, &mut out);
        out.to_vec()
    }

    #[test]
    fn names_fold_and_arguments_do_not() {
        assert_eq!(key(&["get", "k"]), key(&["GET", "k"]));
        assert_eq!(key(&["GeT", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_ne!(key(&["GET", "k"]), key(&["GET", "K"]));
        assert_ne!(key(&["GET", "a b"]), key(&["MGET", "a", "b"]));
        assert_eq!(key(&[]), b"*0\r\n");
    }
}
