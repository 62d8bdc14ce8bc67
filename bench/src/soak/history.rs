//! The soak's history: every produce attempt and its answer, every record a consumer read
//! (with the high watermark and log start of its fetch), every fault, and the final read
//! of each partition, as JSON lines. The checker (`check.rs`) reads it back from the file,
//! so a history can be checked again offline (`shardlog-bench soak-check FILE`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// A record the soak wrote, as its value names it: (producer, sequence). The partition is
/// in the value too, checked when it is read.
pub type RecordId = (u32, u64);

/// One line of the history. `t` is milliseconds since the run started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// The run's settings (first line).
    Start {
        /// Unix time of the start, ms.
        unix_ms: u64,
        /// The nemesis seed.
        seed: u64,
        /// Nodes.
        nodes: usize,
        /// Partitions of the topic.
        partitions: u32,
        /// The fault kinds enabled.
        faults: Vec<String>,
        /// Disk faults skipped, and why.
        disk_skipped: Option<String>,
    },
    /// A produce attempt of `count` records (sequences `seq..seq + count`).
    Send {
        /// ms.
        t: f64,
        /// Producer.
        producer: u32,
        /// Partition.
        partition: u32,
        /// First record's sequence.
        seq: u64,
        /// Records.
        count: u32,
    },
    /// Acknowledged (`acks=all`) at `offset` (the first record's).
    Ack {
        /// ms.
        t: f64,
        /// Producer.
        producer: u32,
        /// Partition.
        partition: u32,
        /// First record's sequence.
        seq: u64,
        /// Records.
        count: u32,
        /// Offset of the first record.
        offset: u64,
    },
    /// Failed for good: its records may or may not be in the log.
    Fail {
        /// ms.
        t: f64,
        /// Producer.
        producer: u32,
        /// Partition.
        partition: u32,
        /// First record's sequence.
        seq: u64,
        /// Records.
        count: u32,
        /// The client's error.
        error: String,
    },
    /// A consumer's fetch and the records it returned.
    Read {
        /// ms.
        t: f64,
        /// Consumer.
        consumer: u32,
        /// Partition.
        partition: u32,
        /// High watermark in the reply.
        hw: u64,
        /// Log start in the reply.
        log_start: u64,
        /// (offset, producer, seq) of every record returned.
        records: Vec<(u64, u32, u64)>,
    },
    /// A consumer moved past offsets it had not read (they were below the log start).
    Skip {
        /// ms.
        t: f64,
        /// Consumer.
        consumer: u32,
        /// Partition.
        partition: u32,
        /// First offset skipped.
        from: u64,
        /// Where it went on.
        to: u64,
    },
    /// A record whose value the soak did not write (or for another partition).
    Foreign {
        /// ms.
        t: f64,
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// Where it was seen (a consumer or the final read).
        seen_by: String,
    },
    /// A fault injected (`phase` "begin") or healed ("end").
    Fault {
        /// ms.
        t: f64,
        /// Its number in the schedule.
        n: u64,
        /// What.
        kind: String,
        /// Which node(s) or link(s).
        target: String,
        /// begin | end.
        phase: String,
        /// What went wrong doing it, if anything.
        error: Option<String>,
    },
    /// After the load: whether every partition had a leader and a full ISR again.
    Settled {
        /// ms.
        t: f64,
        /// Whether it settled in time.
        ok: bool,
        /// The partitions' state when it gave up (or settled).
        state: String,
    },
    /// The final read of a partition (after healing everything).
    Final {
        /// ms.
        t: f64,
        /// Partition.
        partition: u32,
        /// (offset, producer, seq) of the records.
        records: Vec<(u64, u32, u64)>,
    },
    /// The end of a partition's final read: `[log_start, hw)` was read, unless `error`.
    FinalEnd {
        /// ms.
        t: f64,
        /// Partition.
        partition: u32,
        /// Its log start.
        log_start: u64,
        /// Its high watermark.
        hw: u64,
        /// Why the read stopped early.
        error: Option<String>,
    },
}

/// Appends events to the history file; shared by every thread of the run.
#[derive(Clone)]
pub struct History {
    out: Arc<Mutex<BufWriter<File>>>,
    started: Instant,
}

impl History {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(History {
            out: Arc::new(Mutex::new(BufWriter::new(file))),
            started: Instant::now(),
        })
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Appends one event. A history that cannot be written fails the run at `flush`.
    pub fn push(&self, event: &Event) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = serde_json::to_writer(&mut *out, event);
        let _ = out.write_all(b"\n");
    }

    /// Writes what is buffered.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.flush().context("writing the history")
    }
}

/// Reads a history file back.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not a history event", path.display(), i + 1))
        })
        .collect()
}

/// The value of record `seq` of `producer` for `partition`: producer, partition and seq
/// (little-endian), padded with `pad` bytes of filler.
pub fn encode_value(out: &mut Vec<u8>, producer: u32, partition: u32, seq: u64, pad: usize) {
    out.clear();
    out.extend_from_slice(&producer.to_le_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.resize(16 + pad, b'.');
}

/// (producer, partition, seq) of a value `encode_value` made; `None` for anything else.
pub fn decode_value(value: &[u8]) -> Option<(u32, u32, u64)> {
    let producer = u32::from_le_bytes(value.get(0..4)?.try_into().ok()?);
    let partition = u32::from_le_bytes(value.get(4..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    value
        .get(16..)?
        .iter()
        .all(|&b| b == b'.')
        .then_some((producer, partition, seq))
}
