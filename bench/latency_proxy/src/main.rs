//! A TCP proxy that adds a fixed delay to every byte, each way: what a network with that one-way
//! latency does to a client, and nothing else (no bandwidth limit, no loss, no reordering).
//!
//! ```text
//! latency_proxy --upstream 127.0.0.1:6380 --delay-us 500 [--listen 127.0.0.1:0]
//! ```
//!
//! It prints `listening <addr>` on stdout once it accepts connections, and exits when its stdin
//! closes (so a benchmark that runs it as an Erlang port stops it by closing the port). When a
//! connection ends it prints, on stderr, how late its chunks were released.
//!
//! Each direction of each connection has a reader thread and a writer thread. The reader timestamps
//! every chunk as it arrives and queues it at once, so reading never waits for the delay (throughput is
//! not throttled); the writer releases the chunks in arrival order, each at its due time, writing
//! together those already due. Threads and `nanosleep` rather than tokio: tokio's timer has a
//! millisecond granularity (a 0.5 ms delay would become 1-2 ms), while a sleeping thread with its timer
//! slack lowered to 1 ns wakes within a few tens of microseconds, without spinning a core.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

/// The largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Lateness is counted per microsecond up to this; later chunks count in the last bucket.
const LATE_BUCKETS: usize = 10_000;

#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: SocketAddr,
    upstream: SocketAddr,
    delay: Duration,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut upstream = None;
    let mut delay = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e}"))?
            }
            "--upstream" => {
                upstream = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--upstream {value}: {e}"))?,
                )
            }
            "--delay-us" => {
                let us: u64 = value
                    .parse()
                    .map_err(|e| format!("--delay-us {value}: {e}"))?;
                delay = Some(Duration::from_micros(us));
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Args {
        listen,
        upstream: upstream.ok_or("--upstream is required")?,
        delay: delay.ok_or("--delay-us is required")?,
    })
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("latency_proxy: {e}\nusage: latency_proxy --upstream HOST:PORT --delay-us N [--listen HOST:PORT]");
            std::process::exit(2);
        }
    };
    lower_timer_slack();
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("latency_proxy: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening {local}");
    let _ = std::io::stdout().flush();
    thread::spawn(|| {
        // Stdin closing (the port that started us closed) ends the proxy.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    serve(listener, args.upstream, args.delay);
}

/// Timer slack is what Linux may add to a sleep to batch wake-ups (50 µs by default); threads
/// inherit it from the one that creates them.
fn lower_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and touches only this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Accepts connections forever, each relayed to `upstream` with `delay` each way.
fn serve(listener: TcpListener, upstream: SocketAddr, delay: Duration) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        thread::spawn(move || match TcpStream::connect(upstream) {
            Ok(server) => relay(client, server, delay),
            Err(e) => eprintln!("latency_proxy: cannot connect to {upstream}: {e}"),
        });
    }
}

/// Relays one connection until both directions have ended.
fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || direction(client, server, delay));
    let down = direction(server2, client2, delay);
    let up = up.join().unwrap_or_default();
    eprintln!(
        "latency_proxy: connection closed; up {}; down {}",
        up.summary(),
        down.summary()
    );
}

/// One direction: reads `from` in this thread, writes `to` in another; returns once both are done.
fn direction(from: TcpStream, to: TcpStream, delay: Duration) -> Lateness {
    let (tx, rx) = mpsc::channel();
    let writer = thread::spawn(move || deliver(rx, to));
    read_chunks(from, tx, delay);
    writer.join().unwrap_or_default()
}

/// Reads chunks as they come, each queued with the time it is due; returns at the end of the stream
/// (dropping `tx` tells the writer there is no more).
fn read_chunks(mut from: impl Read, tx: Sender<(Instant, Vec<u8>)>, delay: Duration) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Writes each chunk at its due time, in order, those already due together; at the end of the
/// input, or on a write error, ends the other side's stream.
fn deliver(rx: Receiver<(Instant, Vec<u8>)>, mut to: TcpStream) -> Lateness {
    let mut late = Lateness::default();
    let mut out = Vec::with_capacity(CHUNK);
    let mut next = rx.recv().ok();
    while let Some((due, chunk)) = next.take() {
        sleep_until(due);
        late.count(Instant::now().saturating_duration_since(due));
        out.clear();
        out.extend_from_slice(&chunk);
        let ended = loop {
            match rx.try_recv() {
                Ok((d, c)) if d <= Instant::now() => out.extend_from_slice(&c),
                Ok(item) => {
                    next = Some(item);
                    break false;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if to.write_all(&out).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return late;
        }
        if next.is_none() && !ended {
            next = rx.recv().ok();
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    late
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// How late chunks were released after their due time: a histogram by microsecond.
struct Lateness {
    buckets: Vec<u64>,
    total: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            buckets: vec![0; LATE_BUCKETS],
            total: 0,
        }
    }
}

impl Lateness {
    fn count(&mut self, late: Duration) {
        let us = (late.as_micros() as usize).min(LATE_BUCKETS - 1);
        self.buckets[us] += 1;
        self.total += 1;
    }

    /// The lateness (µs) that a fraction `q` of the releases did not exceed.
    fn quantile(&self, q: f64) -> usize {
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return us;
            }
        }
        LATE_BUCKETS - 1
    }

    fn summary(&self) -> String {
        if self.total == 0 {
            return "no releases".to_string();
        }
        format!(
            "{} releases, late p50 {} us, p99 {} us",
            self.total,
            self.quantile(0.5),
            self.quantile(0.99)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let args = parse_args(strings(&[
            "--upstream",
            "127.0.0.1:6380",
            "--delay-us",
            "500",
        ]))
        .unwrap();
        assert_eq!(args.upstream, "127.0.0.1:6380".parse().unwrap());
        assert_eq!(args.delay, Duration::from_micros(500));
        assert_eq!(args.listen.port(), 0);
        assert!(parse_args(strings(&["--delay-us", "500"])).is_err());
        assert!(parse_args(strings(&["--upstream", "x", "--delay-us", "1"])).is_err());
        assert!(parse_args(strings(&["--upstream"])).is_err());
    }

    #[test]
    fn lateness_quantiles() {
        let mut late = Lateness::default();
        for us in 1..=100 {
            late.count(Duration::from_micros(us));
        }
        assert_eq!(late.quantile(0.5), 50);
        assert_eq!(late.quantile(0.99), 99);
        late.count(Duration::from_secs(1));
        assert_eq!(late.quantile(1.0), LATE_BUCKETS - 1);
    }

    /// Every chunk arrives after the delay, in order, and a burst is not spread out by it: 200
    /// chunks written back to back take about one delay in all, not 200.
    #[test]
    fn delays_each_chunk_without_throttling() {
        let delay = Duration::from_millis(20);
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut r = s.try_clone().unwrap();
            let _ = std::io::copy(&mut r, &mut s);
        });
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = proxy.local_addr().unwrap();
        thread::spawn(move || serve(proxy, upstream, delay));

        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let t0 = Instant::now();
        c.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap();
        let rtt = t0.elapsed();
        assert!(rtt >= 2 * delay, "round trip {rtt:?}");

        let sent: Vec<u8> = (0..200u32).flat_map(|i| i.to_be_bytes()).collect();
        let t0 = Instant::now();
        for piece in sent.chunks(4) {
            c.write_all(piece).unwrap();
        }
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got).unwrap();
        let took = t0.elapsed();
        assert_eq!(got, sent, "order kept");
        assert!(took >= 2 * delay, "took {took:?}");
        assert!(took < 20 * delay, "throttled: {took:?}");
    }
}
