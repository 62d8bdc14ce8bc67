//! Peer links bound to shards (`Api::BindShard`), on three real `shardlogd` nodes of two
//! shards each (replication factor 3, `acks=all` load from idempotent producers with a
//! consumer per partition, `common::load`). A node's shard N dials its peers and asks each
//! to serve the link on its own shard N, where the same partitions live; the peer's shard
//! that accepted the connection hands the socket over. So no replication message has to
//! cross shards on arrival: `shardlog_replication_messages_forwarded_total` stays 0 on
//! every node, while `shardlog_peer_links_moved_total` shows that links did land on the
//! wrong shard and moved. Every acknowledged record is read back in place. And the
//! listener's side of `BindShard`, spoken by hand.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links};
use common::handshake::handshake;
use common::load::{Load, Shape, TOPIC, verify, wait_acks};
use common::read_frame;
use common::view::{WAIT_MAX, setup_on};
use shardlog_net::ErrorCode;
use shardlog_net::api::{Api, BindShardRequest, BindShardResponse, ErrorResponse, VERSION};
use shardlog_net::frame::{FLAG_ERROR, decode_meta};
use shardlog_net::testing::metric;
use shardlog_replicator::controller::leader_shards::owner_shard;

/// Partitions of the test topic: enough that both shards of a node own some.
const PARTITIONS: u32 = 6;
/// Shards per node (`common::cluster::NODE_ARGS`).
const SHARDS: usize = 2;
const LOAD: Shape = Shape {
    partitions: PARTITIONS,
    producers_per_partition: 1,
    pause: Duration::from_millis(2),
};
/// Acknowledged batches each producer waits for.
const ACKS: usize = 50;

#[test]
fn replication_messages_arrive_on_their_partitions_shard() {
    let owners: BTreeSet<usize> = (0..PARTITIONS)
        .map(|p| owner_shard(TOPIC, p, SHARDS))
        .collect();
    assert_eq!(
        owners.len(),
        SHARDS,
        "the topic's partitions span every shard"
    );

    let started = Instant::now();
    let mut cluster = setup_on(Cluster::start(3, Links::Direct), PARTITIONS);
    let load = Load::start(&cluster.brokers(), 0, LOAD);
    wait_acks(
        &mut cluster,
        &load.progress,
        started,
        ACKS,
        "on bound links",
    );
    let outcome = load.stop();
    verify(&cluster, &[&outcome], "bound links");

    let mut moved = 0.0;
    for node in 0..cluster.len() {
        let admin = cluster.admin_addr(node);
        let forwarded = metric(admin, "shardlog_replication_messages_forwarded_total").unwrap();
        let node_moved = metric(admin, "shardlog_peer_links_moved_total").unwrap();
        eprintln!("node {node}: {node_moved} links moved, {forwarded} messages forwarded");
        assert_eq!(
            forwarded, 0.0,
            "node {node}: replication messages crossed shards on arrival"
        );
        moved += node_moved;
    }
    // Each node dials 2 links per peer from every shard (one for its replicas, shard 0's
    // controller one more): 18 links, each landing on either shard of its peer. That none
    // landed on the wrong one is a chance of 2^-18.
    assert!(moved > 0.0, "no link had to move: the test proved nothing");
    eprintln!("test time {:?}", started.elapsed());
}

/// The peer listener's side of `BindShard`, spoken by hand as node 1 to node 0: the shard
/// asked for answers; a shard the node lacks leaves the link where it landed; a second
/// `BindShard` on a link is refused with a clear error and the link goes on.
#[test]
fn bind_shard_is_answered_by_the_shard_asked_for() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let peer = cluster.peer_addr(0);
    let bind = |shard: u32| {
        let request = BindShardRequest { shard };
        common::frame(
            Api::BindShard as u16,
            VERSION,
            u64::from(shard),
            &request,
            &[],
        )
    };
    let bound = |link: &mut std::net::TcpStream| -> BindShardResponse {
        let (header, frame) = read_frame(link).expect("an answer");
        assert_eq!(
            header.flags & FLAG_ERROR,
            0,
            "BindShard answered without error"
        );
        decode_meta(&header, &frame).unwrap()
    };

    // Eight links: that each landed on the shard it asked for by chance is 2^-8.
    for shard in (0..SHARDS as u32).cycle().take(8) {
        let mut link = handshake(&peer, 0, 1);
        link.write_all(&bind(shard)).unwrap();
        assert_eq!(bound(&mut link), BindShardResponse { error: 0, shard });
    }

    let mut link = handshake(&peer, 0, 1);
    link.write_all(&bind(7)).unwrap();
    let landed = bound(&mut link);
    assert!(
        landed.shard < SHARDS as u32,
        "served where it landed: {landed:?}"
    );

    link.write_all(&bind(0)).unwrap();
    let (header, frame) = read_frame(&mut link).expect("an answer");
    assert_ne!(
        header.flags & FLAG_ERROR,
        0,
        "a second BindShard is refused"
    );
    let refused: ErrorResponse = decode_meta(&header, &frame).unwrap();
    assert_eq!(ErrorCode::from(refused.error), ErrorCode::InvalidRequest);
    assert!(
        refused.message.contains("first frame"),
        "{}",
        refused.message
    );
    // The link goes on: another request is answered.
    link.write_all(&bind(1)).unwrap();
    assert!(read_frame(&mut link).is_ok(), "the link still answers");
}
