//! The leader's state machine alone, driven input by input: the controller's decisions
//! as a real controller makes them (partition epochs bumped on fencing), followers'
//! acks by hand, the storage's reports by hand.

#![allow(clippy::unwrap_used)]

use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs};
use shardlog_replicator::message::{EpochQuery, ShipAck};
use shardlog_replicator::{
    Acks, Action, Incarnation, Input, Member, Message, NodeId, PartitionReplica, ReplicaConfig,
    RequestId, Tick,
};

const LEADER: NodeId = NodeId(0);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const EPOCH: LeaderEpoch = LeaderEpoch(0);

fn config() -> ReplicaConfig {
    ReplicaConfig {
        replica_lag_ms: 10_000,
        min_insync: 2,
        ..ReplicaConfig::default()
    }
}

fn batch() -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(1_700_000_000_000), None, Some(b"v"), &[]);
    builder.finish()
}

/// The controller's word on the replicas: every one live but `fenced`.
fn members(fenced: &[NodeId]) -> Vec<Member> {
    [LEADER, A, B]
        .into_iter()
        .map(|node| Member {
            node,
            live: !fenced.contains(&node),
            incarnation: Incarnation(0),
            catching_up: false,
        })
        .collect()
}

struct Harness {
    replica: PartitionReplica,
    now: u64,
    actions: Vec<Action>,
}

impl Harness {
    fn leader(isr: Vec<NodeId>) -> Harness {
        let mut h = Harness {
            replica: PartitionReplica::new(config(), LEADER, Incarnation(1)),
            now: 0,
            actions: Vec::new(),
        };
        h.step(Input::BecomeLeader {
            epoch: EPOCH,
            replicas: vec![LEADER, A, B],
            isr,
            isr_version: 0,
            members: members(&[]),
        });
        h
    }

    fn step(&mut self, input: Input) {
        self.replica.step(Tick(self.now), input);
        self.replica.drain_actions(&mut self.actions);
    }

    fn wait(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now += 10;
            self.step(Input::Tick);
        }
    }

    /// Performs the leader's appends at once (written and durable).
    fn storage_keeps_up(&mut self) {
        let end = self.replica.log_end();
        self.step(Input::Appended {
            written_end: end,
            durable_end: end,
        });
    }

    fn ack(&mut self, from: NodeId, end: Offset) {
        let ack = ShipAck {
            leader_epoch: EPOCH.0,
            incarnation: 7,
            log_end: end.0,
            durable_end: end.0,
            resend: false,
        };
        self.step(Input::Received {
            from,
            message: Message::ShipAck(ack),
        });
    }

    fn produce(&mut self, request: u64) {
        self.step(Input::Produce {
            request: RequestId(request),
            acks: Acks::All,
            batch: batch().as_slice().into(),
        });
        self.storage_keeps_up();
    }

    fn answered_ok(&self, request: u64) -> bool {
        self.actions.iter().any(|a| {
            matches!(a, Action::Answer { request: r, result: Ok(_) } if *r == RequestId(request))
        })
    }

    fn proposals(&self) -> Vec<Vec<NodeId>> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::ProposeIsr { isr, .. } => Some(isr.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Found with real nodes: a follower, fully caught up, dies while the partition is idle.
/// The controller fences it and shrinks the ISR at the same leader epoch. The leader
/// must commit with the survivor: before, it proposed the dead follower back at once
/// (it looked caught up within the lag), the controller refused, and the high watermark,
/// which counts a pending proposal's members, waited for the dead node until it returned.
#[test]
fn a_dead_follower_removed_by_the_controller_does_not_stall_the_leader() {
    let mut h = Harness::leader(vec![LEADER, A, B]);
    h.produce(1);
    h.ack(A, Offset(1));
    h.ack(B, Offset(1));
    assert!(h.answered_ok(1));
    h.wait(200); // idle: heartbeats only, both followers caught up

    // A dies; 750 ms later the controller fences it: ISR [0, 2], a new partition epoch.
    h.wait(750);
    h.actions.clear();
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 1,
        isr: vec![LEADER, B],
        members: members(&[A]),
    });
    assert_eq!(h.replica.isr().unwrap(), &[LEADER, B]);
    h.produce(2);
    h.ack(B, Offset(2));
    h.wait(500);
    assert!(h.answered_ok(2), "acks=all stalled: {:?}", h.actions);
    assert_eq!(h.replica.high_watermark(), Offset(2));
    assert!(
        h.proposals().iter().all(|isr| !isr.contains(&A)),
        "a fenced follower was proposed: {:?}",
        h.proposals()
    );

    // A comes back (a new partition epoch, online again) and acks: it may rejoin.
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 2,
        isr: vec![LEADER, B],
        members: members(&[]),
    });
    h.ack(A, Offset(2));
    assert_eq!(h.proposals().last().unwrap(), &vec![LEADER, A, B]);
}

/// A proposal the controller can no longer apply (a newer partition epoch came) is
/// forgotten: its members stop holding the high watermark back.
#[test]
fn a_newer_partition_epoch_drops_a_pending_proposal() {
    let mut h = Harness::leader(vec![LEADER, B]);
    h.produce(1);
    h.ack(B, Offset(1));
    h.ack(A, Offset(1)); // A caught up: the leader proposes it
    assert_eq!(h.proposals().last().unwrap(), &vec![LEADER, A, B]);
    // A dies before the controller applied it; the controller fences A (epoch 1), so
    // the proposal built on epoch 0 is refused there.
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 1,
        isr: vec![LEADER, B],
        members: members(&[A]),
    });
    h.produce(2);
    h.ack(B, Offset(2));
    assert!(
        h.answered_ok(2),
        "stalled on a dead proposal: {:?}",
        h.actions
    );
}

/// An ack claiming an incarnation newer than the one the controller registered for the
/// node is not believed (remote input; no run of the node has registered it): it neither
/// counts for the high watermark nor locks the real incarnation out.
#[test]
fn an_ack_from_an_unregistered_incarnation_is_not_believed() {
    let mut h = Harness::leader(vec![LEADER, A, B]);
    let registered: Vec<Member> = [LEADER, A, B]
        .into_iter()
        .map(|node| Member {
            node,
            live: true,
            incarnation: Incarnation(7),
            catching_up: false,
        })
        .collect();
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 1,
        isr: vec![LEADER, A, B],
        members: registered,
    });
    h.produce(1);
    let forged = ShipAck {
        leader_epoch: EPOCH.0,
        incarnation: u64::MAX,
        log_end: 1,
        durable_end: u64::MAX,
        resend: false,
    };
    h.step(Input::Received {
        from: A,
        message: Message::ShipAck(forged),
    });
    h.ack(B, Offset(1));
    assert_eq!(
        h.replica.high_watermark(),
        Offset(0),
        "A's forged ack counted"
    );
    h.ack(A, Offset(1));
    assert_eq!(h.replica.high_watermark(), Offset(1));
    assert!(h.answered_ok(1));
}

/// Found by `net/tests/forged_peers.rs`: a `Fenced` from a follower, with any newer
/// epoch, made the leader step down while the controller still named it, and the
/// partition refused every produce and fetch (`NotLeader`) until its leadership moved for
/// another reason. A leader steps down on the controller's word only.
#[test]
fn a_fenced_from_a_peer_does_not_depose_the_leader() {
    let mut h = Harness::leader(vec![LEADER, A, B]);
    for leader_epoch in [EPOCH.0 + 1, i32::MAX] {
        h.step(Input::Received {
            from: A,
            message: Message::Fenced(shardlog_replicator::message::Fenced { leader_epoch }),
        });
    }
    assert_eq!(h.replica.leading(), Some(EPOCH), "still leads");
    h.produce(1);
    h.ack(A, Offset(1));
    h.ack(B, Offset(1));
    assert_eq!(h.replica.high_watermark(), Offset(1));
    assert!(h.answered_ok(1), "acks=all answered");
    // The controller's word still deposes it.
    h.step(Input::BecomeFollower {
        epoch: LeaderEpoch(EPOCH.0 + 1),
        leader: A,
    });
    assert_eq!(h.replica.leading(), None);
}

/// Issue 11: retention moved the leader's log start to 6 while follower A (out of the
/// ISR) was away with its log ending at 3. The leader tells A its log start instead of
/// shipping what it no longer has (before, its read failed and A was shipped nothing, for
/// good); A's ack at 3 counts for nothing; once A restarted at 6 it is shipped from 6,
/// and only once caught up is it proposed for the ISR.
#[test]
fn a_follower_below_the_log_start_is_told_it_and_shipped_from_there() {
    let mut h = Harness::leader(vec![LEADER, B]);
    for request in 0..10 {
        h.produce(request);
    }
    h.ack(B, Offset(10));
    assert_eq!(h.replica.high_watermark(), Offset(10));
    h.step(Input::Retained {
        log_start: Offset(6),
    });
    assert_eq!(h.replica.log_start(), Offset(6));
    h.actions.clear();

    h.ack(A, Offset(3));
    let told = h.actions.iter().any(|a| {
        matches!(a, Action::Send { to, message: Message::LogStart(m) }
            if *to == A && m.log_start == 6 && m.high_watermark == 10)
    });
    assert!(told, "{:?}", h.actions);
    let shipped_below = h
        .actions
        .iter()
        .any(|a| matches!(a, Action::Ship { to, ship, .. } if *to == A && ship.prev_offset < 6));
    assert!(!shipped_below, "{:?}", h.actions);
    assert!(h.proposals().is_empty(), "{:?}", h.proposals());
    // Silent: nothing more is shipped to A until it acks again.
    h.actions.clear();
    h.wait(30);
    assert!(
        !h.actions
            .iter()
            .any(|a| matches!(a, Action::Ship { to, .. } if *to == A)),
        "{:?}",
        h.actions
    );

    // A reset to 6 and acks there: shipped [6, 10), not yet in sync.
    h.ack(A, Offset(6));
    let shipped = h.actions.iter().any(|a| {
        matches!(a, Action::Ship { to, ship, until, .. } if *to == A && ship.prev_offset == 6 && *until == Offset(10))
    });
    assert!(shipped, "{:?}", h.actions);
    assert!(h.proposals().is_empty(), "{:?}", h.proposals());
    h.ack(A, Offset(10));
    assert_eq!(h.proposals().last().unwrap(), &vec![LEADER, A, B]);
}

/// Found by the soak (seed 11): a follower elected leader knows a high watermark below
/// what the previous leader told readers, so telling readers its own would take theirs
/// back. It tells none until its high watermark passes its epoch start.
#[test]
fn a_new_leader_tells_no_high_watermark_below_its_epoch_start() {
    let mut replica = PartitionReplica::new(config(), LEADER, Incarnation(1));
    replica.recover_start(Offset(0));
    for offset in 0..3 {
        let mut bytes = batch();
        shardlog_engine::batch::patch_base(&mut bytes, Offset(offset), EPOCH);
        let header = shardlog_engine::batch::BatchHeader::parse(&bytes).unwrap();
        replica.recover_batch(&header);
    }
    let mut h = Harness {
        replica,
        now: 0,
        actions: Vec::new(),
    };
    h.storage_keeps_up();
    assert_eq!(h.replica.served_high_watermark(), Some(Offset(0)));
    h.step(Input::BecomeLeader {
        epoch: LeaderEpoch(1),
        replicas: vec![LEADER, A, B],
        isr: vec![LEADER, A, B],
        isr_version: 1,
        members: members(&[]),
    });
    assert_eq!(h.replica.served_high_watermark(), None);
    let ack = |h: &mut Harness, from| {
        let ack = ShipAck {
            leader_epoch: 1,
            incarnation: 7,
            log_end: 3,
            durable_end: 3,
            resend: false,
        };
        h.step(Input::Received {
            from,
            message: Message::ShipAck(ack),
        });
    };
    ack(&mut h, A);
    assert_eq!(
        h.replica.served_high_watermark(),
        None,
        "one of two followers"
    );
    ack(&mut h, B);
    assert_eq!(h.replica.served_high_watermark(), Some(Offset(3)));
}

/// The ships in `h.actions` to `node`: previous offset, end, throttled.
fn ships_to(h: &Harness, node: NodeId) -> Vec<(u64, Offset, bool)> {
    h.actions
        .iter()
        .filter_map(|a| match a {
            Action::Ship {
                to,
                ship,
                until,
                throttled,
            } if *to == node => Some((ship.prev_offset, *until, *throttled)),
            _ => None,
        })
        .collect()
}

/// A move adds node C (a new member, catching up): the leader ships to it, throttled, from
/// where it acks; a ship the driver cut short continues from its end; once C is in the ISR
/// and B is removed, ships to C are no longer throttled and B is shipped nothing more.
#[test]
fn a_replica_added_by_a_move_is_shipped_to_throttled_and_a_removed_one_is_dropped() {
    const C: NodeId = NodeId(3);
    let mut h = Harness::leader(vec![LEADER, A, B]);
    for request in 1..=4 {
        h.produce(request);
        h.ack(A, h.replica.log_end());
        h.ack(B, h.replica.log_end());
    }
    let member = |node, catching_up| Member {
        node,
        live: true,
        incarnation: Incarnation(0),
        catching_up,
    };
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 1,
        isr: vec![LEADER, A, B],
        members: vec![
            member(LEADER, false),
            member(A, false),
            member(B, false),
            member(C, true),
        ],
    });
    h.actions.clear();
    h.ack(C, Offset(0));
    let ships_to_c = |h: &Harness| ships_to(h, C);
    assert_eq!(
        ships_to_c(&h),
        vec![(0, Offset(4), true)],
        "{:?}",
        h.actions
    );
    // The driver sent [0, 2) only: the pipeline goes on from 2.
    h.actions.clear();
    h.step(Input::ShipShortened {
        to: C,
        prev_offset: Offset(0),
        sent_until: Offset(2),
    });
    assert_eq!(
        ships_to_c(&h),
        vec![(2, Offset(4), true)],
        "{:?}",
        h.actions
    );
    // Caught up; the move commits: C in the ISR, B removed.
    h.ack(C, Offset(4));
    h.step(Input::IsrUpdated {
        epoch: EPOCH,
        isr_version: 2,
        isr: vec![LEADER, A, C],
        members: vec![member(LEADER, false), member(A, false), member(C, false)],
    });
    h.actions.clear();
    h.produce(5);
    let throttled: Vec<bool> = ships_to_c(&h).iter().map(|s| s.2).collect();
    assert_eq!(throttled, vec![false], "{:?}", h.actions);
    let to_b = h
        .actions
        .iter()
        .any(|a| matches!(a, Action::Ship { to, .. } if *to == B));
    assert!(
        !to_b,
        "a removed replica is shipped nothing: {:?}",
        h.actions
    );
}

/// Found with real nodes: a follower catching up from far behind acks slower than a
/// heartbeat (8 MiB ships to a loaded disk). Heartbeats went at the next offset, past what
/// it had acked: it answered each with a resend and the leader shipped it all again, so a
/// 516 MiB move crawled at about 8 MiB/s. Heartbeats go at the acked end now; only `retry_ms`
/// without progress ships again.
#[test]
fn a_slow_catch_up_is_not_shipped_again_by_heartbeats() {
    let mut h = Harness::leader(vec![LEADER, B]);
    for request in 0..10 {
        h.produce(request);
    }
    h.ack(B, Offset(10));
    h.actions.clear();
    h.ack(A, Offset(2));
    assert_eq!(ships_to(&h, A), vec![(2, Offset(10), false)]);
    // Past the heartbeat period, below `retry_ms`, no ack: heartbeats only, at the acked end.
    h.actions.clear();
    h.wait(config().retry_ms - 50);
    let ships = ships_to(&h, A);
    assert!(!ships.is_empty(), "no heartbeat");
    assert!(
        ships
            .iter()
            .all(|(prev, until, _)| *prev == 2 && *until == Offset(2)),
        "{ships:?}"
    );
    // `retry_ms` without progress: shipped again from the acked end.
    h.actions.clear();
    h.wait(100);
    assert!(
        ships_to(&h, A).contains(&(2, Offset(10), false)),
        "{:?}",
        h.actions
    );
}

/// A follower told of a new epoch before the leader's node asks at once; the leader
/// answers that query when it learns it leads, not after the follower's retry timer.
#[test]
fn an_epoch_query_that_arrives_before_the_leadership_is_answered_when_it_comes() {
    let mut replica = PartitionReplica::new(config(), LEADER, Incarnation(1));
    let mut actions = Vec::new();
    let epoch = LeaderEpoch(3);
    let query = |from: NodeId, leader_epoch: i32| Input::Received {
        from,
        message: Message::EpochQuery(EpochQuery {
            leader_epoch,
            incarnation: 1,
            epoch: 0,
        }),
    };
    // Still a follower of epoch 2: a query for epoch 3 is early, one for 4 too.
    replica.step(
        Tick(0),
        Input::BecomeFollower {
            epoch: LeaderEpoch(2),
            leader: B,
        },
    );
    replica.step(Tick(1), query(A, 3));
    replica.step(Tick(1), query(B, 4));
    replica.drain_actions(&mut actions);
    let answers = |actions: &[Action]| -> Vec<(NodeId, i32)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    to,
                    message: Message::EpochAnswer(answer),
                } => Some((*to, answer.leader_epoch)),
                _ => None,
            })
            .collect()
    };
    assert!(answers(&actions).is_empty(), "{actions:?}");
    actions.clear();
    replica.step(
        Tick(2),
        Input::BecomeLeader {
            epoch,
            replicas: vec![LEADER, A, B],
            isr: vec![LEADER, A, B],
            isr_version: 0,
            members: members(&[]),
        },
    );
    replica.drain_actions(&mut actions);
    // Answered at once, and only the query of the epoch it leads.
    assert_eq!(answers(&actions), vec![(A, 3)], "{actions:?}");
    actions.clear();
    // The query of epoch 4 was kept for epoch 4, and A's was answered once, not again.
    replica.step(
        Tick(3),
        Input::BecomeLeader {
            epoch: LeaderEpoch(4),
            replicas: vec![LEADER, A, B],
            isr: vec![LEADER, A, B],
            isr_version: 0,
            members: members(&[]),
        },
    );
    replica.drain_actions(&mut actions);
    assert_eq!(answers(&actions), vec![(B, 4)], "{actions:?}");
}
