//! SVG charts for the report, drawn with plotters' SVG backend (no fonts
//! needed: text is emitted as SVG `<text>`, sized by plotters' naive metrics).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One bar with an optional interval.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
}

fn finite_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let span = hi - lo;
    (lo - pad * span, hi + pad * span)
}

/// Bars with interval whiskers and an optional horizontal reference line
/// (e.g. 0.5 for win rates against the baseline).
pub fn bars(title: &str, y_label: &str, bars: &[Bar], y_range: Option<(f64, f64)>, reference: Option<f64>) -> String {
    let mut svg = String::new();
    // Room for each bar's label (plotters' naive metrics: about 7 px a character).
    let per_bar = bars.iter().map(|b| 7 * b.label.chars().count() + 12).max().unwrap_or(0).max(80);
    let width = (160 + per_bar * bars.len().max(1)) as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (width.max(420), 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let (lo, hi) = y_range.unwrap_or_else(|| {
            let vals =
                bars.iter().flat_map(|b| [Some(b.value), b.interval.map(|i| i.0), b.interval.map(|i| i.1)]).flatten();
            let (l, h) = finite_range(vals.chain([0.0]), 0.1);
            (l.min(0.0), h)
        });
        let n = bars.len().max(1) as i32;
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0..n - 1).into_segmented(), lo..hi);
        let Ok(mut chart) = chart else { return svg_error(title) };
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        let _ = chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n as usize + 1)
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(y_label)
            .draw();
        let base = 0f64.clamp(lo, hi);
        for (i, b) in bars.iter().enumerate() {
            if !b.value.is_finite() {
                continue;
            }
            let i = i as i32;
            let mut rect = Rectangle::new(
                [(SegmentValue::Exact(i), base), (SegmentValue::Exact(i + 1), b.value)],
                color(i as usize).filled(),
            );
            rect.set_margin(0, 0, 12, 12);
            let _ = chart.draw_series(std::iter::once(rect));
            if let Some((l, h)) = b.interval {
                let whisker =
                    ErrorBar::new_vertical(SegmentValue::CenterOf(i), l, b.value, h, BLACK.stroke_width(2), 12);
                let _ = chart.draw_series(std::iter::once(whisker));
            }
        }
        if let Some(r) = reference {
            let line = vec![(SegmentValue::Exact(0), r), (SegmentValue::Exact(n), r)];
            let _ = chart.draw_series(LineSeries::new(line, BLACK.stroke_width(1)));
        }
        let _ = root.present();
    }
    svg
}

/// Several series over a shared x axis, with a legend.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 340)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let (x0, x1) = finite_range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)), 0.02);
        let (y0, y1) = finite_range(series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)), 0.08);
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y0..y1);
        let Ok(mut chart) = chart else { return svg_error(title) };
        let _ = chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw();
        for (i, (name, points)) in series.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            if let Ok(s) = chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2))) {
                s.label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
            }
            let _ = chart.draw_series(pts.iter().map(|p| Circle::new(*p, 2, c.filled())));
        }
        let _ = chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw();
        let _ = root.present();
    }
    svg
}

/// Grouped bars: one group per category, one bar per series.
pub fn grouped_bars(title: &str, y_label: &str, categories: &[String], series: &[(String, Vec<f64>)]) -> String {
    let mut svg = String::new();
    {
        let k = series.len().max(1);
        let width = (180 + categories.len().max(1) * (26 * k + 30)) as u32;
        let root = SVGBackend::with_string(&mut svg, (width.max(460), 330)).into_drawing_area();
        let _ = root.fill(&WHITE);
        // Head room above the bars for the legend.
        let (_, top) = finite_range(series.iter().flat_map(|(_, v)| v.iter().copied()).chain([0.0, 1.0]), 0.0);
        let n = categories.len().max(1);
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..top * 1.45);
        let Ok(mut chart) = chart else { return svg_error(title) };
        let _ = chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc(y_label).draw();
        let w = 0.8 / k as f64;
        for (si, (name, values)) in series.iter().enumerate() {
            let c = color(si);
            let rects: Vec<Rectangle<(f64, f64)>> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(ci, v)| {
                    let x = ci as f64 + 0.1 + si as f64 * w;
                    Rectangle::new([(x, 0.0), (x + w * 0.92, *v)], c.filled())
                })
                .collect();
            if let Ok(s) = chart.draw_series(rects) {
                s.label(name.clone()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
            }
        }
        // Category labels under each group, placed in pixels.
        let style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, label) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let _ = root.draw(&Text::new(label.clone(), (px, py + 6), style.clone()));
        }
        let _ = chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw();
        let _ = root.present();
    }
    svg
}

fn svg_error(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"300\" height=\"40\"><text x=\"5\" y=\"20\">{title}: no data</text></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_marks() {
        let b = bars(
            "win rate",
            "rate",
            &[
                Bar { label: "ppo".into(), value: 0.7, interval: Some((0.6, 0.8)) },
                Bar { label: "sft".into(), value: 0.5, interval: None },
            ],
            Some((0.0, 1.0)),
            Some(0.5),
        );
        assert!(b.starts_with("<svg") && b.contains("<rect") && b.contains("ppo"), "{b}");
        let l = lines("curve", "it", "v", &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0)])]);
        assert!(l.contains("<polyline") || l.contains("<path"), "{l}");
        let g = grouped_bars("g", "rate", &["x".into(), "y".into()], &[("m".into(), vec![0.1, 0.2])]);
        assert!(g.contains("<rect"));
        // Degenerate input does not panic.
        let _ = lines("empty", "x", "y", &[]);
        let _ = bars("nan", "y", &[Bar { label: "n".into(), value: f64::NAN, interval: None }], None, None);
    }
}
