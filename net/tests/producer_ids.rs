//! Producer ids (`InitProducerId`) from a real 3-node cluster: every node hands them out
//! from blocks the controller reserves for it (a node that does not lead the controller
//! asks the leader over the peer link), and no id is handed out twice: not by two nodes,
//! not across a block boundary, not after the controller leader is killed and restarted,
//! not after every node is. A restarted node takes a fresh block, so its ids are above
//! every id handed out before.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links, call};
use shardlog_net::ErrorCode;
use shardlog_net::api::{Api, InitProducerIdRequest, InitProducerIdResponse};

const WAIT_MAX: Duration = Duration::from_secs(30);
/// A node's block (`cluster::producer_ids::BLOCK`).
const BLOCK: usize = 1000;

/// `count` new producer ids from `addr`, each answered with epoch 0. A node that is
/// catching up (after a start) or whose controller is electing is asked again.
fn ids_from(addr: &str, count: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    let deadline = Instant::now() + WAIT_MAX;
    while ids.len() < count {
        let answer =
            call::<_, InitProducerIdResponse>(addr, Api::InitProducerId, &InitProducerIdRequest {});
        match answer {
            Ok(r) if r.error == ErrorCode::None.as_u16() => {
                assert_eq!(r.producer_epoch, 0, "a new id's epoch");
                assert!(r.producer_id >= 0, "{r:?}");
                ids.push(r.producer_id);
            }
            other => {
                assert!(Instant::now() < deadline, "{addr}: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ids
}

fn add_unique(seen: &mut BTreeSet<i64>, ids: &[i64], what: &str) {
    for id in ids {
        assert!(
            seen.insert(*id),
            "{what}: producer id {id} handed out twice"
        );
    }
}

#[test]
fn producer_ids_are_unique_across_nodes_blocks_and_restarts() {
    let mut cluster = Cluster::start(3, Links::Direct);
    cluster.wait_for_controller(WAIT_MAX);
    let mut seen = BTreeSet::new();
    // Each node uses up its first block and takes a second.
    for node in 0..3 {
        let ids = ids_from(&cluster.addr(node), BLOCK + 5);
        add_unique(&mut seen, &ids, &format!("node {node}"));
        let blocks: BTreeSet<i64> = ids.iter().map(|id| id / BLOCK as i64).collect();
        assert_eq!(blocks.len(), 2, "node {node}: two blocks: {blocks:?}");
    }
    assert_eq!(seen.len(), 3 * (BLOCK + 5));

    // The controller leader killed and restarted: the others elect a new leader, which
    // reserves blocks from the replicated counter; the restarted node takes a fresh one.
    let (_, meta) = cluster.metadata_any().unwrap();
    let controller = meta.controller.unwrap() as usize;
    cluster.kill(&[controller]);
    for node in (0..3).filter(|&n| n != controller) {
        let ids = ids_from(&cluster.addr(node), 10);
        add_unique(
            &mut seen,
            &ids,
            &format!("node {node} with the controller down"),
        );
    }
    let before = *seen.last().unwrap();
    cluster.restart(controller);
    cluster.wait_for_controller(WAIT_MAX);
    let ids = ids_from(&cluster.addr(controller), 10);
    add_unique(&mut seen, &ids, "the restarted controller node");
    assert!(
        ids.iter().all(|id| *id > before),
        "a fresh block: {ids:?} after {before}"
    );

    // Every node killed and restarted: the counter comes back from the Raft log.
    let before = *seen.last().unwrap();
    cluster.kill(&[0, 1, 2]);
    cluster.start_nodes(&[0, 1, 2]);
    cluster.wait_for_controller(WAIT_MAX);
    for node in 0..3 {
        let ids = ids_from(&cluster.addr(node), 10);
        add_unique(
            &mut seen,
            &ids,
            &format!("node {node} after a full restart"),
        );
        assert!(ids.iter().all(|id| *id > before), "{ids:?} after {before}");
    }
    cluster.assert_running();
    eprintln!(
        "{} distinct producer ids, up to {}",
        seen.len(),
        seen.last().unwrap()
    );
}
