//! `shardlog import PARTITION_DIR [--input FILE]`: creates a partition directory from the
//! JSON lines `export` wrote (format in `exported_record.rs`), offsets preserved.
//!
//! Consecutive lines with the same `batch_base_offset` become one batch, rebuilt with the
//! engine's `BatchBuilder` and given its base offset and leader epoch with
//! `batch::patch_base`. The batches are appended by the engine itself (a glommio executor,
//! `DmaStorage`, `append_replicated`), so the files are exactly what the server writes;
//! a log that does not start at 0 is first `reset` to its first offset. Offsets must run
//! on without a gap or overlap. Input is read on glommio's blocking pool, a few MiB of
//! batches at a time, so the executor never blocks on it. The imported records count as
//! committed: the high watermark is set to the log end. A failed import removes the
//! directory it created, so a partial restore never looks like a whole one.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use shardlog_engine::batch::BatchHeader;
use shardlog_engine::{
    DmaStorage, EngineConfig, FlushPolicy, Offset, PartitionLog, warm_iopoll_probe,
};

use crate::Outcome;
use crate::args::ImportArgs;
use crate::error::ToolError;
use crate::exported_record::{self, ExportedRecord};

/// Bytes of batches parsed per trip to the blocking pool.
const CHUNK_BYTES: usize = 8 << 20;
/// The file `warm_iopoll_probe` leaves in the directory it is given.
const PROBE_FILE: &str = ".iopoll-probe";

/// What an import did.
#[derive(Debug, Default)]
struct Imported {
    batches: u64,
    records: u64,
    log_start: Offset,
    log_end: Offset,
}

/// Runs `import`.
pub fn run(args: &ImportArgs) -> Result<Outcome, ToolError> {
    let dir = args.partition_dir.clone();
    refuse_non_empty(&dir)?;
    let reader: Box<dyn BufRead + Send> = match &args.input {
        Some(path) => Box::new(BufReader::new(
            File::open(path).map_err(ToolError::io(path))?,
        )),
        None => Box::new(BufReader::new(io::stdin())),
    };
    fs::create_dir_all(&dir).map_err(ToolError::io(&dir))?;
    let in_executor = dir.clone();
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("shardlog-import")
        .spawn(move || async move { import_into(in_executor, BatchReader::new(reader)).await })
        .map_err(|e| ToolError::Executor(e.to_string()))?;
    let result = handle
        .join()
        .map_err(|e| ToolError::Executor(e.to_string()));
    let imported = match result.and_then(|imported| imported) {
        Ok(imported) => imported,
        Err(error) => {
            // The directory was absent or empty before: remove the half-built partition so
            // it is never taken for a restored one.
            if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!(
                    "shardlog: could not remove the partial import {}: {e}",
                    dir.display()
                );
            }
            return Err(error);
        }
    };
    // The probe file belongs to the executor, not to the partition.
    let probe = dir.join(PROBE_FILE);
    if let Err(e) = fs::remove_file(&probe) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(ToolError::io(&probe)(e));
        }
    }
    eprintln!(
        "imported {} record(s) in {} batch(es), offsets {}..{}, into {}",
        imported.records,
        imported.batches,
        imported.log_start,
        imported.log_end,
        dir.display()
    );
    Ok(Outcome::Clean)
}

/// Import only creates partitions: it never mixes its batches into existing data.
fn refuse_non_empty(dir: &Path) -> Result<(), ToolError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ToolError::BadPath {
                    path: dir.into(),
                    reason: "not empty: import only creates a new partition",
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ToolError::io(dir)(e)),
    }
}

/// Runs on the executor: opens the log, appends every batch, closes it (which syncs).
async fn import_into(dir: PathBuf, reader: BatchReader) -> Result<Imported, ToolError> {
    warm_iopoll_probe(&dir).await.map_err(ToolError::io(&dir))?;
    // Durability comes from the sync in `close`; syncing every batch would only slow a restore.
    let config = EngineConfig {
        flush: FlushPolicy::Never,
        ..EngineConfig::default()
    };
    let log = PartitionLog::open(DmaStorage, &dir, config).await?;
    let appended = append_all(&log, reader).await;
    if appended.is_ok() {
        log.set_high_watermark(log.log_end());
    }
    let closed = log.close().await;
    let imported = appended?;
    closed?;
    Ok(imported)
}

async fn append_all(
    log: &PartitionLog<DmaStorage>,
    mut reader: BatchReader,
) -> Result<Imported, ToolError> {
    let mut imported = Imported::default();
    loop {
        let (back, chunk) = glommio::executor()
            .spawn_blocking(move || {
                let chunk = reader.next_batches(CHUNK_BYTES);
                (reader, chunk)
            })
            .await;
        reader = back;
        let chunk = chunk?;
        if chunk.is_empty() {
            return Ok(imported);
        }
        for (line, bytes) in chunk {
            let header = BatchHeader::parse(&bytes).map_err(|e| ToolError::BadInput {
                line,
                reason: format!("rebuilt batch: {e}"),
            })?;
            if imported.batches == 0 {
                if header.base_offset != Offset(0) {
                    log.reset(header.base_offset).await?;
                }
                imported.log_start = header.base_offset;
            }
            let log_end = log.log_end();
            if header.base_offset != log_end {
                let reason = if header.base_offset > log_end {
                    format!("gap: offsets {log_end}..{} are missing", header.base_offset)
                } else {
                    format!(
                        "offset {} goes back below {log_end} (overlap or disorder)",
                        header.base_offset
                    )
                };
                return Err(ToolError::BadInput { line, reason });
            }
            log.append_replicated(Bytes::from(bytes)).await?;
            imported.batches += 1;
            imported.records += u64::from(header.record_count);
            imported.log_end = header.next_offset();
        }
    }
}

/// Turns input lines into batches, one group of same-`batch_base_offset` lines at a time.
struct BatchReader {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    /// Lines read past the last batch handed out: the start of the next one.
    carry: Vec<ExportedRecord>,
    carry_line: u64,
}

impl BatchReader {
    fn new(reader: Box<dyn BufRead + Send>) -> BatchReader {
        BatchReader {
            reader,
            line: 0,
            carry: Vec::new(),
            carry_line: 0,
        }
    }

    /// Whole batches of about `bytes_max` bytes, each with the input line of its first
    /// record; empty at the end of the input.
    fn next_batches(&mut self, bytes_max: usize) -> Result<Vec<(u64, Vec<u8>)>, ToolError> {
        let mut out = Vec::new();
        let mut size = 0usize;
        loop {
            let record = self.next_record()?;
            let continues = match (&record, self.carry.first()) {
                (Some(record), Some(first)) => record.batch_base_offset == first.batch_base_offset,
                _ => record.is_some(),
            };
            if continues {
                if self.carry.is_empty() {
                    self.carry_line = self.line;
                }
                self.carry.extend(record);
                continue;
            }
            if !self.carry.is_empty() {
                let line = self.carry_line;
                let bytes = exported_record::build_batch(&self.carry)
                    .map_err(|reason| ToolError::BadInput { line, reason })?;
                size += bytes.len();
                out.push((line, bytes));
                self.carry.clear();
            }
            let Some(record) = record else { return Ok(out) };
            self.carry_line = self.line;
            self.carry.push(record);
            if size >= bytes_max {
                return Ok(out);
            }
        }
    }

    fn next_record(&mut self) -> Result<Option<ExportedRecord>, ToolError> {
        let mut text = String::new();
        loop {
            text.clear();
            let read = self
                .reader
                .read_line(&mut text)
                .map_err(ToolError::io("input"))?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ToolError::BadInput {
                    line: self.line,
                    reason: e.to_string(),
                });
        }
    }
}
