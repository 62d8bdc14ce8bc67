//! `shardlog export DIR [--output FILE]`: records as JSON lines, in offset order, for
//! backup; `import` restores them with the same offsets and batch boundaries.
//!
//! - DIR a partition directory (`DATA/<topic>/<partition>`): that partition's records
//!   (format in `exported_record.rs`); `import` rebuilds the partition directory.
//! - DIR a topic directory (`DATA/<topic>`, holding `topic.json`): the whole topic, its
//!   settings first, then every partition's records and end (format in
//!   `exported_topic.rs`); `import DATA2` restores it as a topic `shardlogd` serves.
//!
//! Export only reads, so it may run beside a live `shardlogd`: it exports what is on disk
//! when each segment is read (a batch being written at that moment is a torn tail, left
//! out as recovery would cut it).
//!
//! Lossless or nothing: each batch is rebuilt from its lines and compared with the stored
//! bytes before its lines are written, so a batch that `import` could not reproduce byte
//! for byte (compressed, transactional/control attributes, compacted offset deltas,
//! odd timestamps) stops the export with an error naming its offset. Damaged data stops it
//! too (run `shardlog verify` / `repair` first); a torn tail in the last segment is skipped,
//! as recovery would cut it. A failed export to `--output` removes the file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use shardlog_engine::Offset;
use shardlog_engine::batch::{BatchHeader, Compression};
use shardlog_engine::record::RecordIter;
use shardlog_engine::recovery::StopKind;
use shardlog_net::server::topic_file::{self, TopicFile};

use crate::Outcome;
use crate::args::ExportArgs;
use crate::error::ToolError;
use crate::exported_record::{self, ExportedRecord};
use crate::exported_topic::{ExportedTopic, PartitionEnd, PartitionEndLine, TopicLine};
use crate::progress;
use crate::scan;

/// Runs `export`.
pub fn run(args: &ExportArgs) -> Result<Outcome, ToolError> {
    let dir = &args.dir;
    fs::metadata(dir).map_err(ToolError::io(dir))?;
    let topic = match topic_file::read(dir) {
        Ok(spec) => Some(spec),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(ToolError::io(dir.join(topic_file::TOPIC_FILE))(e)),
    };
    let mut sink = Sink::open(args.output.as_deref())?;
    let result = match &topic {
        Some(spec) => export_topic(&mut sink, dir, spec),
        None => export_one_partition(&mut sink, dir),
    };
    let result = result.and_then(|records| sink.finish().map(|()| records));
    match result {
        Ok(records) => {
            eprintln!("exported {records} record(s)");
            Ok(Outcome::Clean)
        }
        Err(error) => {
            // A partial file must never pass for a backup.
            if let Some(path) = &args.output {
                let _ = fs::remove_file(path);
            }
            Err(error)
        }
    }
}

/// Where the lines go: stdout or a new file. A failed write names the file, or is
/// [`ToolError::stdout`]'s (a closed stdout is a normal end), never a data file's.
struct Sink {
    out: BufWriter<Box<dyn Write>>,
    file: Option<PathBuf>,
}

impl Sink {
    fn open(output: Option<&Path>) -> Result<Sink, ToolError> {
        let (out, file): (Box<dyn Write>, _) = match output {
            Some(path) => (
                Box::new(File::create_new(path).map_err(ToolError::io(path))?),
                Some(path.to_path_buf()),
            ),
            None => (Box::new(io::stdout().lock()), None),
        };
        Ok(Sink {
            out: BufWriter::new(out),
            file,
        })
    }

    fn error(&self, error: io::Error) -> ToolError {
        match &self.file {
            Some(path) => ToolError::io(path)(error),
            None => ToolError::stdout(error),
        }
    }

    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), ToolError> {
        let written = serde_json::to_writer(&mut self.out, value)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        written.map_err(|e| self.error(e))
    }

    /// Flushes, and makes a file durable: a backup that a crash can lose is no backup.
    fn finish(&mut self) -> Result<(), ToolError> {
        self.out.flush().map_err(|e| self.error(e))?;
        if let Some(path) = &self.file {
            File::open(path)
                .and_then(|file| file.sync_all())
                .map_err(ToolError::io(path))?;
        }
        Ok(())
    }
}

/// The export of one partition directory (no partition numbers in the lines).
fn export_one_partition(sink: &mut Sink, dir: &Path) -> Result<u64, ToolError> {
    if scan::segment_files(dir)?.is_empty() {
        return Err(ToolError::BadPath {
            path: dir.to_path_buf(),
            reason: "neither a partition directory (no .log files) nor a topic directory \
                     (no topic.json)",
        });
    }
    let bar = progress::bytes_bar(
        scan::total_segment_bytes(std::slice::from_ref(&dir.to_path_buf()))?,
        "export",
    );
    let end = export_partition(sink, dir, None, &bar)?;
    bar.finish_and_clear();
    Ok(end.records)
}

/// The export of a whole topic: its settings, then each partition's records and end.
fn export_topic(sink: &mut Sink, dir: &Path, spec: &TopicFile) -> Result<u64, ToolError> {
    let partitions: Vec<PathBuf> = (0..spec.partitions)
        .map(|p| dir.join(p.to_string()))
        .collect();
    for partition in &partitions {
        if !partition.is_dir() {
            return Err(ToolError::BadPath {
                path: partition.clone(),
                reason: "missing: topic.json names this partition",
            });
        }
    }
    let bar = progress::bytes_bar(scan::total_segment_bytes(&partitions)?, "export");
    sink.line(&TopicLine {
        topic: ExportedTopic::from(spec),
    })?;
    let mut records = 0;
    for (partition, path) in (0u32..).zip(&partitions) {
        let end = export_partition(sink, path, Some(partition), &bar)?;
        sink.line(&PartitionEndLine { partition_end: end })?;
        records += end.records;
    }
    bar.finish_and_clear();
    Ok(records)
}

/// Writes one partition's records; returns its end (log end: where the scan of its last
/// segment stopped, the segment's base for an empty one).
fn export_partition(
    sink: &mut Sink,
    dir: &Path,
    partition: Option<u32>,
    bar: &ProgressBar,
) -> Result<PartitionEnd, ToolError> {
    let files = scan::segment_files(dir)?;
    let last = files.len().saturating_sub(1);
    let mut end = PartitionEnd {
        partition: partition.unwrap_or(0),
        log_end: 0,
        records: 0,
    };
    for (i, file) in files.into_iter().enumerate() {
        let mut failure = None;
        let scan = scan::scan_segment(file, |_, header, bytes| {
            if failure.is_none() {
                match export_batch(sink, header, bytes, partition) {
                    Ok(count) => end.records += count,
                    Err(e) => failure = Some(e),
                }
            }
        })?;
        bar.inc(scan.file_len);
        if let Some(error) = failure {
            return Err(error);
        }
        end.log_end = scan.accounting.next_offset.0;
        let stop = scan.stop;
        match stop.kind {
            StopKind::End => {}
            StopKind::TornTail if i == last => bar.suspend(|| {
                eprintln!(
                    "note: {}: skipped a torn tail at byte {} of {} (recovery cuts it)",
                    dir.display(),
                    stop.position,
                    scan.file.name()
                );
            }),
            _ => return Err(damaged(stop.offset, &scan.file.name(), stop.position)),
        }
    }
    Ok(end)
}

fn damaged(offset: Offset, file: &str, position: u64) -> ToolError {
    ToolError::Unexportable {
        offset,
        reason: format!(
            "{file} is damaged at byte {position}; run `shardlog verify` and `shardlog repair` first"
        ),
    }
}

/// Writes the lines of one batch after checking that they rebuild it exactly; returns the
/// record count.
fn export_batch(
    sink: &mut Sink,
    header: &BatchHeader,
    bytes: &[u8],
    partition: Option<u32>,
) -> Result<u64, ToolError> {
    let fail = |reason: String| ToolError::Unexportable {
        offset: header.base_offset,
        reason,
    };
    if let Compression::Codec(codec) = header.compression() {
        return Err(fail(format!(
            "compressed batch (codec {codec}); export has no codec support yet"
        )));
    }
    let lines = RecordIter::new(header, bytes)
        .map(|item| {
            item.map(|record| ExportedRecord {
                partition,
                ..ExportedRecord::new(header, &record)
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("record unreadable: {e}")))?;
    let rebuilt = exported_record::build_batch(&lines).map_err(&fail)?;
    if rebuilt != bytes {
        return Err(fail(format!(
            "the batch (attributes {:#06x}) cannot be rebuilt byte for byte from its records \
             (transactional/control batch, compacted offsets or unusual timestamps)",
            header.attributes
        )));
    }
    for line in &lines {
        sink.line(line)?;
    }
    Ok(lines.len() as u64)
}
