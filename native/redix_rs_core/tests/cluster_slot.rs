//! `cluster::slot` against a real redis-server with cluster support: the known values of the unit
//! tests, then random keys full of braces, each compared with `CLUSTER KEYSLOT` (which needs no
//! assigned slots, so one node suffices).

mod cluster_support;
mod support;

use cluster_support::{ClusterNode, SyncClient};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redix_rs_core::cluster::{hash_tag, slot};
use redix_rs_core::resp::Frame;

fn keyslot(client: &mut SyncClient, key: &[u8]) -> i64 {
    match client.call(&[&b"CLUSTER"[..], b"KEYSLOT", key]) {
        Frame::Integer(n) => n,
        other => panic!("CLUSTER KEYSLOT {key:?}: {other:?}"),
    }
}

#[test]
fn known_slots_match_cluster_keyslot() {
    let node = ClusterNode::start();
    let mut client = node.client();
    let cases: [(&[u8], u16); 4] = [
        (b"foo", 12182),
        (b"bar", 5061),
        (b"", 0),
        (b"123456789", 12739),
    ];
    for (key, expected) in cases {
        assert_eq!(slot(key), expected);
        assert_eq!(keyslot(&mut client, key), i64::from(expected), "{key:?}");
    }
    // Hash tags: the server hashes the same bytes as `hash_tag` picks.
    let tagged: [(&[u8], &[u8]); 6] = [
        (b"{user1000}.following", b"user1000"),
        (b"{user1000}.followers", b"user1000"),
        (b"foo{}{bar}", b"foo{}{bar}"),
        (b"foo{{bar}}zap", b"{bar"),
        (b"foo{bar}{zap}", b"bar"),
        (b"{}", b"{}"),
    ];
    for (key, tag) in tagged {
        assert_eq!(hash_tag(key), tag);
        assert_eq!(
            keyslot(&mut client, key),
            keyslot(&mut client, tag),
            "{key:?}"
        );
        assert_eq!(i64::from(slot(key)), keyslot(&mut client, key), "{key:?}");
    }
}

/// Bytes biased towards braces, so tags (empty, nested, unclosed, repeated) are frequent.
fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'{'),
        3 => Just(b'}'),
        4 => b'a'..=b'c',
        2 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..24)
}

#[test]
fn random_keys_match_cluster_keyslot() {
    let node = ClusterNode::start();
    // `TestRunner::run` takes an `Fn`: the connection goes in a RefCell.
    let client = std::cell::RefCell::new(node.client());
    let config = Config {
        cases: 800,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&key_bytes(), |key| {
        prop_assert_eq!(
            i64::from(slot(&key)),
            keyslot(&mut client.borrow_mut(), &key),
            "key {:?}",
            key
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
