//! `shardlog verify DIR`: checks every partition under DIR (see `check.rs` for what counts
//! as a finding) and prints one line per finding, naming partition, file, byte position,
//! offset and kind ("torn tail" or "damage" for batches). Exit 0 clean, 1 findings.
//!
//! Output (stdout): `<partition dir>: <kind>: <file> byte <n> offset <n>: <detail>` per
//! finding, `<partition dir>: note: ...` per note, then a summary line.

use std::path::Path;

use crate::Outcome;
use crate::check;
use crate::error::ToolError;
use crate::output::outln;
use crate::progress;
use crate::scan;

/// Runs `verify` on a data directory or a partition directory.
pub fn run(dir: &Path) -> Result<Outcome, ToolError> {
    let partitions = scan::partition_dirs(dir)?;
    let bar = progress::bytes_bar(scan::total_segment_bytes(&partitions)?, "verify");
    let mut finding_count = 0usize;
    let mut segment_count = 0usize;
    for partition in &partitions {
        let check = check::check_partition(partition, &bar)?;
        segment_count += check.segments.len();
        for finding in &check.findings {
            bar.suspend(|| outln!("{}: {finding}", partition.display()))?;
        }
        for note in &check.notes {
            bar.suspend(|| outln!("{}: note: {note}", partition.display()))?;
        }
        finding_count += check.findings.len();
    }
    bar.finish_and_clear();
    outln!(
        "verified {} partition(s), {segment_count} segment(s): {}",
        partitions.len(),
        if finding_count == 0 {
            "clean".to_owned()
        } else {
            format!("{finding_count} problem(s) found")
        }
    )?;
    Ok(if finding_count == 0 {
        Outcome::Clean
    } else {
        Outcome::ProblemsFound
    })
}
