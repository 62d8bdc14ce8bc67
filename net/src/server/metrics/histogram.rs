//! `LatencyHistogram`: an HdrHistogram of microseconds (buckets allocated once, recording
//! allocates nothing) with the exact sum Prometheus wants, and the cumulative counts at
//! the fixed bucket bounds `/metrics` shows.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Bucket upper bounds shown by `/metrics`, seconds (`+Inf` comes after them).
pub(crate) const BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Largest value tracked: an hour, in microseconds (longer samples count as an hour).
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// Latencies of one kind, in microseconds.
#[derive(Clone, Debug)]
pub(crate) struct LatencyHistogram {
    histogram: Histogram<u64>,
    sum_micros: u64,
}

impl LatencyHistogram {
    pub(crate) fn new() -> LatencyHistogram {
        // Two significant digits: 1% precision, a few KiB per histogram.
        let histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, 2)
            .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!()));
        LatencyHistogram {
            histogram,
            sum_micros: 0,
        }
    }

    /// Records one sample.
    pub(crate) fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.histogram
            .saturating_record(micros.clamp(1, HIGHEST_MICROS));
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Adds another histogram's samples.
    pub(crate) fn add(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides: adding cannot fail; if it ever did, the samples
        // would be lost from this scrape only.
        let _ = self.histogram.add(&other.histogram);
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }

    /// Samples recorded.
    pub(crate) fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The sum of every sample, seconds.
    pub(crate) fn sum_seconds(&self) -> f64 {
        Duration::from_micros(self.sum_micros).as_secs_f64()
    }

    /// Cumulative counts at each of `BUCKETS_SECONDS` (samples at or below the bound;
    /// a sample counts at the top of its 1%-wide HdrHistogram bucket).
    pub(crate) fn cumulative(&self) -> [u64; BUCKETS_SECONDS.len()] {
        let mut counts = [0u64; BUCKETS_SECONDS.len()];
        for value in self.histogram.iter_recorded() {
            let seconds = Duration::from_micros(value.value_iterated_to()).as_secs_f64();
            for (bound, count) in BUCKETS_SECONDS.iter().zip(counts.iter_mut()) {
                if seconds <= *bound {
                    *count += value.count_at_value();
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_exact() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(40));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(20));
        let buckets = h.cumulative();
        assert_eq!(buckets[0], 1, "40 µs is within 50 µs");
        assert_eq!(buckets[6], 2, "3 ms is within 5 ms");
        assert_eq!(buckets[BUCKETS_SECONDS.len() - 1], 2, "20 s is past 10 s");
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 20.003_04).abs() < 1e-9);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    }
}
