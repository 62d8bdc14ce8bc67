//! `GET /v1/series`: throughput and produce p99 over the last [`SERIES_SECONDS`], one
//! sample per second, for the console's charts.
//!
//! Once a second the node takes a [`Reading`] of its cumulative counters (the metrics
//! registry summed over its shards) and [`SeriesRing::record`] turns the difference with
//! the previous reading into a [`Sample`]: rates per second, and the p99 of the produce
//! latencies observed in that second, from the histogram buckets' differences (the
//! upper bound of the bucket holding the 99th percentile, as Prometheus'
//! `histogram_quantile` would place it without interpolation). The ring is bounded:
//! the oldest sample goes when a new one comes. Pure: no clock, no I/O.

use std::collections::VecDeque;

use serde::Serialize;

/// Samples kept: ten minutes.
pub(crate) const SERIES_SECONDS: usize = 600;

/// Cumulative counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    /// Milliseconds since the node started.
    pub(crate) at_ms: u64,
    pub(crate) produce_records: u64,
    pub(crate) produce_bytes: u64,
    pub(crate) fetch_records: u64,
    pub(crate) fetch_bytes: u64,
    /// Produce latency histogram: (upper bound in seconds, cumulative count), ascending
    /// bounds, the last one `+Inf`.
    pub(crate) produce_latency: Vec<(f64, u64)>,
}

/// One second (or so: the time between two readings).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// Milliseconds since the node started, at the end of the interval.
    pub(crate) at_ms: u64,
    pub(crate) produce_records_per_sec: f64,
    pub(crate) produce_bytes_per_sec: f64,
    pub(crate) fetch_records_per_sec: f64,
    pub(crate) fetch_bytes_per_sec: f64,
    /// `null` when no produce completed in the interval.
    pub(crate) produce_p99_ms: Option<f64>,
}

/// The last [`SERIES_SECONDS`] samples.
#[derive(Debug, Default)]
pub(crate) struct SeriesRing {
    previous: Option<Reading>,
    samples: VecDeque<Sample>,
}

impl SeriesRing {
    /// Records a reading: a sample of the interval since the previous one (the first
    /// reading only sets the start). A reading whose counters went back (a registry
    /// reset) starts over rather than report negative rates.
    pub(crate) fn record(&mut self, reading: Reading) {
        if let Some(previous) = &self.previous
            && let Some(sample) = sample(previous, &reading)
        {
            if self.samples.len() == SERIES_SECONDS {
                self.samples.pop_front();
            }
            self.samples.push_back(sample);
        }
        self.previous = Some(reading);
    }

    /// The samples, oldest first.
    pub(crate) fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }
}

/// The JSON of `/v1/series`.
#[derive(Debug, Serialize)]
pub(crate) struct SeriesDocument<'a> {
    pub(crate) interval_ms: u64,
    pub(crate) samples: Vec<&'a Sample>,
}

#[allow(clippy::cast_precision_loss)] // Rates for people.
fn sample(previous: &Reading, now: &Reading) -> Option<Sample> {
    let elapsed_ms = now.at_ms.checked_sub(previous.at_ms).filter(|ms| *ms > 0)?;
    let seconds = elapsed_ms as f64 / 1000.0;
    let rate = |before: u64, after: u64| Some(after.checked_sub(before)? as f64 / seconds);
    Some(Sample {
        at_ms: now.at_ms,
        produce_records_per_sec: rate(previous.produce_records, now.produce_records)?,
        produce_bytes_per_sec: rate(previous.produce_bytes, now.produce_bytes)?,
        fetch_records_per_sec: rate(previous.fetch_records, now.fetch_records)?,
        fetch_bytes_per_sec: rate(previous.fetch_bytes, now.fetch_bytes)?,
        produce_p99_ms: quantile(&previous.produce_latency, &now.produce_latency, 0.99)
            .map(|seconds| seconds * 1000.0),
    })
}

/// The `q` quantile of the observations between two cumulative histograms with the same
/// bounds: the upper bound of the first bucket whose cumulative count reaches `q` of the
/// total (the last finite bound if it is the `+Inf` bucket). `None` without observations
/// or when the bounds differ.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    if before.len() != after.len() && !before.is_empty() {
        return None;
    }
    let count_before = |i: usize| before.get(i).map_or(0, |(_, count)| *count);
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, (bound, count))| (*bound, count.saturating_sub(count_before(i))))
        .collect();
    let total = deltas.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut last_finite = None;
    for (bound, cumulative) in deltas {
        if bound.is_finite() {
            last_finite = Some(bound);
        }
        if cumulative >= rank {
            return if bound.is_finite() {
                Some(bound)
            } else {
                last_finite
            };
        }
    }
    last_finite
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: u64, records: u64, latency: &[(f64, u64)]) -> Reading {
        Reading {
            at_ms,
            produce_records: records,
            produce_bytes: records * 100,
            fetch_records: records / 2,
            fetch_bytes: records * 50,
            produce_latency: latency.to_vec(),
        }
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let mut ring = SeriesRing::default();
        ring.record(reading(1000, 0, &[(0.001, 0), (0.01, 0), (INF, 0)]));
        assert_eq!(
            ring.samples().count(),
            0,
            "the first reading only sets the start"
        );
        ring.record(reading(3000, 4000, &[(0.001, 0), (0.01, 0), (INF, 0)]));
        let sample = ring.samples().next().cloned();
        let sample = sample.expect("one sample");
        assert_eq!(sample.at_ms, 3000);
        assert!((sample.produce_records_per_sec - 2000.0).abs() < 1e-9);
        assert!((sample.produce_bytes_per_sec - 200_000.0).abs() < 1e-9);
        assert!((sample.fetch_records_per_sec - 1000.0).abs() < 1e-9);
        assert_eq!(sample.produce_p99_ms, None, "no produce latency observed");
    }

    #[test]
    fn p99_comes_from_the_interval_not_the_history() {
        // Before: 1000 fast produces. In the interval: 98 fast, 2 slow: p99 is slow.
        let before = [(0.001, 1000), (0.1, 1000), (INF, 1000)];
        let after = [(0.001, 1098), (0.1, 1100), (INF, 1100)];
        assert_eq!(quantile(&before, &after, 0.99), Some(0.1));
        // 100 more fast ones only: p99 is fast, though the history holds slow ones.
        let later = [(0.001, 1198), (0.1, 1200), (INF, 1200)];
        assert_eq!(quantile(&after, &later, 0.99), Some(0.001));
        // Only in +Inf: the last finite bound (the histogram cannot say more).
        let inf = [(0.001, 1198), (0.1, 1200), (INF, 1210)];
        assert_eq!(quantile(&later, &inf, 0.99), Some(0.1));
    }

    #[test]
    fn counters_going_back_give_no_sample() {
        let mut ring = SeriesRing::default();
        ring.record(reading(1000, 500, &[]));
        ring.record(reading(2000, 100, &[]));
        assert_eq!(ring.samples().count(), 0);
        ring.record(reading(3000, 300, &[]));
        assert_eq!(
            ring.samples().count(),
            1,
            "starts over from the reset reading"
        );
    }

    #[test]
    fn the_ring_keeps_the_last_ten_minutes() {
        let mut ring = SeriesRing::default();
        for second in 0..=(SERIES_SECONDS as u64 + 10) {
            ring.record(reading(second * 1000, second, &[]));
        }
        assert_eq!(ring.samples().count(), SERIES_SECONDS);
        let first = ring.samples().next().map(|s| s.at_ms);
        assert_eq!(first, Some(11_000), "the oldest samples went");
    }
}
