//! Reading `COMMAND INFO` into a [`KeyTable`], and applying one key spec to a command's arguments.
//!
//! An entry is `[name, arity, flags, first, last, step, acl categories, tips, key specs,
//! subcommands]` on Redis 7 (servers before 7 stop after the step or the categories). A key spec is
//! a map (RESP3) or flat key/value array (RESP2) of `flags`, `begin_search` and `find_keys`, the last
//! two being `{type, spec}` pairs. Anything this reader does not know becomes an `Unknown` part,
//! which makes lookups ask the server rather than guess.

use std::collections::HashMap;

use super::{arg, len_i64, Command, Found, KeyTable, KeyTableError, Legacy};
use crate::cluster::reply::{error_text, int, is_null, items, text, Fields};
use crate::resp::Frame;

/// Where a spec starts looking for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Begin {
    /// At this argument index.
    Index(i64),
    /// After `keyword` (compared case-insensitively), searched from `start_from` towards the end,
    /// or from the end backwards when `start_from` is negative.
    Keyword {
        keyword: Box<[u8]>,
        start_from: i64,
    },
    Unknown,
}

/// How many keys a spec covers once it found where they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Find {
    /// Up to `last_key` (relative to the start when >= 0, to the end when negative; with a `limit`,
    /// only the first 1/limit of the remaining arguments are keys).
    Range {
        last_key: i64,
        limit: i64,
    },
    /// The argument `key_num_idx` after the start holds the key count; keys begin `first_key` after
    /// the start.
    KeyNum {
        key_num_idx: i64,
        first_key: i64,
    },
    Unknown,
}

/// One key spec. (Key steps are not kept: only the first key is ever asked for.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeySpec {
    pub(super) begin: Begin,
    pub(super) find: Find,
    /// The `incomplete` flag: the spec may miss keys.
    pub(super) incomplete: bool,
}

impl KeySpec {
    /// True when the spec finds exactly the keys it covers.
    pub(super) fn is_exact(&self) -> bool {
        !self.incomplete && self.begin != Begin::Unknown && self.find != Find::Unknown
    }

    /// Where this spec's first key is in `args` (name at index 0).
    pub(super) fn first_position(&self, args: &[&[u8]]) -> Found {
        let argc = len_i64(args);
        let start = match &self.begin {
            Begin::Index(index) => *index,
            Begin::Keyword {
                keyword,
                start_from,
            } => match find_keyword(args, keyword, *start_from) {
                Some(after) => after,
                None => return Found::None,
            },
            Begin::Unknown => return Found::Invalid,
        };
        let (first, last) = match self.find {
            Find::Range { last_key, limit } => (start, range_end(start, argc, last_key, limit)),
            Find::KeyNum {
                key_num_idx,
                first_key,
            } => match key_count(args, start.saturating_add(key_num_idx)) {
                None => return Found::Invalid,
                Some(0) => return Found::None,
                Some(count) => {
                    let first = start.saturating_add(first_key);
                    (first, first.saturating_add(count - 1))
                }
            },
            Find::Unknown => return Found::Invalid,
        };
        if first < 1 || first >= argc || last >= argc || last < first {
            return Found::Invalid;
        }
        Found::At(first)
    }
}

/// The index after `keyword`. Forward searches stop before the last argument and backward ones
/// before the first (a keyword there could not be followed by a key); index 0 is the name.
fn find_keyword(args: &[&[u8]], keyword: &[u8], start_from: i64) -> Option<i64> {
    let argc = len_i64(args);
    let is_keyword = |i: &i64| arg(args, *i).is_some_and(|a| a.eq_ignore_ascii_case(keyword));
    let found = if start_from > 0 {
        (start_from..argc - 1).find(is_keyword)
    } else {
        // Redis gives up at once when the start is past the end (`startfrom` 0).
        let start = argc.saturating_add(start_from);
        if start >= argc {
            return None;
        }
        (2..=start).rev().find(is_keyword)
    };
    found.map(|i| i + 1)
}

/// The last key index of a range that starts at `first`.
fn range_end(first: i64, argc: i64, last_key: i64, limit: i64) -> i64 {
    if last_key >= 0 {
        first.saturating_add(last_key)
    } else if limit == 0 {
        argc.saturating_add(last_key)
    } else {
        let remaining = argc.saturating_sub(first);
        first
            .saturating_add(remaining.checked_div(limit).unwrap_or(0))
            .saturating_add(last_key)
    }
}

/// The key count at `index`, read like Redis reads integers (decimal, no sign but `-`, no leading
/// zero); `None` when it is missing, not a number or negative.
fn key_count(args: &[&[u8]], index: i64) -> Option<i64> {
    let text = arg(args, index).filter(|_| index >= 1)?;
    let digits = std::str::from_utf8(text).ok()?;
    let canonical = digits == "0" || digits.starts_with(|c: char| ('1'..='9').contains(&c));
    let count: i64 = digits.parse().ok().filter(|_| canonical)?;
    Some(count)
}

/// Reads a whole `COMMAND INFO` reply.
pub(super) fn parse_table(reply: &Frame) -> Result<KeyTable, KeyTableError> {
    if let Some(message) = error_text(reply) {
        return Err(KeyTableError::Server(message));
    }
    let entries = items(reply).ok_or(KeyTableError::Malformed("not an array of commands"))?;
    Ok(KeyTable {
        commands: parse_commands(entries),
    })
}

/// Commands by lower-case name; a subcommand (`object|encoding`) is filed under its own part.
/// Unreadable entries, and the nulls `COMMAND INFO` gives for unknown names, are skipped.
fn parse_commands(entries: &[Frame]) -> HashMap<Box<[u8]>, Command> {
    entries
        .iter()
        .filter(|e| !is_null(e))
        .filter_map(parse_command)
        .collect()
}

fn parse_command(entry: &Frame) -> Option<(Box<[u8]>, Command)> {
    let fields = items(entry)?;
    let full_name = text(fields.first()?)?;
    let name = match full_name.iter().rposition(|&b| b == b'|') {
        Some(bar) => &full_name[bar + 1..],
        None => full_name,
    };
    let movable = items(fields.get(2)?)?
        .iter()
        .filter_map(text)
        .any(|flag| flag.eq_ignore_ascii_case(b"movablekeys"));
    let command = Command {
        arity: int(fields.get(1)?)?,
        movable,
        legacy: Legacy {
            first: int(fields.get(3)?)?,
            last: int(fields.get(4)?)?,
        },
        specs: fields
            .get(8)
            .and_then(items)
            .map(|specs| specs.iter().map(parse_spec).collect())
            .unwrap_or_default(),
        subcommands: fields
            .get(9)
            .and_then(items)
            .map(parse_commands)
            .unwrap_or_default(),
    };
    Some((name.to_ascii_lowercase().into_boxed_slice(), command))
}

/// One key spec; parts that cannot be read are `Unknown`.
fn parse_spec(frame: &Frame) -> KeySpec {
    let Some(fields) = Fields::of(frame) else {
        return KeySpec {
            begin: Begin::Unknown,
            find: Find::Unknown,
            incomplete: true,
        };
    };
    let incomplete = fields.get("flags").and_then(items).is_some_and(|flags| {
        flags
            .iter()
            .filter_map(text)
            .any(|f| f.eq_ignore_ascii_case(b"incomplete"))
    });
    KeySpec {
        begin: fields
            .get("begin_search")
            .map_or(Begin::Unknown, parse_begin),
        find: fields.get("find_keys").map_or(Find::Unknown, parse_find),
        incomplete,
    }
}

/// A `{type, spec}` pair: the type name and the spec's fields.
fn typed(frame: &Frame) -> Option<(&[u8], Fields<'_>)> {
    let fields = Fields::of(frame)?;
    let kind = fields.get("type").and_then(text)?;
    let spec = Fields::of(fields.get("spec")?)?;
    Some((kind, spec))
}

fn parse_begin(frame: &Frame) -> Begin {
    let read = || -> Option<Begin> {
        let (kind, spec) = typed(frame)?;
        let num = |name| spec.get(name).and_then(int);
        match kind {
            b"index" => Some(Begin::Index(num("index")?)),
            b"keyword" => Some(Begin::Keyword {
                keyword: spec.get("keyword").and_then(text)?.into(),
                start_from: num("startfrom")?,
            }),
            _ => None,
        }
    };
    read().unwrap_or(Begin::Unknown)
}

fn parse_find(frame: &Frame) -> Find {
    let read = || -> Option<Find> {
        let (kind, spec) = typed(frame)?;
        let num = |name| spec.get(name).and_then(int);
        match kind {
            b"range" => Some(Find::Range {
                last_key: num("lastkey")?,
                limit: num("limit").unwrap_or(0),
            }),
            b"keynum" => Some(Find::KeyNum {
                key_num_idx: num("keynumidx")?,
                first_key: num("firstkey")?,
            }),
            _ => None,
        }
    };
    read().unwrap_or(Find::Unknown)
}
