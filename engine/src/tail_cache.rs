//! Recent batches kept in memory, so consumers at the tail never touch the disk and
//! batches not yet written can be read. Bounded by bytes, except that a batch is never
//! evicted before it is written (`written_end`): the write buffer bounds those.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ids::Offset;

#[derive(Debug)]
struct Cached {
    base: Offset,
    next: Offset,
    bytes: Bytes,
}

/// Batches `[first base, log_end)` in order, with no gaps.
#[derive(Debug, Default)]
pub struct TailCache {
    batches: VecDeque<Cached>,
    bytes: usize,
}

impl TailCache {
    /// Adds the batch after the last one.
    pub fn push(&mut self, base: Offset, next: Offset, bytes: Bytes) {
        if let Some(last) = self.batches.back() {
            assert!(last.next == base, "cache gap: {} then {base}", last.next);
        }
        self.bytes += bytes.len();
        self.batches.push_back(Cached { base, next, bytes });
    }

    /// Evicts the oldest written batches while over `bytes_max`.
    pub fn evict(&mut self, bytes_max: usize, written_end: Offset) {
        while self.bytes > bytes_max {
            match self.batches.front() {
                Some(front) if front.next <= written_end => {
                    self.bytes -= front.bytes.len();
                    self.batches.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Drops every batch at or after `offset` (a truncation at a batch boundary).
    pub fn truncate(&mut self, offset: Offset) {
        while self.batches.back().is_some_and(|b| b.next > offset) {
            if let Some(back) = self.batches.pop_back() {
                self.bytes -= back.bytes.len();
            }
        }
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.batches.clear();
        self.bytes = 0;
    }

    /// Whole batches starting with the one that holds `from`, up to `bytes_max` (at least
    /// one batch), or `None` when `from` is below the cache.
    pub fn read(&self, from: Offset, bytes_max: usize, out: &mut Vec<Bytes>) -> Option<Offset> {
        let first = self.batches.front()?;
        if from < first.base {
            return None;
        }
        let start = self.batches.partition_point(|b| b.next <= from);
        let mut taken = 0usize;
        let mut next = from;
        for batch in self.batches.range(start..) {
            if taken > 0 && taken + batch.bytes.len() > bytes_max {
                break;
            }
            taken += batch.bytes.len();
            out.push(batch.bytes.clone());
            next = batch.next;
        }
        Some(next)
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
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

    #[test]
    fn keeps_unwritten_and_serves_from_the_holding_batch() {
        let mut cache = TailCache::default();
        for i in 0..10u64 {
            cache.push(
                Offset(i * 2),
                Offset(i * 2 + 2),
                Bytes::from(vec![0u8; 100]),
            );
        }
        cache.evict(300, Offset(4));
        assert_eq!(cache.bytes(), 800, "only written batches may go");
        let mut out = Vec::new();
        assert_eq!(cache.read(Offset(3), 250, &mut out), None);
        assert_eq!(cache.read(Offset(5), 250, &mut out), Some(Offset(8)));
        assert_eq!(out.len(), 2);
        cache.truncate(Offset(10));
        out.clear();
        assert_eq!(cache.read(Offset(4), 10_000, &mut out), Some(Offset(10)));
        assert_eq!(out.len(), 3);
    }
}
