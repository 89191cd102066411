//! Commands as Erlang terms → RESP bytes, written straight into the connection's write queue.
//!
//! Elements may be binaries, integers or atoms (as `to_string/1` would render them). Anything else, and
//! every command Redix refuses (pub/sub, `CLIENT REPLY`, empty or non-list commands), makes the encoder
//! stop with `Normalize`: the Elixir side then validates the input itself, raising Redix's
//! `ArgumentError` or converting the elements with `String.Chars`, and submits again. The fast path thus
//! never has to reproduce Redix's error messages.

use bytes::BytesMut;
use redix_rs_core::conn::side::Scan;
pub use redix_rs_core::conn::submission::SubmissionKind as Kind;
use redix_rs_core::conn::submission::{Refusal, Refused};
use redix_rs_core::conn::Outgoing;
use redix_rs_core::resp::{encode_array_header, encode_bulk};
use rustler::{Atom, Binary, Term};

use crate::atoms;

/// How much work one call may do; past it the encoder stops with `OverBudget`.
#[derive(Clone, Copy)]
pub struct Budget {
    pub bytes: usize,
    pub elements: usize,
}

impl Budget {
    /// What a NIF on a normal scheduler may encode (well under a millisecond).
    pub const NORMAL: Budget = Budget {
        bytes: 256 * 1024,
        elements: 4096,
    };
    pub const UNLIMITED: Budget = Budget {
        bytes: usize::MAX,
        elements: usize::MAX,
    };
}

#[derive(Debug, PartialEq, Eq)]
pub enum EncodeStop {
    /// The input needs the Elixir-side validation or conversion.
    Normalize,
    /// Too large for this scheduler: retry on a dirty one.
    OverBudget,
    /// A blocking command, when asked to stop at one (`side.rs`): nothing is queued, and the
    /// submission goes to a side connection.
    Blocking,
}

/// A refused command is left to the Elixir side, which raises Redix's `ArgumentError`.
impl From<Refused> for EncodeStop {
    fn from(_: Refused) -> EncodeStop {
        EncodeStop::Normalize
    }
}

/// A submission's kind, from its atom (`:pipeline | :noreply | :transaction`); atoms are compared, not
/// their names: no allocation on every call.
pub fn decode_kind(term: Term<'_>) -> Option<Kind> {
    let atom = Atom::from_term(term).ok()?;
    if atom == atoms::pipeline() {
        Some(Kind::Pipeline)
    } else if atom == atoms::noreply() {
        Some(Kind::NoReply)
    } else if atom == atoms::transaction() {
        Some(Kind::Transaction)
    } else {
        None
    }
}

/// How a submission's commands are encoded.
#[derive(Clone, Copy)]
pub enum Encoding<'a> {
    /// Checked as they are encoded, within a budget.
    Within(Budget),
    /// Already checked by [`check_submission`] (these are the commands' lengths): nothing can fail
    /// any more, so they are encoded without a second check and handed to the socket in chunks.
    Checked(&'a [u32]),
}

/// Encodes a whole submission of `kind`: wrappers, then the user's commands between them. With
/// `stop_at_blocking`, a blocking command stops it with `Blocking` (read from the bytes it encodes
/// anyway: no extra walk; checked submissions were looked at by `check_submission`).
pub fn encode_submission(
    kind: Kind,
    commands: Term<'_>,
    out: &mut Outgoing<'_>,
    encoding: Encoding<'_>,
    stop_at_blocking: bool,
) -> Result<(), EncodeStop> {
    let (before, after) = kind.wrappers();
    out.buf().extend_from_slice(before);
    match encoding {
        Encoding::Checked(lengths) => encode_checked_pipeline(commands, lengths, out)?,
        Encoding::Within(budget) => encode_pipeline(commands, out, budget, stop_at_blocking)?,
    }
    out.buf().extend_from_slice(after);
    Ok(())
}

/// Counts the commands of a pipeline, giving up past `max` (so a normal scheduler never walks a long list).
pub fn count_commands(commands: Term<'_>, max: usize) -> Result<usize, EncodeStop> {
    match bounded_len(commands, max)? {
        0 => Err(EncodeStop::Normalize),
        n => Ok(n),
    }
}

/// Everything the encoder would refuse in `commands` (already counted: a proper, non-empty list), found
/// before a byte is queued, so that the encoding can go to the socket while it proceeds. Sizes are
/// counted as payload plus the most framing RESP can add, so a submission that passes never exceeds
/// `budget`. Returns the length of each command, and whether one of them is a blocking command
/// (`side.rs`), found in the same walk.
pub fn check_submission(
    commands: Term<'_>,
    budget: Budget,
) -> Result<(Vec<u32>, bool), EncodeStop> {
    let (mut elements, mut bytes) = (0usize, 0usize);
    let mut lengths = Vec::new();
    let mut blocking = false;
    let mut rest = commands;
    while let Ok((command, tail)) = rest.list_get_cell() {
        let (len, size, blocks) = check_command(command, budget.elements.saturating_sub(elements))?;
        blocking |= blocks;
        lengths.push(u32::try_from(len).map_err(|_| EncodeStop::OverBudget)?);
        elements += len;
        bytes += size;
        if bytes > budget.bytes {
            return Err(EncodeStop::OverBudget);
        }
        rest = tail;
    }
    Ok((lengths, blocking))
}

/// Checks one command (a proper, non-empty list of at most `max_elements` valid elements) in one walk;
/// returns its length, its size with the most framing RESP can add, and whether it blocks.
fn check_command(
    command: Term<'_>,
    max_elements: usize,
) -> Result<(usize, usize, bool), EncodeStop> {
    let mut bytes = 24; // `*<len>\r\n`
    let mut len = 0;
    let mut refusal = Refusal::default();
    let mut scan = Scan::default();
    let mut scanning = true;
    let mut rest = command;
    while let Ok((element, tail)) = rest.list_get_cell() {
        len += 1;
        if len > max_elements {
            return Err(EncodeStop::OverBudget);
        }
        // The blocking-command scan reads the bytes this check decodes anyway (no second decode).
        let mut look = |payload: &[u8]| {
            if scanning {
                scanning = scan.element(payload);
            }
        };
        let size = if let Ok(bin) = element.decode::<Binary>() {
            look(bin.as_slice());
            refusal.element(bin.as_slice())?;
            bin.len()
        } else if element.decode::<i64>().is_ok() {
            look(b"");
            refusal.element(b"")?; // digits: never a refused name
            20
        } else if element.is_atom() {
            let name = element
                .atom_to_string()
                .map_err(|_| EncodeStop::Normalize)?;
            look(name.as_bytes());
            refusal.element(name.as_bytes())?;
            name.len()
        } else {
            return Err(EncodeStop::Normalize);
        };
        bytes += size + 25; // `$<len>\r\n<payload>\r\n`
        rest = tail;
    }
    if len == 0 || !rest.is_empty_list() {
        return Err(EncodeStop::Normalize);
    }
    refusal.finish()?;
    Ok((len, bytes, scan.blocks()))
}

/// Encodes the commands of a checked submission, `lengths` long each, handing large chunks to the
/// socket as it goes.
fn encode_checked_pipeline(
    commands: Term<'_>,
    lengths: &[u32],
    out: &mut Outgoing<'_>,
) -> Result<(), EncodeStop> {
    let mut rest = commands;
    for &len in lengths {
        let (command, tail) = rest.list_get_cell().map_err(|_| EncodeStop::Normalize)?;
        let buf = out.buf();
        encode_array_header(len as usize, buf);
        let mut elements = command;
        while let Ok((element, more)) = elements.list_get_cell() {
            encode_element(element, buf, usize::MAX)?;
            elements = more;
        }
        out.flush_large();
        rest = tail;
    }
    Ok(())
}

/// Encodes every command of `commands` into `out`, checking each.
fn encode_pipeline(
    commands: Term<'_>,
    out: &mut Outgoing<'_>,
    budget: Budget,
    stop_at_blocking: bool,
) -> Result<(), EncodeStop> {
    let mut encoded = 0usize;
    let mut elements = 0usize;
    let mut rest = commands;
    while let Ok((command, tail)) = rest.list_get_cell() {
        let left = Budget {
            bytes: budget.bytes.saturating_sub(encoded),
            elements: budget.elements.saturating_sub(elements),
        };
        let buf = out.buf();
        let start = buf.len();
        elements += encode_command(command, buf, left, stop_at_blocking)?;
        encoded += buf.len() - start;
        rest = tail;
    }
    Ok(())
}

/// Encodes one command within `budget`; returns its number of elements.
fn encode_command(
    command: Term<'_>,
    out: &mut BytesMut,
    budget: Budget,
    stop_at_blocking: bool,
) -> Result<usize, EncodeStop> {
    let len = bounded_len(command, budget.elements)?;
    if len == 0 {
        return Err(EncodeStop::Normalize);
    }
    let start = out.len();
    encode_array_header(len, out);
    let mut rest = command;
    let mut refusal = Refusal::default();
    let mut scan = Scan::default();
    let mut scanning = stop_at_blocking;
    while let Ok((element, tail)) = rest.list_get_cell() {
        let written_from = out.len();
        encode_element(element, out, budget.bytes.saturating_sub(out.len() - start))?;
        let payload = bulk_payload(&out[written_from..]);
        refusal.element(payload)?;
        if scanning {
            scanning = scan.element(payload);
            if scan.blocks() {
                return Err(EncodeStop::Blocking);
            }
        }
        rest = tail;
    }
    refusal.finish()?;
    Ok(len)
}

/// The length of a proper list, or `OverBudget` past `max`, or `Normalize` when it is not a proper list.
fn bounded_len(list: Term<'_>, max: usize) -> Result<usize, EncodeStop> {
    let mut n = 0;
    let mut rest = list;
    while !rest.is_empty_list() {
        let (_, tail) = rest.list_get_cell().map_err(|_| EncodeStop::Normalize)?;
        n += 1;
        if n > max {
            return Err(EncodeStop::OverBudget);
        }
        rest = tail;
    }
    Ok(n)
}

/// Encodes one element, refusing before any copy one that would exceed `bytes_left`.
fn encode_element(
    element: Term<'_>,
    out: &mut BytesMut,
    bytes_left: usize,
) -> Result<(), EncodeStop> {
    if let Ok(bin) = element.decode::<Binary>() {
        if bin.len() > bytes_left {
            return Err(EncodeStop::OverBudget);
        }
        encode_bulk(bin.as_slice(), out);
    } else if let Ok(i) = element.decode::<i64>() {
        let mut digits = [0u8; 20];
        encode_bulk(format_i64(i, &mut digits), out);
    } else if element.is_atom() {
        let name = element
            .atom_to_string()
            .map_err(|_| EncodeStop::Normalize)?;
        // to_string(nil) is "" in Elixir; every other atom renders as its name.
        encode_bulk(if name == "nil" { b"" } else { name.as_bytes() }, out);
    } else {
        return Err(EncodeStop::Normalize);
    }
    Ok(())
}

/// Decimal digits of `i` in a stack buffer (no allocation per argument).
fn format_i64(i: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = i.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

fn bulk_payload(encoded: &[u8]) -> &[u8] {
    let header_end = encoded
        .iter()
        .position(|&b| b == b'\n')
        .map_or(encoded.len(), |p| p + 1);
    let body = &encoded[header_end..];
    &body[..body.len().saturating_sub(2)]
}
