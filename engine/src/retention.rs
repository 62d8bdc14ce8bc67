//! Which sealed segments retention deletes: a pure decision over segment summaries.
//! Whole sealed segments only, oldest first, never the active one, and never one holding
//! an offset at or above the high watermark: an uncommitted record may still be needed
//! by a follower (or cut by a truncation), and a replica's log must never start above
//! what the partition has committed, or a follower below it could not be told where to
//! restart (Kafka keeps the log start at or below the high watermark for the same reason).

use std::time::Duration;

use crate::ids::{Offset, TimestampMs};

/// What retention needs to know of a segment, oldest first; the last is the active one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Bytes of data.
    pub bytes: u64,
    /// Newest record timestamp, if any record.
    pub max_timestamp: Option<TimestampMs>,
    /// The offset after its last batch.
    pub next_offset: Offset,
}

/// How many of the oldest segments to delete so that the log holds at most
/// `retention_bytes` and no sealed segment is entirely older than `now - retention_age`;
/// only segments wholly below `high_watermark` go.
#[must_use]
pub fn segments_to_delete(
    segments: &[SegmentSummary],
    retention_bytes: Option<u64>,
    retention_age: Option<Duration>,
    now: TimestampMs,
    high_watermark: Offset,
) -> usize {
    let sealed = segments.len().saturating_sub(1);
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let cutoff = retention_age.map(|age| {
        TimestampMs(
            now.0
                .saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)),
        )
    });
    let mut delete = 0;
    for segment in segments.iter().take(sealed) {
        let too_big = retention_bytes.is_some_and(|max| total > max);
        let too_old = cutoff.is_some_and(|cut| segment.max_timestamp.is_none_or(|t| t < cut));
        if (!too_big && !too_old) || segment.next_offset > high_watermark {
            break;
        }
        total -= segment.bytes;
        delete += 1;
    }
    delete
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;

    /// Segments of 10 offsets each.
    fn seg(index: u64, bytes: u64, ts: i64) -> SegmentSummary {
        SegmentSummary {
            bytes,
            max_timestamp: Some(TimestampMs(ts)),
            next_offset: Offset(10 * (index + 1)),
        }
    }

    #[test]
    fn table() {
        let hour = Duration::from_secs(3600);
        let now = TimestampMs(10 * 3_600_000);
        let log = [
            seg(0, 100, 1),
            seg(1, 100, 3_600_000 * 8),
            seg(2, 100, 3_600_000 * 9),
            seg(3, 100, now.0),
        ];
        let committed = Offset(40);
        let cases: [(Option<u64>, Option<Duration>, usize); 7] = [
            (None, None, 0),
            (Some(1000), None, 0),
            (Some(250), None, 2),
            (Some(0), None, 3), // never the active segment
            (None, Some(hour * 5), 1),
            (None, Some(hour / 2), 3),
            (Some(350), Some(hour * 5), 1),
        ];
        for (bytes, age, want) in cases {
            assert_eq!(
                segments_to_delete(&log, bytes, age, now, committed),
                want,
                "{bytes:?} {age:?}"
            );
        }
        assert_eq!(segments_to_delete(&[], Some(0), None, now, committed), 0);
    }

    /// A segment holding any offset at or above the high watermark stays, however old or
    /// big the log: what is not committed may still be needed by a follower.
    #[test]
    fn never_past_the_high_watermark() {
        let now = TimestampMs(10 * 3_600_000);
        let log = [
            seg(0, 100, 1),
            seg(1, 100, 2),
            seg(2, 100, 3),
            seg(3, 100, 4),
        ];
        // (high watermark, segments deleted) with every limit exceeded.
        let cases = [
            (0, 0),
            (9, 0),
            (10, 1),
            (19, 1),
            (20, 2),
            (29, 2),
            (30, 3),
            (45, 3),
        ];
        for (high_watermark, want) in cases {
            let got = segments_to_delete(
                &log,
                Some(0),
                Some(Duration::from_millis(1)),
                now,
                Offset(high_watermark),
            );
            assert_eq!(got, want, "high watermark {high_watermark}");
        }
    }
}
