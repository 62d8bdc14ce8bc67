//! Per-second series of a run: what completed in each second since the start (warm-up
//! included), so a failover or a rebalance shows as a dip in throughput and a spike in
//! latency (`--json`'s `timeline`, and the SVG drawn by `timeline_plot`).
//!
//! Second `i` holds the requests that completed in `[i, i + 1)` s after the start: their
//! records, bytes, errors and latency histogram (p50 and p99 of those requests, from their
//! intended send time like the run's percentiles). A second in which nothing completed is
//! a point with zero records and no percentiles, never a missing point: the dip is the
//! point. The last second is usually partial: its rates divide by the part of it the run
//! lasted. At most [`SECONDS_MAX`] seconds are kept (a longer run's tail is left out of
//! the series, not of the run's totals).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Seconds a timeline holds (one hour); each holds a small histogram (~12 KiB).
pub const SECONDS_MAX: usize = 3600;

const NS_PER_S: u64 = 1_000_000_000;

/// What completed in one second.
#[derive(Debug, Default, Clone)]
struct Second {
    requests: u64,
    records: u64,
    bytes: u64,
    errors: u64,
    /// Latencies in µs; made on the first completion (two significant digits: the
    /// percentiles of a second need no more, and an hour of them stays small).
    latency: Option<Histogram<u32>>,
}

/// The per-second buckets of one side (produce or consume) of a run.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    seconds: Vec<Second>,
}

/// One second of the series, as the JSON report gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondPoint {
    /// Seconds from the start of the run to the start of this second.
    pub second: u64,
    /// The part of this second the run lasted (1 but for the last), seconds.
    pub span_s: f64,
    /// Requests that completed in it.
    pub requests: u64,
    /// Their records.
    pub records: u64,
    /// Their batch bytes.
    pub bytes: u64,
    /// Requests that failed in it (after the client's retries).
    pub errors: u64,
    /// Records per second.
    pub records_per_s: f64,
    /// MiB of batches per second.
    pub mib_per_s: f64,
    /// Median latency of its requests, µs (none if none completed).
    pub p50_us: Option<u64>,
    /// 99th percentile latency of its requests, µs.
    pub p99_us: Option<u64>,
}

impl Timeline {
    /// The bucket of `at_ns` from the start, if within [`SECONDS_MAX`].
    fn bucket(&mut self, at_ns: u64) -> Option<&mut Second> {
        let index = usize::try_from(at_ns / NS_PER_S).ok()?;
        if index >= SECONDS_MAX {
            return None;
        }
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Second::default());
        }
        self.seconds.get_mut(index)
    }

    /// A request that completed `at_ns` after the start.
    pub fn complete(&mut self, at_ns: u64, records: u64, bytes: u64, latency_us: u64) {
        let Some(second) = self.bucket(at_ns) else {
            return;
        };
        second.requests += 1;
        second.records += records;
        second.bytes += bytes;
        let latency = second.latency.get_or_insert_with(second_histogram);
        latency.saturating_record(latency_us.max(1));
    }

    /// A request that failed `at_ns` after the start.
    pub fn error(&mut self, at_ns: u64) {
        if let Some(second) = self.bucket(at_ns) {
            second.errors += 1;
        }
    }

    /// The series up to the run's end, `end_ns` after the start (which bounds the last
    /// second's span; a completion after it, if any, makes the span at least 1 ms).
    pub fn series(&self, end_ns: u64) -> Vec<SecondPoint> {
        let end_s = end_ns as f64 / NS_PER_S as f64;
        (0u64..)
            .zip(&self.seconds)
            .map(|(index, second)| {
                let span_s = (end_s - index as f64).clamp(1e-3, 1.0);
                let percentile = |q: f64| second.latency.as_ref().map(|h| h.value_at_quantile(q));
                SecondPoint {
                    second: index,
                    span_s,
                    requests: second.requests,
                    records: second.records,
                    bytes: second.bytes,
                    errors: second.errors,
                    records_per_s: second.records as f64 / span_s,
                    mib_per_s: second.bytes as f64 / span_s / f64::from(1u32 << 20),
                    p50_us: percentile(0.50),
                    p99_us: percentile(0.99),
                }
            })
            .collect()
    }
}

/// A second's histogram: 1 µs to 10 min, two significant digits.
fn second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("static histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn completions_fall_in_the_second_they_end_in() {
        let mut timeline = Timeline::default();
        timeline.complete(0, 10, 1000, 500);
        timeline.complete(999 * MS, 10, 1000, 1500);
        timeline.complete(1000 * MS, 5, 500, 2000);
        timeline.error(1500 * MS);
        let series = timeline.series(2000 * MS);
        assert_eq!(series.len(), 2);
        assert_eq!(
            (series[0].second, series[0].requests, series[0].records),
            (0, 2, 20)
        );
        assert_eq!((series[0].bytes, series[0].errors), (2000, 0));
        assert_eq!(
            (series[1].second, series[1].requests, series[1].errors),
            (1, 1, 1)
        );
        assert_eq!(series[0].records_per_s, 20.0);
        let p50 = series[1].p50_us.unwrap();
        assert!((1990..=2010).contains(&p50), "{p50}");
    }

    #[test]
    fn a_silent_second_is_a_zero_point_not_a_gap() {
        let mut timeline = Timeline::default();
        timeline.complete(100 * MS, 1, 10, 100);
        timeline.complete(3500 * MS, 1, 10, 2_000_000);
        let series = timeline.series(4000 * MS);
        let seconds: Vec<u64> = series.iter().map(|p| p.second).collect();
        assert_eq!(seconds, [0, 1, 2, 3]);
        for silent in &series[1..3] {
            assert_eq!((silent.requests, silent.records), (0, 0));
            assert_eq!(silent.records_per_s, 0.0);
            assert_eq!((silent.p50_us, silent.p99_us), (None, None));
        }
        // The request that waited through the gap shows as the spike after it.
        let p99 = series[3].p99_us.unwrap();
        assert!((1_990_000..=2_010_000).contains(&p99), "{p99}");
    }

    #[test]
    fn the_last_partial_second_divides_by_what_it_lasted() {
        let mut timeline = Timeline::default();
        timeline.complete(1200 * MS, 50, 50 << 20, 10);
        let series = timeline.series(1250 * MS);
        let last = &series[1];
        assert!((last.span_s - 0.25).abs() < 1e-9, "{}", last.span_s);
        assert!((last.records_per_s - 200.0).abs() < 1e-6);
        assert!((last.mib_per_s - 200.0).abs() < 1e-6);
        assert_eq!(series[0].span_s, 1.0);
    }

    #[test]
    fn percentiles_are_of_each_second_alone() {
        let mut timeline = Timeline::default();
        for i in 1..=100u64 {
            timeline.complete(10 * MS, 1, 1, i * 1000);
            timeline.complete(1010 * MS, 1, 1, 100);
        }
        let series = timeline.series(2000 * MS);
        let (p50, p99) = (series[0].p50_us.unwrap(), series[0].p99_us.unwrap());
        assert!((49_000..=51_000).contains(&p50), "{p50}");
        assert!((98_000..=100_000).contains(&p99), "{p99}");
        assert_eq!(series[1].p99_us, Some(100));
    }

    #[test]
    fn past_the_bound_nothing_grows() {
        let mut timeline = Timeline::default();
        let beyond = (SECONDS_MAX as u64 + 5) * 1000 * MS;
        timeline.complete(beyond, 1, 1, 1);
        timeline.error(beyond);
        assert!(timeline.series(beyond).is_empty());
        timeline.complete((SECONDS_MAX as u64 - 1) * 1000 * MS, 1, 1, 1);
        assert_eq!(timeline.series(beyond).len(), SECONDS_MAX);
    }
}
