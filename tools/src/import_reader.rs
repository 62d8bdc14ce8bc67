//! The input of `import`: the JSON lines `export` wrote (`exported_record.rs`,
//! `exported_topic.rs`) turned into [`Item`]s. Consecutive record lines of one batch (same
//! partition and `batch_base_offset`) become that batch, rebuilt byte for byte; a
//! partition's end line becomes an [`Item::End`]. Blocking reads: `import` calls
//! [`ItemReader::next_items`] on glommio's blocking pool, a few MiB at a time.

use std::io::BufRead;

use crate::error::ToolError;
use crate::exported_record::{self, ExportedRecord};
use crate::exported_topic::{self, ExportLine, PartitionEnd};

/// What the input holds, in order.
#[derive(Debug)]
pub enum Item {
    /// One batch, rebuilt; `line` is its first record's line.
    Batch {
        /// The partition its records name (`None` in the export of one partition).
        partition: Option<u32>,
        /// 1-based input line of its first record.
        line: u64,
        /// The batch bytes.
        bytes: Vec<u8>,
    },
    /// A partition's end line.
    End {
        /// 1-based input line.
        line: u64,
        /// What it says.
        end: PartitionEnd,
    },
}

/// Reads items; see the module docs.
pub struct ItemReader {
    reader: Box<dyn BufRead + Send>,
    /// Lines read so far (the number of the last one).
    line: u64,
    /// Record lines read past the last batch handed out: the start of the next one.
    carry: Vec<ExportedRecord>,
    carry_line: u64,
}

impl ItemReader {
    /// Reads `reader`, whose first line is line `lines_before + 1` of the input.
    pub fn new(reader: Box<dyn BufRead + Send>, lines_before: u64) -> ItemReader {
        ItemReader {
            reader,
            line: lines_before,
            carry: Vec::new(),
            carry_line: 0,
        }
    }

    /// The number of the last line read (for errors about the end of the input).
    #[must_use]
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Items holding about `bytes_max` bytes of batches; empty at the end of the input.
    pub fn next_items(&mut self, bytes_max: usize) -> Result<Vec<Item>, ToolError> {
        let mut out = Vec::new();
        let mut size = 0usize;
        loop {
            let next = self.next_line()?;
            let continues = matches!(
                &next,
                Some((_, ExportLine::Record(record)))
                    if self.carry.first().is_none_or(|first| same_batch(first, record))
            );
            if continues {
                if let Some((line, ExportLine::Record(record))) = next {
                    if self.carry.is_empty() {
                        self.carry_line = line;
                    }
                    self.carry.push(*record);
                }
                continue;
            }
            size += self.flush_carry(&mut out)?;
            match next {
                None => return Ok(out),
                Some((line, ExportLine::Record(record))) => {
                    self.carry_line = line;
                    self.carry.push(*record);
                }
                Some((line, ExportLine::PartitionEnd(end))) => out.push(Item::End { line, end }),
                Some((line, ExportLine::Topic(_))) => {
                    return Err(ToolError::BadInput {
                        line,
                        reason: "a topic line inside the export (only its first line names \
                                 the topic)"
                            .to_owned(),
                    });
                }
            }
            if size >= bytes_max {
                return Ok(out);
            }
        }
    }

    /// Turns the carried records into a batch item; returns its size.
    fn flush_carry(&mut self, out: &mut Vec<Item>) -> Result<usize, ToolError> {
        let Some(first) = self.carry.first() else {
            return Ok(0);
        };
        let (partition, line) = (first.partition, self.carry_line);
        let bytes = exported_record::build_batch(&self.carry)
            .map_err(|reason| ToolError::BadInput { line, reason })?;
        self.carry.clear();
        let size = bytes.len();
        out.push(Item::Batch {
            partition,
            line,
            bytes,
        });
        Ok(size)
    }

    /// The next non-blank line, parsed, with its number.
    fn next_line(&mut self) -> Result<Option<(u64, ExportLine)>, ToolError> {
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
            let line = self.line;
            return exported_topic::parse_line(&text)
                .map(|parsed| Some((line, parsed)))
                .map_err(|reason| ToolError::BadInput { line, reason });
        }
    }
}

/// Whether `record` belongs to the batch `first` started.
fn same_batch(first: &ExportedRecord, record: &ExportedRecord) -> bool {
    (first.partition, first.batch_base_offset) == (record.partition, record.batch_base_offset)
}
