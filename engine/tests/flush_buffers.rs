//! The buffer a log's appends fill: a burst of megabytes grows it, and once the log is
//! idle (its last flush done, or at `tick`) it holds no more than 1 MiB; the larger one
//! goes back to the shard's pool (tested in `engine/src/flush_buffers.rs`) or is freed.
#![cfg(test)]

use bytes::BytesMut;
use futures::executor::block_on;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::{
    EngineConfig, FlushPolicy, LeaderEpoch, PartitionLog, SimStorage, TimestampMs,
};

const MIB: usize = 1 << 20;

fn batch(value_bytes: usize) -> BytesMut {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(1000), None, Some(&vec![7; value_bytes]), &[]);
    BytesMut::from(&builder.finish()[..])
}

#[test]
fn an_idle_log_holds_no_large_buffer_after_a_burst() {
    block_on(async {
        let config = EngineConfig {
            flush: FlushPolicy::Never,
            segment_age: None,
            retention_age: None,
            ..EngineConfig::default()
        };
        let log = PartitionLog::open(SimStorage::new(), "/p", config)
            .await
            .expect("open");
        for _round in 0..3 {
            // Polled together: most are appended before a flush takes them, so the
            // buffer grows to megabytes.
            let appends: Vec<_> = (0..8)
                .map(|_| log.append(batch(MIB - 1000), LeaderEpoch(1)))
                .collect();
            for appended in futures::future::join_all(appends).await {
                appended.expect("append");
            }
            log.sync().await.expect("sync");
            assert!(
                log.pending_buffer_bytes() <= MIB,
                "{} held by an idle log",
                log.pending_buffer_bytes()
            );
            log.tick(TimestampMs::now()).await.expect("tick");
            assert!(log.pending_buffer_bytes() <= MIB);
        }
        assert_eq!(log.log_end().0, 24);
        log.close().await.expect("close");
    });
}
