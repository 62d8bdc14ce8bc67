//! The recovery scan: walks batches over bytes, checking each one's length, CRC and offset
//! continuity, and stops at the first that fails. Pure: it sees bytes, never a file, so
//! the engine, `shardlog verify` and the fuzzers share it.
//!
//! The engine feeds a segment through [`Scanner::feed`] chunk by chunk. Where a batch
//! fails, [`classify_stop`] tells a torn tail (a partial last write: nothing but zeros
//! after the bad batch, which is what a crash leaves in a preallocated segment) from
//! damage (more data after the bad batch, which a crash cannot leave).
#![deny(clippy::indexing_slicing)]

use crate::batch::{self, BATCH_HEADER_SIZE, BatchHeader, Corruption};
use crate::ids::{Offset, TimestampMs};

/// Where a scan stopped, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Every whole batch in the chunk was valid; feed more bytes starting at
    /// [`Scanner::position`] (the bytes from there on in this chunk were a partial batch).
    NeedMore,
    /// The batch at [`Scanner::position`] is invalid.
    Invalid(Corruption),
}

/// Walks batches from a known position and offset.
#[derive(Clone, Debug)]
pub struct Scanner {
    position: u64,
    /// The offset the scan started at: a segment's base. A segment's batches must start
    /// within `u32::MAX` offsets of it (index entries store the relative offset as a u32).
    base: Offset,
    next_offset: Offset,
    batch_count: u64,
    record_count: u64,
    max_timestamp: Option<TimestampMs>,
    first_timestamp: Option<TimestampMs>,
}

impl Scanner {
    /// A scan that expects the batch at byte `position` to start at `next_offset`.
    #[must_use]
    pub fn new(position: u64, next_offset: Offset) -> Scanner {
        Scanner {
            position,
            base: next_offset,
            next_offset,
            batch_count: 0,
            record_count: 0,
            max_timestamp: None,
            first_timestamp: None,
        }
    }

    /// Byte position of the first batch not yet verified: after a stop, the cut point.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Offset the next batch must start at.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Batches verified so far.
    #[must_use]
    pub fn batch_count(&self) -> u64 {
        self.batch_count
    }

    /// Records in the batches verified so far.
    #[must_use]
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// Largest batch max-timestamp seen.
    #[must_use]
    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.max_timestamp
    }

    /// First batch's base timestamp.
    #[must_use]
    pub fn first_timestamp(&self) -> Option<TimestampMs> {
        self.first_timestamp
    }

    /// Verifies the whole batches in `chunk`, which starts at [`Scanner::position`], calling
    /// `on_batch(position, header)` for each valid one, in order.
    pub fn feed(&mut self, chunk: &[u8], mut on_batch: impl FnMut(u64, &BatchHeader)) -> Step {
        let mut at = 0usize;
        loop {
            let rest = chunk.get(at..).unwrap_or_default();
            if rest.len() < BATCH_HEADER_SIZE {
                // A short tail of zeros is the end of the log; a short non-zero tail is a
                // partial batch only if the caller has no more bytes.
                return Step::NeedMore;
            }
            let header = match BatchHeader::parse(rest) {
                Ok(header) => header,
                Err(reason) => return Step::Invalid(reason),
            };
            let size = header.size as usize;
            let Some(bytes) = rest.get(..size) else {
                return Step::NeedMore;
            };
            if let Err(reason) = batch::validate(bytes) {
                return Step::Invalid(reason);
            }
            if header.base_offset != self.next_offset {
                return Step::Invalid(Corruption::OffsetMismatch {
                    expected: self.next_offset,
                    found: header.base_offset,
                });
            }
            if header.next_offset().distance_from(self.base) > u64::from(u32::MAX) {
                // A CRC-valid batch whose offset deltas carry the segment past what its
                // index can address: corruption (the engine rolls before this happens).
                let value = i64::from(header.last_offset_delta);
                return Step::Invalid(Corruption::BadField {
                    field: "last_offset_delta",
                    value,
                });
            }
            on_batch(self.position, &header);
            self.position += size as u64;
            self.next_offset = header.next_offset();
            self.batch_count += 1;
            self.record_count += u64::from(header.record_count);
            self.max_timestamp = Some(
                self.max_timestamp
                    .map_or(header.max_timestamp, |t| t.max(header.max_timestamp)),
            );
            self.first_timestamp.get_or_insert(header.base_timestamp);
            at += size;
        }
    }
}

/// How a scan that stopped before the end of the data should be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Only zeros from the stop on: the log simply ends there.
    End,
    /// A partial or corrupt last batch with only zeros after it: what a crash during a
    /// write leaves behind. Recovery cuts it; no acknowledged data was in it.
    TornTail,
    /// More data after the bad batch: damage inside written data.
    Damaged,
}

/// Classifies the bytes from the stop position to the end of the file. `reason` is `None`
/// when the scan ran out of bytes mid-batch (`rest` then holds that partial batch).
#[must_use]
pub fn classify_stop(rest: &[u8], reason: Option<Corruption>) -> StopKind {
    if rest.iter().all(|&b| b == 0) {
        return StopKind::End;
    }
    // Past the bad batch's own claimed extent (or the block it starts in, when its length
    // field is itself garbage) a torn write leaves only preallocated zeros.
    let claimed = BatchHeader::parse(rest).map(|h| h.size as usize).ok();
    let after = match (reason, claimed) {
        (Some(Corruption::BadLength(_) | Corruption::BadMagic(_)), _) | (_, None) => {
            crate::segment::BLOCK_SIZE
        }
        (_, Some(size)) => size,
    };
    if rest
        .get(after..)
        .unwrap_or_default()
        .iter()
        .all(|&b| b == 0)
    {
        StopKind::TornTail
    } else {
        StopKind::Damaged
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;
    use crate::ids::LeaderEpoch;
    use crate::record::BatchBuilder;
    use proptest::prelude::*;

    fn log_of(sizes: &[usize]) -> (Vec<u8>, Vec<(u64, Offset)>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        let mut next = Offset(0);
        let mut builder = BatchBuilder::new();
        for (i, size) in sizes.iter().enumerate() {
            for _ in 0..=i % 3 {
                builder.push(TimestampMs(i as i64), None, Some(&vec![7u8; *size]), &[]);
            }
            let mut bytes = builder.finish();
            batch::patch_base(&mut bytes, next, LeaderEpoch(1));
            starts.push((out.len() as u64, next));
            next = BatchHeader::parse(&bytes).unwrap().next_offset();
            out.extend_from_slice(&bytes);
        }
        (out, starts)
    }

    fn scan_all(bytes: &[u8]) -> (Scanner, Step) {
        let mut scanner = Scanner::new(0, Offset(0));
        let step = scanner.feed(bytes, |_, _| {});
        (scanner, step)
    }

    proptest! {
        /// After any cut, the scan keeps exactly the batches that lie wholly before it.
        #[test]
        fn cut_anywhere_keeps_longest_valid_prefix(sizes in proptest::collection::vec(0usize..300, 1..8), cut in any::<prop::sample::Index>()) {
            let (log, starts) = log_of(&sizes);
            let cut = cut.index(log.len() + 1);
            let (scanner, _) = scan_all(&log[..cut]);
            let whole = starts.iter().filter(|(pos, _)| *pos < cut as u64)
                .zip(starts.iter().skip(1).map(|s| s.0).chain([log.len() as u64]))
                .filter(|(_, end)| *end <= cut as u64).count();
            prop_assert_eq!(scanner.batch_count() as usize, whole);
        }

        /// After any bit flip, the scan stops at the batch holding the flip: the CRC covers
        /// everything but the base offset (checked by continuity) and the leader epoch.
        #[test]
        fn flip_anywhere_stops_at_or_after_flipped_batch(sizes in proptest::collection::vec(0usize..300, 1..8), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut log, starts) = log_of(&sizes);
            let at = at.index(log.len());
            log[at] ^= 1 << bit;
            let (scanner, step) = scan_all(&log);
            let hit = starts.iter().rposition(|(pos, _)| *pos <= at as u64).unwrap();
            let within = at as u64 - starts[hit].0;
            if (12..16).contains(&within) {
                // The leader epoch is outside the CRC in Kafka's format; nothing can see it.
                prop_assert_eq!(scanner.batch_count() as usize, starts.len());
            } else {
                prop_assert_eq!(scanner.batch_count() as usize, hit);
                // A grown length reads as a partial batch (more bytes needed), anything else
                // as invalid; either way nothing from the flipped batch on is accepted.
                let _ = step;
            }
        }
    }

    #[test]
    fn classify_tells_torn_from_damaged() {
        let (log, starts) = log_of(&[100, 100, 100]);
        let mut padded = log.clone();
        padded.resize(16384, 0);
        // Torn: last batch cut short, zeros after.
        let last = starts[2].0 as usize;
        let mut torn = padded.clone();
        torn[last + 70..].fill(0);
        let (scanner, _) = scan_all(&torn);
        let rest = &torn[scanner.position() as usize..];
        assert_eq!(classify_stop(rest, None), StopKind::TornTail);
        // Damaged: a flip in the middle batch, data after it.
        let mut damaged = padded.clone();
        damaged[starts[1].0 as usize + 80] ^= 0x10;
        let (scanner, step) = scan_all(&damaged);
        let Step::Invalid(reason) = step else {
            panic!("{step:?}")
        };
        let rest = &damaged[scanner.position() as usize..];
        assert_eq!(classify_stop(rest, Some(reason)), StopKind::Damaged);
        // Clean end.
        let (scanner, step) = scan_all(&padded);
        let rest = &padded[scanner.position() as usize..];
        let reason = match step {
            Step::Invalid(r) => Some(r),
            Step::NeedMore => None,
        };
        assert_eq!(classify_stop(rest, reason), StopKind::End);
        assert_eq!(scanner.batch_count(), 3);
    }
}
