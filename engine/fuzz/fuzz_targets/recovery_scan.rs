//! Fuzz target: the recovery scan over arbitrary bytes. The input is a chunking (a count
//! and that many chunk sizes) and then the segment bytes. The scan is driven exactly as
//! `log_open.rs` drives it (a carry buffer, `Scanner::feed`, `Segment::track_batch` for
//! each verified batch, `classify_stop` at the end). It must never panic, and the result
//! (every verified batch, where it stopped, why, and the classification) must be the
//! same for the given chunking as for the whole segment in one chunk. When the count
//! byte's top bit is set, every batch's CRC is fixed up first, so the fuzzer reaches
//! offset continuity and segment tracking without forging CRC32C.
#![no_main]

use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use shardlog_engine::batch::{self, BatchHeader, Corruption};
use shardlog_engine::recovery::{self, Scanner, Step, StopKind};
use shardlog_engine::segment::Segment;
use shardlog_engine::{Offset, TimestampMs};

/// The engine's default index interval.
const INDEX_INTERVAL: u32 = 4096;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    batches: Vec<(u64, BatchHeader)>,
    position: u64,
    next_offset: Offset,
    record_count: u64,
    max_timestamp: Option<TimestampMs>,
    first_timestamp: Option<TimestampMs>,
    reason: Option<Corruption>,
    kind: StopKind,
}

fn scan(log: &[u8], chunk_sizes: &[usize], base: Offset) -> Outcome {
    let mut segment = Segment::new(base, Rc::new(()));
    let mut scanner = Scanner::new(0, base);
    let mut batches = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    let mut read_at = 0usize;
    let mut sizes = chunk_sizes.iter().copied().cycle();
    let reason = loop {
        let want = sizes.next().unwrap_or(usize::MAX).max(1);
        let chunk = &log[read_at..read_at.saturating_add(want).min(log.len())];
        let at_end = chunk.is_empty();
        read_at += chunk.len();
        carry.extend_from_slice(chunk);
        let carry_start = scanner.position();
        let step = scanner.feed(&carry, |position, header| {
            segment.track_batch(position, header, INDEX_INTERVAL);
            batches.push((position, *header));
        });
        let consumed = usize::try_from(scanner.position() - carry_start).expect("consumed fits");
        assert!(
            consumed <= carry.len(),
            "scanner consumed {consumed} of {} bytes",
            carry.len()
        );
        carry.drain(..consumed);
        match step {
            Step::Invalid(reason) => break Some(reason),
            Step::NeedMore if at_end || read_at >= log.len() => break None,
            Step::NeedMore => {}
        }
    };
    let position = scanner.position();
    let stop = usize::try_from(position).expect("position fits");
    let kind = recovery::classify_stop(&log[stop..], reason);
    // What the scanner verified is what the segment tracked, batch by batch.
    assert_eq!(segment.data_len, position);
    assert_eq!(segment.next_offset, scanner.next_offset());
    assert_eq!(segment.batch_count, scanner.batch_count());
    assert_eq!(segment.batch_count, batches.len() as u64);
    for (at, header) in &batches {
        let at = usize::try_from(*at).expect("fits");
        let bytes = &log[at..at + header.size as usize];
        assert_eq!(
            batch::validate(bytes),
            Ok(*header),
            "accepted a batch validate rejects"
        );
    }
    Outcome {
        batches,
        position,
        next_offset: scanner.next_offset(),
        record_count: scanner.record_count(),
        max_timestamp: scanner.max_timestamp(),
        first_timestamp: scanner.first_timestamp(),
        reason,
        kind,
    }
}

/// Rewrites the CRC of each batch in a row of batches, as far as their headers parse.
fn fix_crcs(log: &mut [u8]) {
    let mut at = 0usize;
    while let Ok(header) = BatchHeader::parse(&log[at..]) {
        let end = at + header.size as usize;
        let Some(bytes) = log.get_mut(at..end) else {
            return;
        };
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(flags % 8);
    let Some((cuts, log)) = rest.split_at_checked(count * 2) else {
        return;
    };
    let mut log = log.to_vec();
    if flags & 0x80 != 0 {
        fix_crcs(&mut log);
    }
    let log = &log[..];
    let sizes: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    // Start where the first batch says, so scans go past the first batch.
    let base = BatchHeader::parse(log).map_or(Offset(0), |h| h.base_offset);
    let whole = scan(log, &[], base);
    let chunked = scan(log, &sizes, base);
    assert_eq!(whole, chunked, "chunking {sizes:?} changed the scan");
});
