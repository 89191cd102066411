//! The store's rules, one by one: the fill-after-invalidate race (single-key, multi-key, flush),
//! invalidation in wire order, the bounds under a million distinct keys, hot keys under a scan,
//! the counters, and readers racing the writer on threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::resp::Frame;

fn store(max_entries: usize, max_bytes: usize) -> Store {
    Store::new(Limits {
        max_entries,
        max_bytes,
    })
    .unwrap()
}

fn big() -> Store {
    store(100_000, 100 * 1024 * 1024)
}

fn key_of(command: &[&str]) -> Bytes {
    let mut out = BytesMut::new();
    encode_key(command, &mut out);
    out.freeze()
}

fn bulk(text: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

fn keys(names: &[&str]) -> Frame {
    Frame::Array(names.iter().map(|k| bulk(k)).collect())
}

/// A ticket for `command` reading `read` keys.
fn ticket(s: &Store, command: &[&str], read: &[&str]) -> Ticket {
    s.ticket(key_of(command), read)
}

/// Ticket and fill at once (a read whose reply came back with no invalidation in between).
fn cache(s: &Store, command: &[&str], read: &[&str], value: &str) {
    s.fill(ticket(s, command, read), &bulk(value)).unwrap();
}

fn get(s: &Store, command: &[&str]) -> Option<Frame> {
    s.get(&key_of(command)).map(|r| r.frame().clone())
}

/// A key whose epoch slot differs from every one of `taken`'s.
fn unrelated(s: &Store, taken: &[&str]) -> String {
    let slots: Vec<usize> = taken.iter().map(|k| s.epoch_slot(k.as_bytes())).collect();
    (0..)
        .map(|i| format!("other{i}"))
        .find(|k| !slots.contains(&s.epoch_slot(k.as_bytes())))
        .unwrap_or_default()
}

#[test]
fn a_fill_after_an_invalidation_of_its_key_is_refused() {
    let s = big();
    let t = ticket(&s, &["GET", "k"], &["k"]);
    // The reply is read, then the invalidation, and the fill comes last (filled off the reader).
    s.invalidate(&keys(&["k"]));
    assert_eq!(s.fill(t, &bulk("old")), Err(FillError::Stale));
    assert_eq!(get(&s, &["GET", "k"]), None);
    assert_eq!(s.stats().refused_fills, 1);
    // A read sent after the invalidation is fine.
    cache(&s, &["GET", "k"], &["k"], "new");
    assert_eq!(get(&s, &["GET", "k"]), Some(bulk("new")));
}

#[test]
fn a_multi_key_fill_is_refused_when_any_key_moved() {
    let s = big();
    for moved in ["a", "b", "c"] {
        let t = ticket(&s, &["MGET", "a", "b", "c"], &["a", "b", "c"]);
        s.invalidate(&keys(&[moved]));
        assert_eq!(s.fill(t, &keys(&["1", "2", "3"])), Err(FillError::Stale));
    }
    // An unrelated key moving does not matter.
    let other = unrelated(&s, &["a", "b", "c"]);
    let t = ticket(&s, &["MGET", "a", "b", "c"], &["a", "b", "c"]);
    s.invalidate(&keys(&[&other]));
    s.fill(t, &keys(&["1", "2", "3"])).unwrap();
    assert_eq!(
        get(&s, &["MGET", "a", "b", "c"]),
        Some(keys(&["1", "2", "3"]))
    );
}

#[test]
fn a_fill_after_a_flush_is_refused() {
    let s = big();
    for flush in [
        &(|s: &Store| s.flush()) as &dyn Fn(&Store),
        &|s: &Store| s.invalidate(&Frame::Null),
        &|s: &Store| s.invalidate(&Frame::NullArray),
        // A payload of no known shape flushes too.
        &|s: &Store| s.invalidate(&Frame::Integer(1)),
    ] {
        cache(&s, &["GET", "x"], &["x"], "cached");
        let t = ticket(&s, &["GET", "k"], &["k"]);
        flush(&s);
        assert_eq!(s.fill(t, &bulk("v")), Err(FillError::Flushed));
        assert_eq!(get(&s, &["GET", "x"]), None, "flush empties the cache");
        assert_eq!(s.stats().entries, 0);
    }
}

#[test]
fn an_invalidation_after_the_fill_drops_every_entry_of_the_key() {
    let s = big();
    cache(&s, &["GET", "k"], &["k"], "v");
    cache(&s, &["STRLEN", "k"], &["k"], "1");
    cache(&s, &["MGET", "j", "k"], &["j", "k"], "[v]");
    cache(&s, &["GET", "j"], &["j"], "w");
    s.invalidate(&keys(&["k"]));
    for gone in [&["GET", "k"][..], &["STRLEN", "k"], &["MGET", "j", "k"]] {
        assert_eq!(get(&s, gone), None, "{gone:?}");
    }
    assert_eq!(get(&s, &["GET", "j"]), Some(bulk("w")));
    let stats = s.stats();
    assert_eq!((stats.invalidations, stats.entries), (3, 1));
    // Invalidating `j` now drops only what is left, once.
    s.invalidate(&keys(&["j", "j"]));
    assert_eq!(s.stats().invalidations, 4);
}

#[test]
fn an_invalidation_before_the_ticket_does_not_refuse_it() {
    let s = big();
    s.invalidate(&keys(&["k"]));
    cache(&s, &["GET", "k"], &["k"], "v");
    assert_eq!(get(&s, &["get", "k"]), Some(bulk("v")), "names fold");
}

#[test]
fn what_is_never_cached() {
    let s = store(10, 1000);
    let t = ticket(&s, &["GET", "k"], &["k"]);
    let error = Frame::Error(Bytes::from_static(b"LOADING"));
    assert_eq!(s.fill(t, &error), Err(FillError::Reply(ReplyError::Error)));
    let t = ticket(&s, &["GET", "k"], &["k"]);
    let huge = bulk(&"x".repeat(2000));
    assert!(matches!(
        s.fill(t, &huge),
        Err(FillError::TooLarge { max: 1000, .. })
    ));
    let t = ticket(&big(), &["GET", "k"], &["k"]);
    assert_eq!(s.fill(t, &bulk("v")), Err(FillError::ForeignTicket));
    // Nothing would ever invalidate it.
    let t = ticket(&s, &["DBSIZE"], &[]);
    assert_eq!(s.fill(t, &Frame::Integer(3)), Err(FillError::NoKeys));
    assert_eq!(s.stats().entries, 0);
}

#[test]
fn refilling_a_command_replaces_its_entry() {
    let s = big();
    cache(&s, &["GET", "k"], &["k"], "one");
    cache(&s, &["GET", "k"], &["k"], "two");
    assert_eq!(get(&s, &["GET", "k"]), Some(bulk("two")));
    assert_eq!(s.stats().entries, 1);
    s.invalidate(&keys(&["k"]));
    assert_eq!(s.stats().entries, 0);
}

#[test]
fn limits_must_allow_something() {
    let limits = |max_entries, max_bytes| Limits {
        max_entries,
        max_bytes,
    };
    assert_eq!(
        Store::new(limits(0, 10)).err(),
        Some(LimitsError::NoEntries)
    );
    assert_eq!(Store::new(limits(10, 0)).err(), Some(LimitsError::NoBytes));
    assert_eq!(
        Store::new(limits(u32::MAX as usize, 10)).err(),
        Some(LimitsError::TooManyEntries)
    );
}

#[test]
fn counters_count() {
    let s = store(2, 1_000_000);
    assert_eq!(get(&s, &["GET", "a"]), None);
    cache(&s, &["GET", "a"], &["a"], "1");
    assert!(get(&s, &["GET", "a"]).is_some());
    assert!(get(&s, &["GET", "a"]).is_some());
    cache(&s, &["GET", "b"], &["b"], "2");
    cache(&s, &["GET", "c"], &["c"], "3");
    s.invalidate(&keys(&["c", "nothing"]));
    let stats = s.stats();
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.evictions,
            stats.invalidations
        ),
        (2, 1, 1, 1)
    );
    // `a` was read: it is `b` that made room for `c`.
    assert!(get(&s, &["GET", "a"]).is_some());
    assert_eq!(get(&s, &["GET", "b"]), None);
}

#[test]
fn a_million_distinct_keys_stay_within_both_limits() {
    let limits = Limits {
        max_entries: 10_000,
        max_bytes: 512 * 1024,
    };
    let s = Store::new(limits).unwrap();
    let value = bulk(&"v".repeat(40));
    let mut buf = BytesMut::new();
    for i in 0..1_000_000u32 {
        let key = Bytes::from(format!("key:{i}"));
        encode_key(&[&b"GET"[..], &key], &mut buf);
        let command = buf.split().freeze();
        assert!(s.get(&command).is_none());
        s.fill(s.ticket(command, [key]), &value).unwrap();
        if i % 997 == 0 {
            let stats = s.stats();
            assert!(stats.entries <= limits.max_entries, "{stats:?}");
            assert!(stats.bytes <= limits.max_bytes, "{stats:?}");
        }
    }
    let stats = s.stats();
    assert!(stats.entries <= limits.max_entries && stats.bytes <= limits.max_bytes);
    // The byte limit is the tighter one here; the cache is still used, not emptied.
    assert!(stats.bytes > limits.max_bytes / 2, "{stats:?}");
    assert_eq!(stats.evictions, 1_000_000 - stats.entries as u64);
    // By entries now: small replies.
    let s = store(1000, 100 * 1024 * 1024);
    for i in 0..1_000_000u32 {
        let k = i.to_string();
        cache(&s, &["GET", &k], &[&k], "v");
    }
    assert_eq!(s.stats().entries, 1000);
}

/// Fills and reads hot keys until they are cached and read again, then scans `cold` keys (each
/// read once), reading the hot keys every `hot_every` cold reads (0: never); returns how many hot
/// keys are still cached.
fn hot_after_scan(hot: usize, cold: usize, hot_every: usize) -> usize {
    let s = store(1000, 100 * 1024 * 1024);
    let hot_keys: Vec<String> = (0..hot).map(|i| format!("hot{i}")).collect();
    let read_hot = |s: &Store| {
        for k in &hot_keys {
            if get(s, &["GET", k]).is_none() {
                cache(s, &["GET", k], &[k], "h");
            }
        }
    };
    (0..3).for_each(|_| read_hot(&s));
    for i in 0..cold {
        let k = format!("cold{i}");
        assert!(get(&s, &["GET", &k]).is_none());
        cache(&s, &["GET", &k], &[&k], "c");
        if hot_every > 0 && i % hot_every == 0 {
            read_hot(&s);
        }
    }
    hot_keys
        .iter()
        .filter(|k| get(&s, &["GET", k]).is_some())
        .count()
}

#[test]
fn hot_keys_survive_a_scan_of_ten_times_as_many_cold_ones() {
    // A pure scan of 10,000 keys through a 1,000-entry cache never reaches the hot keys.
    assert_eq!(hot_after_scan(200, 10_000, 0), 200);
    // Nor does one with the hot keys read now and then.
    assert_eq!(hot_after_scan(200, 10_000, 500), 200);
    // Hot keys that nearly fill the cache (800 of 1,000) survive too, or nearly all of them.
    assert!(hot_after_scan(800, 10_000, 0) >= 700);
}

/// Readers on threads never see a value older than the last invalidation that completed before
/// their read began, while the writer invalidates and refills the same keys as fast as it can.
#[test]
fn readers_never_see_an_entry_after_its_invalidation_returned() {
    let s = Arc::new(store(64, 1_000_000));
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (s, floor, stop) = (s.clone(), floor.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hits = 0u64;
                while !stop.load(Ordering::Acquire) {
                    for (k, floor) in floor.iter().enumerate() {
                        let least = floor.load(Ordering::Acquire);
                        if let Some(Frame::Integer(v)) = get(&s, &["GET", &k.to_string()]) {
                            assert!(v as u64 >= least, "key {k}: saw {v} after {least}");
                            hits += 1;
                        }
                    }
                }
                hits
            })
        })
        .collect();
    for version in 1..=20_000u64 {
        let k = (version % 8) as usize;
        let name = k.to_string();
        let t = ticket(&s, &["GET", &name], &[&name]);
        s.invalidate(&keys(&[&name]));
        floor[k].store(version, Ordering::Release);
        // The ticket predates the invalidation: refused. A fresh one is accepted.
        assert_eq!(s.fill(t, &Frame::Integer(0)), Err(FillError::Stale));
        let t = ticket(&s, &["GET", &name], &[&name]);
        s.fill(t, &Frame::Integer(version as i64)).unwrap();
    }
    stop.store(true, Ordering::Release);
    let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(hits > 0, "the readers hit nothing");
}
