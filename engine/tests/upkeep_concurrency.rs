//! The upkeep (`tick`) running beside the log's other work: appenders that find the
//! active segment full at the same time roll it once (one fdatasync per roll under
//! `never`, not one per appender that waited its turn), and a reset that has the segments
//! out of the log across its awaits is left alone.
#![cfg(test)]

mod common;
use common::{append_stored, on_fresh_log};

use std::cell::Cell;
use std::time::Duration;

use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{DmaStorage, EngineConfig, FlushPolicy, Offset, PartitionLog, TimestampMs};

const APPENDERS: u64 = 16;
const SEGMENT_BYTES: u64 = 64 << 10;
/// The largest batch `make_batch` makes, with room for its headers.
const BATCH_BYTES_MAX: u64 = 31_000;
const BATCHES_EACH: u64 = 24;

/// A batch of 2 to 30 KB: a few fill a 64 KiB segment, and appenders find it full at
/// different points of their loops.
fn make_batch(n: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let size = 2_000 + usize::try_from(n * 7919 % 28_000).expect("size");
    let value = vec![u8::try_from(n % 251).expect("byte"); size];
    builder.push(TimestampMs(1000), Some(&n.to_le_bytes()), Some(&value), &[]);
    builder.finish()
}

/// Runs `work` with the log's upkeep every `period` beside it, until `work` is done.
async fn with_upkeep<T>(
    log: &PartitionLog<DmaStorage>,
    period: Duration,
    work: impl Future<Output = T>,
) -> T {
    let done = Cell::new(false);
    let upkeep = async {
        while !done.get() {
            log.tick(TimestampMs(1000)).await.expect("tick");
            glommio::timer::sleep(period).await;
        }
    };
    let work = async {
        let out = work.await;
        done.set(true);
        out
    };
    futures::join!(work, upkeep).0
}

#[test]
fn appenders_that_find_the_segment_full_roll_it_once() {
    let config = EngineConfig {
        flush: FlushPolicy::Never,
        segment_bytes: SEGMENT_BYTES,
        preallocation_step_bytes: 16 << 10,
        zero_fill_ahead_bytes: 16 << 10,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    };
    on_fresh_log(config, |_, log| async move {
        let log = &log;
        let appenders = (0..APPENDERS).map(|a| async move {
            let mut stored = Vec::new();
            for i in 0..BATCHES_EACH {
                stored.push(append_stored(log, make_batch(a * BATCHES_EACH + i)).await);
            }
            stored
        });
        // The upkeep preallocates and writes zeros meanwhile, as in a server: an appender
        // that finds the segment full while it does waits to roll, and others join it.
        let appending = futures::future::join_all(appenders);
        let stored = with_upkeep(log, Duration::from_micros(200), appending).await;
        let stored: Vec<_> = stored.into_iter().flatten().collect();
        let stats = log.stats();
        let segments = log.segments();
        assert_eq!(stats.rolls, segments.len() as u64 - 1);
        assert!(stats.rolls >= 30, "{} rolls", stats.rolls);
        // Each roll sealed a segment that had no room for the batch that rolled it: an
        // appender that waited its turn to roll did not seal the next segment too.
        let sizes: Vec<u64> = segments.iter().map(|s| s.data_len).collect();
        let (_, sealed) = sizes.split_last().expect("the active segment");
        assert!(
            sealed
                .iter()
                .all(|&len| len + BATCH_BYTES_MAX > SEGMENT_BYTES),
            "segments sealed before they were full: {sizes:?}"
        );
        // Each roll syncs what it seals once; the upkeep's background sync (past 128 MiB
        // unsynced) never runs here.
        assert!(
            stats.syncs <= stats.rolls,
            "{} fdatasyncs for {} rolls",
            stats.syncs,
            stats.rolls
        );
        for (offset, bytes) in &stored {
            let read = log.read(*offset, 1).await.expect("read");
            let (header, found) = read.batches().next().expect("a batch");
            assert_eq!(header.base_offset, *offset);
            assert!(found == &bytes[..], "batch at {offset} differs");
        }
    });
}

/// A reset deletes every segment and creates a fresh one, with no segment in the log
/// across those awaits. An upkeep meanwhile used to look for the active segment to write
/// zeros ahead of it, and panicked ("a log always has an active segment"; seen once in
/// CI, a follower resetting behind its leader's log start).
#[test]
fn an_upkeep_during_a_reset_leaves_the_log_alone() {
    let config = EngineConfig {
        flush: FlushPolicy::Never,
        segment_bytes: SEGMENT_BYTES,
        zero_fill_ahead_bytes: 16 << 10,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    };
    on_fresh_log(config, |_, log| async move {
        for round in 0..20 {
            for n in 0..4 {
                append_stored(&log, make_batch(round * 4 + n)).await;
            }
            let start = Offset(log.log_end().0 + 1000);
            let reset = log.reset(start);
            with_upkeep(&log, Duration::from_micros(50), reset)
                .await
                .expect("reset");
            assert_eq!((log.log_start(), log.log_end()), (start, start));
        }
        let (offset, _) = append_stored(&log, make_batch(1)).await;
        assert_eq!(offset, log.log_start());
    });
}
