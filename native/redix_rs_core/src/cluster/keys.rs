//! Where a command's keys are, learned from the server's own command table (`COMMAND INFO`), so a
//! cluster client can route any command, including ones added by later versions or modules, without
//! a hand-kept list.
//!
//! Redis 7 describes each command's keys with *key specs*: where to start looking (`begin_search`:
//! a fixed index, or the argument after a keyword) and how many keys follow (`find_keys`: a range,
//! or a count read from the arguments, as `EVAL`'s `numkeys`). Older servers give only the legacy
//! first/last/step triple. [`KeyTable::first_key`] applies them locally and answers with the first
//! key, [`KeyLookup::NoKeys`], or [`KeyLookup::Unknown`] when only the server can tell (the caller then
//! asks `COMMAND GETKEYS`).
//!
//! How the specs are applied, and why:
//! * When every spec of a command is exact (none `incomplete`, none of `unknown` type), they are
//!   applied as Redis applies them for `COMMAND GETKEYS`, every spec in order, and the first key
//!   found is the answer. A spec that does not fit the arguments (a key count beyond the end, say)
//!   makes Redis fall back to the command's own code, which this table cannot run: `Unknown`.
//!   A key count of 0 (`EVALSHA sha 0`) is no keys, not a misfit, so keyless scripts route
//!   without asking.
//! * Otherwise (`SORT`'s `unknown` specs, `MIGRATE`'s `incomplete` `KEYS` spec) the specs are read
//!   in order up to the first one of unknown type: the first non-empty key found is a key the
//!   command really uses, so it can route. An empty one is skipped: with such commands it is a
//!   placeholder more often than a key (`MIGRATE host port "" 0 5000 KEYS a b`). Nothing found is
//!   `Unknown`, never `NoKeys`.
//! * Specs flagged `not_key` count: they name what cluster mode routes on without being keys
//!   (`SPUBLISH`'s shard channel), even though `COMMAND GETKEYS` leaves them out.
//! * A command whose argument count its arity refuses has `NoKeys`: every node answers it with the
//!   same arity error, so it may go to any node.
//! * Commands with subcommands (`OBJECT ENCODING key`) are looked up by both names.

mod spec;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use thiserror::Error;

use crate::resp::Frame;
use spec::{Begin, Find, KeySpec};

/// Why a `COMMAND INFO` reply could not be read at all. (A single entry that cannot be read is
/// skipped instead: that command is then `Unknown`, and every other still routes locally.)
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyTableError {
    /// The server answered `COMMAND INFO` with an error.
    #[error("the server refused COMMAND INFO: {0}")]
    Server(String),
    /// The reply is not a list of commands.
    #[error("malformed COMMAND INFO reply: {0}")]
    Malformed(&'static str),
}

/// Where a command's first key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookup<'a> {
    /// The first key (or `not_key` routing argument) of the command.
    Key(&'a [u8]),
    /// The command has no key here: any node can run it.
    NoKeys,
    /// The table cannot say (unknown command, or keys only the command's own code can find): ask
    /// the server with `COMMAND GETKEYS`.
    Unknown,
}

/// Every command's key positions, keyed by lower-case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTable {
    commands: HashMap<Box<[u8]>, Command>,
}

/// What the table knows about one command or subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    /// Redis's arity: the exact argument count (name included) when positive, a minimum when
    /// negative.
    arity: i64,
    /// The `movablekeys` flag: keys whose positions depend on the arguments.
    movable: bool,
    /// The legacy first/last/step, used only when there are no key specs (servers before 7).
    legacy: Legacy,
    specs: Vec<KeySpec>,
    /// Keyed by the lower-case subcommand name (`encoding` for `object|encoding`).
    subcommands: HashMap<Box<[u8]>, Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Legacy {
    first: i64,
    last: i64,
}

impl KeyTable {
    /// Reads the reply to `COMMAND INFO` (or `COMMAND`), RESP2 or RESP3.
    pub fn from_command_info(reply: &Frame) -> Result<KeyTable, KeyTableError> {
        spec::parse_table(reply)
    }

    /// How many top-level commands the table knows.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Where the first key of `command` (its name, then its arguments) is.
    pub fn first_key<'a>(&self, command: &[&'a [u8]]) -> KeyLookup<'a> {
        let Some(name) = command.first() else {
            return KeyLookup::Unknown;
        };
        let Some(mut cmd) = lookup(&self.commands, name) else {
            return KeyLookup::Unknown;
        };
        if !cmd.subcommands.is_empty() {
            if !arity_fits(cmd.arity, command.len()) {
                return KeyLookup::NoKeys;
            }
            let Some(sub) = command.get(1).and_then(|s| lookup(&cmd.subcommands, s)) else {
                return KeyLookup::Unknown;
            };
            cmd = sub;
        }
        if !arity_fits(cmd.arity, command.len()) {
            return KeyLookup::NoKeys;
        }
        cmd.first_key(command)
    }
}

impl Command {
    fn first_key<'a>(&self, args: &[&'a [u8]]) -> KeyLookup<'a> {
        if self.specs.is_empty() {
            return self.legacy_first_key(args);
        }
        if self.specs.iter().all(KeySpec::is_exact) {
            exact_first_key(&self.specs, args)
        } else {
            partial_first_key(&self.specs, args)
        }
    }

    /// Servers before 7: the legacy range, when the command has one. Its first position is a key
    /// even for `movablekeys` commands (`SORT key ...`); without one, movable keys are unknown.
    fn legacy_first_key<'a>(&self, args: &[&'a [u8]]) -> KeyLookup<'a> {
        let last = if self.legacy.last < 0 {
            len_i64(args).saturating_add(self.legacy.last)
        } else {
            self.legacy.last
        };
        match arg(args, self.legacy.first) {
            Some(key) if self.legacy.first > 0 && last >= self.legacy.first => KeyLookup::Key(key),
            _ if self.movable => KeyLookup::Unknown,
            _ => KeyLookup::NoKeys,
        }
    }
}

/// Every spec exact: apply them all, as Redis does; any misfit means Redis would defer to code we
/// do not have.
fn exact_first_key<'a>(specs: &[KeySpec], args: &[&'a [u8]]) -> KeyLookup<'a> {
    let mut first = None;
    for spec in specs {
        match spec.first_position(args) {
            Found::Invalid => return KeyLookup::Unknown,
            Found::None => {}
            Found::At(pos) => {
                first = first.or(Some(pos));
            }
        }
    }
    match first.and_then(|pos| arg(args, pos)) {
        Some(key) => KeyLookup::Key(key),
        None => KeyLookup::NoKeys,
    }
}

/// Some spec inexact: the first non-empty key found before an unknown spec, else `Unknown`.
fn partial_first_key<'a>(specs: &[KeySpec], args: &[&'a [u8]]) -> KeyLookup<'a> {
    for spec in specs {
        if spec.begin == Begin::Unknown || spec.find == Find::Unknown {
            break;
        }
        match spec.first_position(args) {
            Found::Invalid => break,
            Found::None => {}
            Found::At(pos) => match arg(args, pos) {
                Some(key) if !key.is_empty() => return KeyLookup::Key(key),
                _ => {}
            },
        }
    }
    KeyLookup::Unknown
}

/// What one spec finds in a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Its first key is at this argument index.
    At(i64),
    /// No key here: the keyword is absent, or the key count is 0.
    None,
    /// The spec does not fit the arguments (or is of unknown type).
    Invalid,
}

/// Whether `argc` arguments (name included) satisfy `arity`.
fn arity_fits(arity: i64, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= arity.saturating_neg()
    }
}

/// The argument at a (possibly negative or out-of-range) index.
fn arg<'a>(args: &[&'a [u8]], index: i64) -> Option<&'a [u8]> {
    usize::try_from(index)
        .ok()
        .and_then(|i| args.get(i))
        .copied()
}

fn len_i64(args: &[&[u8]]) -> i64 {
    i64::try_from(args.len()).unwrap_or(i64::MAX)
}

/// Looks a command name up case-insensitively, without allocating for ordinary names.
fn lookup<'t>(map: &'t HashMap<Box<[u8]>, Command>, name: &[u8]) -> Option<&'t Command> {
    if !name.iter().any(u8::is_ascii_uppercase) {
        return map.get(name);
    }
    let mut buf = [0u8; 64];
    match buf.get_mut(..name.len()) {
        Some(lower) => {
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            map.get(&*lower)
        }
        // Longer than any command name Redis has; still looked up, at the cost of an allocation.
        None => map.get(name.to_ascii_lowercase().as_slice()),
    }
}
