//! `--plot FILE`: the latency percentile curve as SVG, drawn the way HdrHistogram plots
//! are: x is the percentile on a log scale of `1 / (1 - q)` (ticks at 0%, 90%, 99%, 99.9%,
//! ...), y the latency in milliseconds. Text is left to the SVG viewer's fonts (plotters
//! without font features only estimates text sizes, which SVG does not need).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Points per halving of the distance to 100% (as HdrHistogram's percentile output).
const TICKS_PER_HALF: u32 = 5;

/// Writes the curves (name, histogram in µs) to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    curves: &[(String, Histogram<u64>)],
) -> anyhow::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = curves
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (name.as_str(), points(h)))
        .collect();
    // Beyond 1/count the percentiles are all the max: stop the axis there, but show at
    // least up to 99.9%.
    let x_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(3.0f64, f64::max)
        .ceil();
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.001f64, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| error(&e))?;
    let ticks = (0u32..64).take_while(|k| f64::from(*k) <= x_max).count();
    chart
        .configure_mesh()
        .x_labels(ticks)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| error(&e))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| error(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

/// (x, latency ms) along the percentile distribution; x = log10(1 / (1 - q)), capped at
/// log10(count) where the distribution ends.
fn points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let cap = (histogram.len() as f64).log10().max(1.0);
    let mut points: Vec<(f64, f64)> = histogram
        .iter_quantiles(TICKS_PER_HALF)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                cap
            } else {
                (1.0 / (1.0 - q)).log10().min(cap)
            };
            (x, v.value_iterated_to() as f64 / 1e3)
        })
        .collect();
    points.push((cap, histogram.max() as f64 / 1e3));
    points
}

/// "0%", "90%", "99%", "99.9%"... for x = 0, 1, 2, 3...
fn percentile_label(x: f64) -> String {
    let Some(nines) = (0u32..64).find(|k| (x - f64::from(*k)).abs() < 1e-6) else {
        return String::new();
    };
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
        assert_eq!(percentile_label(2.5), "");
    }
}
