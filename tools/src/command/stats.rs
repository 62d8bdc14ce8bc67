//! `shardlog stats DIR`: per partition, the segments, bytes, records, offset range and
//! time range, from a full scan of the data (indexes are not trusted for it). Offsets run
//! from the first segment's base to the log end (`log_end`, the next offset to assign);
//! timestamps from the smallest batch base timestamp to the largest max timestamp.
//!
//! Output (stdout), one block per partition:
//! ```text
//! <partition dir>
//!   segments 7  bytes 458752 (on disk 462848)  batches 500  records 1500
//!   offsets 0..1500  timestamps 1000..1499
//! ```
//! A partition with findings gets a line pointing at `shardlog verify`.

use std::path::Path;

use crate::Outcome;
use crate::check;
use crate::error::ToolError;
use crate::output::outln;
use crate::progress;
use crate::scan;

/// Runs `stats` on a data directory or a partition directory.
pub fn run(dir: &Path) -> Result<Outcome, ToolError> {
    let partitions = scan::partition_dirs(dir)?;
    let bar = progress::bytes_bar(scan::total_segment_bytes(&partitions)?, "stats");
    for partition in &partitions {
        let check = check::check_partition(partition, &bar)?;
        let segments = &check.segments;
        let data: u64 = segments.iter().map(|s| s.accounting.data_len).sum();
        let on_disk: u64 = segments.iter().map(|s| s.file_len).sum();
        let batches: u64 = segments.iter().map(|s| s.accounting.batch_count).sum();
        let records: u64 = segments.iter().map(|s| s.accounting.record_count).sum();
        let first = segments.iter().filter_map(|s| s.min_timestamp).min();
        let last = segments
            .iter()
            .filter_map(|s| s.accounting.max_timestamp)
            .max();
        let start = check.log_start().unwrap_or_default();
        let end = check.log_end().unwrap_or_default();
        let times = match (first, last) {
            (Some(first), Some(last)) => format!("{first}..{last}"),
            _ => "none".to_owned(),
        };
        bar.suspend(|| -> Result<(), ToolError> {
            outln!("{}", partition.display())?;
            outln!(
                "  segments {}  bytes {data} (on disk {on_disk})  batches {batches}  records {records}",
                segments.len()
            )?;
            outln!("  offsets {start}..{end}  timestamps {times}")?;
            if !check.findings.is_empty() {
                outln!("  {} problem(s): run `shardlog verify`", check.findings.len())?;
            }
            Ok(())
        })?;
    }
    bar.finish_and_clear();
    Ok(Outcome::Clean)
}
