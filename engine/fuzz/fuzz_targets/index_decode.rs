//! Fuzz target: index and checkpoint decoding over arbitrary bytes. `OffsetIndex::decode`,
//! `TimeIndex::decode` and `Checkpoint::decode` must never panic; whatever they accept
//! must re-encode to bytes that decode to the same value, and must be usable: lookups,
//! truncation and the epoch queries recovery runs on a decoded checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardlog_engine::checkpoint::Checkpoint;
use shardlog_engine::offset_index::OffsetIndex;
use shardlog_engine::time_index::TimeIndex;
use shardlog_engine::{LeaderEpoch, Offset, TimestampMs};

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick the data length the time index is checked against and a probe
    // value for lookups; the same remaining bytes go to all three decoders.
    let Some((probe, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let probe = u64::from_le_bytes(*probe);

    if let Ok((index, meta)) = OffsetIndex::decode(bytes) {
        let (again, again_meta) =
            OffsetIndex::decode(&index.encode(&meta)).expect("re-encoded offset index");
        assert_eq!((&again, again_meta), (&index, meta));
        let target = u32::try_from(probe & 0xFFFF_FFFF).expect("masked");
        if let Some(entry) = index.lookup(target) {
            assert!(entry.relative_offset <= target);
        }
        let mut cut = index.clone();
        cut.truncate_to_position(probe);
        assert!(cut.len() <= index.len());
    }

    if let Ok((index, max_timestamp)) = TimeIndex::decode(bytes, probe) {
        let (again, again_max) =
            TimeIndex::decode(&index.encode(max_timestamp), probe).expect("re-encoded time index");
        assert_eq!((&again, again_max), (&index, max_timestamp));
        #[allow(clippy::cast_possible_wrap)]
        let _ = index.lookup(TimestampMs(probe as i64));
        let mut cut = index.clone();
        cut.truncate_to_position(probe);
    }

    if let Some(checkpoint) = Checkpoint::decode(bytes) {
        assert_eq!(
            Checkpoint::decode(&checkpoint.encode()).as_ref(),
            Some(&checkpoint)
        );
        let log_end = Offset(probe);
        #[allow(clippy::cast_possible_truncation)]
        let _ = checkpoint.end_offset_for_epoch(LeaderEpoch(probe as i32), log_end);
        // Recovery observes the epochs of the batches it scans after loading the checkpoint.
        let mut next = checkpoint.clone();
        if let Some(last) = next.epochs.last().copied()
            && let Some(epoch) = last.epoch.0.checked_add(1)
        {
            next.observe_epoch(LeaderEpoch(epoch), last.start_offset.max(log_end));
        }
        next.truncate(log_end);
        assert!(next.high_watermark <= log_end);
    }
});
