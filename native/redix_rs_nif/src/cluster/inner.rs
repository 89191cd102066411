//! The state of one cluster: the slot map and key table (swapped whole on refresh), one multiplexed
//! connection per node (re-established with backoff while the node is in the topology), the
//! refresher, and the events the owner process (`RedixRs.Cluster`) hears.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redix_rs_core::cluster::{slot, KeyLookup, KeyTable, Origin, Role, Topology};
use redix_rs_core::conn::lifecycle::{supervise, Lifecycle, LifecycleListener};
use redix_rs_core::conn::{Address, ConnectOptions, Multiplexer, Reason, SubmitError, COPY_MAX};
use redix_rs_core::resp::{encode_command, Frame, Limits};
use rustler::{Encoder, Env, LocalPid, OwnedEnv, Term};
use tokio::sync::Notify;

use super::call::{Call, ClusterWaiter, Cmd, Part, Query};
use super::wire;
use crate::{atoms, reply, runtime};

/// Where a call's reads may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    PreferReplica,
}

/// How the cluster was configured.
pub struct Settings {
    pub template: ConnectOptions,
    pub max_queued_bytes: usize,
    pub reply_limits: Limits,
    pub read_from_replicas: bool,
    pub refresh_interval: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Option<Duration>,
    /// `health_check_interval`: a `PING` per node connection at this interval.
    pub health_check_interval: Option<Duration>,
    pub seeds: Vec<(String, u16)>,
}

/// One node's connection.
pub struct NodeConn {
    pub host: Arc<str>,
    pub port: u16,
    pub readonly: bool,
    mux: Mutex<Multiplexer<ClusterWaiter>>,
    connected: AtomicBool,
    stopped: AtomicBool,
    stop: Notify,
}

impl NodeConn {
    fn mux(&self) -> Multiplexer<ClusterWaiter> {
        lock(&self.mux).clone()
    }

    /// Queues `part`; hands it back if the connection is closed (or its queue full).
    pub fn submit(&self, part: Part) -> Result<(), Part> {
        let wire = part.wire();
        let mux = self.mux();
        let waiter = ClusterWaiter::Part(part);
        // Small parts are copied into the queue under its lock (and written at once by a lone
        // caller); a large one is queued as a chunk of its own.
        let submitted = if wire.len > COPY_MAX {
            let mut out = BytesMut::with_capacity(wire.len);
            wire.write(&mut out);
            mux.submit(out, waiter)
        } else {
            mux.submit_with(waiter, |out| {
                wire.write(out.buf());
                Ok::<(), std::convert::Infallible>(())
            })
        };
        match submitted {
            Ok(()) => Ok(()),
            Err(
                SubmitError::Closed(ClusterWaiter::Part(p))
                | SubmitError::Full(ClusterWaiter::Part(p)),
            ) => Err(p),
            Err(_) => unreachable_part(),
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
        self.mux().close(Reason::Closed);
    }

    fn is_up(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

fn unreachable_part() -> Result<(), Part> {
    // A part is submitted as a part, and comes back as one: no other refusal exists.
    unreachable!("a submitted part came back as another waiter")
}

/// The slot map and the connections it routes to.
pub struct Routes {
    pub topology: Topology,
    /// One per topology node: its connection, if one is kept.
    conns: Vec<Option<Arc<NodeConn>>>,
    keys: Arc<KeyTable>,
}

const DISCOVERING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;
const CLOSED: u8 = 3;

/// A call waiting for the first discovery.
pub struct Pending {
    pub call: Arc<Call>,
    pub commands: Vec<Cmd>,
}

pub struct Inner {
    settings: Settings,
    owner: LocalPid,
    status: AtomicU8,
    pending: Mutex<Vec<Pending>>,
    routes: RwLock<Option<Arc<Routes>>>,
    nodes: Mutex<HashMap<NodeKey, Arc<NodeConn>>>,
    refresh: Notify,
    shutdown: Notify,
    this: Weak<Inner>,
    random: AtomicU64,
}

/// A node connection's key: host and port.
type NodeKey = (Arc<str>, u16);

/// Commands for one node (or why there is none for them).
type Group = (Result<Arc<NodeConn>, &'static str>, Vec<Cmd>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a call's dispatch found wrong before sending anything.
pub enum Refused {
    /// Nothing can be sent (no topology, or the cluster is closed): `:closed`.
    Closed,
    /// A transaction over several slots.
    CrossSlot,
    /// A transaction with no key.
    NoKey,
}

impl Inner {
    pub fn start(settings: Settings, owner: LocalPid) -> Arc<Inner> {
        let seed = Instant::now().elapsed().as_nanos() as u64 ^ (&settings as *const _ as u64);
        let inner = Arc::new_cyclic(|this| Inner {
            settings,
            owner,
            status: AtomicU8::new(DISCOVERING),
            pending: Mutex::new(Vec::new()),
            routes: RwLock::new(None),
            nodes: Mutex::new(HashMap::new()),
            refresh: Notify::new(),
            shutdown: Notify::new(),
            this: this.clone(),
            random: AtomicU64::new(seed | 1),
        });
        let weak = Arc::downgrade(&inner);
        inner.spawn(refresher(weak));
        inner
    }

    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, future: F) {
        if let Ok(rt) = runtime::get() {
            rt.spawn(future);
        }
    }

    fn rand(&self, n: usize) -> usize {
        // xorshift64: good enough to spread keyless commands and replica reads.
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        (x % n.max(1) as u64) as usize
    }

    pub fn is_closed(&self) -> bool {
        self.status.load(Ordering::Acquire) == CLOSED
    }

    /// Closes every node connection; calls waiting for discovery get `reason`.
    pub fn shutdown(&self, owner_down: bool) {
        if self.status.swap(CLOSED, Ordering::AcqRel) == CLOSED {
            return;
        }
        self.shutdown.notify_one();
        let nodes: Vec<_> = lock(&self.nodes).drain().map(|(_, n)| n).collect();
        for node in nodes {
            node.stopped.store(true, Ordering::Release);
            node.stop.notify_one();
            node.mux().close(if owner_down {
                Reason::OwnerDown
            } else {
                Reason::Closed
            });
        }
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = None;
        let pending = std::mem::take(&mut *lock(&self.pending));
        if !pending.is_empty() {
            let reason = if owner_down { "owner_down" } else { "closed" };
            self.spawn(async move {
                for p in pending {
                    p.call.fail(Vec::new(), reason);
                }
            });
        }
    }

    pub fn trigger_refresh(&self) {
        self.refresh.notify_one();
    }

    fn routes(&self) -> Option<Arc<Routes>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Dispatches a call (`commands` encoded one by one): routes each command, groups them by node
    /// and submits the groups; before the first discovery ends, the call waits for it.
    pub fn dispatch(&self, call: Arc<Call>, commands: Vec<Cmd>) -> Result<(), Refused> {
        let routes = match self.status.load(Ordering::Acquire) {
            READY => self.routes(),
            DISCOVERING => {
                let mut pending = lock(&self.pending);
                // Checked again under the lock: discovery may have ended meanwhile.
                if self.status.load(Ordering::Acquire) == DISCOVERING {
                    pending.push(Pending { call, commands });
                    return Ok(());
                }
                drop(pending);
                self.routes()
            }
            _ => None,
        };
        let Some(routes) = routes else {
            return Err(Refused::Closed);
        };
        let (mut cmds, unknown) = self.plan(&routes, commands, call.transaction)?;
        if !unknown.is_empty() {
            // Keys only the server can find: asked with COMMAND GETKEYS first, off the caller.
            let inner = call.inner.clone();
            self.spawn(async move {
                for i in unknown {
                    cmds[i].slot = inner.server_slot(&routes, &cmds[i].bytes).await;
                }
                inner.route(&call, &routes, cmds);
            });
            return Ok(());
        }
        self.route(&call, &routes, cmds);
        Ok(())
    }

    /// Groups `cmds` (their slots known) by node and submits the groups.
    fn route(&self, call: &Arc<Call>, routes: &Routes, cmds: Vec<Cmd>) {
        let mut groups: Vec<Group> = Vec::new();
        if cmds.len() == 1 && !call.transaction {
            // One command: one part, no grouping.
            let node = self.pick(routes, cmds[0].slot, call.route);
            call.add_parts(1);
            self.submit_part(call, node, cmds);
            return;
        }
        if call.transaction {
            let slot = cmds.iter().find_map(|c| c.slot);
            groups.push((self.pick(routes, slot, Route::Primary), cmds));
        } else {
            // A keyless command goes with the command before it (`SET k v` then `WAIT 1 0` waits
            // on k's primary); first in a pipeline, to a random primary.
            let mut previous: Option<Result<Arc<NodeConn>, &'static str>> = None;
            for cmd in cmds {
                let node = match (cmd.slot, &previous) {
                    (None, Some(p)) => p.clone(),
                    _ => self.pick(routes, cmd.slot, call.route),
                };
                previous = Some(node.clone());
                let same = |g: &Group| match (&g.0, &node) {
                    (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
                    (Err(a), Err(b)) => a == b,
                    _ => false,
                };
                match groups.iter_mut().find(|g| same(g)) {
                    Some(g) => g.1.push(cmd),
                    None => groups.push((node, vec![cmd])),
                }
            }
        }
        call.set_split(groups.len() > 1);
        call.add_parts(groups.len());
        for (node, cmds) in groups {
            self.submit_part(call, node, cmds);
        }
    }

    /// The slot of the first key `COMMAND GETKEYS` finds in `command` (`None`: no key, or no
    /// answer: then it goes to a random primary, and a `MOVED` is followed).
    async fn server_slot(&self, routes: &Routes, command: &[u8]) -> Option<u16> {
        let node = self.pick(routes, None, Route::Primary).ok()?;
        let frame = self
            .query_bytes(&node, wire::getkeys(command)?)
            .await
            .ok()?;
        match frame {
            Frame::Array(keys) | Frame::Set(keys) => match keys.first()? {
                Frame::Bulk(key) | Frame::Simple(key) => Some(slot(key)),
                _ => None,
            },
            _ => None,
        }
    }

    /// Submits one part of `call` (counted already) to `node`, or answers it with why it cannot go.
    fn submit_part(
        &self,
        call: &Arc<Call>,
        node: Result<Arc<NodeConn>, &'static str>,
        cmds: Vec<Cmd>,
    ) {
        match node {
            Ok(node) => {
                let part = Part::new(call.clone(), cmds, node.host.clone());
                if let Err(part) = node.submit(part) {
                    // The node is down: its replica may be taking over.
                    self.trigger_refresh();
                    part.refused("closed");
                }
            }
            Err(reason) => {
                let part = Part::new(call.clone(), cmds, Arc::from(""));
                part.refused(reason);
            }
        }
    }

    /// Each command's slot, from its first key (`None`: keyless); and which commands have keys the
    /// specs cannot locate (only the server can).
    fn plan(
        &self,
        routes: &Routes,
        mut cmds: Vec<Cmd>,
        transaction: bool,
    ) -> Result<(Vec<Cmd>, Vec<usize>), Refused> {
        let mut tx_slot: Option<u16> = None;
        let mut unknown = Vec::new();
        for (i, cmd) in cmds.iter_mut().enumerate() {
            let lookup = wire::with_args(&cmd.bytes, |args| match routes.keys.first_key(args) {
                KeyLookup::Key(key) => Ok(Some(slot(key))),
                KeyLookup::NoKeys => Ok(None),
                KeyLookup::Unknown => Err(()),
            });
            cmd.slot = match lookup {
                Some(Ok(slot)) => slot,
                _ => {
                    // A transaction is checked on the keys the specs give; the server refuses the
                    // rest (CROSSSLOT) itself.
                    if !transaction {
                        unknown.push(i);
                    }
                    None
                }
            };
            if transaction {
                if let Some(s) = cmd.slot {
                    if tx_slot.is_some_and(|t| t != s) {
                        return Err(Refused::CrossSlot);
                    }
                    tx_slot = Some(s);
                }
            }
        }
        if transaction && tx_slot.is_none() {
            return Err(Refused::NoKey);
        }
        Ok((cmds, unknown))
    }

    /// The connection a command of `slot` goes to by `route`.
    fn pick(
        &self,
        routes: &Routes,
        slot: Option<u16>,
        route: Route,
    ) -> Result<Arc<NodeConn>, &'static str> {
        let topo = &routes.topology;
        let primary = slot.and_then(|s| topo.primary(s)).or_else(|| {
            let primaries: Vec<usize> = topo.primaries().collect();
            (!primaries.is_empty()).then(|| primaries[self.rand(primaries.len())])
        });
        let Some(primary) = primary else {
            return Err("closed");
        };
        let conn = |i: usize| routes.conns.get(i).cloned().flatten();
        if route != Route::Primary {
            let slot = slot.unwrap_or_else(|| {
                // A keyless read: any slot of that primary's shard.
                (0..redix_rs_core::cluster::SLOT_COUNT)
                    .find(|&s| topo.primary(s) == Some(primary))
                    .unwrap_or(0)
            });
            let replicas: Vec<Arc<NodeConn>> = topo
                .replicas(slot)
                .iter()
                .filter_map(|&i| conn(i))
                .filter(|c| c.is_up())
                .collect();
            if !replicas.is_empty() {
                return Ok(replicas[self.rand(replicas.len())].clone());
            }
            if route == Route::Replica {
                return Err("no_replica_connection");
            }
        }
        conn(primary).ok_or("closed")
    }

    /// For retries: the node for `slot` by `route` in the current topology.
    pub fn node_for(&self, slot: Option<u16>, route: Route) -> Result<Arc<NodeConn>, &'static str> {
        match self.routes() {
            Some(routes) => self.pick(&routes, slot, route),
            None => Err("closed"),
        }
    }

    /// The connection to `host:port` as a primary, opened if there is none.
    pub fn node_at(&self, host: &str, port: u16) -> Arc<NodeConn> {
        let mut nodes = lock(&self.nodes);
        if let Some(n) = nodes.get(&(Arc::from(host), port)) {
            return n.clone();
        }
        let node = self.open(host, port, false);
        nodes.insert((node.host.clone(), port), node.clone());
        node
    }

    fn open(&self, host: &str, port: u16, readonly: bool) -> Arc<NodeConn> {
        let node = Arc::new(NodeConn {
            host: Arc::from(host),
            port,
            readonly,
            mux: Mutex::new(self.new_mux()),
            connected: AtomicBool::new(false),
            stopped: AtomicBool::new(self.is_closed()),
            stop: Notify::new(),
        });
        let mut opts = self.settings.template.clone();
        opts.address = Address::Tcp {
            host: host.to_owned(),
            port,
        };
        opts.readonly = readonly;
        opts.database = None;
        self.spawn(node_loop(self.this.clone(), node.clone(), opts));
        node
    }

    fn new_mux(&self) -> Multiplexer<ClusterWaiter> {
        let mux = Multiplexer::new(self.settings.max_queued_bytes);
        mux.set_reply_limits(self.settings.reply_limits);
        mux
    }

    /// A redirect is followed: tells the owner, and refreshes after a `MOVED` the map does not know.
    pub fn redirected(&self, ask: bool, slot: u16, host: &str, port: u16) {
        if !ask {
            let known = self.routes().is_some_and(|r| {
                r.topology
                    .primary(slot)
                    .and_then(|i| r.topology.node(i))
                    .is_some_and(|n| n.host == host && n.port == port)
            });
            if !known {
                self.trigger_refresh();
            }
        }
        let address = format!("{host}:{port}");
        let kind = if ask { "ask" } else { "moved" };
        self.event(|env| {
            (
                atom(env, "redirection"),
                atom(env, kind),
                slot,
                address.as_str(),
            )
                .encode(env)
        });
    }

    /// Sends `{:redix_rs_cluster, event}` to the owner (from a tokio thread).
    fn event(&self, build: impl for<'a> FnOnce(Env<'a>) -> Term<'a>) {
        if rustler::thread::is_scheduler_thread() {
            return;
        }
        let mut env = OwnedEnv::new();
        let _ = env.send_and_clear(&self.owner, |env| {
            (atom(env, "redix_rs_cluster"), build(env)).encode(env)
        });
    }

    /// The addresses of the primaries that own slots, and of every connection kept.
    pub fn describe(&self) -> (Vec<String>, Vec<(String, bool, bool)>) {
        let primaries = self
            .routes()
            .map(|r| {
                r.topology
                    .primaries()
                    .filter_map(|i| r.topology.node(i))
                    .map(|n| format!("{}:{}", n.host, n.port))
                    .collect()
            })
            .unwrap_or_default();
        let conns = lock(&self.nodes)
            .values()
            .map(|n| (n.address(), n.readonly, n.is_up()))
            .collect();
        (primaries, conns)
    }

    /// Sends a call to the primary at `address` as it is (for `SCAN`, which is per node).
    pub fn dispatch_to(
        &self,
        call: Arc<Call>,
        address: &str,
        cmds: Vec<Cmd>,
    ) -> Result<(), Refused> {
        let node = lock(&self.nodes)
            .values()
            .find(|n| !n.readonly && n.address() == address)
            .cloned()
            .ok_or(Refused::Closed)?;
        call.add_parts(1);
        let part = Part::new(call.clone(), cmds, node.host.clone());
        if let Err(part) = node.submit(part) {
            part.refused("closed");
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Discovery and refresh
    // ---------------------------------------------------------------------------------------------

    /// Asks one node after another for the topology (and the command table, once); applies the
    /// first answer. The error lists what each node said.
    async fn refresh_once(&self) -> Result<(), Vec<(String, u16, String)>> {
        let mut candidates: Vec<(String, u16)> = Vec::new();
        if let Some(routes) = self.routes() {
            let nodes = routes.topology.nodes();
            let mut primaries: Vec<(String, u16)> = routes
                .topology
                .primaries()
                .filter_map(|i| nodes.get(i))
                .map(|n| (n.host.clone(), n.port))
                .collect();
            // Start from a random one, so one slow node does not delay every refresh.
            if !primaries.is_empty() {
                let k = self.rand(primaries.len());
                primaries.rotate_left(k);
            }
            candidates.extend(primaries);
            for n in nodes {
                if n.role == Role::Replica && n.health.serves_reads() {
                    candidates.push((n.host.clone(), n.port));
                }
            }
        }
        for seed in &self.settings.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut errors = Vec::new();
        for (host, port) in candidates {
            if self.is_closed() {
                return Ok(());
            }
            match self.ask(&host, port).await {
                Ok((topology, keys)) => {
                    self.apply(topology, keys);
                    return Ok(());
                }
                Err(reason) => errors.push((host, port, reason)),
            }
        }
        Err(errors)
    }

    /// The topology (and command table, if none is known yet) as `host:port` sees it.
    async fn ask(&self, host: &str, port: u16) -> Result<(Topology, Option<KeyTable>), String> {
        let node = self.node_at(host, port);
        let origin = Origin {
            host,
            tls: self.settings.template.tls.is_some(),
        };
        let shards = self.query(&node, &["CLUSTER", "SHARDS"]).await?;
        let topology = match shards {
            Frame::Error(_) | Frame::BulkError(_) => {
                let slots = self.query(&node, &["CLUSTER", "SLOTS"]).await?;
                Topology::from_slots(&slots, origin)
            }
            shards => Topology::from_shards(&shards, origin),
        }
        .map_err(|e| e.to_string())?;
        if topology.primaries().next().is_none() {
            return Err("the node knows no slot owner".to_owned());
        }
        let keys = if self.routes().is_none() {
            let info = self.query(&node, &["COMMAND"]).await?;
            Some(KeyTable::from_command_info(&info).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok((topology, keys))
    }

    async fn query(&self, node: &NodeConn, command: &[&str]) -> Result<Frame, String> {
        let mut bytes = BytesMut::new();
        encode_command(command, &mut bytes);
        self.query_bytes(node, bytes).await
    }

    /// Sends one encoded command on `node`'s connection; its reply within the connect timeout.
    async fn query_bytes(&self, node: &NodeConn, bytes: BytesMut) -> Result<Frame, String> {
        let (query, rx) = Query::new();
        if node
            .mux()
            .submit(bytes, ClusterWaiter::Query(query))
            .is_err()
        {
            return Err("closed".to_owned());
        }
        let wait = self.settings.template.timeout + Duration::from_secs(1);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(frame))) => Ok(frame),
            Ok(Ok(Err(reason))) => Err(format!("{reason:?}")),
            Ok(Err(_)) => Err("closed".to_owned()),
            Err(_) => Err("timeout".to_owned()),
        }
    }

    /// Makes `topology` current: opens what is new, closes what left, reopens what changed role.
    fn apply(&self, topology: Topology, keys: Option<KeyTable>) {
        if self.is_closed() {
            return;
        }
        let previous = self.routes();
        let keys = match (keys, &previous) {
            (Some(k), _) => Arc::new(k),
            (None, Some(p)) => p.keys.clone(),
            (None, None) => Arc::new(KeyTable::default()),
        };
        // Which nodes get a connection, and whether read-only.
        let mut wanted: Vec<Option<bool>> = vec![None; topology.nodes().len()];
        for p in topology.primaries() {
            wanted[p] = Some(false);
        }
        if self.settings.read_from_replicas {
            for (i, n) in topology.nodes().iter().enumerate() {
                if n.role == Role::Replica && wanted[i].is_none() {
                    wanted[i] = Some(true);
                }
            }
        }
        let mut conns: Vec<Option<Arc<NodeConn>>> = vec![None; topology.nodes().len()];
        let mut stale = Vec::new();
        {
            let mut nodes = lock(&self.nodes);
            let mut keep: HashMap<NodeKey, Arc<NodeConn>> = HashMap::new();
            for (i, n) in topology.nodes().iter().enumerate() {
                let Some(readonly) = wanted[i] else { continue };
                let key: NodeKey = (Arc::from(n.host.as_str()), n.port);
                let conn = match nodes.remove(&key) {
                    Some(c) if c.readonly == readonly => c,
                    Some(c) => {
                        stale.push(c);
                        self.open(&n.host, n.port, readonly)
                    }
                    None => self.open(&n.host, n.port, readonly),
                };
                conns[i] = Some(conn.clone());
                keep.insert(key, conn);
            }
            stale.extend(nodes.drain().map(|(_, c)| c));
            *nodes = keep;
        }
        for c in stale {
            c.stop();
        }
        let changed = previous
            .as_ref()
            .is_none_or(|p| !Topology::diff(&p.topology, &topology).is_empty());
        let primaries: Vec<String> = topology
            .primaries()
            .filter_map(|i| topology.node(i))
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect();
        let routes = Arc::new(Routes {
            topology,
            conns,
            keys,
        });
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Some(routes);
        if changed {
            self.event(|env| (atom(env, "topology_change"), primaries).encode(env));
        }
    }

    /// The first discovery ended: waiting calls are sent (or refused with `:closed`).
    fn discovered(&self, ok: bool) {
        let pending = {
            let mut pending = lock(&self.pending);
            if self.is_closed() {
                return;
            }
            self.status
                .store(if ok { READY } else { FAILED }, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for p in pending {
            if !ok {
                p.call.fail(Vec::new(), "closed");
                continue;
            }
            let call = p.call.clone();
            match self.dispatch(p.call, p.commands) {
                Ok(()) => {}
                Err(Refused::Closed) => call.fail(Vec::new(), "closed"),
                Err(Refused::CrossSlot) => {
                    if let Some(reply) = call.take_reply() {
                        reply.redis_error("CROSSSLOT Keys in request don't hash to the same slot");
                    }
                }
                Err(Refused::NoKey) => {
                    if let Some(reply) = call.take_reply() {
                        reply.redis_error(
                            "ERR transaction_pipeline requires at least one command with a key to route on",
                        );
                    }
                }
            }
        }
    }
}

fn atom(env: Env<'_>, name: &str) -> rustler::Atom {
    rustler::Atom::from_str(env, name).unwrap_or_else(|_| atoms::error())
}

/// Discovers the cluster, then refreshes it: every `refresh_interval`, and when asked (a `MOVED`,
/// a node failure, `CLUSTERDOWN`), at most once a second.
async fn refresher(inner: Weak<Inner>) {
    let (backoff_initial, backoff_max, interval) = match inner.upgrade() {
        Some(i) => (
            i.settings.backoff_initial,
            i.settings.backoff_max,
            i.settings.refresh_interval,
        ),
        None => return,
    };
    // First discovery, then again with backoff until one succeeds.
    let mut backoff = backoff_initial;
    let mut first = true;
    loop {
        let Some(me) = inner.upgrade() else { return };
        if me.is_closed() {
            return;
        }
        match me.refresh_once().await {
            Ok(()) => {
                me.discovered(true);
                break;
            }
            Err(errors) => {
                me.failed_refresh(&errors);
                if first {
                    me.discovered(false);
                    first = false;
                }
            }
        }
        let shutdown = me.clone();
        drop(me);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.shutdown.notified() => return,
        }
        let next = backoff.mul_f64(1.5);
        backoff = backoff_max.map_or(next, |max| next.min(max));
    }
    let mut last = Instant::now();
    loop {
        let Some(me) = inner.upgrade() else { return };
        let sleep = interval.unwrap_or(Duration::from_secs(86_400));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = me.refresh.notified() => {}
            _ = me.shutdown.notified() => return,
        }
        let since = last.elapsed();
        if since < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1) - since).await;
        }
        if me.is_closed() {
            return;
        }
        last = Instant::now();
        if let Err(errors) = me.refresh_once().await {
            me.failed_refresh(&errors);
        }
    }
}

impl Inner {
    fn failed_refresh(&self, errors: &[(String, u16, String)]) {
        self.event(|env| {
            let errors: Vec<Term<'_>> = errors
                .iter()
                .map(|(h, p, r)| (h.as_str(), *p, r.as_str()).encode(env))
                .collect();
            let reason = (atom(env, "no_reachable_node"), errors).encode(env);
            (atom(env, "failed_topology_refresh"), reason).encode(env)
        });
    }

    fn node_failed(&self, node: &NodeConn, reason: &Reason) {
        let address = node.address();
        self.event(|env| {
            (
                atom(env, "node_connection_failed"),
                address.as_str(),
                reply::reason(env, reason),
            )
                .encode(env)
        });
        self.trigger_refresh();
    }
}

/// Hears one node connection's lifecycle.
struct NodeListener {
    inner: Weak<Inner>,
    node: Arc<NodeConn>,
    /// How the node is connected to (for health-check probes).
    opts: ConnectOptions,
    health_check_interval: Option<Duration>,
    /// It connected (the backoff starts afresh after it is lost).
    was_up: AtomicBool,
}

impl LifecycleListener for NodeListener {
    fn event(&self, event: Lifecycle) {
        match event {
            Lifecycle::Connected => {
                self.was_up.store(true, Ordering::Release);
                self.node.connected.store(true, Ordering::Release);
                if let (Some(interval), Some(inner)) =
                    (self.health_check_interval, self.inner.upgrade())
                {
                    inner.spawn(health(self.node.mux(), self.opts.clone(), interval));
                }
            }
            Lifecycle::Disconnected(_) => {
                self.node.connected.store(false, Ordering::Release);
                if let Some(inner) = self.inner.upgrade() {
                    if !self.node.stopped.load(Ordering::Acquire) {
                        inner.trigger_refresh();
                    }
                }
            }
            Lifecycle::ConnectFailed(err) => {
                self.node.connected.store(false, Ordering::Release);
                if let Some(inner) = self.inner.upgrade() {
                    if !self.node.stopped.load(Ordering::Acquire) {
                        inner.node_failed(&self.node, &err.reason());
                    }
                }
            }
            Lifecycle::Sentinel(_) => {}
        }
    }
}

/// Keeps one node connected while it is wanted: connect, serve, and after a loss or a failed
/// attempt, wait (backoff) and connect again with a fresh multiplexer.
async fn node_loop(inner: Weak<Inner>, node: Arc<NodeConn>, opts: ConnectOptions) {
    let (initial, max, health_check_interval) = match inner.upgrade() {
        Some(i) => (
            i.settings.backoff_initial,
            i.settings.backoff_max,
            i.settings.health_check_interval,
        ),
        None => return,
    };
    let mut backoff: Option<Duration> = None;
    loop {
        if node.stopped.load(Ordering::Acquire) {
            node.mux().close(Reason::Closed);
            return;
        }
        let mux = node.mux();
        let listener = Arc::new(NodeListener {
            inner: inner.clone(),
            node: node.clone(),
            opts: opts.clone(),
            health_check_interval,
            was_up: AtomicBool::new(false),
        });
        supervise(mux, opts.clone(), listener.clone()).await;
        if node.stopped.load(Ordering::Acquire) {
            return;
        }
        if listener.was_up.load(Ordering::Acquire) {
            backoff = None;
        }
        backoff = Some(match backoff {
            None => initial,
            Some(b) => {
                let next = b.mul_f64(1.5);
                max.map_or(next, |m| next.min(m))
            }
        });
        let wait = backoff.unwrap_or(initial);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.stop.notified() => return,
        }
        let Some(me) = inner.upgrade() else { return };
        if node.stopped.load(Ordering::Acquire) {
            return;
        }
        *lock(&node.mux) = me.new_mux();
    }
}

/// Health checks of one node connection (`health_check_interval`), as a `RedixRs` connection does
/// them: a `PING` every interval; one not answered within the interval may wait behind a blocking
/// command, so a fresh connection asks the server; only if that fails too is the connection closed
/// (`:health_check_timeout`; its callers get `:disconnected`, and it is re-established).
async fn health(mux: Multiplexer<ClusterWaiter>, opts: ConnectOptions, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if mux.is_closed() {
            return;
        }
        let Some(answer) = ping(&mux) else { return };
        match tokio::time::timeout(interval, answer).await {
            Ok(Ok(Ok(_))) => continue,
            // The connection ended: it is re-established (and checked) anew.
            Ok(_) => return,
            Err(_late) => {
                if !probe(opts.clone(), interval).await {
                    mux.close(Reason::HealthCheckTimeout);
                    return;
                }
            }
        }
    }
}

type Answer = tokio::sync::oneshot::Receiver<Result<Frame, Reason>>;

fn ping(mux: &Multiplexer<ClusterWaiter>) -> Option<Answer> {
    let mut bytes = BytesMut::new();
    encode_command(&["PING"], &mut bytes);
    let (query, rx) = Query::new();
    mux.submit(bytes, ClusterWaiter::Query(query)).ok()?;
    Some(rx)
}

/// Whether the server answers a `PING` on a fresh connection: connecting gets the connect timeout,
/// then the `PING` gets `within`.
async fn probe(opts: ConnectOptions, within: Duration) -> bool {
    let mux: Multiplexer<ClusterWaiter> = Multiplexer::new(1 << 20);
    let Some(mut answer) = ping(&mux) else {
        return false;
    };
    let connected = Arc::new(Notify::new());
    let connect_timeout = opts.timeout;
    let listener = Arc::new(Probe {
        connected: connected.clone(),
    });
    let serving = tokio::spawn(supervise(mux.clone(), opts, listener));
    let answered = tokio::select! {
        // Answered (or failed) while connecting.
        early = &mut answer => matches!(early, Ok(Ok(_))),
        up = tokio::time::timeout(connect_timeout, connected.notified()) => match up {
            Ok(()) => matches!(tokio::time::timeout(within, &mut answer).await, Ok(Ok(Ok(_)))),
            Err(_) => false,
        },
    };
    mux.close(Reason::Closed);
    let _ = serving.await;
    answered
}

/// A probe's lifecycle: only its connection matters.
struct Probe {
    connected: Arc<Notify>,
}

impl LifecycleListener for Probe {
    fn event(&self, event: Lifecycle) {
        if matches!(event, Lifecycle::Connected) {
            self.connected.notify_one();
        }
    }
}
