//! The network workloads' report: the final table on stdout and the JSON file (command
//! line, git commit, configuration, results), in the style of the engine report.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{AcksArg, FromArg, NetArgs, Protocol};
use crate::latency::{Percentiles, human_us};
use crate::report::git_commit;
use crate::timeline::SecondPoint;
use crate::workload::net_common::{Run, Side};

/// Configuration echoed into the report.
#[derive(Debug, Clone, Serialize)]
pub struct NetConfigReport {
    /// Bootstrap broker.
    pub brokers: String,
    /// `shardlog` or `kafka`: the protocol spoken.
    pub protocol: &'static str,
    /// Topic.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Value bytes per record.
    pub record_size: usize,
    /// Records per batch.
    pub batch_records: usize,
    /// Bytes per batch as sent (0 for consume).
    pub batch_bytes: usize,
    /// `--count`, if given.
    pub count: Option<u64>,
    /// `--duration` (ignored with `--count`).
    pub duration_s: f64,
    /// Warm-up in effect.
    pub warmup_s: f64,
    /// `closed` or `open`.
    pub load: &'static str,
    /// Open loop: records per second over all producers.
    pub rate: Option<f64>,
    /// Producers.
    pub producers: usize,
    /// Consumers.
    pub consumers: usize,
    /// Produce requests outstanding per producer.
    pub inflight: usize,
    /// `none`, `leader` or `all`.
    pub acks: &'static str,
    /// Idempotent produce in effect (`--idempotence`, and acks other than `none`).
    pub idempotence: bool,
    /// Executors of the producers.
    pub threads: usize,
    /// consume: `beginning` or `end`.
    pub from: &'static str,
    /// Largest fetch reply.
    pub fetch_max_bytes: u32,
    /// Long-poll wait at the tail.
    pub fetch_max_wait_ms: u64,
}

/// What one side (produce or consume) measured after the warm-up.
#[derive(Debug, Clone, Serialize)]
pub struct SideResults {
    /// From the end of the warm-up to the side's last completion.
    pub elapsed_s: f64,
    /// Produce requests, or fetches that returned records.
    pub requests: u64,
    /// Records.
    pub records: u64,
    /// Batch bytes.
    pub bytes: u64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// MiB of batches per second.
    pub mib_per_s: f64,
    /// Produce: request latency from the intended send time. Consume: fetch latency
    /// (long-poll wait included) of fetches that returned records. Microseconds.
    pub latency_us: Percentiles,
    /// Requests that failed after the client's retries (the run went on; it exits 1),
    /// warm-up included.
    pub errors: u64,
    /// Per second from the start (warm-up included): see `timeline.rs`.
    pub timeline: Vec<SecondPoint>,
}

/// The whole JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct NetReport {
    /// `produce`, `consume` or `e2e`.
    pub workload: &'static str,
    /// The command line.
    pub command: Vec<String>,
    /// `git rev-parse HEAD` where available.
    pub git_commit: Option<String>,
    /// The configuration.
    pub config: NetConfigReport,
    /// The producers' results.
    pub produce: Option<SideResults>,
    /// The consumers' results.
    pub consume: Option<SideResults>,
    /// e2e: consume time - send time per record, microseconds.
    pub e2e_latency_us: Option<Percentiles>,
    /// Open loop: how late each request was sent after its intended time (the bench's own
    /// delay, in the produce and e2e latencies), microseconds.
    pub send_lag_us: Option<Percentiles>,
    /// e2e: records produced (warm-up included) but never consumed.
    pub e2e_missing_records: Option<u64>,
}

/// A report and the histograms behind its latencies (for `--plot`).
pub struct Outcome {
    /// The report.
    pub report: NetReport,
    /// (name, histogram in µs) of each latency the report gives.
    pub curves: Vec<(String, Histogram<u64>)>,
}

impl NetReport {
    /// The report of a finished run of `workload`.
    pub fn build(
        workload: &'static str,
        args: &NetArgs,
        run: &Run,
        partitions: u32,
        batch_bytes: usize,
    ) -> Outcome {
        let produces = workload != "consume";
        let consumes = workload != "produce";
        let mut curves = Vec::new();
        let produce = produces.then(|| {
            let latency = run.produce.latency();
            let side = side_results(args, run, &run.produce, &latency);
            curves.push(("produce".to_string(), latency));
            side
        });
        let consume = consumes.then(|| {
            let latency = run.consume.latency();
            let side = side_results(args, run, &run.consume, &latency);
            if workload == "consume" {
                curves.push(("fetch".to_string(), latency));
            }
            side
        });
        let e2e = (workload == "e2e").then(|| {
            let latency = run.e2e_latency();
            let percentiles = Percentiles::of(&latency);
            curves.insert(0, ("end to end".to_string(), latency));
            percentiles
        });
        let missing = (workload == "e2e").then(|| {
            run.produce
                .all
                .records()
                .saturating_sub(run.consume.all.records())
        });
        let send_lag = (produces && args.rate.is_some()).then(|| Percentiles::of(&run.send_lag()));
        let report = NetReport {
            workload,
            command: std::env::args().collect(),
            git_commit: git_commit(),
            config: config(args, run, partitions, batch_bytes),
            produce,
            consume,
            e2e_latency_us: e2e,
            send_lag_us: send_lag,
            e2e_missing_records: missing,
        };
        Outcome { report, curves }
    }

    /// Writes the final table to `out` (stdout).
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let c = &self.config;
        let load = match c.rate {
            Some(rate) => format!("open loop at {rate} records/s"),
            None => "closed loop".to_string(),
        };
        let (records, size, bytes) = (c.batch_records, c.record_size, c.batch_bytes);
        let producers = format!(
            "producers={} inflight={} acks={} idempotence={} batch={records} x {size} B \
             ({bytes} B), {load}",
            c.producers, c.inflight, c.acks, c.idempotence
        );
        let consumers = format!(
            "consumers={} fetch max {} B, max wait {} ms",
            c.consumers, c.fetch_max_bytes, c.fetch_max_wait_ms
        );
        let what = match self.workload {
            "produce" => producers,
            "consume" => format!("{consumers}, from {}", c.from),
            _ => format!("{producers}; {consumers}"),
        };
        writeln!(
            out,
            "{} ({} protocol): topic={} partitions={} {what}, warm-up {:.1} s",
            self.workload, c.protocol, c.topic, c.partitions, c.warmup_s
        )?;
        writeln!(
            out,
            "  {:<10} {:>9} {:>12} {:>12} {:>9} {:>11}",
            "", "elapsed", "records", "records/s", "MiB/s", "requests/s"
        )?;
        let sides = [("produce", &self.produce), ("consume", &self.consume)];
        for (name, side) in sides {
            if let Some(s) = side {
                writeln!(
                    out,
                    "  {name:<10} {:>7.2} s {:>12} {:>12.0} {:>9.1} {:>11.0}",
                    s.elapsed_s, s.records, s.records_per_s, s.mib_per_s, s.requests_per_s
                )?;
            }
        }
        writeln!(
            out,
            "  {:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        )?;
        let rows = [
            ("produce", self.produce.as_ref().map(|s| s.latency_us)),
            ("fetch", self.consume.as_ref().map(|s| s.latency_us)),
            ("e2e", self.e2e_latency_us),
            ("send lag", self.send_lag_us),
        ];
        for (name, latency) in rows {
            if let Some(l) = latency.filter(|l| l.count > 0) {
                writeln!(
                    out,
                    "  {name:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                    human_us(l.p50),
                    human_us(l.p90),
                    human_us(l.p99),
                    human_us(l.p999),
                    human_us(l.p9999),
                    human_us(l.max)
                )?;
            }
        }
        self.print_notes(out)
    }

    /// The lines under the table: what went wrong, if anything.
    fn print_notes(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        if let Some(errors) = self.produce.as_ref().map(|s| s.errors).filter(|e| *e > 0) {
            writeln!(
                out,
                "  {errors} produce requests failed after the client's retries"
            )?;
        }
        if let Some(missing) = self.e2e_missing_records.filter(|m| *m > 0) {
            writeln!(out, "  {missing} records produced but not consumed")?;
        }
        Ok(())
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")?;
        Ok(())
    }
}

fn side_results(args: &NetArgs, run: &Run, side: &Side, latency: &Histogram<u64>) -> SideResults {
    // A duration run measures at least its whole window, even if the side went idle.
    let window = match args.count {
        Some(_) => 0.0,
        None => args.duration - run.warmup.as_secs_f64(),
    };
    let secs = run.measured_secs(side).max(window).max(1e-9);
    let (records, bytes, requests) = (
        side.measured.records(),
        side.measured.bytes(),
        side.measured.requests(),
    );
    SideResults {
        elapsed_s: secs,
        requests,
        records,
        bytes,
        requests_per_s: requests as f64 / secs,
        records_per_s: records as f64 / secs,
        mib_per_s: bytes as f64 / secs / f64::from(1u32 << 20),
        latency_us: Percentiles::of(latency),
        errors: side.errors(),
        timeline: side.series(run),
    }
}

fn config(args: &NetArgs, run: &Run, partitions: u32, batch_bytes: usize) -> NetConfigReport {
    NetConfigReport {
        brokers: args.brokers.clone(),
        protocol: match args.protocol {
            Protocol::Shardlog => "shardlog",
            Protocol::Kafka => "kafka",
        },
        topic: args.topic.clone(),
        partitions,
        record_size: args.record_size,
        batch_records: args.batch_records,
        batch_bytes,
        count: args.count,
        duration_s: args.duration,
        warmup_s: run.warmup.as_secs_f64(),
        load: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: args.rate,
        producers: args.producers,
        consumers: args.consumers,
        inflight: args.inflight,
        acks: match args.acks {
            AcksArg::None => "none",
            AcksArg::Leader => "leader",
            AcksArg::All => "all",
        },
        idempotence: args.idempotence && args.acks != AcksArg::None,
        threads: args.threads,
        from: match args.from {
            FromArg::Beginning => "beginning",
            FromArg::End => "end",
        },
        fetch_max_bytes: args.fetch_max_bytes,
        fetch_max_wait_ms: args.fetch_max_wait_ms,
    }
}
