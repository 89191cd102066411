//! Command encoding: a command is always sent as a RESP array of bulk strings
//! (`*N\r\n$len\r\narg\r\n...`), which is binary-safe for every argument.
//!
//! Lengths are formatted into a stack buffer by a tiny local itoa, so encoding
//! never allocates per argument; [`encoded_len`] lets callers reserve once.

use bytes::{BufMut, BytesMut};

const CRLF: &[u8] = b"\r\n";

/// Writes `args` as one RESP array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    // One reservation up front: pipelines encode many commands into one buffer
    // and repeated growth would copy it over and over.
    out.reserve(encoded_len(args));
    encode_array_header(args.len(), out);
    for arg in args {
        encode_bulk(arg.as_ref(), out);
    }
}

/// Exact number of bytes [`encode_command`] writes for `args`.
pub fn encoded_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    args.iter()
        .map(|arg| bulk_len(arg.as_ref().len()))
        .fold(header_len(args.len()), usize::saturating_add)
}

/// Writes `*n\r\n`; follow it with exactly `n` calls to [`encode_bulk`].
///
/// Useful when the arguments come from an iterator and are not in a slice.
pub fn encode_array_header(n: usize, out: &mut BytesMut) {
    out.put_u8(b'*');
    put_u64(out, n as u64);
    out.put_slice(CRLF);
}

/// Writes one argument as `$len\r\narg\r\n`.
pub fn encode_bulk(arg: &[u8], out: &mut BytesMut) {
    out.put_u8(b'$');
    put_u64(out, arg.len() as u64);
    out.put_slice(CRLF);
    out.put_slice(arg);
    out.put_slice(CRLF);
}

/// Bytes taken by `*n\r\n` (or `$n\r\n`): type byte, digits, CRLF.
fn header_len(n: usize) -> usize {
    1 + decimal_len(n as u64) + CRLF.len()
}

/// Bytes taken by a whole bulk string of `len` payload bytes.
fn bulk_len(len: usize) -> usize {
    header_len(len)
        .saturating_add(len)
        .saturating_add(CRLF.len())
}

/// Number of decimal digits of `v` (1 for zero).
pub(crate) fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Appends `v` in decimal without going through `fmt` (which would need a
/// `String` or a `Formatter` round-trip for every length we write).
pub(crate) fn put_u64(out: &mut BytesMut, mut v: u64) {
    // u64::MAX has 20 digits, so 20 bytes always suffice.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

/// Appends a signed decimal; `unsigned_abs` keeps `i64::MIN` exact.
pub(crate) fn put_i64(out: &mut BytesMut, v: i64) {
    if v < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<A: AsRef<[u8]>>(args: &[A]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_command(args, &mut out);
        out
    }

    #[test]
    fn encodes_simple_command() {
        let out = encoded(&["SET", "key", "value"]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n");
        assert_eq!(encoded_len(&["SET", "key", "value"]), out.len());
    }

    #[test]
    fn encodes_binary_and_empty_arguments() {
        let args: [&[u8]; 3] = [b"", b"\0\r\n\xff", b"x"];
        let out = encoded(&args);
        assert_eq!(&out[..], b"*3\r\n$0\r\n\r\n$4\r\n\0\r\n\xff\r\n$1\r\nx\r\n");
        assert_eq!(encoded_len(&args), out.len());
    }

    #[test]
    fn encodes_empty_command() {
        let none: [&[u8]; 0] = [];
        assert_eq!(&encoded(&none)[..], b"*0\r\n");
        assert_eq!(encoded_len(&none), 4);
    }

    #[test]
    fn header_and_bulk_compose() {
        let mut out = BytesMut::new();
        encode_array_header(2, &mut out);
        for arg in ["GET", "k"].iter().map(|s| s.as_bytes()) {
            encode_bulk(arg, &mut out);
        }
        assert_eq!(out, encoded(&["GET", "k"]));
    }

    #[test]
    fn length_prefix_crosses_digit_boundaries() {
        for len in [9usize, 10, 99, 100, 1000] {
            let arg = vec![b'a'; len];
            let out = encoded(&[&arg]);
            assert_eq!(encoded_len(&[&arg]), out.len(), "len {len}");
            let header = format!("*1\r\n${len}\r\n");
            assert!(out.starts_with(header.as_bytes()));
        }
    }

    #[test]
    fn itoa_matches_std() {
        let cases = [0i64, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN];
        for v in cases {
            let mut out = BytesMut::new();
            put_i64(&mut out, v);
            assert_eq!(&out[..], v.to_string().as_bytes());
        }
        let mut out = BytesMut::new();
        put_u64(&mut out, u64::MAX);
        assert_eq!(&out[..], u64::MAX.to_string().as_bytes());
        assert_eq!(decimal_len(u64::MAX), 20);
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(10), 2);
    }
}
