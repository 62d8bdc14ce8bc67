//! `shardlog dump PATH`: prints the batches and records of a segment file or of every
//! segment of a partition directory, decoding as much as it can: a batch whose CRC fails
//! is still shown (marked `crc BAD`) and the walk goes on after it; bytes that are not a
//! batch header end the walk of that segment (there is no way to find the next batch).
//!
//! Text output: a `segment` line per file, a `batch` line per batch (offsets, byte
//! position, size, record count, leader epoch, CRC status, timestamps, producer fields),
//! one indented line per record (offset, timestamp, key, value size and preview). With
//! `--json`, one JSON object per line, `"type"` being `batch`, `record` or `stop`.
//! Previews show the first 32 bytes as text, escaping anything not printable.
//! A batch a client compressed (gzip, snappy, lz4, zstd) says so on its batch line
//! (`compression gzip`; JSON `"compression"`, `"none"` when not) and its records are
//! decompressed and shown like any others (`decompress.rs`); a payload that does not
//! decompress is a problem (a note, exit 1), and the walk goes on with the next batch.
//! Exit 1 if a bad CRC or bytes that are not a batch (a torn tail included) were seen;
//! the zero padding after the last batch is the normal end of a segment. A stdout closed by
//! its reader (`| head`) ends the dump with exit 0.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::json;
use shardlog_engine::batch::{self, BatchHeader, Compression};
use shardlog_engine::record::{Record, RecordIter};
use shardlog_engine::recovery::classify_stop;
use shardlog_engine::segment;

use crate::Outcome;
use crate::args::DumpArgs;
use crate::decompress;
use crate::error::ToolError;
use crate::scan::{self, SegmentFile};

/// Bytes of a key or value shown in a preview.
const PREVIEW_BYTES: usize = 32;

/// Runs `dump`.
pub fn run(args: &DumpArgs) -> Result<Outcome, ToolError> {
    let files = segments_of(&args.path)?;
    let stdout = io::stdout();
    let mut dump = Dump {
        out: BufWriter::new(stdout.lock()),
        json: args.json,
        from: args.from_offset.unwrap_or(0),
        remaining: args.count.unwrap_or(u64::MAX),
        problems: false,
        scratch: Vec::new(),
    };
    for (i, file) in files.iter().enumerate() {
        let next_base = files.get(i + 1).map(|f| f.base.0);
        if next_base.is_some_and(|next| next <= dump.from) {
            continue;
        }
        if dump.remaining == 0 {
            break;
        }
        // A read error is the data file's; a write error is stdout's (a closed stdout,
        // `| head`, is a normal end), never the data file's.
        let bytes = fs::read(&file.path).map_err(ToolError::io(&file.path))?;
        dump.segment(file, &bytes).map_err(ToolError::stdout)?;
    }
    dump.out.flush().map_err(ToolError::stdout)?;
    Ok(if dump.problems {
        Outcome::ProblemsFound
    } else {
        Outcome::Clean
    })
}

/// The segment files named by PATH: one `.log` file, or a partition directory's.
fn segments_of(path: &Path) -> Result<Vec<SegmentFile>, ToolError> {
    let meta = fs::metadata(path).map_err(ToolError::io(path))?;
    if meta.is_dir() {
        let files = scan::segment_files(path)?;
        if files.is_empty() {
            return Err(ToolError::BadPath {
                path: path.into(),
                reason: "no segment (.log) files here",
            });
        }
        return Ok(files);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = segment::parse_segment_name(&name).ok_or(ToolError::BadPath {
        path: path.into(),
        reason: "not a segment file (<20-digit base offset>.log) or a partition directory",
    })?;
    Ok(vec![SegmentFile {
        base,
        path: path.into(),
    }])
}

struct Dump<W: Write> {
    out: W,
    json: bool,
    from: u64,
    remaining: u64,
    problems: bool,
    /// Where a compressed batch's records are decompressed, reused.
    scratch: Vec<u8>,
}

impl<W: Write> Dump<W> {
    /// Prints the segment `file` whose bytes are `bytes`; errors are stdout's.
    fn segment(&mut self, file: &SegmentFile, bytes: &[u8]) -> io::Result<()> {
        let name = file.name();
        if !self.json {
            writeln!(self.out, "segment {}", file.path.display())?;
        }
        let mut position = 0usize;
        while self.remaining > 0 {
            let rest = bytes.get(position..).unwrap_or_default();
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let header = match BatchHeader::parse(rest) {
                Ok(header) if rest.len() >= header.size as usize => header,
                Ok(header) => {
                    let reason = format!("partial batch: {} of {} bytes", rest.len(), header.size);
                    return self.stop(&name, position, &reason, rest, None);
                }
                Err(reason) => {
                    return self.stop(&name, position, &reason.to_string(), rest, Some(reason));
                }
            };
            let size = header.size as usize;
            let batch_bytes = rest.get(..size).unwrap_or_default();
            if header.next_offset().0 > self.from {
                self.batch(&name, position, &header, batch_bytes)?;
            }
            position += size;
        }
        Ok(())
    }

    fn stop(
        &mut self,
        name: &str,
        position: usize,
        reason: &str,
        rest: &[u8],
        corruption: Option<batch::Corruption>,
    ) -> io::Result<()> {
        let kind = format!("{:?}", classify_stop(rest, corruption));
        self.problems = true;
        if self.json {
            let line = json!({"type": "stop", "segment": name, "position": position, "kind": kind, "reason": reason});
            writeln!(self.out, "{line}")
        } else {
            writeln!(
                self.out,
                "stop at byte {position}: {reason} ({kind}); nothing after it is readable"
            )
        }
    }

    fn batch(
        &mut self,
        name: &str,
        position: usize,
        header: &BatchHeader,
        bytes: &[u8],
    ) -> io::Result<()> {
        let crc = match batch::validate(bytes) {
            Ok(_) => None,
            Err(reason) => {
                self.problems = true;
                Some(reason.to_string())
            }
        };
        self.batch_line(name, position, header, crc.as_deref())?;
        // The scratch buffer leaves `self` while its records are printed through `self`.
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = match decompress::records(header, bytes, &mut scratch) {
            Ok(records) => self.records(header, records, crc.is_none()),
            Err(reason) => {
                self.problems = true;
                self.note(&format!("records unreadable: {reason}"))
            }
        };
        self.scratch = scratch;
        result
    }

    /// Prints `records`, those of the batch `header`, from `self.from` on.
    fn records(
        &mut self,
        header: &BatchHeader,
        records: RecordIter<'_>,
        crc_ok: bool,
    ) -> io::Result<()> {
        for (index, item) in records.enumerate() {
            match item {
                Ok(record) if record.offset(header).0 < self.from => {}
                Ok(record) => {
                    self.record(header, &record, crc_ok)?;
                    self.remaining -= 1;
                    if self.remaining == 0 {
                        break;
                    }
                }
                Err(reason) => {
                    self.problems = true;
                    return self.note(&format!("record {index} unreadable: {reason}"));
                }
            }
        }
        Ok(())
    }

    fn batch_line(
        &mut self,
        name: &str,
        position: usize,
        h: &BatchHeader,
        crc: Option<&str>,
    ) -> io::Result<()> {
        if self.json {
            let line = json!({
                "type": "batch", "segment": name, "position": position,
                "base_offset": h.base_offset.0, "last_offset": h.last_offset().0, "size": h.size,
                "record_count": h.record_count, "leader_epoch": h.leader_epoch.0,
                "crc": format!("{:#010x}", h.crc), "crc_ok": crc.is_none(), "crc_error": crc,
                "attributes": h.attributes, "base_timestamp": h.base_timestamp.0,
                "max_timestamp": h.max_timestamp.0, "producer_id": h.producer_id,
                "producer_epoch": h.producer_epoch, "base_sequence": h.base_sequence,
                "compression": h.compression().name(),
            });
            return writeln!(self.out, "{line}");
        }
        writeln!(
            self.out,
            "batch offsets {}..={} byte {position} size {} records {} epoch {} crc {} \
             ts {}..{} producer {}/{} seq {} attributes {:#06x}{}",
            h.base_offset,
            h.last_offset(),
            h.size,
            h.record_count,
            h.leader_epoch,
            crc.map_or_else(|| "ok".to_owned(), |e| format!("BAD ({e})")),
            h.base_timestamp,
            h.max_timestamp,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.attributes,
            match h.compression() {
                Compression::None => String::new(),
                codec => format!(" compression {}", codec.name().unwrap_or("unknown")),
            },
        )
    }

    fn record(
        &mut self,
        header: &BatchHeader,
        record: &Record<'_>,
        crc_ok: bool,
    ) -> io::Result<()> {
        let offset = record.offset(header).0;
        let timestamp = record.timestamp(header).0;
        let key = record.key.map(preview);
        let value = record.value.map(preview);
        let value_len = record.value.map(<[u8]>::len);
        if self.json {
            let line = json!({
                "type": "record", "offset": offset, "timestamp": timestamp, "key": key,
                "value_len": value_len, "value_preview": value,
                "header_count": record.header_count, "crc_ok": crc_ok,
            });
            return writeln!(self.out, "{line}");
        }
        let quoted =
            |field: Option<String>| field.map_or_else(|| "null".to_owned(), |s| format!("\"{s}\""));
        writeln!(
            self.out,
            "  offset {offset} ts {timestamp} key {} value ({} B) {} headers {}",
            quoted(key),
            value_len.unwrap_or(0),
            quoted(value),
            record.header_count
        )
    }

    fn note(&mut self, text: &str) -> io::Result<()> {
        if self.json {
            writeln!(self.out, "{}", json!({"type": "note", "text": text}))
        } else {
            writeln!(self.out, "  ({text})")
        }
    }
}

/// The first [`PREVIEW_BYTES`] of `bytes` as text: printable characters as they are,
/// anything else escaped (`\xNN`, `\n`, ...), `…` when cut.
fn preview(bytes: &[u8]) -> String {
    let head = bytes.get(..PREVIEW_BYTES).unwrap_or(bytes);
    let mut out = String::with_capacity(head.len());
    for chunk in head.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '"' || c == '\\' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    if bytes.len() > head.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn preview_escapes_and_cuts() {
        assert_eq!(preview(b"hello"), "hello");
        assert_eq!(preview(b"a\"b\\c\n\x00\xff"), "a\\\"b\\\\c\\n\\u{0}\\xff");
        assert_eq!(preview(&[b'x'; 40]), format!("{}…", "x".repeat(32)));
        assert_eq!(preview("h\u{e9}".as_bytes()), "h\u{e9}");
    }
}
