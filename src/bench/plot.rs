//! Latency by percentile as an SVG (plotters' SVG backend): the x axis is
//! "nines" (`-log10(1 - p)`: 1 = p90, 2 = p99, 3 = p99.9), as HdrHistogram's
//! plots, so the tail gets as much room as the median.

use std::path::Path;

use plotters::prelude::*;

use super::histogram::LatencyHistogram;
use crate::error::{Error, ErrorKind, Result};

/// Writes the latency-by-percentile plot of `histogram` to `path`.
pub fn write_svg(histogram: &LatencyHistogram, title: &str, path: &Path) -> Result<()> {
    let points: Vec<(f64, f64)> = histogram
        .percentiles()
        .into_iter()
        .filter(|(p, _)| *p < 100.0)
        .map(|(p, us)| (nines(p), us))
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let fail = |e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Io,
            libc::EIO,
            format!("plot {}: {e}", path.display()),
        )
    };
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(points, &BLUE))
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-7).log10()
}

/// `1.0` → `"90%"`, `3.0` → `"99.9%"`.
fn percentile_label(nines: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-nines));
    let digits = (nines - 2.0).ceil().max(0.0) as usize;
    format!("{p:.digits$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_an_svg() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lat.svg");
        write_svg(&h, "test", &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("latency"));
    }

    #[test]
    fn labels_read_as_percentiles() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }
}
