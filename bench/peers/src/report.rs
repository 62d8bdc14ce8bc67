//! The report: the table `shardlog-bench produce` prints (same lines, same units, so one
//! parser reads both) and a JSON file with the keys of its report that apply.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use hdrhistogram::Histogram;

use crate::load::Outcome;

/// What ran, for the header line and the JSON.
pub struct Setup {
    /// `nats` or `redis`.
    pub protocol: &'static str,
    /// Stream name(s) or key.
    pub topic: String,
    /// Streams (NATS) or 1.
    pub partitions: u32,
    /// Outstanding requests.
    pub inflight: usize,
    /// Records per request.
    pub batch_records: usize,
    /// Bytes of each record's value.
    pub record_size: usize,
    /// Bytes of one request on the wire.
    pub request_bytes: usize,
    /// `--duration`.
    pub duration_s: f64,
    /// `--warmup`.
    pub warmup_s: f64,
}

/// The results with the check of what the server stored.
pub struct Results<'a> {
    /// What the load measured.
    pub outcome: &'a Outcome,
    /// Records the server holds after the run (XLEN, or the streams' message counts).
    pub stored: u64,
}

struct Percentiles {
    count: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    p9999: u64,
    max: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let at = |q: f64| histogram.value_at_quantile(q);
        Percentiles {
            count: histogram.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: histogram.max(),
        }
    }
}

/// Records per second, payload MiB per second, requests per second.
fn rates(setup: &Setup, outcome: &Outcome) -> (f64, f64, f64) {
    let secs = outcome.elapsed_s.max(1e-9);
    let records = outcome.records as f64 / secs;
    let mib = records * setup.record_size as f64 / f64::from(1u32 << 20);
    (records, mib, outcome.requests as f64 / secs)
}

/// Writes the table to `out` (stdout).
pub fn print(setup: &Setup, results: &Results, out: &mut impl Write) -> io::Result<()> {
    let outcome = results.outcome;
    let (records_per_s, mib_per_s, requests_per_s) = rates(setup, outcome);
    writeln!(
        out,
        "produce ({} protocol): topic={} partitions={} producers=1 inflight={} acks=all \
         idempotence=false batch={} x {} B ({} B), closed loop, warm-up {:.1} s",
        setup.protocol,
        setup.topic,
        setup.partitions,
        setup.inflight,
        setup.batch_records,
        setup.record_size,
        setup.request_bytes,
        setup.warmup_s
    )?;
    writeln!(
        out,
        "  {:<10} {:>9} {:>12} {:>12} {:>9} {:>11}",
        "", "elapsed", "records", "records/s", "MiB/s", "requests/s"
    )?;
    writeln!(
        out,
        "  {:<10} {:>7.2} s {:>12} {:>12.0} {:>9.1} {:>11.0}",
        "produce", outcome.elapsed_s, outcome.records, records_per_s, mib_per_s, requests_per_s
    )?;
    writeln!(
        out,
        "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    )?;
    let l = Percentiles::of(&outcome.latency_us);
    if l.count > 0 {
        writeln!(
            out,
            "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "produce",
            human_us(l.p50),
            human_us(l.p90),
            human_us(l.p99),
            human_us(l.p999),
            human_us(l.p9999),
            human_us(l.max)
        )?;
    }
    if outcome.errors > 0 {
        writeln!(out, "  {} produce requests failed", outcome.errors)?;
    }
    writeln!(
        out,
        "  stored {} records, acknowledged {}",
        results.stored, outcome.records_acked
    )
}

/// Writes the JSON report to `path`.
pub fn write_json(setup: &Setup, results: &Results, path: &Path) -> io::Result<()> {
    let outcome = results.outcome;
    let (records_per_s, mib_per_s, requests_per_s) = rates(setup, outcome);
    let l = Percentiles::of(&outcome.latency_us);
    let mut json = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        json,
        "{{\n  \"workload\": \"produce\",\n  \"command\": {},\n  \"config\": {{\
         \"protocol\": \"{}\", \"topic\": \"{}\", \"partitions\": {}, \"record_size\": {}, \
         \"batch_records\": {}, \"batch_bytes\": {}, \"duration_s\": {}, \"warmup_s\": {}, \
         \"producers\": 1, \"inflight\": {}, \"acks\": \"all\"}},\n",
        json_strings(std::env::args()),
        setup.protocol,
        setup.topic,
        setup.partitions,
        setup.record_size,
        setup.batch_records,
        setup.request_bytes,
        setup.duration_s,
        setup.warmup_s,
        setup.inflight,
    );
    let _ = write!(
        json,
        "  \"produce\": {{\"elapsed_s\": {}, \"requests\": {}, \"records\": {}, \
         \"bytes\": {}, \"requests_per_s\": {}, \"records_per_s\": {}, \"mib_per_s\": {}, \
         \"latency_us\": {{\"count\": {}, \"p50\": {}, \"p90\": {}, \"p99\": {}, \
         \"p999\": {}, \"p9999\": {}, \"max\": {}}}, \"errors\": {}}},\n  \
         \"first_error\": {},\n  \"records_acked\": {},\n  \"records_stored\": {}\n}}\n",
        outcome.elapsed_s,
        outcome.requests,
        outcome.records,
        outcome.records * setup.record_size as u64,
        requests_per_s,
        records_per_s,
        mib_per_s,
        l.count,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.p9999,
        l.max,
        outcome.errors,
        outcome
            .first_error
            .as_deref()
            .map_or_else(|| "null".to_string(), json_string),
        outcome.records_acked,
        results.stored,
    );
    std::fs::write(path, json)
}

fn json_strings(items: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = items.map(|item| json_string(&item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Microseconds as shardlog-bench prints them.
fn human_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
