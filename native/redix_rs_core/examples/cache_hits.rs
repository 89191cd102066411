//! What a cache hit costs: `Store::get` on 100 hot keys, from one thread and from two at once,
//! with the cache key encoded for each lookup (as the NIF will) and pre-encoded; and a miss's
//! bookkeeping (ticket + fill). Run it optimised:
//!
//! ```text
//! cargo run --release -p redix_rs_core --example cache_hits
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redix_rs_core::cache::{encode_key, Limits, Store};
use redix_rs_core::resp::Frame;

const HOT: usize = 100;
const LOOKUPS: usize = 5_000_000;

fn main() {
    let store = Arc::new(
        Store::new(Limits {
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
        })
        .expect("limits"),
    );
    let names: Vec<String> = (0..HOT).map(|i| format!("user:session:{i}")).collect();
    let value = Frame::Bulk(Bytes::from(vec![b'v'; 100]));
    let keys: Vec<Bytes> = names.iter().map(|k| cache_key(k)).collect();
    for (name, key) in names.iter().zip(&keys) {
        let ticket = store.ticket(key.clone(), [Bytes::copy_from_slice(name.as_bytes())]);
        store.fill(ticket, &value).expect("fill");
    }

    let pre = measure(|i| store.get(&keys[i % HOT]).is_some());
    println!("hit, key pre-encoded:        {pre:6.1} ns");
    let mut buf = BytesMut::with_capacity(64);
    let encoded = measure(|i| {
        buf.clear();
        encode_key(&["GET", names[i % HOT].as_str()], &mut buf);
        store.get(&buf).is_some()
    });
    println!("hit, key encoded per lookup: {encoded:6.1} ns");

    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (store, keys) = (store.clone(), keys.clone());
            std::thread::spawn(move || measure(|i| store.get(&keys[(i + t * 7) % HOT]).is_some()))
        })
        .collect();
    let per_thread: Vec<f64> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    println!(
        "hit, two threads at once:    {:6.1} ns, {:6.1} ns",
        per_thread[0], per_thread[1]
    );

    let start = Instant::now();
    let misses = 200_000;
    for i in 0..misses {
        let name = format!("cold:{i}");
        let key = cache_key(&name);
        let ticket = store.ticket(key, [Bytes::from(name)]);
        black_box(store.fill(ticket, &value).is_ok());
    }
    let miss = start.elapsed().as_nanos() as f64 / misses as f64;
    println!("miss bookkeeping (ticket + fill, with evictions): {miss:6.0} ns");
    println!("{:?}", store.stats());
    memory_per_entry(&value);
}

/// Resident memory a full cache of 100,000 `GET` entries takes, against what it counts.
fn memory_per_entry(value: &Frame) {
    let entries = 100_000;
    let before = resident_bytes();
    let store = Store::new(Limits {
        max_entries: entries,
        max_bytes: usize::MAX / 2,
    })
    .expect("limits");
    for i in 0..entries {
        let name = format!("user:session:{i}");
        let ticket = store.ticket(cache_key(&name), [Bytes::from(name)]);
        store.fill(ticket, value).expect("fill");
    }
    let used = resident_bytes().saturating_sub(before);
    let counted = store.stats().bytes;
    println!(
        "memory per entry: {} bytes resident, {} counted against max_bytes",
        used / entries,
        counted / entries
    );
}

/// The process's resident set, from /proc (0 where there is none).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn cache_key(name: &str) -> Bytes {
    let mut out = BytesMut::new();
    encode_key(&["GET", name], &mut out);
    out.freeze()
}

/// Nanoseconds per call of `lookup` over `LOOKUPS` calls (every one must hit).
fn measure(mut lookup: impl FnMut(usize) -> bool) -> f64 {
    let start = Instant::now();
    let hits = (0..LOOKUPS).filter(|&i| black_box(lookup(i))).count();
    assert_eq!(hits, LOOKUPS, "every lookup must hit");
    start.elapsed().as_nanos() as f64 / LOOKUPS as f64
}
