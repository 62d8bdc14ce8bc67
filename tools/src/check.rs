//! The offline check of one partition directory, shared by `verify`, `repair` and `stats`:
//! scan every segment, compare sealed segments with their index files, check that
//! segments follow each other, read the checkpoint.
//!
//! Verdicts (README "shardlog verify"):
//! - torn tail: an invalid or partial batch in the LAST segment with nothing but zeros
//!   after it. What a crash during a write leaves; recovery cuts it; nothing acknowledged
//!   is lost.
//! - damage: an invalid batch with data after it, any invalid batch in a sealed segment, or
//!   a sealed segment whose data ends before its index says: data loss.
//! - index: a sealed segment's `.index`/`.timeindex` missing, undecodable, or disagreeing
//!   with the scan. The active (last) segment has no index files on disk by design.
//! - overlap: a segment starting below the previous one's end (the engine refuses it).
//! - checkpoint: the checkpoint file exists but does not decode.
//!
//! Notes (no effect on the exit code): an offset gap between segments (left by `repair`
//! when it cuts or sets aside damaged data; the engine serves around it), a missing
//! checkpoint, a high watermark beyond the log end.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use shardlog_engine::checkpoint::{CHECKPOINT_FILE, Checkpoint};
use shardlog_engine::offset_index::{IndexEntry, OffsetIndex};
use shardlog_engine::recovery::StopKind;
use shardlog_engine::segment::{INDEX_SUFFIX, TIME_INDEX_SUFFIX};
use shardlog_engine::time_index::TimeIndex;
use shardlog_engine::{Offset, TimestampMs};

use crate::error::ToolError;
use crate::scan::{self, SegmentScan};

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A partial last write at the end of the last segment; harmless.
    TornTail,
    /// Invalid data that a crash cannot leave: data loss.
    Damage,
    /// A sealed segment's index file is missing, undecodable or wrong.
    Index,
    /// Segments overlap in offsets.
    Overlap,
    /// The checkpoint file does not decode.
    Checkpoint,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::TornTail => "torn tail",
            FindingKind::Damage => "damage",
            FindingKind::Index => "index",
            FindingKind::Overlap => "overlap",
            FindingKind::Checkpoint => "checkpoint",
        })
    }
}

/// One problem in a partition directory.
#[derive(Clone, Debug)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// Index into [`PartitionCheck::segments`], `None` for the checkpoint.
    pub segment: Option<usize>,
    /// The file it is about.
    pub file: String,
    /// Byte position in that file, where one applies.
    pub position: Option<u64>,
    /// The offset at that position, where one applies.
    pub offset: Option<Offset>,
    /// What is wrong, for a human.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.file)?;
        if let Some(position) = self.position {
            write!(f, " byte {position}")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " offset {offset}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The state of a partition's checkpoint file.
#[derive(Clone, Debug)]
pub enum CheckpointState {
    /// No checkpoint file.
    Missing,
    /// It decodes.
    Readable(Checkpoint),
    /// It exists and does not decode.
    Unreadable,
}

/// Everything the check of one partition directory found.
#[derive(Debug)]
pub struct PartitionCheck {
    /// The partition directory.
    pub dir: PathBuf,
    /// Every segment, by base offset; the last is the active one.
    pub segments: Vec<SegmentScan>,
    /// Problems (any makes `verify` exit 1).
    pub findings: Vec<Finding>,
    /// Remarks that are not problems.
    pub notes: Vec<String>,
    /// The checkpoint.
    pub checkpoint: CheckpointState,
}

impl PartitionCheck {
    /// First offset of the first segment.
    #[must_use]
    pub fn log_start(&self) -> Option<Offset> {
        self.segments.first().map(|s| s.file.base)
    }

    /// The offset after the last valid batch.
    #[must_use]
    pub fn log_end(&self) -> Option<Offset> {
        self.segments.last().map(|s| s.accounting.next_offset)
    }
}

/// Checks one partition directory; `progress` advances by the bytes of each segment.
pub fn check_partition(dir: &Path, progress: &ProgressBar) -> Result<PartitionCheck, ToolError> {
    let files = scan::segment_files(dir)?;
    let last = files.len().saturating_sub(1);
    let mut check = PartitionCheck {
        dir: dir.to_path_buf(),
        segments: Vec::with_capacity(files.len()),
        findings: Vec::new(),
        notes: Vec::new(),
        checkpoint: CheckpointState::Missing,
    };
    for (i, file) in files.into_iter().enumerate() {
        let scan = scan::scan_segment(file, |_, _, _| {})?;
        progress.inc(scan.file_len);
        let sealed = i != last;
        if let Some(finding) = data_finding(&scan, sealed, i) {
            check.findings.push(finding);
        } else if sealed {
            check.findings.extend(index_findings(&scan, i)?);
        }
        check.segments.push(scan);
    }
    sequence_findings(&mut check);
    read_checkpoint(&mut check)?;
    Ok(check)
}

/// The verdict on a segment's data, from where its scan stopped.
fn data_finding(scan: &SegmentScan, sealed: bool, segment: usize) -> Option<Finding> {
    let stop = &scan.stop;
    let reason = stop
        .reason
        .map_or_else(|| "partial batch".to_owned(), |r| r.to_string());
    let (kind, detail) = match (stop.kind, sealed) {
        (StopKind::End, _) => return None,
        (StopKind::TornTail, false) => (
            FindingKind::TornTail,
            format!(
                "{reason}, only zeros after it: a write cut short by a crash; \
                 recovery cuts it, nothing acknowledged is lost"
            ),
        ),
        (StopKind::TornTail, true) => (
            FindingKind::Damage,
            format!("{reason} at the end of a sealed segment: data loss"),
        ),
        (StopKind::Damaged, _) => (
            FindingKind::Damage,
            format!("{reason}, with data after it: data loss from here to the segment's end"),
        ),
    };
    Some(Finding {
        kind,
        segment: Some(segment),
        file: scan.file.name(),
        position: Some(stop.position),
        offset: Some(stop.offset),
        detail,
    })
}

/// Compares a sealed segment whose data scanned clean with its two index files.
fn index_findings(scan: &SegmentScan, segment: usize) -> Result<Vec<Finding>, ToolError> {
    let mut out = Vec::new();
    let mut finding = |kind, file: String, detail: String, at: Option<(u64, Offset)>| {
        out.push(Finding {
            kind,
            segment: Some(segment),
            file,
            position: at.map(|a| a.0),
            offset: at.map(|a| a.1),
            detail,
        });
    };
    let scanned = scan.accounting.sealed_meta();
    let index_path = scan.file.sibling(INDEX_SUFFIX);
    let index_name = file_name(&index_path);
    match read_optional(&index_path)?.map(|bytes| OffsetIndex::decode(&bytes)) {
        None => finding(FindingKind::Index, index_name, "missing".into(), None),
        Some(Err(e)) => finding(
            FindingKind::Index,
            index_name,
            format!("undecodable: {e}"),
            None,
        ),
        Some(Ok((_, meta))) if meta.data_len > scanned.data_len => {
            let end = (scanned.data_len, scan.accounting.next_offset);
            let detail = format!(
                "the data ends here but the index says {} bytes up to offset {}: data loss",
                meta.data_len, meta.next_offset
            );
            finding(FindingKind::Damage, scan.file.name(), detail, Some(end));
        }
        Some(Ok((_, meta))) if meta != scanned => {
            let detail = format!("index meta {meta:?} disagrees with the scan {scanned:?}");
            finding(FindingKind::Index, index_name, detail, None);
        }
        Some(Ok((index, _))) => {
            for entry in index.entries() {
                if let Some(detail) = entry_problem(scan, *entry) {
                    finding(FindingKind::Index, index_name.clone(), detail, None);
                }
            }
        }
    }
    let time_path = scan.file.sibling(TIME_INDEX_SUFFIX);
    let time_name = file_name(&time_path);
    match read_optional(&time_path)?.map(|bytes| TimeIndex::decode(&bytes, scanned.data_len)) {
        None => finding(FindingKind::Index, time_name, "missing".into(), None),
        Some(Err(e)) => finding(
            FindingKind::Index,
            time_name,
            format!("undecodable: {e}"),
            None,
        ),
        Some(Ok((time_index, max_timestamp))) => {
            let scanned_max = scan.accounting.max_timestamp.unwrap_or_default();
            if max_timestamp != scanned_max {
                let detail = format!("max timestamp {max_timestamp}, the scan found {scanned_max}");
                finding(FindingKind::Index, time_name.clone(), detail, None);
            }
            for detail in time_entry_problems(scan, &time_index) {
                finding(FindingKind::Index, time_name.clone(), detail, None);
            }
        }
    }
    Ok(out)
}

/// Why an index entry is wrong: it must point at a batch start whose offset matches.
fn entry_problem(scan: &SegmentScan, entry: IndexEntry) -> Option<String> {
    let expected = scan.file.base.advance(u64::from(entry.relative_offset));
    match scan.batch_at(u64::from(entry.position)) {
        None => Some(format!(
            "entry offset {expected} -> byte {} does not point at a batch start",
            entry.position
        )),
        Some(batch) if batch.base_offset != expected => Some(format!(
            "entry offset {expected} -> byte {} points at the batch of offset {}",
            entry.position, batch.base_offset
        )),
        Some(_) => None,
    }
}

/// Problems of the time index's entries. Its entries are private to the engine, so each is
/// reached through `lookup`: entry k answers every target just above its timestamp, and
/// those timestamps are batch max timestamps (or the minimum for the first entry).
fn time_entry_problems(scan: &SegmentScan, time_index: &TimeIndex) -> Vec<String> {
    let mut targets: Vec<TimestampMs> = scan.batches.iter().map(|b| b.max_timestamp).collect();
    targets.push(TimestampMs(i64::MIN));
    targets.sort();
    targets.dedup();
    let mut seen: Vec<IndexEntry> = Vec::new();
    for target in targets {
        let next = TimestampMs(target.0.saturating_add(1));
        if let Some(entry) = time_index.lookup(next) {
            if !seen.contains(&entry) {
                seen.push(entry);
            }
        }
    }
    seen.into_iter()
        .filter_map(|entry| entry_problem(scan, entry))
        .collect()
}

/// Overlaps (findings) and gaps (notes) between consecutive segments.
fn sequence_findings(check: &mut PartitionCheck) {
    for (i, pair) in check.segments.windows(2).enumerate() {
        let [previous, segment] = pair else { continue };
        let (end, base) = (previous.accounting.next_offset, segment.file.base);
        if end > base {
            check.findings.push(Finding {
                kind: FindingKind::Overlap,
                segment: Some(i + 1),
                file: segment.file.name(),
                position: Some(0),
                offset: Some(base),
                detail: format!(
                    "starts at offset {base} but {} ends at {end}; the engine refuses to open it",
                    previous.file.name()
                ),
            });
        } else if end < base {
            check.notes.push(format!(
                "gap: offsets {end}..{base} missing before {} (left by a repair, or by damage above)",
                segment.file.name()
            ));
        }
    }
}

fn read_checkpoint(check: &mut PartitionCheck) -> Result<(), ToolError> {
    let path = check.dir.join(CHECKPOINT_FILE);
    check.checkpoint = match read_optional(&path)? {
        None => {
            check.notes.push(
                "no checkpoint file: the engine starts the high watermark at the log start".into(),
            );
            CheckpointState::Missing
        }
        Some(bytes) => match Checkpoint::decode(&bytes) {
            Some(checkpoint) => CheckpointState::Readable(checkpoint),
            None => {
                check.findings.push(Finding {
                    kind: FindingKind::Checkpoint,
                    segment: None,
                    file: CHECKPOINT_FILE.to_owned(),
                    position: None,
                    offset: None,
                    detail:
                        "does not decode: the high watermark and leader-epoch history are lost \
                             (the engine restarts the high watermark at the log start)"
                            .into(),
                });
                CheckpointState::Unreadable
            }
        },
    };
    if let (CheckpointState::Readable(cp), Some(end)) = (&check.checkpoint, check.log_end()) {
        if cp.high_watermark > end {
            check.notes.push(format!(
                "checkpoint high watermark {} is beyond the log end {end}; the engine lowers it on open",
                cp.high_watermark
            ));
        }
    }
    Ok(())
}

/// The bytes of `path`, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ToolError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ToolError::io(path)(e)),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
