//! Walking a data directory and scanning segment files, read-only, with `std::fs`.
//!
//! Layout: `DATA/<topic>/<partition>/<20-digit base offset>.log` (see the engine's crate
//! docs). A partition directory is any directory holding at least one segment file; a
//! data directory holds them two levels down. A segment is scanned whole, in memory (at
//! most one segment, `segment_bytes`, at a time), with the engine's own recovery
//! [`Scanner`] and [`classify_stop`], and its batches are accounted with the engine's
//! [`Segment::track_batch`], so the indexes rebuilt here are the ones the engine writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use shardlog_engine::batch::{BatchHeader, Corruption};
use shardlog_engine::recovery::{Scanner, Step, StopKind, classify_stop};
use shardlog_engine::segment::{self, Segment};
use shardlog_engine::{EngineConfig, Offset, TimestampMs};

use crate::error::ToolError;

/// A segment `.log` file of a partition.
#[derive(Clone, Debug)]
pub struct SegmentFile {
    /// Base offset, from the file name.
    pub base: Offset,
    /// The `.log` file.
    pub path: PathBuf,
}

impl SegmentFile {
    /// The file name (`00000000000000000000.log`).
    #[must_use]
    pub fn name(&self) -> String {
        segment::segment_file_name(self.base, segment::LOG_SUFFIX)
    }

    /// The path of this segment's file with another suffix (`index`, `timeindex`).
    #[must_use]
    pub fn sibling(&self, suffix: &str) -> PathBuf {
        self.path
            .with_file_name(segment::segment_file_name(self.base, suffix))
    }
}

/// A valid batch found by a scan.
#[derive(Clone, Copy, Debug)]
pub struct BatchStart {
    /// Byte position in the segment file.
    pub position: u64,
    /// Base offset.
    pub base_offset: Offset,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
}

/// Where and why the scan of a segment stopped.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// Byte position of the first byte not part of a valid batch (the cut point).
    pub position: u64,
    /// The offset the next batch should have started at.
    pub offset: Offset,
    /// End of the data, torn tail, or damage.
    pub kind: StopKind,
    /// What is wrong with the batch at `position`; `None` for a partial batch.
    pub reason: Option<Corruption>,
}

/// Everything a scan learned about one segment file.
#[derive(Debug)]
pub struct SegmentScan {
    /// The file.
    pub file: SegmentFile,
    /// Its length on disk (data plus zero padding).
    pub file_len: u64,
    /// The engine's accounting of the valid prefix: `data_len`, `next_offset`, counts,
    /// timestamps, and the offset and time indexes the engine would write for it.
    pub accounting: Segment<()>,
    /// Smallest batch base timestamp.
    pub min_timestamp: Option<TimestampMs>,
    /// Every valid batch, in order.
    pub batches: Vec<BatchStart>,
    /// Where the valid prefix ends.
    pub stop: Stop,
}

impl SegmentScan {
    /// The batch starting at byte `position`, if one does.
    #[must_use]
    pub fn batch_at(&self, position: u64) -> Option<BatchStart> {
        let found = self
            .batches
            .binary_search_by_key(&position, |b| b.position)
            .ok()?;
        self.batches.get(found).copied()
    }
}

/// The partition directories under `dir`: `dir` itself if it holds segment files,
/// otherwise every `dir/<topic>/<partition>/` that does.
pub fn partition_dirs(dir: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let meta = fs::metadata(dir).map_err(ToolError::io(dir))?;
    if !meta.is_dir() {
        return Err(ToolError::BadPath {
            path: dir.to_path_buf(),
            reason: "not a directory",
        });
    }
    if !segment_files(dir)?.is_empty() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut found = Vec::new();
    for topic in subdirs(dir)? {
        for partition in subdirs(&topic)? {
            if !segment_files(&partition)?.is_empty() {
                found.push(partition);
            }
        }
    }
    if found.is_empty() {
        return Err(ToolError::BadPath {
            path: dir.to_path_buf(),
            reason: "no partition directory (one holding <20-digit offset>.log segment files) \
                     here or at <topic>/<partition>/ below",
        });
    }
    Ok(found)
}

/// Subdirectories of `dir`, numeric names in numeric order, then the rest by name.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, ToolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(ToolError::io(dir))? {
        let entry = entry.map_err(ToolError::io(dir))?;
        if entry
            .file_type()
            .map_err(ToolError::io(entry.path()))?
            .is_dir()
        {
            out.push(entry.path());
        }
    }
    out.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.parse::<u64>().map_or(u64::MAX, |n| n), name)
    });
    Ok(out)
}

/// The segment files of a partition directory, by base offset.
pub fn segment_files(dir: &Path) -> Result<Vec<SegmentFile>, ToolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(ToolError::io(dir))? {
        let entry = entry.map_err(ToolError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = segment::parse_segment_name(&name) {
            out.push(SegmentFile {
                base,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.base);
    Ok(out)
}

/// Bytes on disk of every segment file under `partitions`, for progress bars.
pub fn total_segment_bytes(partitions: &[PathBuf]) -> Result<u64, ToolError> {
    let mut total = 0;
    for dir in partitions {
        for file in segment_files(dir)? {
            total += fs::metadata(&file.path)
                .map_err(ToolError::io(&file.path))?
                .len();
        }
    }
    Ok(total)
}

/// Scans a whole segment file from byte 0, calling `on_batch(position, header, bytes)`
/// for every valid batch in order, up to the first invalid one.
pub fn scan_segment(
    file: SegmentFile,
    mut on_batch: impl FnMut(u64, &BatchHeader, &[u8]),
) -> Result<SegmentScan, ToolError> {
    let bytes = fs::read(&file.path).map_err(ToolError::io(&file.path))?;
    let interval = EngineConfig::default().index_interval_bytes;
    let mut accounting = Segment::new(file.base, Rc::new(()));
    let mut batches = Vec::new();
    let mut min_timestamp: Option<TimestampMs> = None;
    let mut scanner = Scanner::new(0, file.base);
    let step = scanner.feed(&bytes, |position, header| {
        accounting.track_batch(position, header, interval);
        batches.push(BatchStart {
            position,
            base_offset: header.base_offset,
            max_timestamp: header.max_timestamp,
        });
        min_timestamp =
            Some(min_timestamp.map_or(header.base_timestamp, |t| t.min(header.base_timestamp)));
        let start = usize::try_from(position).unwrap_or(usize::MAX);
        let end = start.saturating_add(header.size as usize);
        on_batch(position, header, bytes.get(start..end).unwrap_or_default());
    });
    let reason = match step {
        Step::Invalid(reason) => Some(reason),
        Step::NeedMore => None,
    };
    let position = scanner.position();
    let rest = bytes
        .get(usize::try_from(position).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    let stop = Stop {
        position,
        offset: scanner.next_offset(),
        kind: classify_stop(rest, reason),
        reason,
    };
    Ok(SegmentScan {
        file,
        file_len: bytes.len() as u64,
        accounting,
        min_timestamp,
        batches,
        stop,
    })
}
