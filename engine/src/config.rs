//! `EngineConfig` and `FlushPolicy`: parsed at the edge, validated once, asserted again by
//! the partition log.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::BLOCK_SIZE;

/// When an append counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Append resolves after the batch is written and fdatasync'ed (default):
    /// acknowledged means on disk.
    Always,
    /// Append resolves after the write reaches the device; fdatasync runs every interval
    /// in the background, from [`crate::PartitionLog::tick`].
    Interval(Duration),
    /// Append resolves after the write; fdatasync on roll and close, and from
    /// [`crate::PartitionLog::tick`] once 128 MiB are unsynced.
    Never,
}

impl FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            _ => {
                let ms = s.strip_prefix("interval=").ok_or_else(|| {
                    format!("flush policy {s:?}: expected always, interval=MS or never")
                })?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|e| format!("flush interval {ms:?}: {e}"))?;
                if ms == 0 {
                    return Err("flush interval must be at least 1 ms".into());
                }
                Ok(FlushPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval(d) => write!(f, "interval={}", d.as_millis()),
            FlushPolicy::Never => f.write_str("never"),
        }
    }
}

/// Configuration of one partition log.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// When appends resolve. Default `always`.
    pub flush: FlushPolicy,
    /// Roll the active segment once it holds this many bytes. Default 128 MiB;
    /// bounds 64 KiB ..= 1 GiB, a multiple of 4 KiB.
    pub segment_bytes: u64,
    /// The active segment's file is preallocated (fallocate) at least this much at a time,
    /// ahead of the write position, by `tick` (Redpanda's `segment_fallocation_step`),
    /// never past `segment_bytes`; under `interval` and `never`, a partition appended
    /// faster takes about a second of its appends at a time (`segment::preallocation_step`;
    /// under `always` that made produces slower, issue 15). A new segment starts with one
    /// step. Default 16 MiB; bounds 4 KiB ..= 1 GiB, a multiple of 4 KiB.
    pub preallocation_step_bytes: u64,
    /// The upkeep (`tick`) writes zeros into the preallocated blocks up to this far past
    /// the write position, so that appends land on written blocks: fdatasync after a
    /// write into unwritten (fallocated) blocks also commits their conversion to the
    /// filesystem journal, which costs about as much again. Zero turns it off. Default
    /// 4 MiB; bounds 0 ..= 256 MiB, a multiple of 4 KiB.
    pub zero_fill_ahead_bytes: u64,
    /// Roll the active segment once its first batch is this old (by batch timestamp,
    /// as Kafka's `log.roll.ms`), checked by `tick`. Default 7 days.
    pub segment_age: Option<Duration>,
    /// Bytes of log between two sparse index entries. Default 4096; bounds 512 ..= 1 MiB.
    pub index_interval_bytes: u32,
    /// Delete the oldest sealed segments while the log holds more bytes. Default none.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older. Default 7 days.
    pub retention_age: Option<Duration>,
    /// Recent batches kept in memory for tail reads. Default 8 MiB; bounds 0 ..= 1 GiB.
    pub tail_cache_bytes: usize,
    /// Unwritten bytes above which appends wait for the flush. Default 32 MiB;
    /// bounds 64 KiB ..= 1 GiB.
    pub write_buffer_bytes: usize,
    /// A flush splits its write into chunks of this size issued together, so a large
    /// flush keeps several requests in flight. Default 1 MiB; a multiple of 4 KiB.
    pub write_chunk_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        EngineConfig {
            flush: FlushPolicy::Always,
            segment_bytes: 128 << 20,
            preallocation_step_bytes: 16 << 20,
            zero_fill_ahead_bytes: 4 << 20,
            segment_age: Some(7 * DAY),
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_age: Some(7 * DAY),
            tail_cache_bytes: 8 << 20,
            write_buffer_bytes: 32 << 20,
            write_chunk_bytes: 1 << 20,
        }
    }
}

impl EngineConfig {
    /// The first preallocation of a new segment, and each later step: one step, never
    /// more than the segment may hold.
    #[must_use]
    pub fn first_preallocation(&self) -> u64 {
        self.preallocation_step_bytes.min(self.segment_bytes)
    }

    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<()> {
        let block = BLOCK_SIZE as u64;
        let fail = |field, reason| Err(Error::Config { field, reason });
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes) || self.segment_bytes % block != 0 {
            return fail("segment_bytes", "64 KiB ..= 1 GiB, a multiple of 4 KiB");
        }
        if !(block..=1 << 30).contains(&self.preallocation_step_bytes)
            || self.preallocation_step_bytes % block != 0
        {
            return fail(
                "preallocation_step_bytes",
                "4 KiB ..= 1 GiB, a multiple of 4 KiB",
            );
        }
        if self.zero_fill_ahead_bytes > 256 << 20 || self.zero_fill_ahead_bytes % block != 0 {
            return fail(
                "zero_fill_ahead_bytes",
                "0 ..= 256 MiB, a multiple of 4 KiB",
            );
        }
        if !(512..=1 << 20).contains(&self.index_interval_bytes) {
            return fail("index_interval_bytes", "512 ..= 1 MiB");
        }
        if self.tail_cache_bytes > 1 << 30 {
            return fail("tail_cache_bytes", "at most 1 GiB");
        }
        if !(64 << 10..=1 << 30).contains(&self.write_buffer_bytes) {
            return fail("write_buffer_bytes", "64 KiB ..= 1 GiB");
        }
        if self.write_chunk_bytes == 0 || self.write_chunk_bytes % BLOCK_SIZE != 0 {
            return fail("write_chunk_bytes", "a positive multiple of 4 KiB");
        }
        Ok(())
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
    fn flush_policy_parses_and_prints() {
        for text in ["always", "never", "interval=250"] {
            assert_eq!(text.parse::<FlushPolicy>().unwrap().to_string(), text);
        }
        for bad in ["", "sometimes", "interval=", "interval=0", "interval=-3"] {
            assert!(bad.parse::<FlushPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_are_valid_and_bounds_are_enforced() {
        EngineConfig::default().validate().unwrap();
        let bad = EngineConfig {
            segment_bytes: 5000,
            ..EngineConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Config {
                field: "segment_bytes",
                ..
            })
        ));
    }
}
