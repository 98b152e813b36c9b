//! Summaries of latency samples and the units they are printed in.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Largest latency a histogram records, in nanoseconds: 60 s.
const HISTOGRAM_MAX_NANOS: u64 = 60_000_000_000;
/// Significant decimal digits a histogram keeps, so values are exact to 0.1 %.
const HISTOGRAM_DIGITS: u8 = 3;

/// Median, 99th percentile and maximum of a set of samples, by the nearest-rank method.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// The sample at rank ceil(n / 2).
    pub median: Duration,
    /// The sample at rank ceil(0.99 n), which is the maximum for fewer than 100 samples.
    pub p99: Duration,
    /// The largest sample.
    pub max: Duration,
}

/// Summarizes `samples`, which must not be empty.
pub fn summarize(samples: &[Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples to summarize");
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at_quantile = |quantile: f64| {
        let rank = (quantile * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    Summary {
        count: sorted.len(),
        median: at_quantile(0.5),
        p99: at_quantile(0.99),
        max: sorted[sorted.len() - 1],
    }
}

/// Returns an empty histogram of latencies in nanoseconds, from 1 ns to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NANOS, HISTOGRAM_DIGITS)
        .expect("valid histogram bounds")
}

/// Records `latency` in `histogram`, clamped to the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(nanos.clamp(1, HISTOGRAM_MAX_NANOS));
}

/// Returns the latency at `quantile` (0 to 1) of `histogram`.
pub fn quantile(histogram: &Histogram<u64>, quantile: f64) -> Duration {
    Duration::from_nanos(histogram.value_at_quantile(quantile))
}

/// Formats a latency in the unit that keeps three significant digits: µs below 1 ms, ms above.
pub fn format_latency(latency: Duration) -> String {
    let micros = latency.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 10_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.1} ms", micros / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&ms| Duration::from_millis(ms)).collect()
    }

    #[test]
    fn nearest_rank_of_twenty() {
        let samples = millis(&(1..=20).rev().collect::<Vec<_>>());
        let summary = summarize(&samples);
        assert_eq!(summary.count, 20);
        assert_eq!(summary.median, Duration::from_millis(10));
        assert_eq!(summary.p99, Duration::from_millis(20));
        assert_eq!(summary.max, Duration::from_millis(20));
    }

    #[test]
    fn p99_of_hundred() {
        let samples = millis(&(1..=100).collect::<Vec<_>>());
        let summary = summarize(&samples);
        assert_eq!(summary.median, Duration::from_millis(50));
        assert_eq!(summary.p99, Duration::from_millis(99));
        assert_eq!(summary.max, Duration::from_millis(100));
    }

    #[test]
    fn latency_units() {
        assert_eq!(format_latency(Duration::from_micros(87)), "87 µs");
        assert_eq!(format_latency(Duration::from_micros(1_234)), "1.23 ms");
        assert_eq!(format_latency(Duration::from_micros(101_460)), "101.5 ms");
    }
}
