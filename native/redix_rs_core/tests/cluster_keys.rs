//! `cluster::keys` against a real redis-server 7.0: the whole `COMMAND INFO` table is loaded through
//! the crate's own connection in RESP2 and RESP3, then `first_key` is compared with what
//! `COMMAND GETKEYS` on the same server says, for a wide list of commands and for random argument
//! lists over every command and subcommand the server has.
//!
//! What "agrees" means, per answer of `first_key`:
//! * `Key(k)`: `COMMAND GETKEYS` lists keys and `k` is the first of them, or, for commands whose
//!   specs are not all exact (`SORT`, `MIGRATE`), one of them (a cluster routes on any key of a
//!   command: they must all share a slot), or the server finds the arguments invalid (the command
//!   will be refused on any node).
//! * `NoKeys`: `COMMAND GETKEYS` finds no key (an empty list or an error).
//! * `Unknown`: the caller asks `COMMAND GETKEYS` itself; for commands whose specs are all exact,
//!   only where `COMMAND GETKEYS` finds no key either (the specs do not fit the arguments).

mod cluster_support;
mod support;

use std::cell::RefCell;

use cluster_support::SyncClient;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redix_rs_core::cluster::{KeyLookup, KeyTable};
use redix_rs_core::conn::Protocol;
use redix_rs_core::resp::Frame;
use support::*;

/// `COMMAND INFO` through a multiplexed connection speaking `protocol`.
async fn command_info(server: &RedisServer, protocol: Protocol) -> Frame {
    let opts = redix_rs_core::conn::ConnectOptions {
        protocol,
        ..server.tcp_opts()
    };
    let conn = Conn::open(&opts).await;
    let info = cmd(&conn.mux, &["COMMAND", "INFO"]).await;
    conn.task.abort();
    info
}

/// What `COMMAND GETKEYS` answered: the keys, or `None` for an error.
fn getkeys(client: &mut SyncClient, args: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    let mut call: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    call.extend_from_slice(args);
    match client.call(&call) {
        Frame::Array(keys) => Some(
            keys.iter()
                .map(|k| match k {
                    Frame::Bulk(b) => b.to_vec(),
                    other => panic!("GETKEYS element {other:?}"),
                })
                .collect(),
        ),
        Frame::Error(_) => None,
        other => panic!("GETKEYS {args:?}: {other:?}"),
    }
}

/// Commands whose specs are not all exact, where a key other than GETKEYS's first may be chosen.
const INEXACT: [&str; 3] = ["sort", "sort_ro", "migrate"];

/// Checks `first_key` against `COMMAND GETKEYS`; returns the lookup's kind for statistics.
fn check(
    table: &KeyTable,
    client: &mut SyncClient,
    args: &[&[u8]],
) -> Result<&'static str, String> {
    let lookup = table.first_key(args);
    let server = getkeys(client, args);
    let name = String::from_utf8_lossy(args[0]).to_ascii_lowercase();
    let shown = || {
        format!(
            "{:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        )
    };
    match lookup {
        KeyLookup::Key(key) => match server {
            Some(keys) if keys.first().map(Vec::as_slice) == Some(key) => Ok("key"),
            Some(keys) if INEXACT.contains(&name.as_str()) && keys.iter().any(|k| k == key) => {
                Ok("key")
            }
            // MIGRATE with an empty key and too few arguments for a KEYS option: Redis's fallback
            // names the empty key, the specs find a "KEYS" that is really the destination db. The
            // server refuses such a command on any node, so where it is routed does not matter.
            Some(keys) if INEXACT.contains(&name.as_str()) && keys.iter().all(|k| k.is_empty()) => {
                Ok("key (the server names only an empty key)")
            }
            None => Ok("key (invalid for the server)"),
            Some(keys) => Err(format!(
                "{}: first_key {:?}, GETKEYS {keys:?}",
                shown(),
                String::from_utf8_lossy(key)
            )),
        },
        KeyLookup::NoKeys => match server {
            None => Ok("no keys"),
            Some(keys) if keys.is_empty() => Ok("no keys"),
            Some(keys) => Err(format!("{}: NoKeys, GETKEYS {keys:?}", shown())),
        },
        // Exact specs give up only where Redis's own specs do; its fallback code then finds no key
        // either, except that it reads a key count with a leading zero ("01") as atoi would.
        KeyLookup::Unknown => match server {
            Some(keys) if !keys.is_empty() && !INEXACT.contains(&name.as_str()) => {
                if args.iter().any(|a| is_zero_padded(a)) {
                    Ok("unknown (zero-padded count)")
                } else {
                    Err(format!("{}: Unknown, GETKEYS {keys:?}", shown()))
                }
            }
            _ => Ok("unknown"),
        },
    }
}

fn is_zero_padded(arg: &[u8]) -> bool {
    arg.len() > 1 && arg[0] == b'0' && arg.iter().all(u8::is_ascii_digit)
}

fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ')
        .map(|w| if w == "''" { &b""[..] } else { w.as_bytes() })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_command_table_reads_alike_in_both_protocols() {
    let server = RedisServer::start();
    let resp2 = KeyTable::from_command_info(&command_info(&server, Protocol::Resp2).await).unwrap();
    let resp3 = KeyTable::from_command_info(&command_info(&server, Protocol::Resp3).await).unwrap();
    let mut client = cluster_support::SyncClient::connect(server.port).unwrap();
    let count = match client.call(&["COMMAND", "COUNT"]) {
        Frame::Integer(n) => usize::try_from(n).unwrap(),
        other => panic!("COMMAND COUNT: {other:?}"),
    };
    assert_eq!(resp2.len(), count, "every command read");
    assert_eq!(resp2, resp3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_key_agrees_with_command_getkeys() {
    let server = RedisServer::start();
    let table = KeyTable::from_command_info(&command_info(&server, Protocol::Resp3).await).unwrap();
    let mut client = SyncClient::connect(server.port).unwrap();
    // (command, expected kind): "k" = Key equal to GETKEYS's first key, "-" = NoKeys, "?" = Unknown.
    let cases = [
        ("GET k", "k"),
        ("get {t}k", "k"),
        ("SET k v", "k"),
        ("set k v GET EX 10", "k"),
        ("MGET a b c", "k"),
        ("MSET a 1 b 2", "k"),
        ("DEL a b", "k"),
        ("EVAL s 0", "-"),
        ("EVAL s 0 arg", "-"),
        ("EVAL s 1 a", "k"),
        ("EVAL s 2 a b arg", "k"),
        ("EVALSHA 0123 0", "-"),
        ("evalsha 0123 1 a", "k"),
        ("EVALSHA 0123 2 a b", "k"),
        ("EVAL_RO s 1 a", "k"),
        ("FCALL f 1 a", "k"),
        ("FCALL_RO f 0", "-"),
        ("EVAL s 3 a b", "?"),
        ("EVAL s 01 a", "?"),
        ("XREAD COUNT 1 STREAMS a b 0 0", "k"),
        ("XREAD streams a 0", "k"),
        ("XREADGROUP GROUP g c COUNT 1 STREAMS s t 0 0", "k"),
        ("ZUNIONSTORE d 2 a b WEIGHTS 1 2", "k"),
        ("ZINTERSTORE d 1 a", "k"),
        ("ZUNION 2 a b", "k"),
        ("ZDIFFSTORE d 2 a b", "k"),
        ("SINTERCARD 2 a b LIMIT 1", "k"),
        ("LMPOP 2 a b LEFT", "k"),
        ("BLMPOP 0 2 a b LEFT COUNT 2", "k"),
        ("BZMPOP 0 1 z MIN", "k"),
        ("ZMPOP 1 z MAX", "k"),
        ("GEORADIUS g 1 2 3 m STORE d", "k"),
        ("GEORADIUSBYMEMBER g m 3 km STOREDIST d", "k"),
        ("GEORADIUS g 1 2 3 m STORE", "k"),
        ("XREAD COUNT 1 STREAMS", "-"),
        ("OBJECT ENCODING k", "k"),
        ("object freq k", "k"),
        ("MEMORY USAGE k", "k"),
        ("XINFO STREAM s", "k"),
        ("XGROUP CREATE s g $", "k"),
        ("BITFIELD k GET u8 0", "k"),
        ("SORT k BY x STORE d", "k"),
        ("SORT_RO k", "k"),
        ("SORT '' STORE d", "?"),
        ("MIGRATE h 1 k 0 5", "k"),
        ("MIGRATE h 1 k 0 5 COPY REPLACE", "k"),
        ("MIGRATE h 1 '' 0 5 KEYS a b", "k"),
        ("MIGRATE h 1 '' 0 5 AUTH KEYS KEYS a b", "k"),
        ("MIGRATE h 1 '' 0 5 AUTH2 u p KEYS a", "k"),
        ("PING", "-"),
        ("ping x", "-"),
        ("INFO", "-"),
        ("INFO server", "-"),
        ("CLIENT LIST", "-"),
        ("CLIENT KILL ID 1", "-"),
        ("CONFIG GET maxmemory", "-"),
        ("COMMAND GETKEYS get k", "-"),
        ("DBSIZE", "-"),
        ("SCAN 0", "-"),
        ("PUBLISH ch m", "-"),
        ("MULTI", "-"),
        ("EXEC", "-"),
        ("GET", "-"),
        ("GET a b", "-"),
        ("OBJECT", "-"),
        ("OBJECT NOSUCH k", "?"),
        ("NOSUCHCOMMAND k", "?"),
    ];
    for (line, expected) in cases {
        let args = words(line);
        let kind = match table.first_key(&args) {
            KeyLookup::Key(_) => "k",
            KeyLookup::NoKeys => "-",
            KeyLookup::Unknown => "?",
        };
        assert_eq!(kind, expected, "{line}");
        if let Err(e) = check(&table, &mut client, &args) {
            panic!("{e}");
        }
        if expected == "k" && !line.starts_with("SORT") && !line.starts_with("MIGRATE") {
            let KeyLookup::Key(key) = table.first_key(&args) else {
                unreachable!()
            };
            let keys = getkeys(&mut client, &args).expect("GETKEYS answers");
            assert_eq!(keys.first().map(Vec::as_slice), Some(key), "{line}");
        }
    }
    // SPUBLISH's channel is not a key for GETKEYS, but cluster mode routes on it
    // (tests/cluster_topology.rs checks the MOVED a real cluster answers).
    assert_eq!(
        table.first_key(&words("SPUBLISH ch m")),
        KeyLookup::Key(b"ch")
    );
    assert_eq!(getkeys(&mut client, &words("SPUBLISH ch m")), None);
}

/// A command or subcommand name as argument prefix, and whether it has key specs.
type Name = (Vec<Vec<u8>>, bool);

/// Every command and subcommand of the table.
fn all_names(info: &Frame) -> Vec<Name> {
    let Frame::Array(entries) = info else {
        panic!("COMMAND INFO")
    };
    let mut names = Vec::new();
    for entry in entries {
        let Frame::Array(fields) = entry else {
            continue;
        };
        names.extend(name_of(fields));
        let Some(Frame::Array(subs)) = fields.get(9) else {
            continue;
        };
        for sub in subs {
            if let Frame::Array(sub) = sub {
                names.extend(name_of(sub));
            }
        }
    }
    names.sort();
    names
}

/// `object|encoding` as `["object", "encoding"]`, with whether field 9 (key specs) is non-empty.
fn name_of(fields: &[Frame]) -> Option<Name> {
    let Some(Frame::Bulk(full)) = fields.first() else {
        return None;
    };
    let parts = full.split(|&b| b == b'|').map(<[u8]>::to_vec).collect();
    let keyed = matches!(fields.get(8), Some(Frame::Array(specs)) if !specs.is_empty());
    Some((parts, keyed))
}

/// Arguments likely to hit keywords, counts and edge cases of key specs.
fn argument() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"3".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"01".to_vec()),
        Just(b"STREAMS".to_vec()),
        Just(b"streams".to_vec()),
        Just(b"KEYS".to_vec()),
        Just(b"STORE".to_vec()),
        Just(b"STOREDIST".to_vec()),
        Just(b"AUTH".to_vec()),
        Just(b"AUTH2".to_vec()),
        Just(b"BY".to_vec()),
        Just(b"GET".to_vec()),
        Just(b"LEFT".to_vec()),
        Just(b"".to_vec()),
        "[a-c{}]{1,4}".prop_map(String::into_bytes),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_arguments_for_every_command_agree_with_command_getkeys() {
    let server = RedisServer::start();
    let info = command_info(&server, Protocol::Resp2).await;
    let table = KeyTable::from_command_info(&info).unwrap();
    let names = all_names(&info);
    assert!(
        names.len() > 300,
        "commands and subcommands: {}",
        names.len()
    );
    // Three cases in four draw from commands with keys, where the specs matter.
    let keyed: Vec<Name> = names.iter().filter(|(_, keyed)| *keyed).cloned().collect();
    let any = names.clone();
    let pick = prop_oneof![
        1 => proptest::sample::select(any),
        3 => proptest::sample::select(keyed),
    ];
    let client = RefCell::new(SyncClient::connect(server.port).unwrap());
    let stats = RefCell::new(std::collections::BTreeMap::<&'static str, usize>::new());
    let strategy = (pick, proptest::collection::vec(argument(), 0..9));
    let config = Config {
        cases: 3000,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&strategy, |((name, _), rest)| {
        let mut args: Vec<&[u8]> = name.iter().map(Vec::as_slice).collect();
        args.extend(rest.iter().map(Vec::as_slice));
        let kind = check(&table, &mut client.borrow_mut(), &args).map_err(TestCaseError::fail)?;
        *stats.borrow_mut().entry(kind).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "first_key outcomes over random commands: {:?}",
        stats.borrow()
    );
}
