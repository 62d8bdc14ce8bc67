//! Consumer groups over the Kafka protocol, against real `shardlogd` nodes, with the
//! `kafka-protocol` crate's client codecs (`common::kafka_client`):
//! - one node: two members join and get a generation, sync their assignments and
//!   heartbeat; a third joins and a rebalance follows; one stops heartbeating and is
//!   removed after its session timeout; commits, then OffsetFetch (named partitions and
//!   all of them); a commit of a stale generation is refused; after a SIGKILL and a
//!   restart the committed offsets are there (through a snapshot and the records after it);
//! - three nodes: the coordinator's node is SIGKILLed; the new coordinator, found again
//!   with FindCoordinator, returns the committed offsets.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Links};
use common::kafka_client::{
    self, ILLEGAL_GENERATION, KafkaConn, Member, NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

const GROUP: &str = "orders-readers";
/// Long enough for a loaded machine; the member that stops is removed after it.
const SESSION_MS: i32 = 6_000;
const SHORT_SESSION_MS: i32 = 2_000;
const WAIT: Duration = Duration::from_secs(60);

/// Flags of the group coordinator the tests run with: snapshots every 4 commit records
/// (so a restart loads a snapshot and the records after it), no initial rebalance delay.
const GROUP_ARGS: &[&str] = &[
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-snapshot-every-commits",
    "4",
    "--offsets-partitions",
    "4",
];

/// Joins every member at once (each on its own thread: a join waits for the others);
/// they come back with their join answers.
fn join_all(members: Vec<Member>) -> Vec<(Member, kafka_client::Joined)> {
    let threads: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            std::thread::spawn(move || {
                let joined = m
                    .join()
                    .unwrap_or_else(|code| panic!("join refused: {code}"));
                (m, joined)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Syncs every member (the leader hands in an assignment for each), each on its own
/// thread; checks every member got the one made for it.
fn sync_all(members: Vec<Member>, leader: &str) -> Vec<Member> {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let assignments: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), format!("partitions of {id}").into_bytes()))
        .collect();
    let threads: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            let given = if m.id == leader {
                assignments.clone()
            } else {
                Vec::new()
            };
            std::thread::spawn(move || {
                let got = m
                    .sync(&given)
                    .unwrap_or_else(|c| panic!("sync refused: {c}"));
                assert_eq!(got, format!("partitions of {}", m.id).into_bytes());
                m
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Heartbeats until one answers REBALANCE_IN_PROGRESS (the members must join again).
fn until_rebalance(member: &mut Member) {
    let started = Instant::now();
    loop {
        match member.heartbeat() {
            REBALANCE_IN_PROGRESS => return,
            NONE => {}
            code => panic!("heartbeat answered {code}"),
        }
        assert!(started.elapsed() < WAIT, "no rebalance within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// OffsetFetch, retried while the coordinator loads or moves.
fn fetch_settled(
    addr: &str,
    version: i16,
    wanted: Option<&[(&str, i32)]>,
) -> Vec<(String, i32, i64)> {
    let started = Instant::now();
    loop {
        let mut conn = KafkaConn::connect(addr).unwrap();
        match kafka_client::fetch_offsets(&mut conn, GROUP, version, wanted) {
            Ok(offsets) => return offsets,
            Err(code) => assert!(
                started.elapsed() < WAIT,
                "offset fetch still refused after {WAIT:?}: {code}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn committed(rows: &[(&str, i32, i64)]) -> Vec<(String, i32, i64)> {
    let mut rows: Vec<(String, i32, i64)> = rows
        .iter()
        .map(|(t, p, o)| ((*t).to_owned(), *p, *o))
        .collect();
    rows.sort();
    rows
}

#[test]
fn members_join_sync_rebalance_expire_commit_and_survive_a_restart() {
    let mut cluster = Cluster::start_with(1, Links::Direct, GROUP_ARGS);
    cluster.wait_for_controller(WAIT);
    let bootstrap = cluster.kafka_addr(0);
    let (node, coordinator) = kafka_client::find_coordinator(&bootstrap, GROUP, 0, WAIT);
    assert_eq!((node, coordinator.as_str()), (0, bootstrap.as_str()));
    // v4+ asks for several keys at once; the answer is the same node.
    let (node, _) = kafka_client::find_coordinator(&bootstrap, GROUP, 4, WAIT);
    assert_eq!(node, 0);

    // Two members join: one generation, one leader who sees both, then their assignments.
    let a = Member::new(&coordinator, GROUP, SESSION_MS);
    let mut joined = {
        let mut a = a;
        let j = a.join().unwrap();
        assert_eq!(j.members.len(), 1, "alone, a leads");
        let a = sync_all(vec![a], &j.leader).remove(0);
        let b = Member::new(&coordinator, GROUP, SESSION_MS);
        let mut b_thread = std::thread::spawn(move || {
            let mut b = b;
            let j = b.join().unwrap();
            (b, j)
        });
        let mut a = a;
        until_rebalance(&mut a);
        let ja = a.join().unwrap();
        let (b, jb) = std::mem::replace(&mut b_thread, std::thread::spawn(|| unreachable!()))
            .join()
            .unwrap();
        assert_eq!(ja.generation, jb.generation);
        assert_eq!(ja.leader, jb.leader);
        assert_eq!(ja.protocol, "range");
        vec![(a, ja), (b, jb)]
    };
    let generation = joined[0].1.generation;
    let leader = joined[0].1.leader.clone();
    let told: Vec<usize> = joined.iter().map(|(_, j)| j.members.len()).collect();
    assert!(
        told.contains(&2) && told.contains(&0),
        "only the leader sees the members: {told:?}"
    );
    let mut members = sync_all(joined.drain(..).map(|(m, _)| m).collect(), &leader);
    for m in &mut members {
        assert_eq!(m.heartbeat(), NONE);
    }

    // A third member joins: the others hear REBALANCE_IN_PROGRESS and join again.
    let c = Member::new(&coordinator, GROUP, SHORT_SESSION_MS);
    let c_thread = std::thread::spawn(move || {
        let mut c = c;
        let j = c.join().unwrap();
        (c, j)
    });
    for m in &mut members {
        until_rebalance(m);
    }
    let mut rejoined = join_all(members);
    let (c, jc) = c_thread.join().unwrap();
    rejoined.push((c, jc));
    let third = rejoined[0].1.generation;
    assert!(third > generation, "{third} after {generation}");
    assert!(rejoined.iter().all(|(_, j)| j.generation == third));
    let leader = rejoined[0].1.leader.clone();
    assert_eq!(rejoined.iter().map(|(_, j)| j.members.len()).max(), Some(3));
    let mut members = sync_all(rejoined.into_iter().map(|(m, _)| m).collect(), &leader);

    // The third stops heartbeating: after its session it is out and the others rebalance.
    let mut c = members.pop().unwrap();
    let stopped = Instant::now();
    for m in &mut members {
        let started = Instant::now();
        loop {
            match m.heartbeat() {
                REBALANCE_IN_PROGRESS => break,
                NONE => std::thread::sleep(Duration::from_millis(300)),
                code => panic!("heartbeat answered {code}"),
            }
            assert!(started.elapsed() < WAIT, "c was never removed");
        }
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(u64::try_from(SHORT_SESSION_MS).unwrap() / 2),
        "removed before its session could pass"
    );
    assert_eq!(c.heartbeat(), UNKNOWN_MEMBER_ID, "the silent member is out");
    let rejoined = join_all(members);
    let fourth = rejoined[0].1.generation;
    assert!(fourth > third);
    assert_eq!(rejoined.iter().map(|(_, j)| j.members.len()).max(), Some(2));
    let leader = rejoined[0].1.leader.clone();
    let mut members = sync_all(rejoined.into_iter().map(|(m, _)| m).collect(), &leader);

    // Commits, in five requests (a snapshot after four records), then OffsetFetch.
    let m = &mut members[0];
    for (i, rows) in [
        vec![("orders", 0, 10), ("orders", 1, 20)],
        vec![("orders", 2, 30)],
        vec![("payments", 0, 5)],
        vec![("orders", 0, 11)],
        vec![("orders", 3, 40)],
    ]
    .iter()
    .enumerate()
    {
        assert!(
            m.commit(fourth, rows).iter().all(|c| *c == NONE),
            "commit {i}"
        );
    }
    let expected = committed(&[
        ("orders", 0, 11),
        ("orders", 1, 20),
        ("orders", 2, 30),
        ("orders", 3, 40),
        ("payments", 0, 5),
    ]);
    // A commit of the previous generation is refused and changes nothing.
    assert_eq!(
        m.commit(third, &[("orders", 0, 999)]),
        vec![ILLEGAL_GENERATION]
    );
    // So is one of a member that is gone.
    assert_eq!(
        c.commit(fourth, &[("orders", 0, 999)]),
        vec![UNKNOWN_MEMBER_ID]
    );
    let wanted: &[(&str, i32)] = &[("orders", 0), ("orders", 1), ("orders", 7)];
    assert_eq!(
        fetch_settled(&coordinator, 1, Some(wanted)),
        committed(&[("orders", 0, 11), ("orders", 1, 20), ("orders", 7, -1)])
    );
    assert_eq!(fetch_settled(&coordinator, 7, None), expected);
    drop(members);

    // The coordinator snapshots its partition after four commit records (its timer).
    cluster.wait_for("an offsets snapshot", WAIT, |c| {
        let written = c
            .log_lines(0)
            .iter()
            .any(|l| l.contains("offsets snapshot written"));
        if written {
            Ok(())
        } else {
            Err("none yet".to_owned())
        }
    });
    // SIGKILL and restart: the committed offsets are read back from __consumer_offsets.
    cluster.kill(&[0]);
    cluster.restart(0);
    cluster.wait_for_controller(WAIT);
    let (_, coordinator) = kafka_client::find_coordinator(&cluster.kafka_addr(0), GROUP, 3, WAIT);
    assert_eq!(fetch_settled(&coordinator, 5, None), expected);
    let loaded = cluster
        .log_lines(0)
        .into_iter()
        .filter(|l| l.contains("offsets partition loaded") && !l.contains("groups=0"))
        .collect::<Vec<_>>();
    // Six commit records were written and a snapshot after the fourth: the load
    // starts at the newest snapshot and replays fewer than six.
    let replayed: Vec<u64> = loaded
        .iter()
        .filter_map(|l| {
            l.split("replayed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        !replayed.is_empty() && replayed.iter().all(|r| *r < 6),
        "the load replays only what followed the snapshot: {loaded:?}"
    );
}

#[test]
fn a_new_coordinator_after_a_kill_returns_the_committed_offsets() {
    let mut cluster = Cluster::start_with(3, Links::Direct, GROUP_ARGS);
    cluster.wait_for_controller(WAIT);
    let (old, coordinator) = kafka_client::find_coordinator(&cluster.kafka_addr(0), GROUP, 2, WAIT);
    let mut conn = KafkaConn::connect(&coordinator).unwrap();
    // A commit from outside any generation (a consumer that assigns itself partitions).
    let rows = [("orders", 0, 100), ("orders", 1, 200)];
    let started = Instant::now();
    loop {
        let codes = kafka_client::commit(&mut conn, GROUP, -1, "", &rows);
        if codes.iter().all(|c| *c == NONE) {
            break;
        }
        assert!(started.elapsed() < WAIT, "commit refused: {codes:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fetch_settled(&coordinator, 3, None), committed(&rows));
    let old = usize::try_from(old).unwrap();
    cluster.kill(&[old]);
    let survivor = (0..3).find(|n| *n != old).unwrap();
    let started = Instant::now();
    let (new, coordinator) = loop {
        let (node, address) =
            kafka_client::find_coordinator(&cluster.kafka_addr(survivor), GROUP, 2, WAIT);
        if usize::try_from(node).unwrap() != old {
            break (node, address);
        }
        assert!(started.elapsed() < WAIT, "the coordinator never moved");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(usize::try_from(new).unwrap(), old);
    assert_eq!(fetch_settled(&coordinator, 3, None), committed(&rows));
}
