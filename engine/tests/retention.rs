//! Retention never deletes what the high watermark has not passed: a segment holding any
//! offset at or above it stays, however old or big the log (issue 11). Replication keeps
//! the high watermark with `set_high_watermark`; a follower that fell behind is told to
//! restart at the leader's log start, which must therefore be committed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures::executor::{LocalPool, block_on};
use futures::task::LocalSpawnExt;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{
    EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, SimStorage, TimestampMs,
};

const DIR: &str = "/data/topic/0";

/// 64 KiB segments, every record older than a second is past retention.
fn config() -> EngineConfig {
    EngineConfig {
        flush: FlushPolicy::Never,
        segment_bytes: 64 << 10,
        retention_age: Some(Duration::from_secs(1)),
        retention_bytes: Some(0),
        segment_age: None,
        ..EngineConfig::default()
    }
}

/// One batch of 4 records of 1 KiB, stamped at time 1 ms (long past retention).
fn batch() -> BytesMut {
    let mut builder = BatchBuilder::new();
    for _ in 0..4 {
        builder.push(TimestampMs(1), None, Some(&[7u8; 1024]), &[]);
    }
    BytesMut::from(builder.finish().as_slice())
}

#[test]
fn retention_stops_at_the_high_watermark() {
    block_on(async {
        let log = PartitionLog::open(SimStorage::new(), DIR, config())
            .await
            .expect("open");
        // About 15 batches per segment: 300 batches fill about 20 segments.
        for _ in 0..300 {
            log.append(batch(), LeaderEpoch(1)).await.expect("append");
        }
        let segments = log.segments();
        assert!(segments.len() >= 10, "{} segments", segments.len());
        let now = TimestampMs(1_000_000);

        // Nothing committed: nothing goes, although every segment is past retention.
        assert_eq!(log.apply_retention(now).await.expect("retention"), 0);
        assert_eq!(log.log_start(), Offset(0));

        // Committed into the middle of the fourth segment: the first three go, the fourth
        // (holding uncommitted offsets) stays.
        let fourth = &segments[3];
        let inside = Offset(fourth.id.0.0 + 1);
        log.set_high_watermark(inside);
        assert_eq!(log.apply_retention(now).await.expect("retention"), 3);
        assert_eq!(log.log_start(), fourth.id.0);
        assert!(log.log_start() <= log.high_watermark());

        // Committed exactly to the end of the sixth: the fourth to the sixth go.
        let sixth = &segments[5];
        log.set_high_watermark(sixth.next_offset);
        assert_eq!(log.apply_retention(now).await.expect("retention"), 3);
        assert_eq!(log.log_start(), sixth.next_offset);

        // `tick` (the server's periodic upkeep) applies the same cap.
        log.tick(now).await.expect("tick");
        assert_eq!(log.log_start(), sixth.next_offset);

        // Everything committed: every sealed segment goes, the active one stays.
        log.set_high_watermark(log.log_end());
        log.tick(now).await.expect("tick");
        assert_eq!(log.segments().len(), 1);
        assert!(log.log_start() <= log.high_watermark());
    });
}

/// A `tick` with nothing past retention takes no exclusive operation, so it syncs nothing
/// the appends wrote. It used to take one on every tick of a log with a
/// sealed segment (`shardlog-bench engine --flush never`: 65 a second, each pausing the
/// appends for a sync).
#[test]
fn a_tick_with_nothing_to_delete_syncs_nothing() {
    block_on(async {
        let sim = SimStorage::new();
        let config = EngineConfig {
            retention_age: None,
            retention_bytes: None,
            ..config()
        };
        let log = PartitionLog::open(sim.clone(), DIR, config)
            .await
            .expect("open");
        for _ in 0..40 {
            log.append(batch(), LeaderEpoch(1)).await.expect("append");
        }
        assert!(log.segments().len() > 1, "a sealed segment");
        log.sync().await.expect("sync");
        log.append(batch(), LeaderEpoch(1)).await.expect("append");
        let (syncs, durable_end) = (sim.sync_count(), log.durable_end());
        assert!(
            durable_end < log.log_end(),
            "the last batch is not synced yet"
        );
        for _ in 0..10 {
            log.tick(TimestampMs(1_000_000)).await.expect("tick");
        }
        assert_eq!(sim.sync_count(), syncs, "fdatasyncs by the ticks");
        assert_eq!(
            log.durable_end(),
            durable_end,
            "the ticks synced the appends"
        );
        assert_eq!(log.segments()[0].id.0, Offset(0), "nothing was deleted");
    });
}

/// Retention pauses the appends only to take the doomed segments out of the log: their
/// files are deleted after, while appends go on. It used to delete them under its
/// exclusive operation, so every append of the partition waited for the unlinks and the
/// directory sync (with 128 MiB segments on a filesystem mounted with online discard, the
/// slowest 0.1% of `shardlogd`'s appends waited 200 ms and more). Here the directory sync
/// that ends the deletion is held, and an append under `always` must complete meanwhile.
#[test]
fn appends_go_on_while_retention_deletes_the_files() {
    let sim = SimStorage::new();
    let config = EngineConfig {
        flush: FlushPolicy::Always,
        ..config()
    };
    let log = Rc::new(block_on(PartitionLog::open(sim.clone(), DIR, config)).expect("open"));
    block_on(async {
        for _ in 0..40 {
            log.append(batch(), LeaderEpoch(1)).await.expect("append");
        }
    });
    log.set_high_watermark(log.log_end());
    let sealed = log.segments().len() - 1;
    assert!(sealed > 0, "a sealed segment");

    let mut pool = LocalPool::new();
    let deleted = Rc::new(Cell::new(None));
    let appended = Rc::new(Cell::new(false));
    sim.hold_dir_syncs(true);
    let retention = {
        let (log, deleted) = (log.clone(), deleted.clone());
        async move { deleted.set(Some(log.apply_retention(TimestampMs(1_000_000)).await)) }
    };
    pool.spawner().spawn_local(retention).expect("spawn");
    pool.run_until_stalled();
    assert!(sim.dir_sync_held(), "retention waits in its directory sync");
    assert_eq!(
        log.segments().len(),
        1,
        "the doomed segments are out of the log"
    );

    let append = {
        let (log, appended) = (log.clone(), appended.clone());
        async move {
            log.append(batch(), LeaderEpoch(1)).await.expect("append");
            appended.set(true);
        }
    };
    pool.spawner().spawn_local(append).expect("spawn");
    pool.run_until_stalled();
    assert!(
        appended.get(),
        "an append waited for retention's file deletion"
    );
    assert!(deleted.take().is_none(), "retention is still deleting");

    sim.hold_dir_syncs(false);
    pool.run_until_stalled();
    let deleted = deleted.take().expect("retention ended").expect("retention");
    assert_eq!(deleted, sealed);
    let left: Vec<_> = sim
        .paths()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(left.len(), 1, "segment files left: {left:?}");
}
