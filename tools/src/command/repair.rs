//! `shardlog repair DIR [--apply]`: checks every partition (as `verify` does), prints a
//! plan, and carries it out only with `--apply`. Nothing is destroyed: damaged data is
//! copied aside first.
//!
//! Plan, per finding (see `check.rs` for the findings):
//! - torn tail (last segment) -> cut: keep the valid prefix, zero everything from the cut
//!   on (truncate to the block holding the cut, rewrite that block zero-padded, restore
//!   the file length). This is what recovery does on open; nothing acknowledged is lost.
//! - damage -> copy the whole segment to `<name>.log.corrupt` (the engine ignores that
//!   name), then cut it as above after its last valid batch; a sealed segment also gets
//!   its `.index`/`.timeindex` rewritten for the shorter data. A sealed segment with no
//!   valid batch at all is moved aside whole (and its index files removed). The offsets
//!   lost leave a gap before the next segment, which the engine serves around and
//!   `verify` reports as a note.
//! - index missing, undecodable or wrong (sealed segment, data intact) -> rebuild both index
//!   files from a scan, the way the engine builds them (an entry every 4096 bytes).
//! - unreadable checkpoint -> move it aside to `checkpoint.corrupt`; the engine then starts
//!   with the high watermark at the log start, as it does for an unreadable one.
//! - overlapping segments -> no automatic repair (reported; exit 1).
//!
//! After `--apply` each repaired partition is checked again and what remains is printed.
//! Exit 0: nothing to do, or everything repaired. Exit 1: repairs needed and `--apply` not
//! given, or problems left after it.
//!
//! `--apply` takes the data directory's lock first (`dir_locks.rs`) and is refused while a
//! `shardlogd` (or another repair or import) holds it. A stdout closed by its reader drops
//! the rest of the output but not the rest of the work: a repair stopped between two
//! steps would help nobody.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use shardlog_engine::Offset;
use shardlog_engine::checkpoint::CHECKPOINT_FILE;
use shardlog_engine::segment::{BLOCK_SIZE, INDEX_SUFFIX, TIME_INDEX_SUFFIX, align_down, align_up};

use crate::Outcome;
use crate::args::RepairArgs;
use crate::check::{self, FindingKind, PartitionCheck};
use crate::dir_locks;
use crate::error::ToolError;
use crate::output::line_unless_closed;
use crate::progress;
use crate::scan::{self, SegmentScan};

/// One step of a repair plan; `segment` indexes [`PartitionCheck::segments`].
#[derive(Clone, Debug)]
enum Action {
    /// Zero the torn tail of the last segment from `position` on.
    CutTornTail { segment: usize },
    /// Copy the segment aside, then keep only its valid prefix.
    CutDamage { segment: usize, sealed: bool },
    /// Move a sealed segment with nothing valid aside, with its index files.
    SetAside { segment: usize },
    /// Rewrite both index files of a sealed segment from the scan.
    RebuildIndexes { segment: usize },
    /// Move the unreadable checkpoint aside.
    SetAsideCheckpoint,
    /// A problem with no automatic repair.
    Manual(String),
}

/// Runs `repair`.
pub fn run(args: &RepairArgs) -> Result<Outcome, ToolError> {
    // Only --apply writes; it must not change files under a running server, and no server
    // may start on them meanwhile. The plan alone reads, like verify.
    let _locks = if args.apply {
        dir_locks::lock_served_ancestors(&args.dir)?
    } else {
        Vec::new()
    };
    let partitions = scan::partition_dirs(&args.dir)?;
    let bar = progress::bytes_bar(scan::total_segment_bytes(&partitions)?, "repair");
    let (mut pending, mut left) = (0usize, 0usize);
    // A closed stdout drops the rest of the output, never the rest of the work.
    let mut closed = false;
    for partition in &partitions {
        let check = check::check_partition(partition, &bar)?;
        let actions = plan(&check);
        bar.suspend(|| print_plan(&mut closed, &check, &actions))?;
        if actions.is_empty() {
            continue;
        }
        if !args.apply {
            pending += actions.len();
            continue;
        }
        for action in &actions {
            let done = apply(&check, action)?;
            bar.suspend(|| line_unless_closed(&mut closed, format_args!("  done: {done}")))?;
        }
        sync_dir(partition)?;
        let after = check::check_partition(partition, &ProgressBar::hidden())?;
        for finding in &after.findings {
            bar.suspend(|| {
                line_unless_closed(&mut closed, format_args!("  still wrong: {finding}"))
            })?;
        }
        left += after.findings.len();
    }
    bar.finish_and_clear();
    if pending > 0 {
        line_unless_closed(
            &mut closed,
            format_args!(
                "{pending} repair(s) planned; nothing changed. Run again with --apply to carry them out."
            ),
        )?;
        return Ok(Outcome::ProblemsFound);
    }
    if left > 0 {
        line_unless_closed(
            &mut closed,
            format_args!("{left} problem(s) left that need manual work"),
        )?;
        return Ok(Outcome::ProblemsFound);
    }
    let summary = if args.apply {
        "repair done; verify is clean"
    } else {
        "nothing to repair"
    };
    line_unless_closed(&mut closed, format_args!("{summary}"))?;
    Ok(Outcome::Clean)
}

/// The actions that fix `check`'s findings, in the order they run.
fn plan(check: &PartitionCheck) -> Vec<Action> {
    let mut actions = Vec::new();
    let last = check.segments.len().saturating_sub(1);
    for (segment, scan) in check.segments.iter().enumerate() {
        let kinds: Vec<FindingKind> = check
            .findings
            .iter()
            .filter(|f| f.segment == Some(segment))
            .map(|f| f.kind)
            .collect();
        let sealed = segment != last;
        if kinds.contains(&FindingKind::Damage) {
            if sealed && scan.accounting.batch_count == 0 {
                actions.push(Action::SetAside { segment });
            } else {
                actions.push(Action::CutDamage { segment, sealed });
            }
        } else if kinds.contains(&FindingKind::TornTail) {
            actions.push(Action::CutTornTail { segment });
        } else if kinds.contains(&FindingKind::Index) {
            actions.push(Action::RebuildIndexes { segment });
        }
    }
    for finding in &check.findings {
        match finding.kind {
            FindingKind::Checkpoint => actions.push(Action::SetAsideCheckpoint),
            FindingKind::Overlap => actions.push(Action::Manual(finding.to_string())),
            _ => {}
        }
    }
    actions
}

fn print_plan(
    closed: &mut bool,
    check: &PartitionCheck,
    actions: &[Action],
) -> Result<(), ToolError> {
    let dir = check.dir.display();
    if actions.is_empty() {
        return line_unless_closed(closed, format_args!("{dir}: nothing to repair"));
    }
    line_unless_closed(closed, format_args!("{dir}: repair plan"))?;
    for finding in &check.findings {
        line_unless_closed(closed, format_args!("  found: {finding}"))?;
    }
    for (i, action) in actions.iter().enumerate() {
        let step = describe(check, action);
        line_unless_closed(closed, format_args!("  {}. {step}", i + 1))?;
    }
    Ok(())
}

fn describe(check: &PartitionCheck, action: &Action) -> String {
    let segment = |i: usize| check.segments.get(i);
    let name = |i: usize| segment(i).map(|s| s.file.name()).unwrap_or_default();
    let next_base = |i: usize| {
        segment(i + 1).map_or_else(
            || "the segment's end".to_owned(),
            |s| s.file.base.to_string(),
        )
    };
    match *action {
        Action::CutTornTail { segment: i } => {
            let (position, offset) = cut_point(segment(i));
            format!(
                "cut the torn tail of {} at byte {position}: zero everything after offset {offset}; \
                 nothing acknowledged is lost",
                name(i)
            )
        }
        Action::CutDamage { segment: i, sealed } => {
            let (position, offset) = cut_point(segment(i));
            format!(
                "copy {0} aside to {0}.corrupt, keep its valid bytes 0..{position} (offsets up to {offset}), \
                 zero the rest{1}; offsets {offset}..{2} are lost",
                name(i),
                if sealed {
                    " and rewrite its .index and .timeindex"
                } else {
                    ""
                },
                next_base(i)
            )
        }
        Action::SetAside { segment: i } => format!(
            "nothing valid in sealed {0}: move it aside to {0}.corrupt and remove its index files; \
             offsets {1}..{2} are lost",
            name(i),
            segment(i).map(|s| s.file.base).unwrap_or_default(),
            next_base(i)
        ),
        Action::RebuildIndexes { segment: i } => {
            let scan = segment(i);
            format!(
                "rebuild {}'s .index and .timeindex from a scan ({} batches, offsets {}..{})",
                name(i),
                scan.map_or(0, |s| s.accounting.batch_count),
                scan.map(|s| s.file.base).unwrap_or_default(),
                scan.map(|s| s.accounting.next_offset).unwrap_or_default()
            )
        }
        Action::SetAsideCheckpoint => format!(
            "move the unreadable {CHECKPOINT_FILE} aside to {CHECKPOINT_FILE}.corrupt \
             (the engine then starts the high watermark at the log start)"
        ),
        Action::Manual(ref finding) => format!("no automatic repair for: {finding}"),
    }
}

/// Byte position and offset after the last valid batch of a segment.
fn cut_point(scan: Option<&SegmentScan>) -> (u64, Offset) {
    scan.map_or((0, Offset(0)), |s| {
        (s.accounting.data_len, s.accounting.next_offset)
    })
}

/// Carries out one action; returns what it did.
fn apply(check: &PartitionCheck, action: &Action) -> Result<String, ToolError> {
    let segment = |i: usize| {
        check.segments.get(i).ok_or(ToolError::BadPath {
            path: check.dir.clone(),
            reason: "segment vanished",
        })
    };
    match *action {
        Action::CutTornTail { segment: i } => {
            let scan = segment(i)?;
            cut(&scan.file.path, scan.accounting.data_len)?;
            remove_indexes(scan)?;
            Ok(format!(
                "cut {} at byte {}",
                scan.file.name(),
                scan.accounting.data_len
            ))
        }
        Action::CutDamage { segment: i, sealed } => {
            let scan = segment(i)?;
            let aside = copy_aside(&scan.file.path)?;
            cut(&scan.file.path, scan.accounting.data_len)?;
            if sealed {
                write_indexes(scan)?;
            } else {
                remove_indexes(scan)?;
            }
            Ok(format!(
                "copied {} to {}, cut it at byte {}",
                scan.file.name(),
                aside.display(),
                scan.accounting.data_len
            ))
        }
        Action::SetAside { segment: i } => {
            let scan = segment(i)?;
            let aside = free_aside_name(&scan.file.path);
            fs::rename(&scan.file.path, &aside).map_err(ToolError::io(&scan.file.path))?;
            remove_indexes(scan)?;
            Ok(format!("moved {} to {}", scan.file.name(), aside.display()))
        }
        Action::RebuildIndexes { segment: i } => {
            let scan = segment(i)?;
            write_indexes(scan)?;
            Ok(format!("rebuilt the indexes of {}", scan.file.name()))
        }
        Action::SetAsideCheckpoint => {
            let path = check.dir.join(CHECKPOINT_FILE);
            let aside = free_aside_name(&path);
            fs::rename(&path, &aside).map_err(ToolError::io(&path))?;
            Ok(format!("moved {CHECKPOINT_FILE} to {}", aside.display()))
        }
        Action::Manual(ref finding) => Ok(format!("left for manual work: {finding}")),
    }
}

/// Zeroes `path` from byte `position` on, keeping its length: truncate to the block
/// holding `position`, write that block back zero-padded, extend to the old length.
fn cut(path: &Path, position: u64) -> Result<(), ToolError> {
    let io = ToolError::io(path);
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let keep = align_down(position);
        let mut block = vec![0u8; usize::try_from(position - keep).map_err(io::Error::other)?];
        file.read_exact_at(&mut block, keep)?;
        file.set_len(keep)?;
        if !block.is_empty() {
            block.resize(BLOCK_SIZE, 0);
            file.write_all_at(&block, keep)?;
        }
        file.set_len(len.max(align_up(position)))?;
        file.sync_all()
    })();
    result.map_err(io)
}

/// The first of `<name>.corrupt`, `<name>.corrupt.1`, ... that does not exist.
fn free_aside_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = path.with_file_name(format!("{name}.corrupt"));
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{name}.corrupt.{n}"));
        n += 1;
    }
    candidate
}

/// Copies `path` whole to a free `.corrupt` name, durably.
fn copy_aside(path: &Path) -> Result<PathBuf, ToolError> {
    let aside = free_aside_name(path);
    fs::copy(path, &aside).map_err(ToolError::io(path))?;
    File::open(&aside)
        .and_then(|f| f.sync_all())
        .map_err(ToolError::io(&aside))?;
    Ok(aside)
}

/// Writes both index files of a sealed segment from its scan, each through a `.tmp` file
/// (which the engine deletes if a crash leaves it) renamed into place.
fn write_indexes(scan: &SegmentScan) -> Result<(), ToolError> {
    let accounting = &scan.accounting;
    let index = accounting.index.encode(&accounting.sealed_meta());
    let time_index = accounting
        .time_index
        .encode(accounting.max_timestamp.unwrap_or_default());
    for (suffix, bytes) in [(INDEX_SUFFIX, index), (TIME_INDEX_SUFFIX, time_index)] {
        let path = scan.file.sibling(suffix);
        let tmp = scan.file.sibling(&format!("{suffix}.tmp"));
        fs::write(&tmp, &bytes).map_err(ToolError::io(&tmp))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(ToolError::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(ToolError::io(&path))?;
    }
    Ok(())
}

/// Removes a segment's index files if they exist.
fn remove_indexes(scan: &SegmentScan) -> Result<(), ToolError> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = scan.file.sibling(suffix);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(ToolError::io(&path)(e)),
            _ => {}
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ToolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ToolError::io(dir))
}
