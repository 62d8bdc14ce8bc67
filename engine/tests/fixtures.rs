//! Format fixtures (fjall style): `tests/fixtures/v1/` is a partition directory written by
//! version 1 of the engine: two sealed segments with their index files, an active
//! (preallocated) segment and a checkpoint. Every later version must open it and read
//! exactly the same records, offsets, timestamps, epochs and high watermark. The test opens
//! a copy with the real storage (glommio DMA); the checked-in files are never modified.
//!
//! The fixture was generated once by `generate_fixture_v1` (ignored; it writes only with
//! `SHARDLOG_WRITE_FIXTURES=1`). Never regenerate it for a format change: add `v2/` instead.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use futures::executor::block_on;
use shardlog_engine::record::{BatchBuilder, RecordIter};
use shardlog_engine::{
    DmaStorage, EngineConfig, LeaderEpoch, Offset, PartitionLog, SimStorage, Storage, TimestampMs,
};

/// Batches per segment, oldest first; the last segment is the active one.
const SEGMENT_BATCHES: [u64; 3] = [10, 10, 5];
const TIMESTAMP_BASE: i64 = 1_700_000_000_000;

fn config() -> EngineConfig {
    EngineConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 512,
        ..EngineConfig::default()
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// Records in batch `b` (counted from 0 over the whole log).
fn records_in(b: u64) -> u64 {
    b % 3 + 1
}

/// The epoch of segment `s`.
fn epoch_of(segment: usize) -> i32 {
    i32::try_from(segment).expect("small") + 1
}

fn key_of(offset: u64) -> Vec<u8> {
    format!("key-{offset}").into_bytes()
}

fn value_of(offset: u64) -> Vec<u8> {
    format!("value-{offset}-")
        .repeat(usize::try_from(offset % 7 + 1).expect("small"))
        .into_bytes()
}

fn timestamp_of(offset: u64) -> i64 {
    TIMESTAMP_BASE + i64::try_from(offset * 10).expect("fits")
}

/// Every third record carries a header naming its offset; the others have a null key.
fn header_value_of(offset: u64) -> Option<Vec<u8>> {
    (offset % 3 == 0).then(|| offset.to_string().into_bytes())
}

fn batch_at(b: u64, first: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for offset in first..first + records_in(b) {
        let header = header_value_of(offset);
        let headers: Vec<(&[u8], Option<&[u8]>)> = header
            .iter()
            .map(|v| (&b"offset"[..], Some(&v[..])))
            .collect();
        let key = (offset % 5 != 4).then(|| key_of(offset));
        builder.push(
            TimestampMs(timestamp_of(offset)),
            key.as_deref(),
            Some(&value_of(offset)),
            &headers,
        );
    }
    builder.finish()
}

fn total_records() -> u64 {
    (0..SEGMENT_BATCHES.iter().sum()).map(records_in).sum()
}

/// Writes the fixture (in memory, then copied out). Run once, by hand, with
/// `SHARDLOG_WRITE_FIXTURES=1 cargo test -p shardlog-engine --test fixtures -- --ignored`.
#[test]
#[ignore = "writes tests/fixtures/v1; run once by hand with SHARDLOG_WRITE_FIXTURES=1"]
fn generate_fixture_v1() {
    if std::env::var_os("SHARDLOG_WRITE_FIXTURES").is_none() {
        eprintln!(
            "SHARDLOG_WRITE_FIXTURES is not set: not touching {}",
            fixture_dir().display()
        );
        return;
    }
    let storage = SimStorage::new();
    let dir = Path::new("/fixture/topic/0");
    block_on(async {
        let log = PartitionLog::open(storage.clone(), dir, config())
            .await
            .expect("open");
        let mut b = 0;
        for (segment, count) in SEGMENT_BATCHES.iter().enumerate() {
            if segment > 0 {
                log.roll().await.expect("roll");
            }
            for _ in 0..*count {
                let bytes = batch_at(b, log.log_end().0);
                log.append(BytesMut::from(&bytes[..]), LeaderEpoch(epoch_of(segment)))
                    .await
                    .expect("append");
                b += 1;
            }
        }
        log.set_high_watermark(Offset(log.log_end().0 - 2));
        log.close().await.expect("close");
    });
    let out = fixture_dir();
    std::fs::create_dir_all(&out).expect("fixture dir");
    for path in storage.paths() {
        let name = path.file_name().expect("file name");
        std::fs::write(out.join(name), storage.contents(&path).expect("contents"))
            .expect("write fixture");
    }
}

fn test_root() -> PathBuf {
    std::env::var_os("SHARDLOG_TEST_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/shardlog-test"),
        PathBuf::from,
    )
}

/// Checks every record of the log against the fixture's contents.
async fn check_contents<S: Storage>(log: &PartitionLog<S>) {
    assert_eq!(log.log_start(), Offset(0));
    assert_eq!(log.log_end(), Offset(total_records()));
    let mut expected_offset = 0u64;
    let mut b = 0u64;
    let mut from = Offset(0);
    while from < log.log_end() {
        let read = log.read(from, 3000).await.expect("read fixture");
        for (header, bytes) in read.batches() {
            assert_eq!(header.base_offset, Offset(expected_offset), "batch {b}");
            assert_eq!(
                header.record_count,
                u32::try_from(records_in(b)).expect("small"),
                "batch {b}"
            );
            let segment = SEGMENT_BATCHES
                .iter()
                .scan(0, |sum, n| {
                    *sum += n;
                    Some(*sum)
                })
                .position(|end| b < end)
                .expect("segment");
            assert_eq!(
                header.leader_epoch,
                LeaderEpoch(epoch_of(segment)),
                "batch {b}"
            );
            assert_eq!(
                header.base_timestamp,
                TimestampMs(timestamp_of(expected_offset))
            );
            for record in RecordIter::new(&header, bytes) {
                let record = record.expect("record");
                let offset = record.offset(&header).0;
                assert_eq!(offset, expected_offset);
                let key = (offset % 5 != 4).then(|| key_of(offset));
                assert_eq!(record.key, key.as_deref(), "offset {offset}");
                assert_eq!(record.value, Some(&value_of(offset)[..]), "offset {offset}");
                assert_eq!(
                    record.timestamp(&header),
                    TimestampMs(timestamp_of(offset)),
                    "offset {offset}"
                );
                let headers: Vec<_> = record
                    .headers()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect();
                let want: Vec<_> = header_value_of(offset)
                    .map(|v| (b"offset".to_vec(), Some(v)))
                    .into_iter()
                    .collect();
                assert_eq!(headers, want, "offset {offset}");
                expected_offset += 1;
            }
            b += 1;
        }
        from = read.next_offset;
    }
    assert_eq!(expected_offset, total_records());
    assert_eq!(b, SEGMENT_BATCHES.iter().sum::<u64>());
}

/// Opens the copy in `dir`, checks it, and checks that it keeps working.
async fn check_fixture_copy(dir: &Path) {
    let log = PartitionLog::open(DmaStorage, dir, config())
        .await
        .expect("open the v1 fixture");
    let bases: Vec<u64> = log.segments().iter().map(|s| s.id.0.0).collect();
    assert_eq!(bases, vec![0, 19, 39]);
    check_contents(&log).await;
    let checkpoint = log.checkpoint();
    assert_eq!(checkpoint.high_watermark, Offset(total_records() - 2));
    let epochs: Vec<_> = checkpoint
        .epochs
        .iter()
        .map(|e| (e.epoch.0, e.start_offset.0))
        .collect();
    assert_eq!(epochs, vec![(1, 0), (2, 19), (3, 39)]);
    let t = timestamp_of(25);
    assert_eq!(
        log.offset_for_timestamp(TimestampMs(t))
            .await
            .expect("by time"),
        Some(Offset(25))
    );
    // The copy keeps working: append, reopen, read everything again.
    let end = log.log_end();
    let bytes = batch_at(99, 0);
    let appended = log
        .append(BytesMut::from(&bytes[..]), LeaderEpoch(4))
        .await
        .expect("append");
    assert_eq!(appended.base_offset, end);
    log.close().await.expect("close");
    let log = PartitionLog::open(DmaStorage, dir, config())
        .await
        .expect("reopen");
    assert_eq!(log.log_end(), appended.next_offset);
    log.truncate(end).await.expect("truncate");
    check_contents(&log).await;
    log.close().await.expect("close");
}

#[test]
fn v1_fixture_reads_exactly() {
    let root = test_root();
    std::fs::create_dir_all(&root).expect("test root");
    if let Err(e) = shardlog_engine::preflight::preflight(&root) {
        panic!(
            "glommio tests need io_uring, memlock >= 512 KiB and O_DIRECT under {}: {e}",
            root.display()
        );
    }
    let tmp = tempfile::tempdir_in(&root).expect("temp dir");
    let dir = tmp.path().join("topic/0");
    std::fs::create_dir_all(&dir).expect("partition dir");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(fixture_dir()).expect("fixture dir: tests/fixtures/v1") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy fixture");
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let segment_names = [
        "00000000000000000000",
        "00000000000000000019",
        "00000000000000000039",
    ];
    for (i, base) in segment_names.iter().enumerate() {
        assert!(names.contains(&format!("{base}.log")), "{names:?}");
        assert_eq!(names.contains(&format!("{base}.index")), i < 2, "{names:?}");
    }
    let probe_dir = tmp.path().to_path_buf();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            shardlog_engine::warm_iopoll_probe(&probe_dir)
                .await
                .expect("iopoll probe");
            check_fixture_copy(&dir).await;
        })
        .expect("executor")
        .join()
        .expect("executor thread");
}
