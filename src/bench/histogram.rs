//! Latency histograms: one HDR histogram per worker thread (no lock on the
//! message path), merged once at the end.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly; larger values are clamped to it.
const MAX_NS: u64 = 3_600 * 1_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (1 ns to 1 h, 3 significant digits).
    pub fn new() -> LatencyHistogram {
        // Bounds and precision are constants known to be valid.
        let inner = Histogram::new_with_bounds(1, MAX_NS, 3)
            .unwrap_or_else(|_| unreachable!("valid histogram bounds"));
        LatencyHistogram { inner }
    }

    /// Records one latency (clamped to 1 ns ..= 1 h).
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(MAX_NS);
        self.inner.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.inner.add(&other.inner);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The value at quantile `q` (0.0..=1.0), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        ns_to_us(self.inner.value_at_quantile(q))
    }

    /// Count, min, mean, p50/p90/p99/p99.9 and max, in microseconds (all 0
    /// when empty).
    pub fn summary(&self) -> LatencySummary {
        if self.inner.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.count(),
            min: ns_to_us(self.inner.min()),
            mean: self.inner.mean() / 1_000.0,
            p50: self.quantile_us(0.50),
            p90: self.quantile_us(0.90),
            p99: self.quantile_us(0.99),
            p999: self.quantile_us(0.999),
            max: ns_to_us(self.inner.max()),
        }
    }

    /// `(percentile 0..=100, latency µs)` points, 5 per halving of the
    /// remaining tail, as HdrHistogram's percentile distribution.
    pub fn percentiles(&self) -> Vec<(f64, f64)> {
        if self.inner.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(f64, f64)> = self
            .inner
            .iter_quantiles(5)
            .map(|v| {
                (
                    v.quantile_iterated_to() * 100.0,
                    ns_to_us(v.value_iterated_to()),
                )
            })
            .collect();
        out.push((100.0, ns_to_us(self.inner.max())));
        out
    }

    /// Writes HdrHistogram's percentile distribution text format, as its
    /// `outputPercentileDistribution(out, 5, 1000.0)` does (values in
    /// microseconds), readable by HdrHistogram's plotter: one row per
    /// percentile step with `Value`, `Percentile`, `TotalCount` (the running
    /// total of values at or below `Value`, so the last row holds the total
    /// count) and `1/(1-Percentile)`, then the `#[Mean …]`, `#[Max …]` and
    /// `#[Buckets …]` footer.
    pub fn write_percentile_distribution(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total_count = 0u64;
        for v in self.inner.iter_quantiles(5) {
            // The iterator gives the count since the previous row; the
            // format wants the count at or below this row's value.
            total_count += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = ns_to_us(v.value_iterated_to());
            if q < 1.0 {
                writeln!(
                    w,
                    "{value:12.3} {q:14.12} {total_count:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(w, "{value:12.3} {q:14.12} {total_count:10}")?;
            }
        }
        let s = self.summary();
        let stdev = self.inner.stdev() / 1_000.0;
        writeln!(
            w,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            s.mean, stdev
        )?;
        writeln!(
            w,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            s.max, s.count
        )?;
        writeln!(
            w,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            self.inner.buckets(),
            self.sub_buckets()
        )
    }

    /// Sub-buckets per bucket: the power of two that holds every value up
    /// to 2 × 10^sigfig at unit resolution (2048 for 3 digits), as
    /// HdrHistogram computes it; the crate does not expose its own.
    fn sub_buckets(&self) -> u64 {
        (2 * 10u64.pow(u32::from(self.inner.sigfig()))).next_power_of_two()
    }
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_report_percentiles_in_us() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for us in 1..=500 {
            a.record(Duration::from_micros(us));
        }
        for us in 501..=1000 {
            b.record(Duration::from_micros(us));
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < 1.0, "{s:?}");
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }

    /// HdrHistogram's `outputPercentileDistribution` layout on a fixed
    /// histogram (1..=1000 µs, one value each): the header, rows whose
    /// `TotalCount` is the running total (the count of values at or below
    /// the row's value, so non-decreasing and ending at the total), and the
    /// three-line footer.
    #[test]
    fn distribution_text_is_hdrhistogram_format_with_running_totals() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let mut out = Vec::new();
        h.write_percentile_distribution(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "       Value     Percentile TotalCount 1/(1-Percentile)",
            "{text}"
        );
        assert_eq!(lines[1], "", "{text}");
        let rows = &lines[2..lines.len() - 3];
        assert!(rows.len() > 20, "{text}");
        let mut last = (0.0f64, 0.0f64, 0u64);
        for (i, row) in rows.iter().enumerate() {
            let f: Vec<&str> = row.split_whitespace().collect();
            let value: f64 = f[0].parse().unwrap();
            let percentile: f64 = f[1].parse().unwrap();
            let total: u64 = f[2].parse().unwrap();
            // Every recorded value is a whole µs, and no two share a bucket
            // (resolution ≤ 0.5 µs up to 1 ms): exactly ⌊value⌋ values are
            // at or below the row's value.
            assert_eq!(total, value.floor() as u64, "row {i}: {row}\n{text}");
            assert!(
                value >= last.0 && percentile >= last.1 && total >= last.2,
                "row {i} goes back: {row}\n{text}"
            );
            if i + 1 < rows.len() {
                let inverse: f64 = f[3].parse().unwrap();
                assert!(
                    (inverse - 1.0 / (1.0 - percentile)).abs() < 0.01,
                    "row {i}: {row}"
                );
                assert_eq!(row.len(), 12 + 1 + 14 + 1 + 10 + 1 + 14, "{row:?}");
            } else {
                // The last row is the 100th percentile, without 1/(1-p).
                assert_eq!(f.len(), 3, "{row}");
                assert_eq!(f[1], "1.000000000000", "{row}");
            }
            last = (value, percentile, total);
        }
        assert_eq!(last.2, 1000, "the last row holds the total count\n{text}");
        let footer = &lines[lines.len() - 3..];
        let s = h.summary();
        let stdev = h.inner.stdev() / 1_000.0;
        assert_eq!(
            footer[0],
            format!(
                "#[Mean    = {:12.3}, StdDeviation   = {stdev:12.3}]",
                s.mean
            )
        );
        assert!((s.mean - 500.5).abs() < 0.5, "{s:?}");
        assert!((stdev - 288.7).abs() < 0.5, "{stdev}");
        assert_eq!(
            footer[1],
            format!("#[Max     = {:12.3}, Total count    = {:12}]", s.max, 1000)
        );
        // 1 ns to 1 h at 3 digits: 2048 sub-buckets, and 32 buckets, the
        // first power-of-two multiple of 2048 above 3.6e12 being 2048 × 2^31.
        assert_eq!(
            footer[2],
            format!("#[Buckets = {:12}, SubBuckets     = {:12}]", 32, 2048)
        );
    }

    #[test]
    fn distribution_text_has_header_and_footer() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(20));
        let mut out = Vec::new();
        h.write_percentile_distribution(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value     Percentile"), "{text}");
        assert!(text.contains("Total count    =            2"), "{text}");
    }
}
