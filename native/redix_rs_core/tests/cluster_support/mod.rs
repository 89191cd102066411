//! Helpers for the cluster tests: `redis-server` processes started with cluster support on free
//! 127.0.0.1 ports (killed when dropped, so a failing test leaves none behind), a real cluster made
//! of them with `redis-cli --cluster create`, and a small blocking client for tests that query a
//! server from synchronous code (property tests).
//!
//! Used next to `support` (`mod support; mod cluster_support;`), whose temp dirs and ports it reuses.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redix_rs_core::resp::{encode_command, Frame, Limits, Parsed, Parser};

use crate::support::{free_port, TempDir, REDIS_SERVER, WAIT};

pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// `cluster-node-timeout` of the test nodes: low, so failures are detected in a few seconds.
pub const NODE_TIMEOUT_MS: u64 = 2000;

// ---------------------------------------------------------------------------------------------------
// A blocking client
// ---------------------------------------------------------------------------------------------------

/// One blocking RESP2 connection, parsed with the crate's own parser. Panics on I/O errors: it is
/// for tests.
pub struct SyncClient {
    sock: TcpStream,
    parser: Parser,
    buf: BytesMut,
}

impl SyncClient {
    pub fn connect(port: u16) -> std::io::Result<SyncClient> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        sock.set_read_timeout(Some(WAIT))?;
        sock.set_nodelay(true)?;
        Ok(SyncClient {
            sock,
            parser: Parser::new(Limits::default()),
            buf: BytesMut::new(),
        })
    }

    /// Sends one command and returns its reply (error replies included).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        self.try_call(args).expect("SyncClient::call")
    }

    pub fn try_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Frame> {
        let mut out = BytesMut::new();
        encode_command(args, &mut out);
        self.sock.write_all(&out)?;
        loop {
            match self.parser.parse(&mut self.buf) {
                Ok(Parsed::Complete(frame)) => return Ok(frame),
                Ok(Parsed::Incomplete) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The text of a string reply, or `None`.
pub fn string(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Frame::Verbatim { text, .. } => Some(String::from_utf8_lossy(text).into_owned()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------
// A redis-server with cluster support
// ---------------------------------------------------------------------------------------------------

/// A `redis-server --cluster-enabled yes` child process, SIGKILLed and reaped on drop.
pub struct ClusterNode {
    child: Option<Child>,
    pub port: u16,
    /// The cluster bus port (`CLUSTER MEET` needs it: it is not `port + 10000` here).
    pub bus_port: u16,
    // Declared last so the directory is removed after the process is gone.
    dir: TempDir,
}

impl ClusterNode {
    /// Starts a node on a free port (its bus on another free port) and waits until it answers.
    /// A port taken between picking and binding makes the server exit: that is retried.
    pub fn start() -> ClusterNode {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("cluster_node");
            let (port, bus_port) = (free_port(), free_port());
            let child = Command::new(REDIS_SERVER)
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--port", &port.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &bus_port.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut node = ClusterNode {
                child: Some(child),
                port,
                bus_port,
                dir,
            };
            if node.wait_ready(Duration::from_secs(10)) {
                return node;
            }
            last_log =
                std::fs::read_to_string(node.dir.path().join("redis.log")).unwrap_or_default();
        }
        panic!("cluster node did not start after 5 attempts; last log:\n{last_log}");
    }

    pub fn client(&self) -> SyncClient {
        SyncClient::connect(self.port).expect("connect to cluster node")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the node and reaps it; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True once the process we spawned (not another one on the port) answers `INFO`.
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("child");
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            let pid = child.id();
            if self.answering_pid() == Some(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn answering_pid(&self) -> Option<u32> {
        let mut client = SyncClient::connect(self.port).ok()?;
        let info = string(&client.try_call(&["INFO", "server"]).ok()?)?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------------
// A cluster
// ---------------------------------------------------------------------------------------------------

/// Nodes joined into one cluster by `redis-cli --cluster create`; all killed on drop.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    /// How many of the nodes were created as replicas.
    replicas: usize,
}

impl Cluster {
    /// `primaries` primaries with `replicas` replicas each, every slot assigned, every node agreeing
    /// and every replica in sync as seen from node 0.
    pub fn start(primaries: usize, replicas: usize) -> Cluster {
        let nodes: Vec<ClusterNode> = (0..primaries * (1 + replicas))
            .map(|_| ClusterNode::start())
            .collect();
        let cluster = Cluster {
            nodes,
            replicas: primaries * replicas,
        };
        cluster.create(replicas);
        cluster.wait_until("cluster_state:ok on every node", |c| {
            c.nodes
                .iter()
                .all(|n| cluster_info(n).contains("cluster_state:ok"))
        });
        cluster.wait_in_sync(0);
        cluster
    }

    fn create(&self, replicas: usize) {
        let log_dir = TempDir::new("cluster_create");
        let log = log_dir.path().join("out.txt");
        let mut child = Command::new(REDIS_CLI)
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(ClusterNode::address))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("create log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-cli --cluster create");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait redis-cli") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed ({status:?}):\n{out}"
        );
    }

    /// Waits until `self.nodes[observer]` sees every replica as one and every node online
    /// (`CLUSTER SHARDS` role and health). A node is shown as a primary until the observer learns
    /// it replicates, and a replica as `loading` until its replication offset, as gossiped, is
    /// non-zero, so a key is written through every node to get replication going.
    pub fn wait_in_sync(&self, observer: usize) {
        for node in &self.nodes {
            let mut client = node.client();
            for i in 0..16 {
                // Replicas and non-owners answer MOVED: each key lands on its owner through one node.
                let _ = client.call(&["SET", &format!("warm:{i}"), "1"]);
            }
        }
        let expected = self.nodes.len();
        self.wait_until("every replica known and every node online", |c| {
            let shards = c.nodes[observer].client().call(&["CLUSTER", "SHARDS"]);
            count_values(&shards, "role", "replica") == c.replicas
                && count_values(&shards, "health", "online") == expected
        });
    }

    /// Polls `cond` every 50 ms, failing the test after [`WAIT`].
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node listening on `port`.
    pub fn by_port(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("no node on that port")
    }
}

/// `CLUSTER INFO` of a node (empty when it does not answer).
pub fn cluster_info(node: &ClusterNode) -> String {
    SyncClient::connect(node.port)
        .ok()
        .and_then(|mut c| c.try_call(&["CLUSTER", "INFO"]).ok())
        .and_then(|f| string(&f))
        .unwrap_or_default()
}

/// How many key/value pairs anywhere in `frame` have key `key` and value `value` (flat RESP2 pairs
/// or RESP3 maps).
pub fn count_values(frame: &Frame, key: &str, value: &str) -> usize {
    let is = |f: &Frame, s: &str| string(f).is_some_and(|t| t == s);
    match frame {
        Frame::Array(items) => {
            let pairs = items
                .windows(2)
                .filter(|kv| is(&kv[0], key) && is(&kv[1], value))
                .count();
            pairs
                + items
                    .iter()
                    .map(|i| count_values(i, key, value))
                    .sum::<usize>()
        }
        Frame::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| usize::from(is(k, key) && is(v, value)) + count_values(v, key, value))
            .sum(),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------------
// CLUSTER NODES, an independent view of the topology
// ---------------------------------------------------------------------------------------------------

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodesLine {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Inclusive slot ranges, for a primary.
    pub slots: Vec<(u16, u16)>,
}

/// Parses `CLUSTER NODES` text (`<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch>
/// <link> <slot>...`), ignoring migration markers (`[slot->-id]`).
pub fn parse_cluster_nodes(text: &str) -> Vec<NodesLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let address = words[1].split('@').next().expect("address");
            let port = address
                .rsplit(':')
                .next()
                .expect("port")
                .parse()
                .expect("port");
            let flags: Vec<&str> = words[2].split(',').collect();
            let slots = words[8..]
                .iter()
                .filter(|w| !w.starts_with('['))
                .map(|w| match w.split_once('-') {
                    Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                    None => {
                        let s = w.parse().expect("slot");
                        (s, s)
                    }
                })
                .collect();
            NodesLine {
                id: words[0].to_owned(),
                port,
                primary: flags.contains(&"master"),
                failed: flags.contains(&"fail"),
                primary_id: (words[3] != "-").then(|| words[3].to_owned()),
                slots,
            }
        })
        .collect()
}
