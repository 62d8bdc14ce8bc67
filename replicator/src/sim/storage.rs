//! The simulated partition log of one node: the engine's real [`PartitionLog`] on its
//! in-memory, crashable [`SimStorage`]. The node's [`ReplicaDriver`](crate::driver::ReplicaDriver)
//! shares it (`shared`) and performs the replica's appends and truncations on it; the
//! simulation only syncs it on its schedule, crashes it, and reads it for the checkers and
//! the consumer (every storage operation of `SimStorage` completes at once, so `block_on`
//! never waits).
//!
//! The flush policy is `never` and the simulation syncs on its own schedule, so a crash
//! loses an unsynced suffix the way a real one does: `SimStorage::crash` keeps the synced
//! bytes, a random prefix of the unsynced writes and possibly a torn last write, and
//! reopening runs the engine's recovery (scan, cut at the first bad batch). The recovered
//! log may therefore hold more than the durable prefix: batches a replica wrote and never
//! acknowledged, which replication must reconcile.
//!
//! With `retention_bytes` set, [`SimLog::retain`] runs the engine's retention (capped at
//! the high watermark the driver keeps in the log), so logs start past 0 and a follower
//! that fell behind must be reset to its leader's log start.

use std::fmt;

use std::rc::Rc;

use futures::executor::block_on;
use shardlog_engine::{EngineConfig, FlushPolicy, Offset, PartitionLog, SimStorage, TimestampMs};

/// Where the log lives in the in-memory storage.
const DIR: &str = "/sim/partition";
/// Bytes asked of one read.
const READ_BYTES: usize = 256 << 10;

/// One node's log.
pub struct SimLog {
    storage: SimStorage,
    config: EngineConfig,
    log: Option<Rc<PartitionLog<SimStorage>>>,
    crashes: u64,
}

impl fmt::Debug for SimLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLog")
            .field("log_end", &self.log_end())
            .field("durable_end", &self.durable_end())
            .field("crashes", &self.crashes)
            .finish()
    }
}

impl Default for SimLog {
    fn default() -> Self {
        SimLog::new(None)
    }
}

/// Small segments and a small tail cache, so rolls happen and reads reach the storage.
/// No retention by age (the simulation's clock is virtual): by size only, if asked.
fn config(retention_bytes: Option<u64>) -> EngineConfig {
    EngineConfig {
        flush: FlushPolicy::Never,
        segment_bytes: 64 << 10,
        tail_cache_bytes: 16 << 10,
        write_buffer_bytes: 64 << 10,
        retention_bytes,
        retention_age: None,
        ..EngineConfig::default()
    }
}

fn open(storage: &SimStorage, config: &EngineConfig) -> Rc<PartitionLog<SimStorage>> {
    Rc::new(
        block_on(PartitionLog::open(storage.clone(), DIR, config.clone()))
            .expect("the engine recovers any crash of SimStorage"),
    )
}

impl SimLog {
    /// An empty log; retention keeps at most `retention_bytes` (whole sealed segments,
    /// never past the high watermark), or everything.
    #[must_use]
    pub fn new(retention_bytes: Option<u64>) -> SimLog {
        let storage = SimStorage::new();
        let config = config(retention_bytes);
        let log = open(&storage, &config);
        SimLog {
            storage,
            config,
            log: Some(log),
            crashes: 0,
        }
    }

    /// The first offset held.
    #[must_use]
    pub fn log_start(&self) -> Offset {
        self.log().log_start()
    }

    /// The engine's retention, as the server's upkeep runs it (capped at the high
    /// watermark the driver keeps in the log); returns the log start.
    pub fn retain(&self) -> Offset {
        let log = self.log();
        if self.config.retention_bytes.is_some() {
            block_on(log.apply_retention(TimestampMs(0))).expect("retention");
        }
        log.log_start()
    }

    fn log(&self) -> &Rc<PartitionLog<SimStorage>> {
        self.log
            .as_ref()
            .expect("the log is open between operations")
    }

    /// The next offset.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.log().log_end()
    }

    /// End of the synced prefix.
    #[must_use]
    pub fn durable_end(&self) -> Offset {
        self.log().durable_end()
    }

    /// The log, for the node's driver.
    #[must_use]
    pub fn shared(&self) -> Rc<PartitionLog<SimStorage>> {
        self.log().clone()
    }

    /// Crashes the storage (losing unsynced writes, maybe tearing the last one) and
    /// reopens the log through the engine's recovery. The node's driver must be gone.
    pub fn crash(&mut self) {
        let log = self.log.take().expect("the log is open between operations");
        assert_eq!(
            Rc::strong_count(&log),
            1,
            "the crashed node's driver still runs"
        );
        drop(log);
        self.crashes += 1;
        self.storage
            .crash(self.crashes.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.log = Some(open(&self.storage, &self.config));
    }

    /// The stored batches in `[from, until)`, concatenated; `None` if `from` is not a
    /// batch boundary of this log.
    #[must_use]
    pub fn read(&self, from: Offset, until: Offset) -> Option<Vec<u8>> {
        let batches = self.batches_from(from);
        if from != self.log_end() && batches.first().is_none_or(|(b, _)| *b != from) {
            return None;
        }
        let mut out = Vec::new();
        for (base, bytes) in batches {
            if base >= until {
                break;
            }
            out.extend_from_slice(&bytes);
        }
        Some(out)
    }

    /// Batches starting at or after `from`, in order.
    #[must_use]
    pub fn batches_from(&self, from: Offset) -> Vec<(Offset, Vec<u8>)> {
        let log = self.log();
        let mut out = Vec::new();
        let mut at = from.max(log.log_start());
        while at < log.log_end() {
            let read = block_on(log.read(at, READ_BYTES)).expect("read of a held offset");
            if read.chunks.is_empty() {
                break;
            }
            for (header, bytes) in read.batches() {
                if header.base_offset >= from {
                    out.push((header.base_offset, bytes.to_vec()));
                }
            }
            at = read.next_offset;
        }
        out
    }

    /// The batch starting exactly at `base`, if durable (`durable_only`) or present.
    #[must_use]
    pub fn batch_at(&self, base: Offset, durable_only: bool) -> Option<Vec<u8>> {
        let log = self.log();
        if base < log.log_start() || base >= log.log_end() {
            return None;
        }
        let read = block_on(log.read(base, 1)).ok()?;
        let (header, bytes) = read.batches().next()?;
        if header.base_offset != base || (durable_only && header.next_offset() > self.durable_end())
        {
            return None;
        }
        Some(bytes.to_vec())
    }
}
