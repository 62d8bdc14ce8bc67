//! Regression tests for inputs the fuzz targets (`engine/fuzz`) exercise, one named test per
//! finding (lsm-tree's `model_1.rs` style). Each proves the engine now handles the input:
//! it stops or rolls where it used to panic.

use bytes::Bytes;
use futures::executor::block_on;
use shardlog_engine::batch::{self, BatchHeader, Corruption};
use shardlog_engine::record::BatchBuilder;
use shardlog_engine::recovery::{Scanner, Step};
use shardlog_engine::{EngineConfig, LeaderEpoch, Offset, PartitionLog, SimStorage, TimestampMs};

/// One record whose header claims `last_offset_delta = i32::MAX` (CRC fixed up): valid to
/// `batch::validate`, and it moves the next offset by 2^31.
fn wide_batch(base: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    builder.push(TimestampMs(1), None, Some(b"v"), &[]);
    let mut bytes = builder.finish();
    bytes[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::patch_base(&mut bytes, Offset(base), LeaderEpoch(1));
    assert_eq!(
        batch::validate(&bytes).expect("valid").next_offset(),
        Offset(base + (1 << 31))
    );
    bytes
}

/// recovery_scan: three CRC-valid batches that each advance the offset by 2^31 put the third
/// at relative offset 2^32, which `Segment::track_batch` cannot index. It panicked
/// ("segment offset span fits u32") inside recovery; the scan now stops at that batch.
#[test]
fn recovery_scan_offset_span_past_u32() {
    let mut log = Vec::new();
    for base in [0, 1 << 31, 1 << 32] {
        log.extend_from_slice(&wide_batch(base));
    }
    let mut scanner = Scanner::new(0, Offset(0));
    let mut seen = Vec::new();
    let step = scanner.feed(&log, |position, header: &BatchHeader| {
        seen.push((position, header.base_offset))
    });
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(
            step,
            Step::Invalid(Corruption::BadField {
                field: "last_offset_delta",
                ..
            })
        ),
        "{step:?}"
    );
}

/// The same batches through the log: replicated appends roll instead of overflowing the
/// active segment's relative offsets, and the log reopens with all of them.
#[test]
fn append_offset_span_past_u32_rolls() {
    block_on(async {
        let storage = SimStorage::new();
        let dir = std::path::Path::new("/data/span/0");
        let config = EngineConfig {
            segment_bytes: 64 << 10,
            ..EngineConfig::default()
        };
        let log = PartitionLog::open(storage.clone(), dir, config.clone())
            .await
            .unwrap();
        for base in [0, 1 << 31, 1 << 32, 3 << 31] {
            log.append_replicated(Bytes::from(wide_batch(base)))
                .await
                .unwrap();
        }
        assert_eq!(log.log_end(), Offset(1 << 33));
        let segments = log.segments();
        assert!(segments.len() >= 2, "{segments:?}");
        for segment in &segments {
            assert!(
                segment.next_offset.distance_from(segment.id.0) <= u64::from(u32::MAX),
                "{segment:?}"
            );
        }
        log.close().await.unwrap();
        let log = PartitionLog::open(storage, dir, config).await.unwrap();
        assert_eq!(log.log_end(), Offset(1 << 33));
    });
}
