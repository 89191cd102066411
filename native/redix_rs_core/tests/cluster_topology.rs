//! `cluster::topology` on a real cluster of 6 redis-server processes (3 primaries, 3 replicas,
//! created by `redis-cli --cluster create`), asked through the crate's own connection in RESP2 and
//! RESP3. The parsed slot map is checked against `CLUSTER NODES` (another view of the same state)
//! and against where the nodes really serve keys (`MOVED`), then followed through what a client
//! lives through: endpoints announced differently, a manual failover, a replica killed, a node
//! joining without slots.
//!
//! One test drives one cluster through those phases in order, as each starts from the state the
//! previous one left (and a cluster takes seconds to form).

mod cluster_support;
mod support;

use cluster_support::*;
use redix_rs_core::cluster::{
    slot, Health, KeyLookup, KeyTable, Origin, Role, Topology, SLOT_COUNT,
};
use redix_rs_core::conn::{ConnectOptions, Protocol};
use redix_rs_core::resp::{Frame, ServerError, ServerErrorKind};
use support::{cmd, Conn};

const LOCAL: Origin<'static> = Origin {
    host: "127.0.0.1",
    tls: false,
};

/// Sends one command to the node on `port` through a multiplexed connection speaking `protocol`.
async fn ask(port: u16, protocol: Protocol, args: &[&str]) -> Frame {
    let opts = ConnectOptions {
        protocol,
        ..ConnectOptions::tcp("127.0.0.1", port)
    };
    let conn = Conn::open(&opts).await;
    let reply = cmd(&conn.mux, args).await;
    conn.task.abort();
    reply
}

async fn shards(port: u16, protocol: Protocol, origin: Origin<'_>) -> Topology {
    let reply = ask(port, protocol, &["CLUSTER", "SHARDS"]).await;
    Topology::from_shards(&reply, origin).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

async fn slots(port: u16, protocol: Protocol, origin: Origin<'_>) -> Topology {
    let reply = ask(port, protocol, &["CLUSTER", "SLOTS"]).await;
    Topology::from_slots(&reply, origin).unwrap_or_else(|e| panic!("{e}: {reply:?}"))
}

fn port_of(t: &Topology, index: usize) -> u16 {
    t.nodes()[index].port
}

fn by_port(t: &Topology, port: u16) -> &redix_rs_core::cluster::Node {
    let index = t.find("127.0.0.1", port).expect("node in topology");
    &t.nodes()[index]
}

/// The parsed map says what `CLUSTER NODES` says: the same nodes and roles, each primary owning
/// its ranges, each replica listed under its primary's slots.
fn assert_matches_cluster_nodes(t: &Topology, nodes_text: &str) {
    let lines = parse_cluster_nodes(nodes_text);
    assert_eq!(t.nodes().len(), lines.len(), "{nodes_text}");
    for line in &lines {
        let node = by_port(t, line.port);
        assert_eq!(node.id, line.id);
        let role = if line.primary {
            Role::Primary
        } else {
            Role::Replica
        };
        assert_eq!(node.role, role, "{line:?}");
        for &(start, end) in &line.slots {
            for s in start..=end {
                assert_eq!(t.primary(s).map(|i| port_of(t, i)), Some(line.port));
            }
        }
        if let Some(primary) = line.primary_id.as_deref().filter(|_| !line.failed) {
            let owner = lines.iter().find(|l| l.id == primary).expect("primary");
            if let Some(&(s, _)) = owner.slots.first() {
                let replicas: Vec<u16> = t.replicas(s).iter().map(|&i| port_of(t, i)).collect();
                assert!(
                    replicas.contains(&line.port),
                    "{line:?} not in {replicas:?}"
                );
            }
        }
    }
}

fn moved(reply: &Frame) -> Option<(u16, String)> {
    let Frame::Error(message) = reply else {
        return None;
    };
    match ServerError::parse(message).kind {
        ServerErrorKind::Moved { slot, address } => {
            Some((slot, String::from_utf8_lossy(&address).into_owned()))
        }
        _ => None,
    }
}

/// Every key's owner in the map serves it, and every other primary redirects to that owner.
fn assert_routes_like_the_servers(cluster: &Cluster, t: &Topology) {
    let primaries: Vec<u16> = t.primaries().map(|i| port_of(t, i)).collect();
    assert_eq!(primaries.len(), 3);
    let mut clients: Vec<(u16, SyncClient)> = primaries
        .iter()
        .map(|&p| (p, cluster.by_port(p).client()))
        .collect();
    let keys = (0..200)
        .map(|i| format!("key:{i}"))
        .chain((0..20).map(|i| format!("{{tag{i}}}:x")));
    for key in keys {
        let s = slot(key.as_bytes());
        let owner = port_of(t, t.primary(s).expect("owned"));
        for (port, client) in &mut clients {
            let reply = client.call(&["GET", key.as_str()]);
            if *port == owner {
                assert!(!reply.is_error(), "{key} on its owner {owner}: {reply:?}");
            } else {
                let expected = (s, format!("127.0.0.1:{owner}"));
                assert_eq!(moved(&reply), Some(expected), "{key} on {port}");
            }
        }
    }
}

/// Commands routed by `first_key` (from the cluster's own COMMAND INFO) are redirected by a
/// non-owner to the owner of exactly that slot: the key table and the slot function agree with
/// cluster mode, `not_key` shard channels included.
async fn assert_first_keys_route(cluster: &Cluster, t: &Topology, observer: u16) {
    let info = ask(observer, Protocol::Resp3, &["COMMAND", "INFO"]).await;
    let table = KeyTable::from_command_info(&info).expect("key table");
    let commands: [&[&str]; 8] = [
        &["SPUBLISH", "news", "hi"],
        &[
            "EVALSHA",
            "0123456789012345678901234567890123456789",
            "1",
            "k1",
        ],
        &["EVAL", "return 1", "2", "{t}a", "{t}b"],
        &["XREAD", "COUNT", "1", "STREAMS", "stream:1", "0"],
        &["ZUNIONSTORE", "{z}d", "2", "{z}a", "{z}b"],
        &["OBJECT", "ENCODING", "obj"],
        &["BLMPOP", "0", "1", "list:1", "LEFT"],
        &["MIGRATE", "127.0.0.1", "1", "", "0", "5", "KEYS", "mk"],
    ];
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        let KeyLookup::Key(key) = table.first_key(&args) else {
            panic!("{command:?}: no key");
        };
        let s = slot(key);
        let owner = port_of(t, t.primary(s).expect("owned"));
        let other = t
            .primaries()
            .map(|i| port_of(t, i))
            .find(|&p| p != owner)
            .expect("another primary");
        let reply = cluster.by_port(other).client().call(command);
        let expected = (s, format!("127.0.0.1:{owner}"));
        assert_eq!(moved(&reply), Some(expected), "{command:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_of_a_real_cluster_through_its_changes() {
    let mut cluster = Cluster::start(3, 1);
    let observer = cluster.nodes[0].port;

    // 1. The healthy cluster, in both protocols, from both commands.
    let before = shards(observer, Protocol::Resp3, LOCAL).await;
    assert_eq!(before, shards(observer, Protocol::Resp2, LOCAL).await);
    assert_eq!(before.nodes().len(), 6);
    assert_eq!(before.unowned_slots(), 0);
    assert!(before.nodes().iter().all(|n| n.health == Health::Online));
    assert!((0..SLOT_COUNT).all(|s| before.replicas(s).len() == 1));
    for node in before.nodes() {
        let myid = cluster
            .by_port(node.port)
            .client()
            .call(&["CLUSTER", "MYID"]);
        assert_eq!(string(&myid).as_deref(), Some(node.id.as_str()));
    }
    let nodes_text = string(&cluster.nodes[0].client().call(&["CLUSTER", "NODES"])).unwrap();
    assert_matches_cluster_nodes(&before, &nodes_text);
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let legacy = slots(observer, protocol, LOCAL).await;
        assert!(legacy
            .nodes()
            .iter()
            .all(|n| n.health == Health::Unreported));
        assert!(Topology::diff(&before, &legacy).is_empty(), "{protocol:?}");
        assert_matches_cluster_nodes(&legacy, &nodes_text);
    }
    assert_routes_like_the_servers(&cluster, &before);
    assert_first_keys_route(&cluster, &before, observer).await;

    // 2. Endpoints the server does not know: "" / null means "where you asked", "?" (hostnames
    //    preferred, none set) falls back to the node's IP.
    let mut admin = cluster.nodes[0].client();
    let set_type = |admin: &mut SyncClient, kind: &str| {
        let reply = admin.call(&["CONFIG", "SET", "cluster-preferred-endpoint-type", kind]);
        assert_eq!(string(&reply).as_deref(), Some("OK"));
    };
    set_type(&mut admin, "unknown-endpoint");
    let asked = Origin {
        host: "localhost",
        tls: false,
    };
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let raw = ask(observer, protocol, &["CLUSTER", "SHARDS"]).await;
        assert_eq!(count_values(&raw, "endpoint", ""), 6, "{raw:?}");
        let t = Topology::from_shards(&raw, asked).unwrap();
        assert!(t.nodes().iter().all(|n| n.host == "localhost"));
        let t = slots(observer, protocol, asked).await;
        assert!(t.nodes().iter().all(|n| n.host == "localhost"));
    }
    set_type(&mut admin, "hostname");
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let raw = ask(observer, protocol, &["CLUSTER", "SHARDS"]).await;
        assert_eq!(count_values(&raw, "endpoint", "?"), 6, "{raw:?}");
        let t = Topology::from_shards(&raw, asked).unwrap();
        assert!(t.nodes().iter().all(|n| n.host == "127.0.0.1"));
        let t = slots(observer, protocol, asked).await;
        assert!(t.nodes().iter().all(|n| n.host == "127.0.0.1"));
    }
    set_type(&mut admin, "ip");

    // 3. Manual failover in the shard of slot 0: the two nodes swap roles, nobody leaves.
    let old_primary = port_of(&before, before.primary(0).unwrap());
    let promoted = port_of(&before, before.replicas(0)[0]);
    let reply = cluster
        .by_port(promoted)
        .client()
        .call(&["CLUSTER", "FAILOVER"]);
    assert_eq!(string(&reply).as_deref(), Some("OK"));
    cluster.wait_until("the failover to complete", |c| {
        let shards = c.by_port(promoted).client().call(&["CLUSTER", "SHARDS"]);
        let t = Topology::from_shards(&shards, LOCAL).unwrap();
        let role_of = |port| t.find("127.0.0.1", port).map(|i| t.nodes()[i].role);
        t.primary(0).map(|i| port_of(&t, i)) == Some(promoted)
            && role_of(old_primary) == Some(Role::Replica)
    });
    let after = shards(promoted, Protocol::Resp3, LOCAL).await;
    let diff = Topology::diff(&before, &after);
    assert!(diff.left.is_empty() && diff.added.is_empty(), "{diff:?}");
    let mut changed: Vec<(u16, Role)> =
        diff.role_changed.iter().map(|n| (n.port, n.role)).collect();
    changed.sort_unstable_by_key(|(port, _)| *port);
    let mut expected = vec![(old_primary, Role::Replica), (promoted, Role::Primary)];
    expected.sort_unstable_by_key(|(port, _)| *port);
    assert_eq!(changed, expected);
    assert!(diff.routing_changed);

    // 4. A replica killed: once the cluster marks it failed it stays listed, with its health, but
    //    is no longer routed to; CLUSTER SLOTS drops it.
    let last = SLOT_COUNT - 1;
    let victim = port_of(&after, after.replicas(last)[0]);
    let victim_index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
    cluster.nodes[victim_index].kill();
    cluster.wait_until("the killed replica to be marked failed", |c| {
        let shards = c.by_port(promoted).client().call(&["CLUSTER", "SHARDS"]);
        // Redis 7.0 sends "fail" (its documentation says "failed").
        count_values(&shards, "health", "fail") == 1
    });
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let failed = shards(promoted, protocol, LOCAL).await;
        assert_eq!(by_port(&failed, victim).health, Health::Failed);
        assert!(failed.replicas(last).is_empty());
        let diff = Topology::diff(&after, &failed);
        assert!(diff.left.is_empty() && diff.added.is_empty() && diff.role_changed.is_empty());
        assert!(diff.routing_changed);
        let legacy = slots(promoted, protocol, LOCAL).await;
        assert_eq!(legacy.find("127.0.0.1", victim), None);
        assert!(legacy.replicas(last).is_empty());
    }

    // 5. A new node meets the cluster: a primary without slots, known but routing nothing.
    let newcomer = ClusterNode::start();
    let meet = ["CLUSTER", "MEET", "127.0.0.1"];
    let (port, bus) = (newcomer.port.to_string(), newcomer.bus_port.to_string());
    let reply = cluster
        .by_port(promoted)
        .client()
        .call(&[meet[0], meet[1], meet[2], &port, &bus]);
    assert_eq!(string(&reply).as_deref(), Some("OK"));
    let newcomer_port = newcomer.port;
    cluster.nodes.push(newcomer);
    cluster.wait_until("the new node to be known", |c| {
        let raw = c.by_port(promoted).client().call(&["CLUSTER", "SHARDS"]);
        let t = Topology::from_shards(&raw, LOCAL).unwrap();
        t.find("127.0.0.1", newcomer_port).is_some()
    });
    let grown = shards(promoted, Protocol::Resp2, LOCAL).await;
    let node = by_port(&grown, newcomer_port);
    assert_eq!(node.role, Role::Primary);
    let index = grown.find("127.0.0.1", newcomer_port).unwrap();
    assert!(grown.primaries().all(|p| p != index));
    let diff = Topology::diff(&after, &grown);
    assert_eq!(
        diff.added.iter().map(|n| n.port).collect::<Vec<_>>(),
        vec![newcomer_port]
    );
}
