//! The engine benchmark's report: the final table on stdout and the JSON file
//! (command line, git commit, configuration, results).

use std::path::Path;

use serde::Serialize;

use crate::latency::{Percentiles, human_us};

/// Configuration echoed into the report.
#[derive(Debug, Clone, Serialize)]
pub struct EngineConfigReport {
    /// Flush policy.
    pub flush: String,
    /// Concurrent appenders.
    pub appenders: usize,
    /// Partition logs.
    pub partitions: usize,
    /// Value bytes per record.
    pub record_size: usize,
    /// Records per batch.
    pub batch_records: usize,
    /// Bytes per batch as encoded.
    pub batch_bytes: usize,
    /// Segment size.
    pub segment_bytes: u64,
}

/// What an append run measured.
#[derive(Debug, Clone, Serialize)]
pub struct EngineResults {
    /// Wall time of the measured run.
    pub elapsed_s: f64,
    /// Batches appended and acknowledged.
    pub batches: u64,
    /// Records appended.
    pub records: u64,
    /// Batch bytes appended.
    pub bytes: u64,
    /// Batches per second.
    pub batches_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// MiB of batches per second.
    pub mib_per_s: f64,
    /// Flushes (group-commit rounds that wrote).
    pub flushes: u64,
    /// fdatasyncs.
    pub syncs: u64,
    /// fdatasyncs per second.
    pub syncs_per_s: f64,
    /// Batches served by one fdatasync on average.
    pub batches_per_sync: f64,
    /// Bytes written to segment files (with padding and rewritten blocks).
    pub bytes_written: u64,
    /// Append latency (call to resolution), microseconds.
    pub append_latency_us: Percentiles,
}

/// What an `--open-only` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenResults {
    /// Partitions opened.
    pub partitions: usize,
    /// Segments in them.
    pub segments: usize,
    /// Bytes of batches in them.
    pub data_bytes: u64,
    /// Wall time to open all of them.
    pub open_s: f64,
}

/// The whole JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: Vec<String>,
    /// `git rev-parse HEAD` where available.
    pub git_commit: Option<String>,
    /// The configuration.
    pub config: EngineConfigReport,
    /// Append results, for a normal run.
    pub results: Option<EngineResults>,
    /// Open results, for `--open-only`.
    pub open: Option<OpenResults>,
}

impl Report {
    /// Writes the final table to `out` (stdout).
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let c = &self.config;
        writeln!(
            out,
            "engine: flush={} appenders={} partitions={} batch={} records x {} B ({} B)",
            c.flush, c.appenders, c.partitions, c.batch_records, c.record_size, c.batch_bytes
        )?;
        if let Some(r) = &self.results {
            writeln!(out, "  elapsed      {:>12.2} s", r.elapsed_s)?;
            writeln!(
                out,
                "  batches/s    {:>12.0}   ({} batches)",
                r.batches_per_s, r.batches
            )?;
            writeln!(out, "  records/s    {:>12.0}", r.records_per_s)?;
            writeln!(out, "  MiB/s        {:>12.1}", r.mib_per_s)?;
            writeln!(
                out,
                "  fdatasync/s  {:>12.0}   ({:.1} batches per sync)",
                r.syncs_per_s, r.batches_per_sync
            )?;
            let l = &r.append_latency_us;
            writeln!(
                out,
                "  append latency  p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
                human_us(l.p50),
                human_us(l.p90),
                human_us(l.p99),
                human_us(l.p999),
                human_us(l.p9999),
                human_us(l.max)
            )?;
        }
        if let Some(o) = &self.open {
            writeln!(
                out,
                "  opened {} partitions, {} segments, {:.2} GiB of data in {:.3} s",
                o.partitions,
                o.segments,
                o.data_bytes as f64 / f64::from(1u32 << 30),
                o.open_s
            )?;
        }
        Ok(())
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")?;
        Ok(())
    }
}

/// The current git commit, if this runs inside a checkout.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
