//! The simulated partition log of one node: whole batches in memory with a durable
//! prefix. A crash loses the unsynced suffix, as a real crash loses unsynced pages.

use shardlog_engine::Offset;
use shardlog_engine::batch::BatchHeader;

/// One node's log.
#[derive(Clone, Debug, Default)]
pub struct SimLog {
    batches: Vec<(Offset, Vec<u8>)>,
    durable_batches: usize,
}

impl SimLog {
    /// The next offset.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.end_of(self.batches.len())
    }

    /// End of the synced prefix.
    #[must_use]
    pub fn durable_end(&self) -> Offset {
        self.end_of(self.durable_batches)
    }

    fn end_of(&self, count: usize) -> Offset {
        count
            .checked_sub(1)
            .and_then(|i| self.batches.get(i))
            .and_then(|(_, bytes)| BatchHeader::parse(bytes).ok())
            .map_or(Offset(0), |h| h.next_offset())
    }

    /// Appends concatenated batches, which must continue the log.
    pub fn append(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let header = BatchHeader::parse(bytes).expect("batch the replica validated");
            assert_eq!(header.base_offset, self.log_end(), "append out of place");
            let (one, rest) = bytes.split_at(header.size as usize);
            self.batches.push((header.base_offset, one.to_vec()));
            bytes = rest;
        }
    }

    /// Cuts the log to `log_end`, a batch boundary.
    pub fn truncate(&mut self, log_end: Offset) {
        let keep = self.batches.partition_point(|(base, _)| *base < log_end);
        self.batches.truncate(keep);
        assert_eq!(self.log_end(), log_end, "truncation inside a batch");
        self.durable_batches = self.durable_batches.min(keep);
    }

    /// Makes everything durable.
    pub fn sync(&mut self) {
        self.durable_batches = self.batches.len();
    }

    /// Loses the unsynced suffix.
    pub fn crash(&mut self) {
        self.batches.truncate(self.durable_batches);
    }

    /// Index of the batch starting at `offset`, or where it would be.
    fn index_of(&self, offset: Offset) -> usize {
        self.batches.partition_point(|(base, _)| *base < offset)
    }

    /// The stored batches in `[from, until)`, concatenated; `None` if `from` is not a
    /// batch boundary of this log.
    #[must_use]
    pub fn read(&self, from: Offset, until: Offset) -> Option<Vec<u8>> {
        let start = self.index_of(from);
        if from != self.log_end() && self.batches.get(start).is_none_or(|(b, _)| *b != from) {
            return None;
        }
        let mut out = Vec::new();
        for (base, bytes) in self.batches.get(start..).unwrap_or_default() {
            if *base >= until {
                break;
            }
            out.extend_from_slice(bytes);
        }
        Some(out)
    }

    /// Batches starting at or after `from`, in order.
    pub fn batches_from(&self, from: Offset) -> impl Iterator<Item = &(Offset, Vec<u8>)> {
        self.batches
            .get(self.index_of(from)..)
            .unwrap_or_default()
            .iter()
    }

    /// The batch starting exactly at `base`, if durable (`durable_only`) or present.
    #[must_use]
    pub fn batch_at(&self, base: Offset, durable_only: bool) -> Option<&[u8]> {
        let at = self.index_of(base);
        if durable_only && at >= self.durable_batches {
            return None;
        }
        match self.batches.get(at) {
            Some((b, bytes)) if *b == base => Some(bytes),
            _ => None,
        }
    }
}
