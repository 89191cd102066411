//! Which commands a client-side cache may answer, and which keys each answer depends on, derived
//! from the server's own `COMMAND INFO` (RESP2 or RESP3), so that modules and later versions are
//! judged by the same rules as the built-in commands.
//!
//! A command is cacheable when its reply depends on the contents of its keys alone: for the same
//! contents it is the same reply, and Redis invalidates it when they change. From each entry:
//!
//! * no subcommands (`OBJECT`, `MEMORY`, `XINFO`: what they report is internal encodings, memory,
//!   idle times and consumer lag, none of which Redis invalidates);
//! * flag `readonly`, and none of these flags: `write` and `may_replicate` (changes data),
//!   `random` (Redis 6's mark of a nondeterministic reply), `blocking`, `pubsub`, `admin`,
//!   `noscript` (scripts: `EVAL_RO` & co.), `movablekeys` and `no_mandatory_keys` (the keys are not
//!   at fixed positions: finding them would take the key specs; left out for now);
//! * none of the ACL categories `@dangerous`, `@scripting`, `@blocking`, `@pubsub`, `@admin`;
//! * not the command tip `nondeterministic_output` (Redis 7's successor of `random`: `TTL`, `PTTL`,
//!   `SRANDMEMBER`, `HRANDFIELD`, `ZRANDMEMBER`, `*SCAN`, `DUMP`, `XPENDING`, `OBJECT *`). The tip
//!   `nondeterministic_output_order` is fine (`SMEMBERS`, `HGETALL`): the order of a cached reply is
//!   one Redis itself gave for those same contents;
//! * at least one key (a legacy first key above 0: `TIME`, `PING`, `KEYS`, `DBSIZE`, `LOLWUT` have
//!   none, and tracking follows keys only);
//! * not in [`EXCLUDED`], the commands whose reply changes with time or that are read for a side
//!   effect, which no flag says.
//!
//! A cached read of a key with an expiry is served until Redis reclaims the key (on access or by
//! its expiry cycle) and pushes the invalidation; that lag is Redis's, the same for every client.

use std::collections::HashMap;

use thiserror::Error;

use crate::resp::Frame;

/// Commands excluded by name, with why: what their reply depends on is not the keys' contents.
pub const EXCLUDED: &[(&str, &str)] = &[
    ("ttl", "counts down with time alone"),
    ("pttl", "counts down with time alone"),
    (
        "expiretime",
        "reports expiry, which Redis applies lazily; kept with TTL and PTTL",
    ),
    (
        "pexpiretime",
        "reports expiry, which Redis applies lazily; kept with TTL and PTTL",
    ),
    (
        "object",
        "idle time and frequency change with time and access; encodings change without a write",
    ),
    (
        "touch",
        "read for its side effect (the access time): answered from a cache it would touch nothing",
    ),
    (
        "sort_ro",
        "BY and GET read keys it does not declare, which tracking does not follow",
    ),
    ("xpending", "reports idle times, which grow with time alone"),
];

const EXCLUDING_FLAGS: &[&str] = &[
    "write",
    "may_replicate",
    "random",
    "blocking",
    "pubsub",
    "admin",
    "noscript",
    "movablekeys",
    "no_mandatory_keys",
];

const EXCLUDING_CATEGORIES: &[&str] =
    &["@dangerous", "@scripting", "@blocking", "@pubsub", "@admin"];

const NONDETERMINISTIC: &[u8] = b"nondeterministic_output";

/// Why a command is not cacheable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Exclusion {
    #[error("not flagged readonly")]
    NotReadonly,
    #[error("flagged {0}")]
    Flag(String),
    #[error("in ACL category {0}")]
    Category(String),
    #[error("its output is nondeterministic")]
    Nondeterministic,
    #[error("it has subcommands")]
    Subcommands,
    #[error("it has no key")]
    NoKeys,
    #[error("its reply {0}")]
    Listed(&'static str),
}

/// Why one command cannot be served from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NotCacheable {
    #[error("an empty command")]
    Empty,
    #[error("the server does not know {0:?}")]
    Unknown(String),
    #[error("{name} is not cacheable: {why}")]
    Excluded { name: String, why: Exclusion },
    /// The argument count does not fit the command (the server will answer with an error).
    #[error("wrong number of arguments for {0}")]
    Arity(String),
}

/// Why a `COMMAND INFO` reply could not be read at all (an entry that cannot be read is left out:
/// that command is then unknown, hence not cacheable).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandInfoError {
    #[error("the server refused COMMAND INFO: {0}")]
    Server(String),
    #[error("malformed COMMAND INFO reply: not a list of commands")]
    Malformed,
}

/// Where a cacheable command's keys are: Redis's legacy first/last/step, exact for commands
/// without `movablekeys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    arity: i64,
    first: i64,
    /// Negative: counted from the end (-1 is the last argument).
    last: i64,
    step: i64,
}

/// Every command the server described, cacheable or why not, by lower-case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cacheable {
    commands: HashMap<Box<[u8]>, Verdict>,
}

/// A command's rule, or why it has none.
type Verdict = Result<Rule, Exclusion>;

impl Cacheable {
    /// Reads the reply to `COMMAND INFO` (or `COMMAND`).
    pub fn from_command_info(reply: &Frame) -> Result<Cacheable, CommandInfoError> {
        let entries = match reply {
            Frame::Error(m) | Frame::BulkError(m) => {
                return Err(CommandInfoError::Server(
                    String::from_utf8_lossy(m).into_owned(),
                ))
            }
            other => items(other).ok_or(CommandInfoError::Malformed)?,
        };
        let commands = entries.iter().filter_map(read_entry).collect();
        Ok(Cacheable { commands })
    }

    /// How many commands the server described.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether `name` is cacheable, or why not.
    pub fn verdict(&self, name: &[u8]) -> Result<(), NotCacheable> {
        self.rule(name).map(|_| ())
    }

    /// The names of the cacheable commands, in no order.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.commands
            .iter()
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(name, _)| &name[..])
    }

    /// The keys `command` (its name, then its arguments) reads, if it may be served from the
    /// cache: at least one, in order, repeated ones included.
    pub fn keys<'a, A: AsRef<[u8]>>(
        &self,
        command: &'a [A],
    ) -> Result<Vec<&'a [u8]>, NotCacheable> {
        let name = command.first().ok_or(NotCacheable::Empty)?.as_ref();
        let rule = self.rule(name)?;
        let argc = i64::try_from(command.len()).unwrap_or(i64::MAX);
        if !arity_fits(rule.arity, argc) {
            return Err(NotCacheable::Arity(show(name)));
        }
        let last = if rule.last < 0 {
            argc + rule.last
        } else {
            rule.last
        };
        let keys: Vec<&[u8]> = (rule.first..=last.min(argc - 1))
            .step_by(rule.step as usize)
            .filter_map(|i| command.get(i as usize).map(AsRef::as_ref))
            .collect();
        if keys.is_empty() {
            return Err(NotCacheable::Arity(show(name)));
        }
        Ok(keys)
    }

    fn rule(&self, name: &[u8]) -> Result<Rule, NotCacheable> {
        match self.lookup(name) {
            Some(Ok(rule)) => Ok(*rule),
            Some(Err(why)) => Err(NotCacheable::Excluded {
                name: show(name),
                why: why.clone(),
            }),
            None => Err(NotCacheable::Unknown(show(name))),
        }
    }
}

impl Cacheable {
    /// Looks `name` up case-insensitively, without allocating for any real command name (this is
    /// on the path of every cached read).
    fn lookup(&self, name: &[u8]) -> Option<&Verdict> {
        let mut buf = [0u8; 64];
        match buf.get_mut(..name.len()) {
            Some(lower) => {
                lower.copy_from_slice(name);
                lower.make_ascii_lowercase();
                self.commands.get(&*lower)
            }
            None => self.commands.get(name.to_ascii_lowercase().as_slice()),
        }
    }
}

/// One entry: its lower-case name and verdict, or `None` if it cannot be read (or is null: a name
/// the server does not know).
fn read_entry(entry: &Frame) -> Option<(Box<[u8]>, Verdict)> {
    let fields = items(entry)?;
    let name = text(fields.first()?)?.to_ascii_lowercase();
    let rule = Rule {
        arity: int(fields.get(1)?)?,
        first: int(fields.get(3)?)?,
        last: int(fields.get(4)?)?,
        step: int(fields.get(5)?)?,
    };
    let flags = words(fields.get(2)?)?;
    let categories = fields.get(6).and_then(words).unwrap_or_default();
    let tips = fields.get(7).and_then(words).unwrap_or_default();
    let subcommands = fields.get(9).and_then(items).is_some_and(|s| !s.is_empty());
    let verdict = judge(&name, &flags, &categories, &tips, subcommands).and_then(|()| keyed(rule));
    Some((name.into_boxed_slice(), verdict))
}

/// The rules of the module header, in order.
fn judge(
    name: &[u8],
    flags: &[Vec<u8>],
    categories: &[Vec<u8>],
    tips: &[Vec<u8>],
    subcommands: bool,
) -> Result<(), Exclusion> {
    // First: a container's own flags are empty, its subcommands have theirs.
    if subcommands {
        return Err(Exclusion::Subcommands);
    }
    if !flags.iter().any(|f| f == b"readonly") {
        return Err(Exclusion::NotReadonly);
    }
    if let Some(flag) = first_of(flags, EXCLUDING_FLAGS) {
        return Err(Exclusion::Flag(flag));
    }
    if let Some(category) = first_of(categories, EXCLUDING_CATEGORIES) {
        return Err(Exclusion::Category(category));
    }
    if tips.iter().any(|t| t == NONDETERMINISTIC) {
        return Err(Exclusion::Nondeterministic);
    }
    match EXCLUDED
        .iter()
        .find(|(excluded, _)| excluded.as_bytes() == name)
    {
        Some((_, why)) => Err(Exclusion::Listed(why)),
        None => Ok(()),
    }
}

/// The rule, if it names at least one key in a way `keys` can follow.
fn keyed(rule: Rule) -> Result<Rule, Exclusion> {
    let has_keys = rule.first > 0 && rule.step > 0 && (rule.last < 0 || rule.last >= rule.first);
    if has_keys {
        Ok(rule)
    } else {
        Err(Exclusion::NoKeys)
    }
}

/// The first word of `have` that is in `excluding`.
fn first_of(have: &[Vec<u8>], excluding: &[&str]) -> Option<String> {
    have.iter()
        .find(|word| excluding.iter().any(|e| e.as_bytes() == word.as_slice()))
        .map(|word| show(word))
}

/// Whether `argc` arguments (name included) satisfy `arity`: exact when positive, a minimum when
/// negative.
fn arity_fits(arity: i64, argc: i64) -> bool {
    if arity >= 0 {
        argc == arity
    } else {
        argc >= arity.saturating_neg()
    }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Strips RESP3 attributes, which annotate a value without changing it.
fn value(frame: &Frame) -> &Frame {
    match frame {
        Frame::Attribute { value, .. } => value,
        other => other,
    }
}

/// The bytes of a string-like frame.
fn text(frame: &Frame) -> Option<&[u8]> {
    match value(frame) {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        Frame::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

fn int(frame: &Frame) -> Option<i64> {
    match value(frame) {
        Frame::Integer(n) => Some(*n),
        _ => None,
    }
}

/// The elements of an array (RESP2) or set (RESP3).
fn items(frame: &Frame) -> Option<&[Frame]> {
    match value(frame) {
        Frame::Array(items) | Frame::Set(items) => Some(items),
        _ => None,
    }
}

/// A list of words (flags, categories, tips), lower-cased.
fn words(frame: &Frame) -> Option<Vec<Vec<u8>>> {
    items(frame)?
        .iter()
        .map(|w| text(w).map(<[u8]>::to_ascii_lowercase))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(text: &str) -> Frame {
        Frame::Simple(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn b(text: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn list(words: &[&str]) -> Frame {
        Frame::Array(words.iter().map(|w| s(w)).collect())
    }

    /// A Redis 7 style entry (RESP2 shape).
    fn entry(
        name: &str,
        arity: i64,
        flags: &[&str],
        range: (i64, i64, i64),
        tips: &[&str],
    ) -> Frame {
        Frame::Array(vec![
            b(name),
            Frame::Integer(arity),
            list(flags),
            Frame::Integer(range.0),
            Frame::Integer(range.1),
            Frame::Integer(range.2),
            list(&["@read"]),
            list(tips),
            Frame::Array(vec![]),
            Frame::Array(vec![]),
        ])
    }

    fn table(entries: Vec<Frame>) -> Cacheable {
        Cacheable::from_command_info(&Frame::Array(entries)).unwrap()
    }

    #[test]
    fn keys_follow_first_last_step() {
        let t = table(vec![
            entry("mget", -2, &["readonly", "fast"], (1, -1, 1), &[]),
            entry("lcs", -3, &["readonly"], (1, 2, 1), &[]),
            entry("pairs", -3, &["readonly"], (1, -1, 2), &[]),
        ]);
        let mget: [&[u8]; 4] = [b"MGET", b"a", b"b", b"a"];
        assert_eq!(t.keys(&mget).unwrap(), vec![&b"a"[..], b"b", b"a"]);
        let lcs: [&[u8]; 4] = [b"lcs", b"x", b"y", b"LEN"];
        assert_eq!(t.keys(&lcs).unwrap(), vec![&b"x"[..], b"y"]);
        let pairs: [&[u8]; 5] = [b"pairs", b"k1", b"v1", b"k2", b"v2"];
        assert_eq!(t.keys(&pairs).unwrap(), vec![&b"k1"[..], b"k2"]);
        let short: [&[u8]; 1] = [b"mget"];
        assert_eq!(t.keys(&short), Err(NotCacheable::Arity("mget".into())));
        let none: [&[u8]; 0] = [];
        assert_eq!(t.keys(&none), Err(NotCacheable::Empty));
    }

    #[test]
    fn exclusions_say_why() {
        let t = table(vec![
            entry("set", -3, &["write", "denyoom"], (1, 1, 1), &[]),
            entry("srandmember", -2, &["readonly", "random"], (1, 1, 1), &[]),
            entry(
                "zscan",
                -3,
                &["readonly"],
                (1, 1, 1),
                &["nondeterministic_output"],
            ),
            entry(
                "smembers",
                2,
                &["readonly"],
                (1, 1, 1),
                &["nondeterministic_output_order"],
            ),
            entry("ttl", 2, &["readonly", "fast"], (1, 1, 1), &[]),
            entry("time", 1, &["readonly"], (0, 0, 0), &[]),
            Frame::Null,
        ]);
        let why = |name: &str| match t.verdict(name.as_bytes()) {
            Err(NotCacheable::Excluded { why, .. }) => Some(why),
            Ok(()) => None,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(why("set"), Some(Exclusion::NotReadonly));
        assert_eq!(why("SRANDMEMBER"), Some(Exclusion::Flag("random".into())));
        assert_eq!(why("zscan"), Some(Exclusion::Nondeterministic));
        assert_eq!(why("smembers"), None);
        assert!(matches!(why("ttl"), Some(Exclusion::Listed(_))));
        assert_eq!(why("time"), Some(Exclusion::NoKeys));
        assert_eq!(
            t.verdict(b"nosuch"),
            Err(NotCacheable::Unknown("nosuch".into()))
        );
        assert_eq!(t.len(), 6);
        assert_eq!(t.names().collect::<Vec<_>>(), vec![&b"smembers"[..]]);
    }

    #[test]
    fn a_refusal_or_garbage_is_an_error() {
        let refused = Frame::Error(Bytes::from_static(b"NOPERM no"));
        assert_eq!(
            Cacheable::from_command_info(&refused),
            Err(CommandInfoError::Server("NOPERM no".into()))
        );
        assert_eq!(
            Cacheable::from_command_info(&Frame::Integer(1)),
            Err(CommandInfoError::Malformed)
        );
        // An unreadable entry is left out, the rest still read.
        let t = table(vec![
            Frame::Integer(3),
            entry("get", 2, &["readonly"], (1, 1, 1), &[]),
        ]);
        assert_eq!(t.len(), 1);
        assert!(t.verdict(b"get").is_ok());
    }
}
