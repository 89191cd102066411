//! Unit tests of the topology readers, on hand-written frames for the cases a healthy test cluster
//! does not produce (empty or unknown endpoints, a primary without slots, failed or loading
//! replicas, malformed replies). Frames from a real cluster are read in tests/cluster_topology.rs.

use bytes::Bytes;

use super::*;
use crate::resp::Frame;

const ORIGIN: Origin<'static> = Origin {
    host: "10.0.0.9",
    tls: false,
};

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

/// Key/value pairs as RESP3 sends them (a map) or as RESP2 does (a flat array).
fn fields(resp3: bool, pairs: Vec<(&str, Frame)>) -> Frame {
    if resp3 {
        Frame::Map(pairs.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    } else {
        Frame::Array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), v]).collect())
    }
}

/// A `CLUSTER SHARDS` node with endpoint and ip `127.0.0.1`.
fn shard_node(resp3: bool, id: &str, port: i64, role: &str, health: &str) -> Frame {
    shard_node_at(
        resp3,
        id,
        port,
        role,
        health,
        bulk("127.0.0.1"),
        "127.0.0.1",
    )
}

fn shard_node_at(
    resp3: bool,
    id: &str,
    port: i64,
    role: &str,
    health: &str,
    endpoint: Frame,
    ip: &str,
) -> Frame {
    fields(
        resp3,
        vec![
            ("id", bulk(id)),
            ("port", int(port)),
            ("ip", bulk(ip)),
            ("endpoint", endpoint),
            ("role", bulk(role)),
            ("replication-offset", int(42)),
            ("health", bulk(health)),
        ],
    )
}

fn shard(resp3: bool, slots: &[i64], nodes: Vec<Frame>) -> Frame {
    fields(
        resp3,
        vec![
            (
                "slots",
                Frame::Array(slots.iter().map(|&s| int(s)).collect()),
            ),
            ("nodes", Frame::Array(nodes)),
        ],
    )
}

/// Three shards, a replica each; the third shard owns two ranges.
fn three_shards(resp3: bool) -> Frame {
    Frame::Array(vec![
        shard(
            resp3,
            &[0, 5460],
            vec![
                shard_node(resp3, "a", 7000, "master", "online"),
                shard_node(resp3, "d", 7003, "replica", "online"),
            ],
        ),
        shard(
            resp3,
            &[5461, 10922],
            vec![
                shard_node(resp3, "b", 7001, "master", "online"),
                shard_node(resp3, "e", 7004, "replica", "online"),
            ],
        ),
        shard(
            resp3,
            &[10923, 12000, 12001, 16383],
            vec![
                shard_node(resp3, "c", 7002, "master", "online"),
                shard_node(resp3, "f", 7005, "replica", "online"),
            ],
        ),
    ])
}

fn port_of(t: &Topology, index: Option<usize>) -> Option<u16> {
    index.and_then(|i| t.node(i)).map(|n| n.port)
}

fn replica_ports(t: &Topology, slot: u16) -> Vec<u16> {
    t.replicas(slot)
        .iter()
        .map(|&i| t.nodes()[i].port)
        .collect()
}

#[test]
fn shards_in_resp2_and_resp3_read_alike() {
    let resp2 = Topology::from_shards(&three_shards(false), ORIGIN).expect("resp2");
    let resp3 = Topology::from_shards(&three_shards(true), ORIGIN).expect("resp3");
    assert_eq!(resp2, resp3);
    let t = resp2;
    assert_eq!(t.nodes().len(), 6);
    assert_eq!(t.unowned_slots(), 0);
    assert_eq!(port_of(&t, t.primary(0)), Some(7000));
    assert_eq!(port_of(&t, t.primary(5460)), Some(7000));
    assert_eq!(port_of(&t, t.primary(5461)), Some(7001));
    assert_eq!(port_of(&t, t.primary(12000)), Some(7002));
    assert_eq!(port_of(&t, t.primary(16383)), Some(7002));
    assert_eq!(t.primary(16384), None);
    assert_eq!(replica_ports(&t, 100), vec![7003]);
    assert_eq!(replica_ports(&t, 16000), vec![7005]);
    let mut primaries: Vec<_> = t.primaries().map(|i| t.nodes()[i].port).collect();
    primaries.sort_unstable();
    assert_eq!(primaries, vec![7000, 7001, 7002]);
    let d = &t.nodes()[t.find("127.0.0.1", 7003).expect("find")];
    assert_eq!(
        (d.id.as_str(), d.role, &d.health),
        ("d", Role::Replica, &Health::Online)
    );
    assert_eq!(t.find("127.0.0.1", 9999), None);
}

#[test]
fn unknown_endpoints_resolve_to_the_ip_or_the_host_that_answered() {
    for resp3 in [false, true] {
        let nodes = vec![
            shard_node_at(resp3, "a", 7000, "master", "online", bulk(""), ""),
            shard_node_at(
                resp3,
                "b",
                7001,
                "replica",
                "online",
                Frame::Null,
                "10.1.1.1",
            ),
            shard_node_at(resp3, "c", 7002, "replica", "online", bulk("?"), "10.2.2.2"),
            shard_node_at(resp3, "d", 7003, "replica", "online", bulk("?"), ""),
            shard_node_at(
                resp3,
                "e",
                7004,
                "replica",
                "online",
                bulk("redis-e"),
                "10.3.3.3",
            ),
        ];
        let reply = Frame::Array(vec![shard(resp3, &[0, 16383], nodes)]);
        let t = Topology::from_shards(&reply, ORIGIN).expect("parse");
        let hosts: Vec<_> = t.nodes().iter().map(|n| n.host.as_str()).collect();
        assert_eq!(
            hosts,
            vec!["10.0.0.9", "10.0.0.9", "10.2.2.2", "10.0.0.9", "redis-e"]
        );
    }
}

#[test]
fn a_primary_without_slots_is_a_node_but_routes_nothing() {
    let reply = Frame::Array(vec![
        shard(
            true,
            &[0, 16383],
            vec![shard_node(true, "a", 7000, "master", "online")],
        ),
        shard(
            true,
            &[],
            vec![
                shard_node(true, "b", 7001, "master", "online"),
                shard_node(true, "c", 7002, "replica", "online"),
            ],
        ),
    ]);
    let t = Topology::from_shards(&reply, ORIGIN).expect("parse");
    assert_eq!(t.nodes().len(), 3);
    assert_eq!(t.primaries().count(), 1);
    assert!((0..SLOT_COUNT).all(|s| port_of(&t, t.primary(s)) == Some(7000)));
    assert!(t.replicas(0).is_empty());
}

#[test]
fn replicas_that_failed_or_are_loading_are_not_routed_to() {
    let reply = Frame::Array(vec![shard(
        false,
        &[0, 16383],
        vec![
            shard_node(false, "a", 7000, "master", "failed"),
            shard_node(false, "b", 7001, "replica", "fail"),
            shard_node(false, "c", 7002, "replica", "loading"),
            shard_node(false, "d", 7003, "replica", "online"),
            shard_node(false, "e", 7004, "replica", "resyncing"),
        ],
    )]);
    let t = Topology::from_shards(&reply, ORIGIN).expect("parse");
    assert_eq!(t.nodes().len(), 5);
    assert_eq!(replica_ports(&t, 7), vec![7003]);
    // The failed primary still owns its slots: nothing else can serve them until a failover.
    assert_eq!(port_of(&t, t.primary(7)), Some(7000));
    let healths: Vec<_> = t.nodes().iter().map(|n| n.health.clone()).collect();
    assert_eq!(
        healths,
        vec![
            Health::Failed,
            Health::Failed,
            Health::Loading,
            Health::Online,
            Health::Other("resyncing".into())
        ]
    );
}

#[test]
fn a_shard_without_a_primary_leaves_its_slots_unowned() {
    let reply = Frame::Array(vec![shard(
        true,
        &[0, 99],
        vec![shard_node(true, "b", 7001, "replica", "online")],
    )]);
    let t = Topology::from_shards(&reply, ORIGIN).expect("parse");
    assert_eq!(t.nodes().len(), 1);
    assert_eq!(t.primary(0), None);
    assert_eq!(t.unowned_slots(), usize::from(SLOT_COUNT));
}

#[test]
fn the_port_follows_the_connection_kind() {
    let node = |with_plain: bool| {
        let mut pairs = vec![
            ("id", bulk("a")),
            ("tls-port", int(8000)),
            ("ip", bulk("127.0.0.1")),
            ("endpoint", bulk("127.0.0.1")),
            ("role", bulk("master")),
        ];
        if with_plain {
            pairs.push(("port", int(7000)));
        }
        Frame::Array(vec![shard(true, &[0, 1], vec![fields(true, pairs)])])
    };
    let tls = Origin {
        host: "h",
        tls: true,
    };
    let port =
        |reply: &Frame, origin| Topology::from_shards(reply, origin).unwrap().nodes()[0].port;
    assert_eq!(port(&node(true), ORIGIN), 7000);
    assert_eq!(port(&node(true), tls), 8000);
    // A node listening on its TLS port only is reached there whatever was asked.
    assert_eq!(port(&node(false), ORIGIN), 8000);
    // No health field: not reported, still routable.
    let t = Topology::from_shards(&node(true), ORIGIN).unwrap();
    assert_eq!(t.nodes()[0].health, Health::Unreported);
}

#[test]
fn malformed_shards_replies_are_typed_errors() {
    let err = |reply: Frame| Topology::from_shards(&reply, ORIGIN).unwrap_err();
    assert_eq!(
        err(Frame::Error(Bytes::from_static(
            b"ERR This instance has cluster support disabled"
        ))),
        TopologyError::Server("ERR This instance has cluster support disabled".into())
    );
    assert!(matches!(err(int(3)), TopologyError::Malformed(_)));
    assert!(matches!(
        err(Frame::Array(vec![bulk("x")])),
        TopologyError::Malformed(_)
    ));
    let one = |slots: &[i64], role: &str| {
        Frame::Array(vec![shard(
            false,
            slots,
            vec![shard_node(false, "a", 7000, role, "online")],
        )])
    };
    assert_eq!(
        err(one(&[0, 16384], "master")),
        TopologyError::SlotRange {
            start: 0,
            end: 16384
        }
    );
    assert_eq!(
        err(one(&[10, 5], "master")),
        TopologyError::SlotRange { start: 10, end: 5 }
    );
    assert_eq!(
        err(one(&[-1, 5], "master")),
        TopologyError::SlotRange { start: -1, end: 5 }
    );
    assert!(matches!(
        err(one(&[0], "master")),
        TopologyError::Malformed(_)
    ));
    assert!(matches!(
        err(one(&[0, 1], "chief")),
        TopologyError::Malformed(_)
    ));
    let overlap = Frame::Array(vec![
        shard(
            false,
            &[0, 100],
            vec![shard_node(false, "a", 7000, "master", "online")],
        ),
        shard(
            false,
            &[100, 200],
            vec![shard_node(false, "b", 7001, "master", "online")],
        ),
    ]);
    assert_eq!(err(overlap), TopologyError::SlotClaimedTwice(100));
}

/// A `CLUSTER SLOTS` node: `[endpoint, port, id, metadata]`.
fn slots_node(
    resp3: bool,
    endpoint: Frame,
    port: i64,
    id: &str,
    meta: Vec<(&str, Frame)>,
) -> Frame {
    Frame::Array(vec![endpoint, int(port), bulk(id), fields(resp3, meta)])
}

fn slots_range(start: i64, end: i64, nodes: Vec<Frame>) -> Frame {
    let mut parts = vec![int(start), int(end)];
    parts.extend(nodes);
    Frame::Array(parts)
}

#[test]
fn slots_replies_read_like_shards_replies() {
    for resp3 in [false, true] {
        let node = |port, id| slots_node(resp3, bulk("127.0.0.1"), port, id, vec![]);
        let reply = Frame::Array(vec![
            slots_range(0, 5460, vec![node(7000, "a"), node(7003, "d")]),
            slots_range(5461, 10922, vec![node(7001, "b"), node(7004, "e")]),
            slots_range(10923, 12000, vec![node(7002, "c"), node(7005, "f")]),
            slots_range(12001, 16383, vec![node(7002, "c"), node(7005, "f")]),
        ]);
        let t = Topology::from_slots(&reply, ORIGIN).expect("parse");
        let from_shards = Topology::from_shards(&three_shards(resp3), ORIGIN).unwrap();
        assert_eq!(t.nodes().len(), 6, "each node once");
        assert_eq!(t.primaries().count(), 3, "one shard per primary");
        assert!(Topology::diff(&from_shards, &t).left.is_empty());
        assert!(!Topology::diff(&from_shards, &t).routing_changed);
        assert!(t.nodes().iter().all(|n| n.health == Health::Unreported));
        assert_eq!(replica_ports(&t, 16383), vec![7005]);
    }
}

#[test]
fn slots_endpoints_null_empty_or_unknown() {
    for resp3 in [false, true] {
        let null = if resp3 { Frame::Null } else { Frame::NullBulk };
        let reply = Frame::Array(vec![slots_range(
            0,
            16383,
            vec![
                slots_node(resp3, null, 7000, "a", vec![("ip", bulk("10.1.1.1"))]),
                slots_node(resp3, bulk(""), 7001, "b", vec![]),
                slots_node(resp3, bulk("?"), 7002, "c", vec![("ip", bulk("10.2.2.2"))]),
                slots_node(
                    resp3,
                    bulk("10.3.3.3"),
                    7003,
                    "d",
                    vec![("hostname", bulk("redis-d"))],
                ),
            ],
        )]);
        let t = Topology::from_slots(&reply, ORIGIN).expect("parse");
        let hosts: Vec<_> = t.nodes().iter().map(|n| n.host.as_str()).collect();
        assert_eq!(hosts, vec!["10.0.0.9", "10.0.0.9", "10.2.2.2", "10.3.3.3"]);
    }
}

#[test]
fn slots_from_servers_before_4_have_no_ids() {
    let node = |port| Frame::Array(vec![bulk("127.0.0.1"), int(port)]);
    let reply = Frame::Array(vec![
        slots_range(0, 8191, vec![node(7000), node(7002)]),
        slots_range(8192, 16383, vec![node(7001)]),
        slots_range(100, 100, vec![node(7000)]),
    ]);
    // Slot 100 listed twice for the same primary is not a conflict.
    let t = Topology::from_slots(&reply, ORIGIN).expect("parse");
    assert_eq!(t.nodes().len(), 3);
    assert!(t.nodes().iter().all(|n| n.id.is_empty()));
    assert_eq!(port_of(&t, t.primary(100)), Some(7000));
    assert_eq!(port_of(&t, t.primary(9000)), Some(7001));
}

#[test]
fn malformed_slots_replies_are_typed_errors() {
    let err = |reply: Frame| Topology::from_slots(&reply, ORIGIN).unwrap_err();
    assert!(matches!(
        err(Frame::Error(Bytes::from_static(b"ERR nope"))),
        TopologyError::Server(_)
    ));
    assert!(matches!(
        err(Frame::Array(vec![Frame::Array(vec![int(0), int(1)])])),
        TopologyError::Malformed(_)
    ));
    let no_port = Frame::Array(vec![bulk("127.0.0.1")]);
    assert!(matches!(
        err(Frame::Array(vec![slots_range(0, 1, vec![no_port])])),
        TopologyError::Malformed(_)
    ));
    let port_zero = Frame::Array(vec![bulk("127.0.0.1"), int(0)]);
    assert!(matches!(
        err(Frame::Array(vec![slots_range(0, 1, vec![port_zero])])),
        TopologyError::Malformed(_)
    ));
    let ok = Frame::Array(vec![bulk("127.0.0.1"), int(1)]);
    assert_eq!(
        err(Frame::Array(vec![slots_range(0, 99999, vec![ok])])),
        TopologyError::SlotRange {
            start: 0,
            end: 99999
        }
    );
}

#[test]
fn diff_reports_departures_arrivals_and_role_changes() {
    let before = Topology::from_shards(&three_shards(true), ORIGIN).unwrap();
    assert!(Topology::diff(&before, &before).is_empty());

    // Failover in the first shard (d takes over from a), e leaves, g joins as b's replica.
    let after = Frame::Array(vec![
        shard(
            true,
            &[0, 5460],
            vec![
                shard_node(true, "d", 7003, "master", "online"),
                shard_node(true, "a", 7000, "replica", "online"),
            ],
        ),
        shard(
            true,
            &[5461, 10922],
            vec![
                shard_node(true, "b", 7001, "master", "online"),
                shard_node(true, "g", 7006, "replica", "online"),
            ],
        ),
        shard(
            true,
            &[10923, 12000, 12001, 16383],
            vec![
                shard_node(true, "c", 7002, "master", "online"),
                shard_node(true, "f", 7005, "replica", "online"),
            ],
        ),
    ]);
    let after = Topology::from_shards(&after, ORIGIN).unwrap();
    let diff = Topology::diff(&before, &after);
    let ids = |nodes: &[Node]| nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&diff.left), vec!["e"]);
    assert_eq!(ids(&diff.added), vec!["g"]);
    let mut changed = diff.role_changed.clone();
    changed.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(ids(&changed), vec!["a", "d"]);
    assert_eq!(changed[0].role, Role::Replica);
    assert_eq!(changed[1].role, Role::Primary);
    assert!(diff.routing_changed);
    assert!(!diff.is_empty());
}

#[test]
fn diff_sees_moved_slots_and_readdressed_nodes() {
    let before = Topology::from_shards(&three_shards(false), ORIGIN).unwrap();
    // Slot 0 moves from a to b; nodes and roles stay.
    let mut moved = three_shards(false);
    if let Frame::Array(shards) = &mut moved {
        shards[0] = shard(
            false,
            &[1, 5460],
            vec![
                shard_node(false, "a", 7000, "master", "online"),
                shard_node(false, "d", 7003, "replica", "online"),
            ],
        );
        shards[1] = shard(
            false,
            &[0, 0, 5461, 10922],
            vec![
                shard_node(false, "b", 7001, "master", "online"),
                shard_node(false, "e", 7004, "replica", "online"),
            ],
        );
    }
    let after = Topology::from_shards(&moved, ORIGIN).unwrap();
    let diff = Topology::diff(&before, &after);
    assert!(diff.left.is_empty() && diff.added.is_empty() && diff.role_changed.is_empty());
    assert!(diff.routing_changed);

    // The same node id at a new address is a node that left and one that arrived.
    let readdressed = Frame::Array(vec![shard(
        false,
        &[0, 16383],
        vec![shard_node_at(
            false,
            "a",
            7000,
            "master",
            "online",
            bulk("10.9.9.9"),
            "",
        )],
    )]);
    let lone = Frame::Array(vec![shard(
        false,
        &[0, 16383],
        vec![shard_node(false, "a", 7000, "master", "online")],
    )]);
    let diff = Topology::diff(
        &Topology::from_shards(&lone, ORIGIN).unwrap(),
        &Topology::from_shards(&readdressed, ORIGIN).unwrap(),
    );
    assert_eq!(diff.left.len(), 1);
    assert_eq!(diff.added.len(), 1);
    assert!(diff.routing_changed);
}

#[test]
fn a_replica_turning_unhealthy_changes_routing_only() {
    let before = Topology::from_shards(&three_shards(true), ORIGIN).unwrap();
    let mut failed = three_shards(true);
    if let Frame::Array(shards) = &mut failed {
        shards[2] = shard(
            true,
            &[10923, 16383],
            vec![
                shard_node(true, "c", 7002, "master", "online"),
                shard_node(true, "f", 7005, "replica", "failed"),
            ],
        );
    }
    let after = Topology::from_shards(&failed, ORIGIN).unwrap();
    let diff = Topology::diff(&before, &after);
    assert!(diff.left.is_empty() && diff.added.is_empty() && diff.role_changed.is_empty());
    assert!(diff.routing_changed);
    assert!(after.replicas(16000).is_empty());
}
