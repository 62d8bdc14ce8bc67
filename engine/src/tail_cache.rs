//! Recent batches kept in memory, so consumers at the tail never touch the disk and
//! batches not yet written can be read.
//!
//! Two bounds hold the bytes: each partition's own (`EngineConfig::tail_cache_bytes`,
//! its oldest batches go first), and a [`TailCacheBudget`] shared by every partition of
//! one shard (the node's budget divided among its shards): past it, the batches cached
//! longest ago on the shard go first, whichever partition holds them, so hot partitions
//! keep their tails and cold ones give theirs up. A batch is never evicted before it is
//! written (`written_end`): until then the cache is where reads find it, and the write
//! buffer bounds those bytes.
//!
//! The budget keeps one entry per cached batch, oldest first: the batch's cache (weak) and
//! the sequence number it was given when cached. An entry whose batch has gone another
//! way (truncated, cleared, evicted by its partition's own bound, its log closed) is
//! skipped when reached, and dropped by a compaction once such entries outnumber the live
//! ones. Everything here is owned by one shard and `!Send`: no lock on the hot path.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use crate::ids::Offset;

/// Entries an eviction pass sets aside (batches not yet written, or behind one) before
/// it gives up until the next pass: the write buffers bound those anyway.
const BLOCKED_SCAN_MAX: usize = 256;
/// Stale entries tolerated beyond the live ones before a compaction.
const STALE_ENTRIES_SLACK: usize = 1024;

#[derive(Debug)]
struct Cached {
    base: Offset,
    next: Offset,
    bytes: Bytes,
    /// When it was cached, in its budget's order.
    seq: u64,
}

/// One partition's batches `[first base, log_end)` in order, with no gaps.
#[derive(Debug, Default)]
struct Held {
    batches: VecDeque<Cached>,
    bytes: usize,
    /// Batches ending at or before it are written and may be evicted.
    written_end: Offset,
}

impl Held {
    fn holds(&self, seq: u64) -> bool {
        let at = self.batches.partition_point(|b| b.seq < seq);
        self.batches.get(at).is_some_and(|b| b.seq == seq)
    }
}

/// A budget entry: a batch cached at `seq` by `cache`.
#[derive(Debug)]
struct Entry {
    cache: Weak<RefCell<Held>>,
    seq: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bytes held by every cache sharing the budget.
    bytes: usize,
    /// Batches held by them.
    batches: usize,
    next_seq: u64,
    /// Oldest first.
    order: VecDeque<Entry>,
    /// Scratch of an eviction pass: entries that could not go yet.
    blocked: Vec<Entry>,
}

/// The bytes the tail caches of one shard hold together; see the module docs. Shared by
/// `Rc` between that shard's partition logs, `!Send`.
#[derive(Debug)]
pub struct TailCacheBudget {
    bytes_max: usize,
    shared: RefCell<Shared>,
}

impl TailCacheBudget {
    /// A budget of `bytes_max` for the caches opened with it.
    #[must_use]
    pub fn new(bytes_max: usize) -> Rc<TailCacheBudget> {
        Rc::new(TailCacheBudget {
            bytes_max,
            shared: RefCell::new(Shared::default()),
        })
    }

    /// No shared bound: each cache keeps to its partition's own.
    #[must_use]
    pub fn unlimited() -> Rc<TailCacheBudget> {
        TailCacheBudget::new(usize::MAX)
    }

    /// Bytes held by the caches sharing it.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.shared.borrow().bytes
    }

    /// The bound.
    #[must_use]
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    fn added(&self, cache: &Rc<RefCell<Held>>, len: usize) -> u64 {
        let mut shared = self.shared.borrow_mut();
        let seq = shared.next_seq;
        shared.next_seq += 1;
        shared.bytes += len;
        shared.batches += 1;
        shared.order.push_back(Entry {
            cache: Rc::downgrade(cache),
            seq,
        });
        seq
    }

    fn removed(&self, bytes: usize, batches: usize) {
        let mut shared = self.shared.borrow_mut();
        assert!(shared.bytes >= bytes, "{} < {bytes}", shared.bytes);
        assert!(shared.batches >= batches, "{} < {batches}", shared.batches);
        shared.bytes -= bytes;
        shared.batches -= batches;
    }

    /// Evicts the oldest written batches of every cache sharing the budget while it is
    /// over. No cache may be borrowed by the caller.
    fn evict(&self) {
        let mut shared = self.shared.borrow_mut();
        let shared = &mut *shared;
        while shared.bytes > self.bytes_max && shared.blocked.len() < BLOCKED_SCAN_MAX {
            let Some(entry) = shared.order.pop_front() else {
                break;
            };
            let Some(cache) = entry.cache.upgrade() else {
                continue;
            };
            let mut held = cache.borrow_mut();
            let written_end = held.written_end;
            match held.batches.front() {
                Some(front) if front.seq == entry.seq && front.next <= written_end => {
                    let len = front.bytes.len();
                    held.batches.pop_front();
                    held.bytes -= len;
                    shared.bytes -= len;
                    shared.batches -= 1;
                }
                // Not written yet, or behind a batch of its partition that is not.
                Some(front) if front.seq <= entry.seq => {
                    drop(held);
                    shared.blocked.push(entry);
                }
                // Gone another way: truncated, cleared or evicted by its partition's bound.
                _ => {}
            }
        }
        while let Some(entry) = shared.blocked.pop() {
            shared.order.push_front(entry);
        }
        if shared.order.len() > 2 * shared.batches + STALE_ENTRIES_SLACK {
            shared.order.retain(|entry| {
                entry
                    .cache
                    .upgrade()
                    .is_some_and(|cache| cache.borrow().holds(entry.seq))
            });
        }
    }
}

/// One partition's tail cache, sharing a [`TailCacheBudget`] with the other partitions
/// of its shard.
#[derive(Debug)]
pub struct TailCache {
    held: Rc<RefCell<Held>>,
    budget: Rc<TailCacheBudget>,
}

impl Default for TailCache {
    fn default() -> Self {
        TailCache::new(TailCacheBudget::unlimited())
    }
}

impl TailCache {
    /// An empty cache within `budget`.
    #[must_use]
    pub fn new(budget: Rc<TailCacheBudget>) -> TailCache {
        TailCache {
            held: Rc::new(RefCell::new(Held::default())),
            budget,
        }
    }

    /// Adds the batch after the last one.
    pub fn push(&mut self, base: Offset, next: Offset, bytes: Bytes) {
        let len = bytes.len();
        let seq = self.budget.added(&self.held, len);
        let mut held = self.held.borrow_mut();
        if let Some(last) = held.batches.back() {
            assert!(last.next == base, "cache gap: {} then {base}", last.next);
        }
        held.bytes += len;
        held.batches.push_back(Cached {
            base,
            next,
            bytes,
            seq,
        });
    }

    /// Notes that batches up to `written_end` are written, then evicts the oldest written
    /// batches while this cache holds more than `bytes_max`, and the shard's oldest while
    /// the budget is over.
    pub fn evict(&mut self, bytes_max: usize, written_end: Offset) {
        let (mut bytes, mut batches) = (0, 0);
        {
            let mut held = self.held.borrow_mut();
            held.written_end = written_end;
            while held.bytes > bytes_max {
                match held.batches.front() {
                    Some(front) if front.next <= written_end => {
                        let len = front.bytes.len();
                        held.batches.pop_front();
                        held.bytes -= len;
                        bytes += len;
                        batches += 1;
                    }
                    _ => break,
                }
            }
        }
        self.budget.removed(bytes, batches);
        self.budget.evict();
    }

    /// Drops every batch at or after `offset` (a truncation at a batch boundary).
    pub fn truncate(&mut self, offset: Offset) {
        let (mut bytes, mut batches) = (0, 0);
        {
            let mut held = self.held.borrow_mut();
            while held.batches.back().is_some_and(|b| b.next > offset) {
                if let Some(back) = held.batches.pop_back() {
                    held.bytes -= back.bytes.len();
                    bytes += back.bytes.len();
                    batches += 1;
                }
            }
            held.written_end = held.written_end.min(offset);
        }
        self.budget.removed(bytes, batches);
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        let (bytes, batches) = {
            let mut held = self.held.borrow_mut();
            let taken = (held.bytes, held.batches.len());
            held.batches.clear();
            held.bytes = 0;
            taken
        };
        self.budget.removed(bytes, batches);
    }

    /// Whole batches starting with the one that holds `from`, up to `bytes_max` (at least
    /// one batch), or `None` when `from` is below the cache.
    pub fn read(&self, from: Offset, bytes_max: usize, out: &mut Vec<Bytes>) -> Option<Offset> {
        let held = self.held.borrow();
        let first = held.batches.front()?;
        if from < first.base {
            return None;
        }
        let start = held.batches.partition_point(|b| b.next <= from);
        let mut taken = 0usize;
        let mut next = from;
        for batch in held.batches.range(start..) {
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
        self.held.borrow().bytes
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        self.clear();
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

    fn fill(cache: &mut TailCache, batches: u64, len: usize) {
        for i in 0..batches {
            cache.push(
                Offset(i * 2),
                Offset(i * 2 + 2),
                Bytes::from(vec![0u8; len]),
            );
        }
    }

    #[test]
    fn keeps_unwritten_and_serves_from_the_holding_batch() {
        let mut cache = TailCache::default();
        fill(&mut cache, 10, 100);
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

    #[test]
    fn the_shared_budget_evicts_the_oldest_batches_of_any_partition() {
        let budget = TailCacheBudget::new(1000);
        let mut cold = TailCache::new(budget.clone());
        let mut hot = TailCache::new(budget.clone());
        fill(&mut cold, 5, 100);
        cold.evict(usize::MAX, Offset(10));
        assert_eq!(budget.bytes(), 500);
        fill(&mut hot, 8, 100);
        // Not written yet: nothing of `hot` may go, so `cold`'s oldest go.
        hot.evict(usize::MAX, Offset(0));
        assert_eq!((cold.bytes(), hot.bytes()), (200, 800));
        assert_eq!(budget.bytes(), 1000);
        // Written: `cold`'s rest go first (older), then `hot`'s oldest.
        fill_after(&mut hot, 8, 4, 100);
        hot.evict(usize::MAX, Offset(24));
        assert_eq!((cold.bytes(), hot.bytes()), (0, 1000));
        let mut out = Vec::new();
        assert_eq!(hot.read(Offset(2), 100, &mut out), None, "oldest gone");
        assert_eq!(hot.read(Offset(4), 100, &mut out), Some(Offset(6)));
        // A closed log gives its bytes back.
        drop(hot);
        assert_eq!(budget.bytes(), 0);
        fill_after(&mut cold, 5, 3, 100);
        cold.evict(usize::MAX, Offset(16));
        assert_eq!(cold.bytes(), 300);
    }

    fn fill_after(cache: &mut TailCache, from: u64, batches: u64, len: usize) {
        for i in from..from + batches {
            cache.push(
                Offset(i * 2),
                Offset(i * 2 + 2),
                Bytes::from(vec![0u8; len]),
            );
        }
    }

    #[test]
    fn stale_entries_are_compacted() {
        let budget = TailCacheBudget::new(10_000);
        let mut cache = TailCache::new(budget.clone());
        for round in 0..100u64 {
            // Each round caches 50 batches and truncates them away: 50 stale entries.
            let start = 0;
            for i in 0..50 {
                cache.push(
                    Offset(start + i),
                    Offset(start + i + 1),
                    Bytes::from(vec![0u8; 10]),
                );
            }
            cache.truncate(Offset(start));
            cache.evict(usize::MAX, Offset(start));
            assert_eq!(budget.bytes(), 0, "round {round}");
        }
        let entries = budget.shared.borrow().order.len();
        assert!(entries <= STALE_ENTRIES_SLACK + 50, "{entries} entries");
    }
}
