//! Which queue carries submissions from the submitting threads (BEAM schedulers) to the connection's
//! tokio task: measured, as issue 5 asks, between
//!
//! - `mutex`: what the multiplexer does. One lock guards the write buffer and the FIFO of waiters; a
//!   submitter encodes its command straight into the shared buffer (no allocation) and queues its
//!   waiter; the task swaps the buffer out whole.
//! - `crossbeam`: a lock-free `SegQueue` of (encoded command, waiter); each submission encodes into a
//!   buffer of its own, which the task then copies into its write buffer.
//! - `mpsc`: tokio's unbounded channel of the same pairs, read with `recv_many`.
//!
//! Two submitting threads stand in for the two schedulers, one tokio worker for the runtime (its
//! default here). Each submission is a GET as b sends it; the waiter is a 64-byte stand-in. The task
//! "writes" by clearing its buffer and answers every waiter it took. Printed per variant: wall time
//! per submission, and CPU time per submission on the submitting threads and on the tokio thread.
//!
//! Run: `cargo run --release -p redix_rs_core --example submission_queue [submissions per thread]`

use std::collections::VecDeque;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_queue::SegQueue;
use redix_rs_core::resp::{encode_array_header, encode_bulk};
use tokio::sync::{mpsc, Notify};

const PRODUCERS: usize = 2;

/// A stand-in for a reply waiter (the real one is about this size).
struct Waiter([u64; 8]);

fn encode_get(out: &mut BytesMut) {
    encode_array_header(2, out);
    encode_bulk(b"GET", out);
    encode_bulk(b"bench:32", out);
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One way to hand submissions over: `submit` runs on the submitting threads, `drain` on the tokio
/// task, which returns how many waiters it answered (0: it waits for a wake-up).
trait Handover: Send + Sync + 'static {
    fn submit(&self, waiter: Waiter);
    fn drain(&self, buf: &mut BytesMut, fifo: &mut VecDeque<Waiter>) -> usize;
    fn wake(&self) -> &Notify;
}

struct Locked {
    state: Mutex<(BytesMut, VecDeque<Waiter>)>,
    wake: Notify,
}

impl Handover for Locked {
    fn submit(&self, waiter: Waiter) {
        let mut st = self.state.lock().unwrap();
        let first = st.1.is_empty();
        encode_get(&mut st.0);
        st.1.push_back(waiter);
        drop(st);
        if first {
            self.wake.notify_one();
        }
    }

    fn drain(&self, buf: &mut BytesMut, fifo: &mut VecDeque<Waiter>) -> usize {
        let mut st = self.state.lock().unwrap();
        std::mem::swap(&mut st.0, buf);
        std::mem::swap(&mut st.1, fifo);
        fifo.len()
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }
}

struct LockFree {
    queue: SegQueue<(BytesMut, Waiter)>,
    pending: AtomicIsize,
    wake: Notify,
}

impl Handover for LockFree {
    fn submit(&self, waiter: Waiter) {
        let mut bytes = BytesMut::with_capacity(32);
        encode_get(&mut bytes);
        self.queue.push((bytes, waiter));
        if self.pending.fetch_add(1, Ordering::AcqRel) <= 0 {
            self.wake.notify_one();
        }
    }

    fn drain(&self, buf: &mut BytesMut, fifo: &mut VecDeque<Waiter>) -> usize {
        let mut n = 0;
        while let Some((bytes, waiter)) = self.queue.pop() {
            buf.extend_from_slice(&bytes);
            fifo.push_back(waiter);
            n += 1;
        }
        self.pending.fetch_sub(n as isize, Ordering::AcqRel);
        n
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }
}

async fn consume<H: Handover>(handover: Arc<H>, total: usize) -> u64 {
    let cpu0 = thread_cpu_ns();
    let (mut buf, mut fifo) = (BytesMut::with_capacity(64 * 1024), VecDeque::new());
    let mut answered = 0;
    while answered < total {
        if handover.drain(&mut buf, &mut fifo) == 0 {
            handover.wake().notified().await;
            continue;
        }
        buf.clear(); // the write
        answered += fifo
            .drain(..)
            .map(|w| (w.0[0] != u64::MAX) as usize)
            .sum::<usize>();
    }
    thread_cpu_ns() - cpu0
}

/// Runs `per_thread` submissions on each submitting thread; returns (wall, producer CPU, task CPU).
fn run<H: Handover>(rt: &tokio::runtime::Runtime, handover: Arc<H>, per_thread: usize) -> [u64; 3] {
    let total = PRODUCERS * per_thread;
    let start = Instant::now();
    let task = rt.spawn(consume(handover.clone(), total));
    let h = handover.clone();
    let producer_cpu = submit_from_threads(per_thread, move |i| h.submit(Waiter([i as u64; 8])));
    let task_cpu = rt.block_on(task).unwrap();
    [start.elapsed().as_nanos() as u64, producer_cpu, task_cpu]
}

/// Calls `submit` `per_thread` times on each of the submitting threads; returns their CPU time.
fn submit_from_threads(per_thread: usize, submit: impl Fn(usize) + Clone + Send + 'static) -> u64 {
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let submit = submit.clone();
            thread::spawn(move || {
                let cpu0 = thread_cpu_ns();
                (0..per_thread).for_each(&submit);
                thread_cpu_ns() - cpu0
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// The channel variant: its receiver must live in the task, so it has its own driver.
fn run_mpsc(rt: &tokio::runtime::Runtime, per_thread: usize) -> [u64; 3] {
    let total = PRODUCERS * per_thread;
    let (tx, mut rx) = mpsc::unbounded_channel::<(BytesMut, Waiter)>();
    let start = Instant::now();
    let task = rt.spawn(async move {
        let cpu0 = thread_cpu_ns();
        let (mut buf, mut items) = (BytesMut::with_capacity(64 * 1024), Vec::new());
        let mut answered = 0;
        while answered < total {
            if rx.recv_many(&mut items, 4096).await == 0 {
                break;
            }
            for (bytes, waiter) in items.drain(..) {
                buf.extend_from_slice(&bytes);
                answered += (waiter.0[0] != u64::MAX) as usize;
            }
            buf.clear();
        }
        thread_cpu_ns() - cpu0
    });
    let producer_cpu = submit_from_threads(per_thread, move |i| {
        let mut bytes = BytesMut::with_capacity(32);
        encode_get(&mut bytes);
        let _ = tx.send((bytes, Waiter([i as u64; 8])));
    });
    let task_cpu = rt.block_on(task).unwrap();
    [start.elapsed().as_nanos() as u64, producer_cpu, task_cpu]
}

fn main() {
    let per_thread: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let total = (PRODUCERS * per_thread) as f64;
    for round in 1..=3 {
        let locked = Arc::new(Locked {
            state: Mutex::new((BytesMut::with_capacity(64 * 1024), VecDeque::new())),
            wake: Notify::new(),
        });
        let lock_free = Arc::new(LockFree {
            queue: SegQueue::new(),
            pending: AtomicIsize::new(0),
            wake: Notify::new(),
        });
        let results = [
            ("mutex", run(&rt, locked, per_thread)),
            ("crossbeam", run(&rt, lock_free, per_thread)),
            ("mpsc", run_mpsc(&rt, per_thread)),
        ];
        for (name, [wall, producers, task]) in results {
            println!(
                "round {round} {name:>9}: {:6.1} ns/submission wall, CPU {:6.1} ns submitting + {:6.1} ns task",
                wall as f64 / total,
                producers as f64 / total,
                task as f64 / total
            );
        }
    }
}
