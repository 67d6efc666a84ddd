//! The report's charts as SVG text (plotters' SVG backend: text stays text, no fonts are
//! embedded, nothing is fetched): mean KL divergence against file size, KL-divergence percentile
//! curves, and the bits-per-weight map of one file.

use std::collections::BTreeSet;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::facts::ModelFacts;
use crate::report::Report;

const FONT: &str = "sans-serif";
const MIB: f64 = 1024.0 * 1024.0;
/// Smallest KL divergence drawn on a log axis.
const KLD_FLOOR: f64 = 1e-5;

fn chart_err<E: std::fmt::Display>(chart: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Chart {
        chart,
        why: e.to_string(),
    }
}

/// The colour of quant `i` (the same in every chart).
pub fn series_color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Hex form of a series colour, for the page's legend.
pub fn series_hex(i: usize) -> String {
    let c = series_color(i);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn log_range(values: impl Iterator<Item = f64>, floor: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values {
        let v = v.max(floor);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (floor, floor * 10.0);
    }
    // a margin of a fifth of a decade, and at least one decade in all
    let (mut lo, mut hi) = (lo / 10f64.powf(0.2), hi * 10f64.powf(0.2));
    if hi / lo < 10.0 {
        let mid = (hi * lo).sqrt();
        lo = mid / 10f64.sqrt();
        hi = mid * 10f64.sqrt();
    }
    (lo, hi)
}

/// Indices of the quants on the Pareto front (no other quant is both smaller and closer),
/// sorted by size.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len()).collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for i in idx {
        if points[i].1 < best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

/// Mean KL divergence against file size, both on log axes, with ±1 standard error bars, the
/// Pareto front, every file labelled, reference points in grey.
pub fn kld_vs_size(r: &Report) -> Result<String> {
    let err = chart_err("KLD vs size");
    let pts: Vec<(f64, f64)> = r
        .quants
        .iter()
        .map(|q| (q.facts.size_bytes as f64 / MIB, q.kld.mean.max(KLD_FLOOR)))
        .collect();
    let refs: Vec<(f64, f64, &str)> = r
        .references
        .iter()
        .map(|p| {
            (
                p.size_bytes as f64 / MIB,
                p.kld_mean.max(KLD_FLOOR),
                p.label.as_str(),
            )
        })
        .collect();
    let (x0, x1) = log_range(
        pts.iter().map(|p| p.0).chain(refs.iter().map(|p| p.0)),
        1e-3,
    );
    let (y0, y1) = log_range(
        r.quants
            .iter()
            .flat_map(|q| [q.kld.mean - q.kld.mean_err, q.kld.mean + q.kld.mean_err])
            .chain(refs.iter().map(|p| p.1)),
        KLD_FLOOR,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Mean KL divergence vs file size", (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("file size (MiB, log)")
            .y_desc("mean KLD vs base (nats, log)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style((FONT, 12))
            .draw()
            .map_err(&err)?;
        let front: Vec<(f64, f64)> = pareto_front(&pts).into_iter().map(|i| pts[i]).collect();
        chart
            .draw_series(LineSeries::new(
                front,
                ShapeStyle::from(&RGBColor(60, 60, 60)).stroke_width(1),
            ))
            .map_err(&err)?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(60, 60, 60)));
        // labels alternate above and below the points in size order, so neighbours overlap less
        let mut by_size: Vec<usize> = (0..pts.len()).collect();
        by_size.sort_by(|&a, &b| pts[a].0.total_cmp(&pts[b].0).then(a.cmp(&b)));
        let mut label_dy = vec![-14; pts.len()];
        for (rank, &i) in by_size.iter().enumerate() {
            if rank % 2 == 1 {
                label_dy[i] = 4;
            }
        }
        for (i, q) in r.quants.iter().enumerate() {
            let c = series_color(i);
            let (x, y) = pts[i];
            let lo = (q.kld.mean - q.kld.mean_err).max(KLD_FLOOR);
            let hi = (q.kld.mean + q.kld.mean_err).max(KLD_FLOOR);
            chart
                .draw_series(std::iter::once(ErrorBar::new_vertical(
                    x,
                    lo,
                    y,
                    hi,
                    c.stroke_width(1),
                    8,
                )))
                .map_err(&err)?;
            let label = q.facts.file.clone();
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 5, c.filled())
                        + Text::new(label, (8, label_dy[i]), (FONT, 12).into_font().color(&c)),
                ))
                .map_err(&err)?;
        }
        for (x, y, label) in &refs {
            let grey = RGBColor(130, 130, 130);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((*x, *y))
                        + Rectangle::new([(-4, -4), (4, 4)], grey.stroke_width(2))
                        + Text::new(
                            label.to_string(),
                            (8, 2),
                            (FONT, 11).into_font().color(&grey),
                        ),
                ))
                .map_err(&err)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// KL divergence at each percentile of the positions, one curve per quant (log scale).
pub fn kld_curves(r: &Report) -> Result<String> {
    let err = chart_err("KLD percentiles");
    let (y0, y1) = log_range(
        r.quants
            .iter()
            .flat_map(|q| q.kld_curve.iter().filter(|p| p.pct >= 10.0).map(|p| p.kld)),
        KLD_FLOOR,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("KL divergence by percentile of positions", (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(10f64..100f64, (y0..y1).log_scale())
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("percentile of positions")
            .y_desc("KLD (nats, log)")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style((FONT, 12))
            .draw()
            .map_err(&err)?;
        for (i, q) in r.quants.iter().enumerate() {
            let c = series_color(i);
            chart
                .draw_series(LineSeries::new(
                    q.kld_curve
                        .iter()
                        .filter(|p| p.pct >= 10.0)
                        .map(|p| (p.pct, p.kld.max(KLD_FLOOR))),
                    c.stroke_width(2),
                ))
                .map_err(&err)?
                .label(q.facts.file.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .label_font((FONT, 12))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Colour of a bits-per-weight value: a fixed scale (log2 of 1.5 to 16 bits) so that maps of
/// different files compare; dark blue for few bits, yellow for many.
pub fn bpw_color(bpw: f64) -> RGBColor {
    // viridis at five stops
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t =
        ((bpw.max(1.5).log2() - 1.5f64.log2()) / (16f64.log2() - 1.5f64.log2())).clamp(0.0, 1.0);
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |u: f64, v: f64| (u + (v - u) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Role columns in a fixed order: outside the blocks first, then by first appearance.
fn role_columns(f: &ModelFacts) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for c in f.bits.iter().filter(|c| c.layer.is_none()) {
        if !cols.contains(&c.role) {
            cols.push(c.role.clone());
        }
    }
    let mut layered: Vec<&crate::facts::BitsCell> =
        f.bits.iter().filter(|c| c.layer.is_some()).collect();
    layered.sort_by_key(|c| c.layer);
    const ORDER: [&str; 9] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
        "",
        "",
    ];
    let mut rest: Vec<String> = layered.iter().map(|c| c.role.clone()).collect();
    rest.sort_by_key(|r| ORDER.iter().position(|o| o == r).unwrap_or(ORDER.len()));
    for r in rest {
        if !cols.contains(&r) {
            cols.push(r);
        }
    }
    cols
}

fn draw_bits(area: &DrawingArea<SVGBackend<'_>, Shift>, f: &ModelFacts) -> Result<()> {
    let err = chart_err("bits map");
    let cols = role_columns(f);
    let layers: BTreeSet<Option<u32>> = f.bits.iter().map(|c| c.layer).collect();
    let rows: Vec<Option<u32>> = layers.into_iter().collect();
    let (left, top, cw, rh) = (60i32, 70i32, 84i32, 14i32);
    area.draw(&Text::new(
        format!("{}: bits per weight by layer and role", f.file),
        (10, 10),
        (FONT, 16),
    ))
    .map_err(&err)?;
    for (j, role) in cols.iter().enumerate() {
        area.draw(&Text::new(
            role.clone(),
            (left + j as i32 * cw + 2, top - 18),
            (FONT, 11),
        ))
        .map_err(&err)?;
    }
    for (i, layer) in rows.iter().enumerate() {
        let y = top + i as i32 * rh;
        let label = layer.map_or("global".to_string(), |l| format!("blk {l}"));
        area.draw(&Text::new(label, (6, y + 1), (FONT, 10)))
            .map_err(&err)?;
        for (j, role) in cols.iter().enumerate() {
            let Some(c) = f.bits.iter().find(|c| c.layer == *layer && &c.role == role) else {
                continue;
            };
            let x = left + j as i32 * cw;
            let fill = bpw_color(c.bpw);
            area.draw(&Rectangle::new(
                [(x, y), (x + cw - 2, y + rh - 2)],
                fill.filled(),
            ))
            .map_err(&err)?;
            let ink = if c.bpw > 5.0 { BLACK } else { WHITE };
            area.draw(&Text::new(
                c.types.split(',').next().unwrap_or("").to_string(),
                (x + 3, y + 1),
                (FONT, 9).into_font().color(&ink),
            ))
            .map_err(&err)?;
        }
    }
    // the colour scale
    let y = top + rows.len() as i32 * rh + 14;
    let stops = [1.5, 2.0, 3.0, 4.0, 5.0, 6.5, 8.5, 16.0];
    for (k, b) in stops.iter().enumerate() {
        let x = left + k as i32 * 60;
        area.draw(&Rectangle::new(
            [(x, y), (x + 56, y + 12)],
            bpw_color(*b).filled(),
        ))
        .map_err(&err)?;
        area.draw(&Text::new(format!("{b} bpw"), (x + 4, y + 16), (FONT, 10)))
            .map_err(&err)?;
    }
    Ok(())
}

/// The size a bits map of `f` needs.
fn bits_size(f: &ModelFacts) -> (u32, u32) {
    let rows = f
        .bits
        .iter()
        .map(|c| c.layer)
        .collect::<BTreeSet<_>>()
        .len() as u32;
    let cols = role_columns(f).len() as u32;
    ((60 + cols * 84 + 20).max(560), 70 + rows * 14 + 50)
}

/// A map of bits per weight by layer (rows) and tensor role (columns) of one file, each cell
/// coloured by its bits and labelled with its main type.
pub fn bits_map(f: &ModelFacts) -> Result<String> {
    let err = chart_err("bits map");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, bits_size(f)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        draw_bits(&root, f)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// The generation checks per model as grouped bars: functional pass@k and greedy pass rate,
/// sanity flags (any) and loops, in percent.
pub fn checks_chart(r: &Report) -> Result<Option<String>> {
    let err = chart_err("generation checks");
    let mut rows: Vec<(String, &crate::report::ModelChecks)> = Vec::new();
    if let Some(c) = &r.base.checks {
        rows.push((format!("{} (base)", r.base.file), c));
    }
    for q in &r.quants {
        if let Some(c) = &q.checks {
            rows.push((q.facts.file.clone(), c));
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let bars: [(&str, RGBColor); 4] = [
        ("functional pass@k", RGBColor(44, 160, 44)),
        ("functional greedy pass", RGBColor(152, 223, 138)),
        ("sanity: any flag", RGBColor(214, 39, 40)),
        ("sanity: loops", RGBColor(255, 127, 14)),
    ];
    let (left, top, bar_h, plot_w) = (230i32, 60i32, 9i32, 520i32);
    let group_h = bar_h * bars.len() as i32 + 12;
    let height = (top + rows.len() as i32 * group_h + 40) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (820, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        root.draw(&Text::new(
            "Generation checks (percent of prompts / tasks)",
            (10, 10),
            (FONT, 16),
        ))
        .map_err(&err)?;
        for (k, (name, c)) in bars.iter().enumerate() {
            let x = 10 + k as i32 * 190;
            root.draw(&Rectangle::new([(x, 36), (x + 12, 46)], c.filled()))
                .map_err(&err)?;
            root.draw(&Text::new(name.to_string(), (x + 16, 35), (FONT, 11)))
                .map_err(&err)?;
        }
        for pct in [0, 25, 50, 75, 100] {
            let x = left + plot_w * pct / 100;
            root.draw(&PathElement::new(
                vec![(x, top - 4), (x, top + rows.len() as i32 * group_h)],
                RGBColor(220, 220, 220),
            ))
            .map_err(&err)?;
            root.draw(&Text::new(
                format!("{pct}%"),
                (x - 8, top + rows.len() as i32 * group_h + 4),
                (FONT, 10),
            ))
            .map_err(&err)?;
        }
        for (i, (name, c)) in rows.iter().enumerate() {
            let y0 = top + i as i32 * group_h;
            root.draw(&Text::new(name.clone(), (6, y0 + 10), (FONT, 11)))
                .map_err(&err)?;
            let values = [
                c.functional.pass_at_k,
                c.functional.pass_greedy,
                c.sanity.flagged,
                c.sanity.loops,
            ];
            for (k, v) in values.iter().enumerate() {
                let y = y0 + k as i32 * bar_h;
                let w = (plot_w as f64 * v.clamp(0.0, 1.0)).round() as i32;
                root.draw(&Rectangle::new(
                    [(left, y), (left + w.max(1), y + bar_h - 2)],
                    bars[k].1.filled(),
                ))
                .map_err(&err)?;
                root.draw(&Text::new(
                    format!("{:.0}%", 100.0 * v),
                    (left + w + 4, y - 1),
                    (FONT, 9),
                ))
                .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(Some(svg))
}
