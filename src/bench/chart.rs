//! `bench --chart PATH`: median latency per query, generated policy vs hand-written vs naive, as
//! grouped horizontal bars in an SVG file (plotters' SVG backend: no fonts or native libraries).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Report;

const WIDTH: u32 = 1000;
const LABEL_W: i32 = 270;
const BAR_H: i32 = 14;
const TOP: i32 = 80;

/// The three series: name and colour.
const SERIES: [(&str, RGBColor); 3] = [
    ("generated policy (app role)", RGBColor(31, 119, 180)),
    ("hand-written, RLS bypassed", RGBColor(140, 140, 140)),
    ("naive policy", RGBColor(230, 120, 20)),
];

pub fn write_svg(report: &Report, path: &Path) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!(
            "--chart writes SVG: give a path ending in .svg (got {})\n  hint: convert it to PNG with e.g. `rsvg-convert -o chart.png chart.svg`",
            path.display()
        );
    }
    let group_h = BAR_H * 3 + 16;
    let height = (TOP + group_h * report.queries.len() as i32 + 50) as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    draw(report, &root, group_h).map_err(|e| anyhow!("cannot draw the chart: {e}"))?;
    root.present()
        .map_err(|e| anyhow!("cannot write the chart to {}: {e}", path.display()))
}

fn draw<DB: DrawingBackend>(
    report: &Report,
    root: &DrawingArea<DB, plotters::coord::Shift>,
    group_h: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let text = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    let title = format!(
        "Median latency per query (ms): the whole transaction, {} rounds x {} runs",
        report.rounds, report.iterations
    );
    root.draw(&Text::new(title, (20, 15), text(20)))?;
    for (i, (name, colour)) in SERIES.iter().enumerate() {
        let x = 20 + 300 * i as i32;
        root.draw(&Rectangle::new([(x, 50), (x + 14, 64)], colour.filled()))?;
        root.draw(&Text::new(name.to_string(), (x + 20, 50), text(14)))?;
    }
    let max = report
        .queries
        .iter()
        .flat_map(|q| {
            [
                Some(q.policy.transaction.median_ms),
                Some(q.baseline.transaction.median_ms),
                q.naive.map(|n| n.transaction.median_ms),
            ]
        })
        .flatten()
        .fold(0.0_f64, f64::max)
        .max(1e-3);
    let scale = (WIDTH as i32 - LABEL_W - 110) as f64 / max;
    let right = text(13).pos(Pos::new(HPos::Right, VPos::Center));
    for (qi, q) in report.queries.iter().enumerate() {
        let y0 = TOP + group_h * qi as i32;
        root.draw(&Text::new(
            q.name.clone(),
            (LABEL_W - 10, y0 + BAR_H * 3 / 2),
            right.clone(),
        ))?;
        let values = [
            Some(q.policy.transaction.median_ms),
            Some(q.baseline.transaction.median_ms),
            q.naive.map(|n| n.transaction.median_ms),
        ];
        for (si, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let y = y0 + BAR_H * si as i32;
            let x1 = LABEL_W + (v * scale).round() as i32;
            root.draw(&Rectangle::new(
                [(LABEL_W, y), (x1.max(LABEL_W + 1), y + BAR_H - 2)],
                SERIES[si].1.filled(),
            ))?;
            root.draw(&Text::new(format!("{v:.3}"), (x1 + 5, y), text(12)))?;
        }
    }
    let bottom = TOP + group_h * report.queries.len() as i32;
    root.draw(&PathElement::new(
        vec![(LABEL_W, TOP - 5), (LABEL_W, bottom)],
        BLACK,
    ))?;
    let note = format!("ratios policy/hand-written: {}", ratios(report));
    root.draw(&Text::new(note, (20, bottom + 15), text(13)))?;
    Ok(())
}

fn ratios(report: &Report) -> String {
    let (lo, hi) = report
        .queries
        .iter()
        .map(|q| q.ratio)
        .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r), b.max(r)));
    if report.queries.is_empty() {
        "none".into()
    } else {
        format!("{lo:.2} to {hi:.2}")
    }
}
