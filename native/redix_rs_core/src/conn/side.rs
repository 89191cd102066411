//! Which submissions go to a side connection: those holding a command that may block the connection
//! it runs on (what Redis flags `blocking` in `COMMAND INFO`), so that one caller's `BLPOP q 0` never
//! stalls the callers sharing the main connection.
//!
//! The set is a fixed table rather than one read from the server's `COMMAND INFO` at connect time:
//! the submit NIF decides before anything is queued, also while the connection is (re)connecting,
//! and the check must cost the GET path nothing measurable (a length test and a byte compare here,
//! no lock, no map lookup). The table is Redis 7.2's `blocking` commands, checked against the
//! server's own flags by the test suite (`side_connections_test.exs` compares it with
//! `COMMAND INFO` of the redis-server it runs). Two of them stay on the shared connection on purpose:
//! `WAIT` and `WAITAOF` wait for the writes made *on the connection that sends them*, so sending them
//! anywhere else would wait for nothing. `XREAD` and `XREADGROUP` block only with a `BLOCK` argument
//! (Redis flags them `blocking` whatever their arguments): without it they are plain reads.
//! Blocking commands of modules (none in Redis itself) are not in the table and stay on the shared
//! connection, as every command does with `max_side_connections: 0`.

/// How a command name relates to blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// Always blocks (until its timeout, or forever with 0).
    Always,
    /// Blocks only when one of its arguments is `BLOCK` (`XREAD`, `XREADGROUP`).
    WithBlockArgument,
}

/// The commands that go to a side connection, upper-case.
pub const BLOCKING_COMMANDS: [&str; 10] = [
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BLMOVE",
    "BLMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "BZMPOP",
    "XREAD",
    "XREADGROUP",
];

/// Blocking commands that stay on the shared connection (see the module doc).
pub const SHARED_BLOCKING_COMMANDS: [&str; 2] = ["WAIT", "WAITAOF"];

/// Classifies a command by its name (any case). Names shorter than 5 or longer than 10 bytes, and
/// names starting with neither `B` nor `X`, are rejected by their first two tests: a GET costs a
/// length compare.
#[inline]
pub fn classify(name: &[u8]) -> Option<Blocking> {
    if name.len() < 5 || name.len() > 10 {
        return None;
    }
    match name[0] {
        b'B' | b'b' => {
            let always = BLOCKING_COMMANDS[..8]
                .iter()
                .any(|c| c.as_bytes().eq_ignore_ascii_case(name));
            always.then_some(Blocking::Always)
        }
        b'X' | b'x' => {
            let stream =
                name.eq_ignore_ascii_case(b"XREAD") || name.eq_ignore_ascii_case(b"XREADGROUP");
            stream.then_some(Blocking::WithBlockArgument)
        }
        _ => None,
    }
}

/// What an argument of `XREAD`/`XREADGROUP` says, read left to right: `BLOCK` makes it block;
/// `STREAMS` ends the options (what follows are keys and ids, and a key may be named `BLOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamArgument {
    Block,
    Streams,
    Other,
}

/// Classifies one argument of `XREAD`/`XREADGROUP` (any case).
#[inline]
pub fn stream_argument(arg: &[u8]) -> StreamArgument {
    if arg.eq_ignore_ascii_case(b"BLOCK") {
        StreamArgument::Block
    } else if arg.eq_ignore_ascii_case(b"STREAMS") {
        StreamArgument::Streams
    } else {
        StreamArgument::Other
    }
}

/// Whether a command given as its elements (name first) blocks the connection it runs on.
pub fn blocks<'a>(command: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut scan = Scan::default();
    for element in command {
        if !scan.element(element) {
            break;
        }
    }
    scan.blocks()
}

/// Reads one command's elements as they come (for an encoder that walks them anyway), and says
/// whether it blocks. Elements that are not text (integers) count as text that is neither a
/// blocking name nor `BLOCK`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    state: ScanState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// Nothing seen yet.
    #[default]
    Name,
    /// `XREAD`/`XREADGROUP`, `BLOCK` not seen yet.
    StreamOptions,
    Blocks,
    DoesNotBlock,
}

impl Scan {
    /// Takes the command's next element; returns false once the answer is known (later elements
    /// change nothing).
    #[inline]
    pub fn element(&mut self, text: &[u8]) -> bool {
        self.state = match self.state {
            ScanState::Name => match classify(text) {
                Some(Blocking::Always) => ScanState::Blocks,
                Some(Blocking::WithBlockArgument) => ScanState::StreamOptions,
                None => ScanState::DoesNotBlock,
            },
            ScanState::StreamOptions => match stream_argument(text) {
                StreamArgument::Block => ScanState::Blocks,
                StreamArgument::Streams => ScanState::DoesNotBlock,
                StreamArgument::Other => ScanState::StreamOptions,
            },
            settled => settled,
        };
        self.state == ScanState::StreamOptions
    }

    /// Whether the elements taken so far make the command blocking.
    #[inline]
    pub fn blocks(&self) -> bool {
        self.state == ScanState::Blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks_str(command: &[&str]) -> bool {
        blocks(command.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn the_table_blocks_in_any_case() {
        for name in BLOCKING_COMMANDS {
            let lower = name.to_ascii_lowercase();
            if name.starts_with('X') {
                assert!(
                    !blocks_str(&[name, "STREAMS", "s", "0"]),
                    "{name} without BLOCK"
                );
                assert!(
                    blocks_str(&[name, "BLOCK", "0", "STREAMS", "s", "$"]),
                    "{name}"
                );
                assert!(
                    blocks_str(&[&lower, "count", "1", "block", "10"]),
                    "{lower}"
                );
            } else {
                assert!(blocks_str(&[name, "q", "0"]), "{name}");
                assert!(blocks_str(&[&lower, "q", "0"]), "{lower}");
            }
        }
    }

    #[test]
    fn everything_else_stays() {
        for command in [
            &["GET", "BLPOP"][..],
            &["WAIT", "1", "0"],
            &["WAITAOF", "1", "0", "0"],
            &["LPOP", "q"],
            &["BITCOUNT", "k"],
            &["BLPOPX", "q", "0"],
            &["XADD", "s", "*", "BLOCK", "1"],
            &["XREADGROUPS", "BLOCK", "0"],
            &["XREAD", "STREAMS", "BLOCK", "0"],
            &["B"],
            &[],
        ] {
            assert!(!blocks_str(command), "{command:?}");
        }
    }
}
