//! Encoded commands, taken apart again: one `Bytes` per command of an encoded pipeline (slices of
//! one buffer, no copy), and the arguments of one command (for the key lookup). The encoder in
//! `args` is the only producer, so the input is well formed; anything else yields `None`.

use bytes::{Bytes, BytesMut};

/// Reads `*<n>\r\n` or `$<n>\r\n` at `at` (whose first byte is `tag`); returns `n` and where the
/// line ends.
fn header(buf: &[u8], at: usize, tag: u8) -> Option<(usize, usize)> {
    if *buf.get(at)? != tag {
        return None;
    }
    let mut n = 0usize;
    let mut i = at + 1;
    loop {
        match *buf.get(i)? {
            b'\r' => return Some((n, i + 2)),
            d @ b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?,
            _ => return None,
        }
        i += 1;
    }
}

/// The end of the command starting at `at`.
fn command_end(buf: &[u8], at: usize) -> Option<usize> {
    let (count, mut i) = header(buf, at, b'*')?;
    for _ in 0..count {
        let (len, start) = header(buf, i, b'$')?;
        i = start + len + 2;
    }
    (i <= buf.len()).then_some(i)
}

/// Splits an encoded pipeline into its commands.
pub fn split(buf: Bytes) -> Option<Vec<Bytes>> {
    let mut commands = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let end = command_end(&buf, at)?;
        commands.push(buf.slice(at..end));
        at = end;
    }
    Some(commands)
}

/// Calls `with` on the arguments (name first) of one encoded command; commands of up to 8
/// arguments are read into a stack array.
pub fn with_args<R>(command: &[u8], with: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
    let (count, mut i) = header(command, 0, b'*')?;
    let mut small: [&[u8]; 8] = [&[]; 8];
    let mut large: Vec<&[u8]> = Vec::new();
    for n in 0..count {
        let (len, start) = header(command, i, b'$')?;
        let arg = command.get(start..start + len)?;
        if count <= small.len() {
            small[n] = arg;
        } else {
            large.push(arg);
        }
        i = start + len + 2;
    }
    Some(if count <= small.len() {
        with(&small[..count])
    } else {
        with(&large)
    })
}

/// `COMMAND GETKEYS` followed by the arguments of `command` (an encoded command).
pub fn getkeys(command: &[u8]) -> Option<BytesMut> {
    let (count, start) = header(command, 0, b'*')?;
    let mut out = BytesMut::with_capacity(command.len() + 40);
    out.extend_from_slice(
        format!("*{}\r\n$7\r\nCOMMAND\r\n$7\r\nGETKEYS\r\n", count + 2).as_bytes(),
    );
    out.extend_from_slice(command.get(start..)?);
    Some(out)
}
