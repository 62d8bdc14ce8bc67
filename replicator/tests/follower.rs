//! The follower's state machine alone, driven input by input.

#![allow(clippy::unwrap_used)]

use shardlog_engine::batch::{self, BatchHeader};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs};
use shardlog_replicator::message::{Batches, EpochAnswer, LogStart, Ship};
use shardlog_replicator::{
    Action, Incarnation, Input, Message, NodeId, PartitionReplica, ReplicaConfig, Tick,
};

const ME: NodeId = NodeId(1);
const LEADER: NodeId = NodeId(0);

/// `batches` as one chunk, as a received ship holds them.
fn shipped(batches: &[Vec<u8>]) -> Batches {
    let mut shipped = Batches::default();
    shipped.push(
        bytes::Bytes::from(batches.concat()),
        u32::try_from(batches.len()).unwrap(),
    );
    shipped
}

/// One single-record batch stored at `offset` in `epoch`.
fn stored(offset: u64, epoch: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(1_700_000_000_000), None, Some(b"v"), &[]);
    let mut bytes = builder.finish();
    batch::patch_base(&mut bytes, Offset(offset), LeaderEpoch(epoch));
    bytes
}

/// Steps `replica` with `input` at time 0; the actions it queued.
fn step(replica: &mut PartitionReplica, input: Input) -> Vec<Action> {
    replica.step(Tick(0), input);
    let mut actions = Vec::new();
    replica.drain_actions(&mut actions);
    actions
}

/// Found by the simulation's settle phase: a replica elected leader of epoch 3 lost the
/// leadership before it appended anything, so epoch 3 "starts" at its log end with no
/// batch in it. Following the epoch-5 leader, it reconciles to its own log end (nothing
/// to cut). Kept, that empty epoch 3 made every epoch-2 batch the leader then shipped
/// look out of order, so the follower dropped each ship and never caught up.
#[test]
fn an_epoch_led_without_appending_does_not_block_later_ships() {
    let mut replica = PartitionReplica::new(ReplicaConfig::default(), ME, Incarnation(1));
    for offset in 0..2 {
        let bytes = stored(offset, 2);
        replica.recover_batch(&BatchHeader::parse(&bytes).unwrap());
    }
    let lead = Input::BecomeLeader {
        epoch: LeaderEpoch(3),
        replicas: vec![LEADER, ME],
        isr: vec![LEADER, ME],
        isr_version: 0,
        members: Vec::new(),
    };
    step(&mut replica, lead);
    let follow = Input::BecomeFollower {
        epoch: LeaderEpoch(5),
        leader: LEADER,
    };
    let sent = step(&mut replica, follow);
    let asks_for_3 = |a: &Action| matches!(a, Action::Send { message: Message::EpochQuery(q), .. } if q.epoch == 3);
    assert!(sent.iter().any(asks_for_3), "{sent:?}");
    // The leader's largest epoch at or below 3 is 2, which ends at 4 there.
    let answer = EpochAnswer {
        leader_epoch: 5,
        query_epoch: 3,
        epoch: 2,
        end_offset: 4,
    };
    let message = Message::EpochAnswer(answer);
    let acked = step(
        &mut replica,
        Input::Received {
            from: LEADER,
            message,
        },
    );
    assert!(
        acked.iter().any(|a| matches!(
            a,
            Action::Send {
                message: Message::ShipAck(_),
                ..
            }
        )),
        "{acked:?}"
    );
    let ship = Ship {
        leader_epoch: 5,
        prev_offset: 2,
        prev_epoch: 2,
        high_watermark: 2,
        batches: shipped(&[stored(2, 2), stored(3, 2)]),
    };
    let message = Message::Ship(ship);
    let appended = step(
        &mut replica,
        Input::Received {
            from: LEADER,
            message,
        },
    );
    assert!(
        appended
            .iter()
            .any(|a| matches!(a, Action::Append { log_end, .. } if *log_end == Offset(4))),
        "the ship was dropped: {appended:?}"
    );
    assert_eq!(replica.log_end(), Offset(4));
}

/// Remote input never trips an assertion: an `EpochAnswer` telling a follower to cut its
/// log below its high watermark (epoch -1: "the leader has nothing") is refused; the
/// follower keeps what is committed and asks again.
#[test]
fn an_answer_that_would_cut_committed_records_is_refused() {
    let mut replica = PartitionReplica::new(ReplicaConfig::default(), ME, Incarnation(1));
    for offset in 0..2 {
        let bytes = stored(offset, 2);
        replica.recover_batch(&BatchHeader::parse(&bytes).unwrap());
    }
    let follow = |epoch| Input::BecomeFollower {
        epoch: LeaderEpoch(epoch),
        leader: LEADER,
    };
    step(&mut replica, follow(5));
    let answer = |leader_epoch, epoch, end_offset| {
        Message::EpochAnswer(EpochAnswer {
            leader_epoch,
            query_epoch: 2,
            epoch,
            end_offset,
        })
    };
    let received = |message| Input::Received {
        from: LEADER,
        message,
    };
    step(&mut replica, received(answer(5, 2, 2)));
    // The leader's heartbeat: both records are committed.
    let ship = Ship {
        leader_epoch: 5,
        prev_offset: 2,
        prev_epoch: 2,
        high_watermark: 2,
        batches: Batches::default(),
    };
    step(&mut replica, received(Message::Ship(ship)));
    assert_eq!(replica.high_watermark(), Offset(2));
    // A new epoch, and a forged answer: cut everything.
    step(&mut replica, follow(6));
    let actions = step(&mut replica, received(answer(6, -1, 0)));
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Truncate { .. })),
        "{actions:?}"
    );
    assert_eq!(replica.log_end(), Offset(2));
    assert_eq!(replica.high_watermark(), Offset(2));
}

fn received(message: Message) -> Input {
    Input::Received {
        from: LEADER,
        message,
    }
}

fn log_start(leader_epoch: i32, log_start: u64, high_watermark: u64) -> Input {
    received(Message::LogStart(LogStart {
        leader_epoch,
        log_start,
        high_watermark,
    }))
}

fn acked_end(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            message: Message::ShipAck(ack),
            ..
        } => Some(ack.log_end),
        _ => None,
    })
}

/// A follower of epoch 5 holding offsets 0 and 1 (epoch 2), reconciled with its leader.
fn reconciled_follower() -> PartitionReplica {
    let mut replica = PartitionReplica::new(ReplicaConfig::default(), ME, Incarnation(1));
    for offset in 0..2 {
        let bytes = stored(offset, 2);
        replica.recover_batch(&BatchHeader::parse(&bytes).unwrap());
    }
    let follow = Input::BecomeFollower {
        epoch: LeaderEpoch(5),
        leader: LEADER,
    };
    step(&mut replica, follow);
    let answer = EpochAnswer {
        leader_epoch: 5,
        query_epoch: 2,
        epoch: 2,
        end_offset: 2,
    };
    let acked = step(&mut replica, received(Message::EpochAnswer(answer)));
    assert_eq!(acked_end(&acked), Some(2), "{acked:?}");
    replica
}

/// Issue 11: retention on the leader deleted what this follower needs next (its log ends
/// at 2, the leader's starts at 100). Told so, it empties its log and restarts it at 100
/// (high watermark, epochs and producers too), acks 100, and takes the leader's ships
/// from there, although its own history cannot know the epoch before 100.
#[test]
fn a_follower_below_the_leaders_log_start_resets_to_it() {
    let mut replica = reconciled_follower();
    let actions = step(&mut replica, log_start(5, 100, 120));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Reset { log_start } if *log_start == Offset(100))),
        "{actions:?}"
    );
    assert_eq!(acked_end(&actions), Some(100), "{actions:?}");
    assert_eq!(replica.log_start(), Offset(100));
    assert_eq!(replica.log_end(), Offset(100));
    assert_eq!(replica.durable_end(), Offset(100));
    assert_eq!(replica.high_watermark(), Offset(100));
    let ship = Ship {
        leader_epoch: 5,
        prev_offset: 100,
        prev_epoch: 4,
        high_watermark: 102,
        batches: shipped(&[stored(100, 4), stored(101, 5)]),
    };
    let actions = step(&mut replica, received(Message::Ship(ship)));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Append { log_end, .. } if *log_end == Offset(102))),
        "the ship after the reset was dropped: {actions:?}"
    );
    assert_eq!(replica.high_watermark(), Offset(102));
    replica.invariants();
}

/// A follower never resets onto what it holds: a log start at or below its log end (a
/// duplicate or late message) only makes it ack; a log start above the message's own
/// high watermark (no correct leader sends it), or one from an older epoch, is refused.
#[test]
fn a_log_start_the_follower_holds_or_a_bad_one_resets_nothing() {
    let mut replica = reconciled_follower();
    let resets = |actions: &[Action]| actions.iter().any(|a| matches!(a, Action::Reset { .. }));
    let actions = step(&mut replica, log_start(5, 2, 2));
    assert!(!resets(&actions), "{actions:?}");
    assert_eq!(acked_end(&actions), Some(2));
    let actions = step(&mut replica, log_start(5, 1, 2));
    assert!(!resets(&actions), "{actions:?}");
    let actions = step(&mut replica, log_start(5, 100, 99));
    assert!(actions.is_empty(), "{actions:?}");
    let actions = step(&mut replica, log_start(4, 100, 120));
    assert!(
        actions.iter().all(|a| matches!(
            a,
            Action::Send {
                message: Message::Fenced(_),
                ..
            }
        )) && !actions.is_empty(),
        "{actions:?}"
    );
    assert_eq!(replica.log_end(), Offset(2));
    assert_eq!(replica.log_start(), Offset(0));
}

/// A replica whose log is empty at 100 (reset, or retention took everything) follows a
/// new leader: it has no epoch to ask about, and the leader's answer ("no epoch") must
/// not make it cut below its log start, which would be below its high watermark and be
/// refused for good.
#[test]
fn an_empty_log_past_zero_reconciles() {
    let mut replica = PartitionReplica::new(ReplicaConfig::default(), ME, Incarnation(1));
    replica.recover_start(Offset(100));
    let follow = Input::BecomeFollower {
        epoch: LeaderEpoch(5),
        leader: LEADER,
    };
    let sent = step(&mut replica, follow);
    let asks_none = |a: &Action| matches!(a, Action::Send { message: Message::EpochQuery(q), .. } if q.epoch == -1);
    assert!(sent.iter().any(asks_none), "{sent:?}");
    let answer = EpochAnswer {
        leader_epoch: 5,
        query_epoch: -1,
        epoch: -1,
        end_offset: 0,
    };
    let acked = step(&mut replica, received(Message::EpochAnswer(answer)));
    assert_eq!(acked_end(&acked), Some(100), "{acked:?}");
    assert_eq!(replica.log_end(), Offset(100));
}
