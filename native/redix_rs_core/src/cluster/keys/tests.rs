//! Unit tests of the key table on hand-written `COMMAND INFO` entries, in both protocols, for what
//! a real Redis 7.0 table cannot show: the legacy triple of older servers, malformed entries, and
//! spec types this version does not know. The real table is tested in tests/cluster_keys.rs.

use bytes::Bytes;

use super::*;

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn status(s: &str) -> Frame {
    Frame::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn fields(resp3: bool, pairs: Vec<(&str, Frame)>) -> Frame {
    if resp3 {
        Frame::Map(pairs.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    } else {
        Frame::Array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), v]).collect())
    }
}

fn typed(resp3: bool, kind: &str, spec: Vec<(&str, Frame)>) -> Frame {
    fields(
        resp3,
        vec![("type", bulk(kind)), ("spec", fields(resp3, spec))],
    )
}

fn index(resp3: bool, i: i64) -> Frame {
    typed(resp3, "index", vec![("index", Frame::Integer(i))])
}

fn keyword(resp3: bool, word: &str, from: i64) -> Frame {
    typed(
        resp3,
        "keyword",
        vec![("keyword", bulk(word)), ("startfrom", Frame::Integer(from))],
    )
}

fn range(resp3: bool, last: i64, limit: i64) -> Frame {
    typed(
        resp3,
        "range",
        vec![
            ("lastkey", Frame::Integer(last)),
            ("keystep", Frame::Integer(1)),
            ("limit", Frame::Integer(limit)),
        ],
    )
}

fn keynum(resp3: bool, idx: i64, first: i64) -> Frame {
    typed(
        resp3,
        "keynum",
        vec![
            ("keynumidx", Frame::Integer(idx)),
            ("firstkey", Frame::Integer(first)),
            ("keystep", Frame::Integer(1)),
        ],
    )
}

fn spec(resp3: bool, flags: &[&str], begin: Frame, find: Frame) -> Frame {
    let flags = flags.iter().map(|f| status(f)).collect();
    let flags = if resp3 {
        Frame::Set(flags)
    } else {
        Frame::Array(flags)
    };
    fields(
        resp3,
        vec![
            ("flags", flags),
            ("begin_search", begin),
            ("find_keys", find),
        ],
    )
}

/// A Redis 7 entry: name, arity, flags, first, last, step, categories, tips, specs, subcommands.
fn entry(name: &str, arity: i64, flags: &[&str], legacy: [i64; 3], specs: Vec<Frame>) -> Frame {
    Frame::Array(vec![
        bulk(name),
        Frame::Integer(arity),
        Frame::Array(flags.iter().map(|f| status(f)).collect()),
        Frame::Integer(legacy[0]),
        Frame::Integer(legacy[1]),
        Frame::Integer(legacy[2]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(specs),
        Frame::Array(vec![]),
    ])
}

fn table(resp3: bool) -> KeyTable {
    let r = resp3;
    let mut object = entry("object", -2, &[], [0, 0, 0], vec![]);
    if let Frame::Array(parts) = &mut object {
        parts[9] = Frame::Array(vec![
            entry(
                "object|encoding",
                3,
                &["readonly"],
                [2, 2, 1],
                vec![spec(r, &["RO"], index(r, 2), range(r, 0, 0))],
            ),
            entry("object|help", 2, &[], [0, 0, 0], vec![]),
        ]);
    }
    let reply = Frame::Array(vec![
        entry(
            "get",
            2,
            &["readonly"],
            [1, 1, 1],
            vec![spec(r, &["RO"], index(r, 1), range(r, 0, 0))],
        ),
        entry(
            "mset",
            -3,
            &["write"],
            [1, -1, 2],
            vec![spec(r, &["OW"], index(r, 1), range(r, -1, 0))],
        ),
        entry(
            "eval",
            -3,
            &["movablekeys"],
            [0, 0, 0],
            vec![spec(r, &["RW"], index(r, 2), keynum(r, 0, 1))],
        ),
        entry(
            "xread",
            -4,
            &["movablekeys"],
            [0, 0, 0],
            vec![spec(r, &["RO"], keyword(r, "STREAMS", 1), range(r, -1, 2))],
        ),
        entry(
            "zunionstore",
            -4,
            &["movablekeys"],
            [1, 1, 1],
            vec![
                spec(r, &["OW"], index(r, 1), range(r, 0, 0)),
                spec(r, &["RO"], index(r, 2), keynum(r, 0, 1)),
            ],
        ),
        entry(
            "migrate",
            -6,
            &["movablekeys"],
            [3, 3, 1],
            vec![
                spec(r, &["RW"], index(r, 3), range(r, 0, 0)),
                spec(
                    r,
                    &["RW", "incomplete"],
                    keyword(r, "KEYS", -2),
                    range(r, -1, 0),
                ),
            ],
        ),
        entry(
            "sort",
            -2,
            &["movablekeys"],
            [1, 1, 1],
            vec![
                spec(r, &["RO"], index(r, 1), range(r, 0, 0)),
                spec(
                    r,
                    &["OW"],
                    typed(r, "unknown", vec![]),
                    typed(r, "unknown", vec![]),
                ),
            ],
        ),
        entry(
            "spublish",
            3,
            &["pubsub"],
            [1, 1, 1],
            vec![spec(r, &["not_key"], index(r, 1), range(r, 0, 0))],
        ),
        entry(
            "future",
            -2,
            &[],
            [0, 0, 0],
            vec![spec(r, &["RO"], typed(r, "regex", vec![]), range(r, 0, 0))],
        ),
        entry("ping", -1, &["fast"], [0, 0, 0], vec![]),
        object,
        Frame::Null,
        bulk("not an entry"),
        Frame::Array(vec![bulk("half"), Frame::Integer(2)]),
    ]);
    KeyTable::from_command_info(&reply).expect("table")
}

fn first<'a>(t: &KeyTable, args: &[&'a str]) -> KeyLookup<'a> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    t.first_key(&args)
}

fn key(k: &str) -> KeyLookup<'_> {
    KeyLookup::Key(k.as_bytes())
}

#[test]
fn reads_both_protocols_alike_and_skips_unreadable_entries() {
    let (resp2, resp3) = (table(false), table(true));
    assert_eq!(resp2, resp3);
    assert_eq!(resp2.len(), 11);
    assert_eq!(first(&resp2, &["half", "x"]), KeyLookup::Unknown);
}

#[test]
fn fixed_positions_and_arity() {
    let t = table(true);
    assert_eq!(first(&t, &["GET", "k"]), key("k"));
    assert_eq!(first(&t, &["get", ""]), key(""));
    assert_eq!(first(&t, &["MSET", "a", "1", "b", "2"]), key("a"));
    assert_eq!(first(&t, &["get"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["get", "a", "b"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["PING"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["nosuch", "k"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &[]), KeyLookup::Unknown);
    let long = "g".repeat(100);
    assert_eq!(first(&t, &[long.as_str(), "k"]), KeyLookup::Unknown);
}

#[test]
fn key_counts_keywords_and_limits() {
    let t = table(false);
    assert_eq!(first(&t, &["EVAL", "s", "0"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["eval", "s", "0", "arg"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["eval", "s", "2", "a", "b", "c"]), key("a"));
    assert_eq!(first(&t, &["eval", "s", "3", "a", "b"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &["eval", "s", "-1", "a"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &["eval", "s", "01", "a"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &["eval", "s", "+1", "a"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &["eval", "s", "x", "a"]), KeyLookup::Unknown);
    let xread = ["XREAD", "COUNT", "1", "streams", "a", "b", "0", "0"];
    assert_eq!(first(&t, &xread), key("a"));
    assert_eq!(
        first(&t, &["xread", "count", "streams", "streams", "s", "0"]),
        key("streams")
    );
    assert_eq!(
        first(&t, &["xread", "block", "0", "count"]),
        KeyLookup::NoKeys
    );
    assert_eq!(
        first(
            &t,
            &["zunionstore", "d", "2", "a", "b", "weights", "1", "2"]
        ),
        key("d")
    );
    assert_eq!(
        first(&t, &["zunionstore", "d", "5", "a", "b"]),
        KeyLookup::Unknown
    );
}

#[test]
fn inexact_specs_route_on_a_real_key_or_ask() {
    let t = table(true);
    assert_eq!(first(&t, &["migrate", "h", "1", "k", "0", "5"]), key("k"));
    let keys = [
        "migrate", "h", "1", "", "0", "5", "AUTH", "KEYS", "KEYS", "a", "b",
    ];
    assert_eq!(first(&t, &keys), key("a"));
    assert_eq!(
        first(&t, &["migrate", "h", "1", "", "0", "5"]),
        KeyLookup::Unknown
    );
    assert_eq!(first(&t, &["sort", "k", "store", "d"]), key("k"));
    assert_eq!(first(&t, &["sort", "", "store", "d"]), KeyLookup::Unknown);
    // A spec type this version does not know: the server has to say.
    assert_eq!(first(&t, &["future", "k"]), KeyLookup::Unknown);
}

#[test]
fn not_key_specs_route_and_subcommands_are_looked_up() {
    let t = table(false);
    assert_eq!(first(&t, &["SPUBLISH", "ch", "m"]), key("ch"));
    assert_eq!(first(&t, &["OBJECT", "ENCODING", "k"]), key("k"));
    assert_eq!(first(&t, &["object", "help"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["object", "encoding"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["object"]), KeyLookup::NoKeys);
    assert_eq!(first(&t, &["object", "nosuch", "k"]), KeyLookup::Unknown);
}

#[test]
fn servers_before_7_use_the_legacy_triple() {
    // Redis 6: name, arity, flags, first, last, step, categories; no specs.
    let old = |name: &str, arity, flags: &[&str], first, last| {
        Frame::Array(vec![
            bulk(name),
            Frame::Integer(arity),
            Frame::Set(flags.iter().map(|f| status(f)).collect()),
            Frame::Integer(first),
            Frame::Integer(last),
            Frame::Integer(1),
            Frame::Set(vec![]),
        ])
    };
    let reply = Frame::Array(vec![
        old("get", 2, &["readonly"], 1, 1),
        old("del", -2, &["write"], 1, -1),
        old("sort", -2, &["movablekeys"], 1, 1),
        old("eval", -3, &["movablekeys"], 0, 0),
        old("ping", -1, &[], 0, 0),
    ]);
    let t = KeyTable::from_command_info(&reply).expect("table");
    assert_eq!(first(&t, &["get", "k"]), key("k"));
    assert_eq!(first(&t, &["del", "a", "b"]), key("a"));
    assert_eq!(first(&t, &["sort", "k", "store", "d"]), key("k"));
    assert_eq!(first(&t, &["eval", "s", "1", "k"]), KeyLookup::Unknown);
    assert_eq!(first(&t, &["ping"]), KeyLookup::NoKeys);
}

#[test]
fn unreadable_replies_are_typed_errors() {
    assert_eq!(
        KeyTable::from_command_info(&Frame::Error(Bytes::from_static(b"NOPERM no"))),
        Err(KeyTableError::Server("NOPERM no".into()))
    );
    assert!(matches!(
        KeyTable::from_command_info(&Frame::Integer(1)),
        Err(KeyTableError::Malformed(_))
    ));
    let empty = KeyTable::from_command_info(&Frame::Array(vec![])).expect("empty");
    assert!(empty.is_empty());
}
