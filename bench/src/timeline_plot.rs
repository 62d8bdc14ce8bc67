//! The per-second timeline as SVG, drawn beside `--plot`'s percentile curve in the same
//! style: two panels over one time axis (seconds from the start, warm-up included), above
//! throughput in records/s per side (errors as red crosses on the axis), below the p50 and
//! p99 latency of the requests completed in each second, in milliseconds. A failover shows
//! as throughput falling to zero and the latency of the requests that waited through it
//! spiking right after.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::net_report::NetReport;
use crate::timeline::SecondPoint;

/// `DIR/NAME.svg` -> `DIR/NAME.timeline.svg` (the timeline next to the plot).
pub fn path_beside(plot: &Path) -> PathBuf {
    let stem = plot
        .file_stem()
        .map_or_else(|| "plot".to_owned(), |s| s.to_string_lossy().into_owned());
    plot.with_file_name(format!("{stem}.timeline.svg"))
}

/// The sides of `report` that ran, with their series.
fn sides(report: &NetReport) -> Vec<(&'static str, &[SecondPoint])> {
    let mut sides = Vec::new();
    if let Some(produce) = &report.produce {
        sides.push(("produce", produce.timeline.as_slice()));
    }
    if let Some(consume) = &report.consume {
        sides.push(("consume", consume.timeline.as_slice()));
    }
    sides
}

/// Writes the timeline of `report` to `path`.
pub fn write_svg(path: &Path, title: &str, report: &NetReport) -> anyhow::Result<()> {
    let sides = sides(report);
    let error = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let x_max = sides
        .iter()
        .filter_map(|(_, s)| s.last().map(|p| p.second as f64 + p.span_s))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| error(&e))?;
    let (top, bottom) = root.split_vertically(340);
    draw_throughput(&top, x_max, &sides).map_err(|e| error(&e))?;
    draw_latency(&bottom, x_max, &sides).map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

const SIDE_COLORS: [RGBColor; 2] = [BLUE, GREEN];

/// The rate of a last second shorter than this is not drawn: a few requests draining
/// after the deadline over a few milliseconds make a rate that looks like a dip and is
/// none (the JSON keeps it, with its `span_s`).
const SPAN_DRAWN_MIN_S: f64 = 0.5;

/// Records per second of each side, errors as red crosses on the time axis.
fn draw_throughput(area: &Area<'_>, x_max: f64, sides: &[(&str, &[SecondPoint])]) -> DrawResult {
    let y_max = sides
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.records_per_s))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc("records/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (name, series)) in sides.iter().enumerate() {
        let color = SIDE_COLORS[i % SIDE_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                series
                    .iter()
                    .filter(|p| p.span_s >= SPAN_DRAWN_MIN_S)
                    .map(|p| (p.second as f64 + p.span_s / 2.0, p.records_per_s)),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        let errors: Vec<f64> = series
            .iter()
            .filter(|p| p.errors > 0)
            .map(|p| p.second as f64 + p.span_s / 2.0)
            .collect();
        if !errors.is_empty() {
            chart
                .draw_series(
                    errors
                        .into_iter()
                        .map(|x| Cross::new((x, 0.0), 6, RED.stroke_width(2))),
                )?
                .label(format!("{name} errors"))
                .legend(|(x, y)| Cross::new((x + 10, y), 5, RED.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// p50 and p99 of the requests completed in each second, ms; a second with none has no
/// point (the line joins its neighbours).
fn draw_latency(area: &Area<'_>, x_max: f64, sides: &[(&str, &[SecondPoint])]) -> DrawResult {
    let ms = |us: Option<u64>| us.map(|us| us as f64 / 1e3);
    let y_max = sides
        .iter()
        .flat_map(|(_, s)| s.iter().filter_map(|p| ms(p.p99_us)))
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc("latency (ms)")
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    for (i, (name, series)) in sides.iter().enumerate() {
        let color = SIDE_COLORS[i % SIDE_COLORS.len()];
        for (quantile, pick, width) in [
            (
                "p50",
                (|p: &SecondPoint| p.p50_us) as fn(&SecondPoint) -> Option<u64>,
                1,
            ),
            ("p99", |p: &SecondPoint| p.p99_us, 3),
        ] {
            let points = series
                .iter()
                .filter_map(|p| ms(pick(p)).map(|y| (p.second as f64 + p.span_s / 2.0, y)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))?
                .label(format!("{name} {quantile}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_goes_beside_the_plot() {
        assert_eq!(
            path_beside(Path::new("/r/produce.svg")),
            Path::new("/r/produce.timeline.svg")
        );
        assert_eq!(path_beside(Path::new("run")), Path::new("run.timeline.svg"));
    }
}
