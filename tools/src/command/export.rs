//! `shardlog export PARTITION_DIR [--output FILE]`: every record of a partition as JSON
//! lines (format in `exported_record.rs`), in offset order, for backup; `import` restores
//! them with the same offsets and batch boundaries.
//!
//! Lossless or nothing: each batch is rebuilt from its lines and compared with the stored
//! bytes before its lines are written, so a batch that `import` could not reproduce byte
//! for byte (compressed, transactional/control attributes, compacted offset deltas,
//! odd timestamps) stops the export with an error naming its offset. Damaged data stops it
//! too (run `shardlog verify` / `repair` first); a torn tail in the last segment is skipped,
//! as recovery would cut it.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use shardlog_engine::batch::{BatchHeader, Compression};
use shardlog_engine::record::RecordIter;
use shardlog_engine::recovery::StopKind;

use crate::Outcome;
use crate::args::ExportArgs;
use crate::error::ToolError;
use crate::exported_record::{self, ExportedRecord};
use crate::progress;
use crate::scan;

/// Runs `export`.
pub fn run(args: &ExportArgs) -> Result<Outcome, ToolError> {
    let dir = &args.partition_dir;
    fs::metadata(dir).map_err(ToolError::io(dir))?;
    let files = scan::segment_files(dir)?;
    if files.is_empty() {
        return Err(ToolError::BadPath {
            path: dir.clone(),
            reason: "not a partition directory (no .log files)",
        });
    }
    let (sink, sink_name): (Box<dyn Write>, &Path) = match &args.output {
        Some(path) => (
            Box::new(File::create_new(path).map_err(ToolError::io(path))?),
            path,
        ),
        None => (Box::new(io::stdout().lock()), Path::new("stdout")),
    };
    let mut out = BufWriter::new(sink);
    let bar = progress::bytes_bar(
        scan::total_segment_bytes(std::slice::from_ref(dir))?,
        "export",
    );
    let last = files.len() - 1;
    let mut records = 0u64;
    for (i, file) in files.into_iter().enumerate() {
        let mut failure = None;
        let scan = scan::scan_segment(file, |_, header, bytes| {
            if failure.is_none() {
                match export_batch(&mut out, header, bytes, sink_name) {
                    Ok(count) => records += count,
                    Err(e) => failure = Some(e),
                }
            }
        })?;
        bar.inc(scan.file_len);
        if let Some(error) = failure {
            return Err(error);
        }
        let stop = scan.stop;
        match stop.kind {
            StopKind::End => {}
            StopKind::TornTail if i == last => bar.suspend(|| {
                eprintln!(
                    "note: skipped a torn tail at byte {} of {} (recovery cuts it)",
                    stop.position,
                    scan.file.name()
                );
            }),
            _ => {
                return Err(ToolError::Unexportable {
                    offset: stop.offset,
                    reason: format!(
                        "{} is damaged at byte {}; run `shardlog verify` and `shardlog repair` first",
                        scan.file.name(),
                        stop.position
                    ),
                });
            }
        }
    }
    out.flush().map_err(ToolError::io(sink_name))?;
    bar.finish_and_clear();
    eprintln!("exported {records} record(s)");
    Ok(Outcome::Clean)
}

/// Writes the lines of one batch after checking that they rebuild it exactly; returns the
/// record count.
fn export_batch(
    out: &mut impl Write,
    header: &BatchHeader,
    bytes: &[u8],
    sink: &Path,
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
        .map(|item| item.map(|record| ExportedRecord::new(header, &record)))
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
        serde_json::to_writer(&mut *out, line).map_err(|e| ToolError::io(sink)(e.into()))?;
        out.write_all(b"\n").map_err(ToolError::io(sink))?;
    }
    Ok(lines.len() as u64)
}
