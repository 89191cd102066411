//! What a reply costs in memory while it is read and parsed, measured with a counting allocator: a
//! reply of N bytes on the wire costs at most 16 × N + 1 MiB, whatever its shape (the parsed frames,
//! the read buffer and whatever was reserved ahead of the data). A fake server sends the replies, so
//! that their exact bytes are known; one test per binary, so no other test allocates meanwhile.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use redix_rs_core::conn::Multiplexer;
use redix_rs_core::resp::Frame;
use support::*;
use tokio::io::AsyncWriteExt;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

/// Replies of many shapes, each as Redis would send it.
fn replies() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = Vec::new();
    let ints: String = std::iter::once("*300000\r\n".to_string())
        .chain((0..300_000).map(|_| ":1\r\n".to_string()))
        .collect();
    cases.push(("300,000 one-digit integers", ints.into_bytes()));
    let nulls: String = std::iter::once("*400000\r\n".to_string())
        .chain((0..400_000).map(|_| "_\r\n".to_string()))
        .collect();
    cases.push(("400,000 RESP3 nulls", nulls.into_bytes()));
    let map: String = std::iter::once("%150000\r\n".to_string())
        .chain((0..150_000).map(|i| format!("$1\r\n{}\r\n:{}\r\n", i % 10, i % 10)))
        .collect();
    cases.push(("a map of 150,000 pairs", map.into_bytes()));
    let pairs: String = std::iter::once("*200000\r\n".to_string())
        .chain((0..200_000).map(|_| "*1\r\n_\r\n".to_string()))
        .collect();
    cases.push(("200,000 one-element arrays", pairs.into_bytes()));
    let mut bulk = b"$16777216\r\n".to_vec();
    bulk.extend(std::iter::repeat_n(b'v', 16 * MIB));
    bulk.extend_from_slice(b"\r\n");
    cases.push(("one 16 MiB bulk", bulk));
    let bulks: String = std::iter::once("*100000\r\n".to_string())
        .chain((0..100_000).map(|_| "$0\r\n\r\n".to_string()))
        .collect();
    cases.push(("100,000 empty bulks", bulks.into_bytes()));
    cases
}

#[test]
fn a_reply_of_n_bytes_costs_at_most_16n_plus_1_mib_while_parsed() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (name, wire) in replies() {
            let n = wire.len();
            let (listener, port) = fake_listener().await;
            let mux: Mux = Multiplexer::new(NO_LIMIT);
            let (conn, mut sock) = connect_fake(&listener, port, mux).await;
            let rx = send(&conn.mux, &["GET", "k"]);
            read_n(&mut sock, encoded(&["GET", "k"]).len()).await;

            let baseline = CURRENT.load(Ordering::SeqCst);
            PEAK.store(baseline, Ordering::SeqCst);
            let writer = tokio::spawn(async move {
                for piece in wire.chunks(64 * 1024) {
                    sock.write_all(piece).await.unwrap();
                }
                sock
            });
            let replies = outcome(rx).await.expect("the reply");
            let peak = PEAK.load(Ordering::SeqCst) - baseline;
            assert!(matches!(
                replies.as_slice(),
                [Frame::Array(_) | Frame::Map(_) | Frame::Bulk(_)]
            ));
            let bound = 16 * n + MIB;
            println!(
                "{name}: {n} bytes on the wire, peak {peak} bytes ({:.1}x)",
                peak as f64 / n as f64
            );
            assert!(
                peak <= bound,
                "{name}: {peak} bytes for {n} on the wire (bound {bound})"
            );
            drop(replies);
            drop(writer.await.unwrap());
            conn.task.abort();
        }
    });
}
