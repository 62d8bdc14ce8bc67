//! Small appends made together share a flush; large ones do not wait for each other
//! (`FLUSH_GATHER_BELOW` in `partition_log.rs`). Taking a free flush slot at once, 256
//! appenders of one record each under `never` wrote mostly single blocks, one flush per
//! few records.
#![cfg(test)]

mod common;
use common::{append_stored, on_fresh_log};

use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{EngineConfig, FlushPolicy, Offset, TimestampMs};

/// One record of `size` bytes.
fn batch(n: u64, size: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let value = vec![u8::try_from(n % 251).expect("byte"); size];
    builder.push(TimestampMs(1000), Some(&n.to_le_bytes()), Some(&value), &[]);
    builder.finish()
}

fn config(flush: FlushPolicy) -> EngineConfig {
    EngineConfig {
        flush,
        segment_age: None,
        retention_age: None,
        ..EngineConfig::default()
    }
}

/// `appenders` appends of one `size`-byte record each, begun together, `rounds` times;
/// returns the log's flushes and the offsets given, sorted.
fn append_together(
    flush: FlushPolicy,
    appenders: u64,
    size: usize,
    rounds: u64,
    check: impl FnOnce(u64, Vec<Offset>) + Send + 'static,
) {
    on_fresh_log(config(flush), move |_, log| async move {
        let log = &log;
        let mut offsets = Vec::new();
        for round in 0..rounds {
            let appends = (0..appenders).map(|a| async move {
                append_stored(log, batch(round * appenders + a, size))
                    .await
                    .0
            });
            offsets.extend(futures::future::join_all(appends).await);
        }
        offsets.sort_unstable();
        check(log.stats().flushes, offsets);
    });
}

#[test]
fn small_appends_made_together_share_a_flush_under_every_policy() {
    for flush in [FlushPolicy::Never, FlushPolicy::Always] {
        append_together(flush, 64, 100, 4, move |flushes, offsets| {
            // One flush per round, or two when the first took a block the round began in.
            assert!(
                flushes <= 8,
                "{flush:?}: {flushes} flushes for 4 rounds of 64 appends"
            );
            let expected: Vec<Offset> = (0..256).map(Offset).collect();
            assert_eq!(offsets, expected);
        });
    }
}

#[test]
fn large_appends_made_together_flush_each_at_once() {
    // 256 KiB each: a flush of one is large enough to go at once, so the 8 appends are 8
    // flushes in flight together, not one flush that all 8 wait for.
    append_together(FlushPolicy::Never, 8, 256 << 10, 2, |flushes, offsets| {
        assert!(
            flushes >= 16,
            "{flushes} flushes for 2 rounds of 8 large appends"
        );
        assert_eq!(offsets, (0..16).map(Offset).collect::<Vec<_>>());
    });
}
