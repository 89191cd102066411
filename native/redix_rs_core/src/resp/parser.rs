//! Incremental RESP2/RESP3 parser.
//!
//! Bytes are consumed from the front of the caller's buffer as soon as one
//! element (a line, or a whole bulk payload) is complete, and the aggregates
//! under construction live on an explicit stack. A reply that arrives in a
//! thousand pieces is therefore parsed once, not re-parsed from its start on
//! every read, and deep nesting cannot overflow the native stack.

use bytes::{Buf, Bytes, BytesMut};

use super::aggregate::Building;
use super::frame::Frame;

/// Header lines (`:`, `$`, `*`, `,`, ...) are short; anything longer than this
/// without a CRLF is garbage, not a slow sender.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// Bounds on what a peer may declare, checked before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk payload (`$`, `!`, `=`) and simple line (`+`, `-`).
    pub max_bulk_len: usize,
    /// Largest element count of an aggregate (pairs, for maps and attributes).
    pub max_aggregate_len: usize,
    /// Deepest nesting of aggregates (attributes count as one level).
    pub max_depth: usize,
    /// Most bytes (on the wire) of one top-level frame, all of its elements together.
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Redis's own proto-max-bulk-len default.
            max_bulk_len: 512 * 1024 * 1024,
            max_aggregate_len: 1 << 31,
            max_depth: 256,
            // Two maximal bulks: a large HGETALL or LRANGE is well within it.
            max_reply_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Outcome of one [`Parser::parse`] call.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A whole top-level frame; its bytes have been removed from the buffer.
    Complete(Frame),
    /// More bytes are needed; what was usable has been consumed and remembered.
    Incomplete,
}

/// The peer violated the protocol; the connection cannot be trusted any more.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid type byte {byte:#04x} ('{shown}')", byte = .0, shown = std::ascii::escape_default(*.0))]
    InvalidTypeByte(u8),
    #[error("invalid integer")]
    InvalidInteger,
    #[error("invalid double")]
    InvalidDouble,
    #[error("invalid boolean (expected 't' or 'f')")]
    InvalidBoolean,
    #[error("invalid big number")]
    InvalidBigNumber,
    #[error("invalid verbatim string (expected 'fmt:' prefix)")]
    InvalidVerbatim,
    #[error("invalid null (expected an empty line after '_')")]
    InvalidNull,
    #[error("missing CRLF terminator")]
    MissingCrlf,
    #[error("bulk length {len} exceeds the limit of {max} bytes")]
    BulkTooLong { len: i64, max: usize },
    #[error("aggregate length {len} exceeds the limit of {max} elements")]
    AggregateTooLong { len: i64, max: usize },
    #[error("nesting deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("invalid length {0}")]
    InvalidLength(i64),
    #[error("line too long")]
    LineTooLong,
    #[error("reply larger than the limit of {max} bytes")]
    ReplyTooLarge { max: usize },
}

/// Which configured limit a reply went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_bulk_len` (and a simple line longer than it).
    BulkLength,
    /// `max_aggregate_len`.
    AggregateLength,
    /// `max_depth`.
    Depth,
    /// `max_reply_bytes`.
    ReplyBytes,
}

impl ProtocolError {
    /// The limit this error enforces, if it is one: the peer may be honest but the reply too big.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            ProtocolError::BulkTooLong { .. } => Some(Limit::BulkLength),
            ProtocolError::AggregateTooLong { .. } => Some(Limit::AggregateLength),
            ProtocolError::TooDeep { .. } => Some(Limit::Depth),
            ProtocolError::ReplyTooLarge { .. } => Some(Limit::ReplyBytes),
            _ => None,
        }
    }
}

/// A bulk whose header has been consumed but whose payload has not arrived.
#[derive(Debug, Clone, Copy)]
struct PendingBulk {
    tag: u8,
    len: usize,
}

/// What reading one element produced.
enum Step {
    NeedMore,
    /// Progress was made (an aggregate opened or a bulk header read).
    Continue,
    Frame(Frame),
}

/// Incremental parser; keep one per connection and feed it the same buffer.
#[derive(Debug, Default)]
pub struct Parser {
    limits: Limits,
    stack: Vec<Building>,
    bulk: Option<PendingBulk>,
    /// How far into the buffer the current, unterminated line has already
    /// been searched for LF, so a slowly arriving line is scanned only once.
    scanned: usize,
    /// Bytes of the current top-level frame consumed so far.
    reply_bytes: usize,
    /// The type byte of the current top-level frame, once its first line has begun.
    top_tag: Option<u8>,
    /// Bytes looked at, to prove in tests that parsing stays linear.
    #[cfg(test)]
    examined: usize,
}

impl Parser {
    /// A parser with no partial frame, enforcing `limits` on everything read.
    pub fn new(limits: Limits) -> Self {
        Parser {
            limits,
            ..Parser::default()
        }
    }

    /// Consumes the bytes of one complete top-level frame from the front of
    /// `buf` as they become usable. On `Incomplete`, call again with the same
    /// buffer once more bytes have been appended: parsing resumes where it
    /// stopped. After an error the parser's state is unspecified.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Parsed, ProtocolError> {
        loop {
            let step = match self.bulk {
                Some(pending) => self.read_bulk(pending, buf)?,
                None => self.read_element(buf)?,
            };
            match step {
                Step::NeedMore => return Ok(Parsed::Incomplete),
                Step::Continue => {}
                Step::Frame(frame) => {
                    if let Some(done) = self.complete(frame) {
                        self.reply_bytes = 0;
                        self.top_tag = None;
                        return Ok(Parsed::Complete(done));
                    }
                }
            }
        }
    }

    /// With a bulk payload partially received: how many more bytes (payload
    /// and CRLF) must arrive, so the reader can reserve them in one go.
    /// `None` when no bulk payload is pending.
    pub fn pending_bulk_remaining(&self, buf: &BytesMut) -> Option<usize> {
        let pending = self.bulk?;
        Some(pending.len.saturating_add(2).saturating_sub(buf.len()))
    }

    /// The type byte of the top-level frame being read (`b'>'` for a RESP3 push), if one has begun:
    /// after an error, says whose frame went wrong.
    pub fn top_level_tag(&self) -> Option<u8> {
        self.top_tag
    }

    /// True when part of a frame has already been consumed from the buffer,
    /// so an EOF now would cut a reply in half even if the buffer is empty
    /// (a non-empty buffer means the same thing).
    pub fn is_mid_frame(&self) -> bool {
        !self.stack.is_empty() || self.bulk.is_some()
    }

    #[cfg(test)]
    pub(crate) fn bytes_examined(&self) -> usize {
        self.examined
    }

    #[cfg(test)]
    fn count(&mut self, n: usize) {
        self.examined += n;
    }

    #[cfg(not(test))]
    fn count(&mut self, _n: usize) {}

    /// Hands a finished element to the innermost open aggregate, closing as
    /// many levels as it completes; returns the frame once the top is done.
    fn complete(&mut self, mut frame: Frame) -> Option<Frame> {
        while let Some(open) = self.stack.last_mut() {
            frame = open.accept(frame)?;
            self.stack.pop();
        }
        Some(frame)
    }

    /// Reads one line-started element (a scalar or a header).
    fn read_element(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let Some(&tag) = buf.first() else {
            return Ok(Step::NeedMore);
        };
        if self.stack.is_empty() {
            self.top_tag.get_or_insert(tag);
        }
        // Validate the type byte now so garbage fails fast instead of being
        // buffered until a CRLF happens to show up.
        let limit = self.line_limit(tag)?;
        match self.read_line(buf, limit)? {
            Some(line) => self.element(tag, line),
            None => Ok(Step::NeedMore),
        }
    }

    fn line_limit(&self, tag: u8) -> Result<usize, ProtocolError> {
        match tag {
            b'+' | b'-' => Ok(self.limits.max_bulk_len),
            b':' | b'$' | b'*' | b'_' | b',' | b'#' | b'(' | b'!' | b'=' | b'%' | b'~' | b'>'
            | b'|' => Ok(MAX_HEADER_LINE),
            _ => Err(ProtocolError::InvalidTypeByte(tag)),
        }
    }

    /// Takes `<tag><content>\r\n` off the front of `buf` and returns the
    /// content (zero-copy), scanning only bytes not searched by earlier calls.
    fn read_line(
        &mut self,
        buf: &mut BytesMut,
        limit: usize,
    ) -> Result<Option<Bytes>, ProtocolError> {
        let start = self.scanned.max(1).min(buf.len());
        let found = buf[start..].iter().position(|&b| b == b'\n');
        let Some(offset) = found else {
            self.count(buf.len() - start);
            self.scanned = buf.len();
            // Content is at least len - 2 bytes (type byte, a possible '\r').
            if buf.len() > limit.saturating_add(2) {
                return Err(self.line_too_long(buf, buf.len() - 2));
            }
            // A line still arriving counts against the reply's bound too.
            if self.reply_bytes.saturating_add(buf.len()) > self.limits.max_reply_bytes {
                return Err(ProtocolError::ReplyTooLarge {
                    max: self.limits.max_reply_bytes,
                });
            }
            return Ok(None);
        };
        self.count(offset + 1);
        self.scanned = 0;
        let lf = start + offset;
        if lf < 2 || buf[lf - 1] != b'\r' {
            return Err(ProtocolError::MissingCrlf);
        }
        if lf - 2 > limit {
            return Err(self.line_too_long(buf, lf - 2));
        }
        self.consumed(lf + 1)?;
        let line = buf.split_to(lf + 1).freeze();
        Ok(Some(line.slice(1..lf - 1)))
    }

    /// A simple string or error past `max_bulk_len` is a reply over the limit (it may be honest); any
    /// other line that long is garbage.
    fn line_too_long(&self, buf: &BytesMut, len: usize) -> ProtocolError {
        match buf.first() {
            Some(b'+' | b'-') => ProtocolError::BulkTooLong {
                len: i64::try_from(len).unwrap_or(i64::MAX),
                max: self.limits.max_bulk_len,
            },
            _ => ProtocolError::LineTooLong,
        }
    }

    /// Interprets a complete line according to its type byte.
    fn element(&mut self, tag: u8, line: Bytes) -> Result<Step, ProtocolError> {
        let frame = match tag {
            b'+' => Frame::Simple(line),
            b'-' => Frame::Error(line),
            b':' => Frame::Integer(parse_integer(&line)?),
            b'_' if line.is_empty() => Frame::Null,
            b'_' => return Err(ProtocolError::InvalidNull),
            b',' => Frame::Double(parse_double(&line)?),
            b'#' => Frame::Boolean(parse_boolean(&line)?),
            b'(' => Frame::BigNumber(check_big_number(line)?),
            b'$' | b'!' | b'=' => return self.bulk_header(tag, parse_integer(&line)?),
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                return self.aggregate_header(tag, parse_integer(&line)?)
            }
            _ => return Err(ProtocolError::InvalidTypeByte(tag)),
        };
        Ok(Step::Frame(frame))
    }

    fn bulk_header(&mut self, tag: u8, declared: i64) -> Result<Step, ProtocolError> {
        if tag == b'$' && declared == -1 {
            return Ok(Step::Frame(Frame::NullBulk));
        }
        let len = usize::try_from(declared).map_err(|_| ProtocolError::InvalidLength(declared))?;
        let max = self.limits.max_bulk_len;
        if len > max {
            return Err(ProtocolError::BulkTooLong { len: declared, max });
        }
        // "fmt:" alone takes four bytes; reject before waiting for a payload.
        if tag == b'=' && len < 4 {
            return Err(ProtocolError::InvalidVerbatim);
        }
        // Refused as soon as declared, before its bytes are waited for.
        self.consumed(len + 2)?;
        self.bulk = Some(PendingBulk { tag, len });
        Ok(Step::Continue)
    }

    /// Takes a pending bulk payload once it and its CRLF are all buffered.
    fn read_bulk(
        &mut self,
        pending: PendingBulk,
        buf: &mut BytesMut,
    ) -> Result<Step, ProtocolError> {
        if buf.len() < pending.len.saturating_add(2) {
            return Ok(Step::NeedMore);
        }
        let payload = buf.split_to(pending.len).freeze();
        self.count(2);
        if buf[..2] != *b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        buf.advance(2);
        self.bulk = None;
        let frame = match pending.tag {
            b'!' => Frame::BulkError(payload),
            b'=' => verbatim(payload)?,
            _ => Frame::Bulk(payload),
        };
        Ok(Step::Frame(frame))
    }

    /// Counts `n` more bytes against the current reply's `max_reply_bytes`.
    fn consumed(&mut self, n: usize) -> Result<(), ProtocolError> {
        self.reply_bytes = self.reply_bytes.saturating_add(n);
        if self.reply_bytes > self.limits.max_reply_bytes {
            return Err(ProtocolError::ReplyTooLarge {
                max: self.limits.max_reply_bytes,
            });
        }
        Ok(())
    }

    fn aggregate_header(&mut self, tag: u8, declared: i64) -> Result<Step, ProtocolError> {
        if tag == b'*' && declared == -1 {
            return Ok(Step::Frame(Frame::NullArray));
        }
        let len = usize::try_from(declared).map_err(|_| ProtocolError::InvalidLength(declared))?;
        let max = self.limits.max_aggregate_len;
        if len > max {
            return Err(ProtocolError::AggregateTooLong { len: declared, max });
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(ProtocolError::TooDeep {
                max: self.limits.max_depth,
            });
        }
        let mut open = Building::new(tag, len);
        if let Some(empty) = open.finish_if_empty() {
            return Ok(Step::Frame(empty));
        }
        self.stack.push(open);
        Ok(Step::Continue)
    }
}

/// i64 with an optional sign; empty, junk or overflow are all rejected.
fn parse_integer(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError::InvalidInteger)
}

/// Rust's float syntax covers `inf`, `+inf`, `-inf`, `nan`, `1e10`, `10`.
fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError::InvalidDouble)
}

fn parse_boolean(line: &[u8]) -> Result<bool, ProtocolError> {
    match line {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err(ProtocolError::InvalidBoolean),
    }
}

/// Optional `-` then at least one ASCII digit.
fn check_big_number(line: Bytes) -> Result<Bytes, ProtocolError> {
    let digits = line.strip_prefix(b"-").unwrap_or(&line);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::InvalidBigNumber);
    }
    Ok(line)
}

/// Splits `fmt:text` into its 3-byte format and the text (zero-copy).
fn verbatim(payload: Bytes) -> Result<Frame, ProtocolError> {
    match payload.get(..4) {
        Some(&[a, b, c, b':']) => Ok(Frame::Verbatim {
            format: [a, b, c],
            text: payload.slice(4..),
        }),
        _ => Err(ProtocolError::InvalidVerbatim),
    }
}
