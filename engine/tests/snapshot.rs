//! Snapshot files beside the segments (`snapshot_file.rs`, `log_snapshot.rs`): written
//! atomically and durably, read back whole, and deleted whenever the batches they
//! describe may change: a truncation below them, an open after a crash lost the log tail
//! they sit above, retention below them. Only the newest few are kept.

#![cfg(test)]
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::Path;

use bytes::BytesMut;
use futures::executor::block_on;
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::snapshot_file::{self, SNAPSHOTS_KEPT};
use shardlog_engine::{
    EngineConfig, FlushPolicy, LeaderEpoch, Offset, PartitionLog, SimStorage, TimestampMs,
};

const DIR: &str = "/data/topic/0";

fn config(flush: FlushPolicy) -> EngineConfig {
    EngineConfig {
        segment_bytes: 64 << 10,
        tail_cache_bytes: 0,
        retention_age: None,
        segment_age: None,
        flush,
        ..EngineConfig::default()
    }
}

fn batch(n: u64) -> BytesMut {
    let mut builder = BatchBuilder::new();
    let value = vec![u8::try_from(n % 251).unwrap() + 1; 900];
    builder.push(TimestampMs(1000 + n as i64), None, Some(&value), &[]);
    BytesMut::from(&builder.finish()[..])
}

async fn append(log: &PartitionLog<SimStorage>, count: u64) {
    for n in 0..count {
        log.append(batch(n), LeaderEpoch(1)).await.unwrap();
    }
}

fn snapshot_names(storage: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .paths()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.contains(".snapshot"))
        .collect();
    names.sort();
    names
}

#[test]
fn written_durably_read_back_and_only_the_newest_kept() {
    block_on(async {
        let storage = SimStorage::new();
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        let mut written = Vec::new();
        for round in 0..5u8 {
            append(&log, 10).await;
            let end = log.log_end();
            log.write_snapshot(end, &[round; 100]).await.unwrap();
            written.push(end);
        }
        let kept = written[written.len() - SNAPSHOTS_KEPT..].to_vec();
        assert_eq!(log.snapshot_offsets(), kept);
        assert_eq!(snapshot_names(&storage).len(), SNAPSHOTS_KEPT);
        // Synced: a crash right now keeps them, byte for byte.
        storage.crash(7);
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.snapshot_offsets(), kept);
        let newest = log.read_snapshot(written[4]).await.unwrap();
        assert_eq!(&newest[..], &[4u8; 100][..]);
        assert!(log.read_snapshot(written[0]).await.is_none(), "deleted");
    });
}

#[test]
fn a_truncation_deletes_the_snapshots_above_it_first() {
    block_on(async {
        let storage = SimStorage::new();
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        append(&log, 10).await;
        let a = log.log_end();
        log.write_snapshot(a, b"a").await.unwrap();
        append(&log, 10).await;
        let b = log.log_end();
        log.write_snapshot(b, b"b").await.unwrap();
        // Cutting exactly at a snapshot keeps it: the batches below it are unchanged.
        log.truncate(a).await.unwrap();
        assert_eq!(log.snapshot_offsets(), vec![a]);
        // Appending again past b must never make the old snapshot at b look valid.
        append(&log, 20).await;
        storage.crash(3);
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        assert_eq!(log.snapshot_offsets(), vec![a]);
        assert!(log.read_snapshot(b).await.is_none());
        // A truncation below every snapshot, and one below the log start, delete all.
        log.truncate(Offset(3)).await.unwrap();
        assert!(log.snapshot_offsets().is_empty());
        assert!(snapshot_names(&storage).is_empty());
    });
}

#[test]
fn a_snapshot_above_the_log_end_is_deleted_on_open() {
    block_on(async {
        let storage = SimStorage::new();
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        append(&log, 5).await;
        let kept = log.log_end();
        log.write_snapshot(kept, b"kept").await.unwrap();
        append(&log, 20).await;
        let end = log.log_end();
        // write_snapshot syncs the log before the snapshot, so only a log that loses
        // synced data (a disk that lied, a tail cut by `shardlog repair`) ends below one.
        log.write_snapshot(end, b"ahead").await.unwrap();
        let active = log.active_base();
        log.close().await.unwrap();
        let segment = Path::new(DIR).join(format!("{:020}.log", active.0));
        let mut bytes = storage.contents(&segment).unwrap();
        let cut = bytes.len() / 4;
        bytes[cut..].fill(0);
        storage.set_contents(&segment, bytes).unwrap();
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        let log_end = log.log_end();
        assert!(
            kept <= log_end && log_end < end,
            "{kept} <= {log_end} < {end}"
        );
        assert_eq!(log.snapshot_offsets(), vec![kept]);
        assert_eq!(
            snapshot_names(&storage),
            vec![snapshot_file::snapshot_file_name(kept)]
        );
    });
}

#[test]
fn retention_deletes_the_snapshots_below_the_new_log_start() {
    block_on(async {
        let storage = SimStorage::new();
        let mut cfg = config(FlushPolicy::Always);
        cfg.retention_bytes = Some(128 << 10);
        let log = PartitionLog::open(storage.clone(), DIR, cfg.clone())
            .await
            .unwrap();
        append(&log, 30).await;
        let early = log.log_end();
        log.write_snapshot(early, b"early").await.unwrap();
        append(&log, 400).await;
        // Retention stops at the high watermark: all of it committed.
        log.set_high_watermark(log.log_end());
        let deleted = log.apply_retention(TimestampMs::now()).await.unwrap();
        assert!(deleted > 0);
        assert!(log.log_start() > early);
        assert!(log.snapshot_offsets().is_empty());
        assert!(snapshot_names(&storage).is_empty());
    });
}

#[test]
fn damaged_files_are_not_snapshots() {
    block_on(async {
        let storage = SimStorage::new();
        let log = PartitionLog::open(storage.clone(), DIR, config(FlushPolicy::Always))
            .await
            .unwrap();
        append(&log, 10).await;
        let end = log.log_end();
        log.write_snapshot(end, &[9; 3000]).await.unwrap();
        let path = Path::new(DIR).join(snapshot_file::snapshot_file_name(end));
        storage.flip_bit(&path, 1000, 3).unwrap();
        assert!(log.read_snapshot(end).await.is_none());
        storage.set_contents(&path, Vec::new()).unwrap();
        assert!(log.read_snapshot(end).await.is_none());
        storage.set_contents(&path, vec![0xff; 8192]).unwrap();
        assert!(log.read_snapshot(end).await.is_none());
        log.delete_snapshot(end).await.unwrap();
        assert!(snapshot_names(&storage).is_empty());
    });
}
