//! Reports of a [`Summary`]: markdown tables with 95% intervals, per-category
//! CSV, JSON, and an SVG bar chart with error bars (plotters).

use std::path::Path;

use plotters::prelude::*;

use crate::metrics::Suite;
use crate::summary::{Figure, Summary};
use crate::EvalError;

/// What was evaluated, for the reports' titles.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Protocol id (`sfosd`, `patterns`, `rfosd`).
    pub protocol: String,
    /// Protocol title (`S-FOSD`, ...).
    pub title: String,
    /// Split, when a data set was evaluated.
    pub split: Option<String>,
    /// Box jitter, when a data set was evaluated.
    pub box_jitter: Option<f64>,
}

/// Figures of one method or category as a JSON object: each metric's value,
/// and `ci95` {metric: [lo, hi]} beside them.
fn figures_json(suite: Suite, figs: &[Figure], extra: serde_json::Value) -> serde_json::Value {
    let mut o = extra.as_object().cloned().unwrap_or_default();
    let mut ci = serde_json::Map::new();
    for (name, f) in suite.metrics().iter().zip(figs) {
        o.insert((*name).into(), serde_json::json!(f.value));
        ci.insert((*name).into(), serde_json::json!(f.ci95));
    }
    o.insert("ci95".into(), ci.into());
    o.into()
}

/// The `--json` object: protocol, split, query and category counts, and per
/// method its overall figures (fractions 0..1) with `ci95`, its query count
/// and `per_category`; `comparisons` holds the paired differences.
pub fn json(meta: &Meta, s: &Summary) -> serde_json::Value {
    let mut methods = serde_json::Map::new();
    for m in &s.methods {
        let per_category: serde_json::Map<String, serde_json::Value> = m
            .categories
            .iter()
            .map(|(c, r)| {
                let extra = serde_json::json!({"queries": r.queries, "pool": r.pool});
                (c.clone(), figures_json(s.suite, &r.figures, extra))
            })
            .collect();
        let extra = serde_json::json!({"queries": m.queries, "per_category": per_category});
        methods.insert(m.name.clone(), figures_json(s.suite, &m.overall, extra));
    }
    let comparisons: Vec<serde_json::Value> = s
        .comparisons
        .iter()
        .map(|c| {
            let extra = serde_json::json!({"method": c.method, "reference": c.reference});
            figures_json(s.suite, &c.diffs, extra)
        })
        .collect();
    let first = s.methods.first();
    serde_json::json!({
        "protocol": meta.protocol, "split": meta.split, "box_jitter": meta.box_jitter,
        "evaluator": "released FOSD (per-category values, then their mean)",
        "queries": first.map_or(0, |m| m.queries),
        "categories": first.map_or(0, |m| m.categories.len()),
        "bootstrap": s.bootstrap, "seed": s.seed,
        "methods": methods, "comparisons": comparisons,
    })
}

fn cell(f: &Figure) -> String {
    match (f.value, f.ci95) {
        (Some(v), Some([lo, hi])) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
        (Some(v), None) => format!("{v:.3}"),
        (None, _) => "n/a".into(),
    }
}

/// The overall table, and the paired differences, in markdown.
pub fn markdown(meta: &Meta, s: &Summary) -> String {
    let first = s.methods.first();
    let mut out = format!(
        "{} protocol{}{}: {} queries in {} categories. Each figure is the mean of the per-category values, as the released FOSD evaluator computes them",
        meta.title,
        meta.split
            .as_ref()
            .map(|x| format!(", split `{x}`"))
            .unwrap_or_default(),
        meta.box_jitter
            .map(|j| format!(", box jitter {j}"))
            .unwrap_or_default(),
        first.map_or(0, |m| m.queries),
        first.map_or(0, |m| m.categories.len()),
    );
    if s.bootstrap > 0 {
        out.push_str(&format!(
            ", with its 95% bootstrap interval ({} resamples of the queries within each category, seed {})",
            s.bootstrap, s.seed
        ));
    }
    out.push_str(".\n\n| method | queries |");
    let titles = s.suite.titles();
    for t in titles {
        out.push_str(&format!(" {t} |"));
    }
    out.push_str("\n|---|---:|");
    out.push_str(&"---:|".repeat(titles.len()));
    out.push('\n');
    for m in &s.methods {
        out.push_str(&format!("| {} | {} |", m.name, m.queries));
        for f in &m.overall {
            out.push_str(&format!(" {} |", cell(f)));
        }
        out.push('\n');
    }
    if let Some(c0) = s.comparisons.first() {
        out.push_str(&format!(
            "\nPaired differences, method minus `{}`, on the same resampled queries; **bold**: the interval excludes 0 (outside the noise).\n\n| method |",
            c0.reference
        ));
        for t in titles {
            out.push_str(&format!(" Δ{t} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(titles.len()));
        out.push('\n');
        for c in &s.comparisons {
            out.push_str(&format!("| {} |", c.method));
            for f in &c.diffs {
                let t = cell(f);
                if f.value.is_some() && f.ci95.is_some() && !f.holds(0.0) {
                    out.push_str(&format!(" **{t}** |"));
                } else {
                    out.push_str(&format!(" {t} |"));
                }
            }
            out.push('\n');
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One row per (category, method): counts, then each metric's value and
/// interval.
pub fn csv(s: &Summary) -> String {
    let mut out = String::from("category,method,queries,pool");
    for m in s.suite.metrics() {
        out.push_str(&format!(",{m},{m}_lo,{m}_hi"));
    }
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    let cats: std::collections::BTreeSet<&String> =
        s.methods.iter().flat_map(|m| m.categories.keys()).collect();
    for cat in cats {
        for m in &s.methods {
            let Some(r) = m.categories.get(cat) else {
                continue;
            };
            out.push_str(&format!(
                "{},{},{},{}",
                csv_field(cat),
                csv_field(&m.name),
                r.queries,
                r.pool
            ));
            for f in &r.figures {
                let [lo, hi] = f.ci95.map_or([None, None], |[a, b]| [Some(a), Some(b)]);
                out.push_str(&format!(",{},{},{}", opt(f.value), opt(lo), opt(hi)));
            }
            out.push('\n');
        }
    }
    out
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(120, 120, 120),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(0, 114, 178),
    RGBColor(240, 228, 66),
];

/// A grouped bar chart (one group per metric, one bar per method) with the
/// 95% intervals as error bars, as SVG.
pub fn chart(meta: &Meta, s: &Summary) -> Result<String, String> {
    let titles = s.suite.titles();
    let n = s.methods.len().max(1);
    let mut svg = String::new();
    {
        let width = (300 + titles.len() * (n * 22 + 40)).max(640) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let (root, legend) = root.split_horizontally(width - 150);
        for (mi, m) in s.methods.iter().enumerate() {
            let y = 50 + 22 * mi as i32;
            let colour = COLOURS[mi % COLOURS.len()];
            legend
                .draw(&Rectangle::new([(8, y), (22, y + 14)], colour.filled()))
                .map_err(|x| e(&x))?;
            legend
                .draw(&Text::new(m.name.clone(), (30, y), ("sans-serif", 14)))
                .map_err(|x| e(&x))?;
        }
        let caption = format!(
            "{}{}, {} queries; 95% bootstrap intervals",
            meta.title,
            meta.split
                .as_ref()
                .map(|x| format!(", split {x}"))
                .unwrap_or_default(),
            s.methods.first().map_or(0, |m| m.queries)
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(44)
            .build_cartesian_2d(0.0..titles.len() as f64, 0.0..1.0)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_labels(11)
            .x_labels(titles.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < titles.len() {
                    titles[i].to_owned()
                } else {
                    String::new()
                }
            })
            .y_desc("value")
            .draw()
            .map_err(|x| e(&x))?;
        let bar = 0.8 / n as f64;
        for (mi, m) in s.methods.iter().enumerate() {
            let colour = COLOURS[mi % COLOURS.len()];
            let x0 = |g: usize| g as f64 + 0.1 + mi as f64 * bar;
            chart
                .draw_series(m.overall.iter().enumerate().filter_map(|(g, f)| {
                    f.value.map(|v| {
                        Rectangle::new(
                            [(x0(g) + bar * 0.08, 0.0), (x0(g) + bar * 0.92, v)],
                            colour.filled(),
                        )
                    })
                }))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(m.overall.iter().enumerate().filter_map(|(g, f)| {
                    let (v, [lo, hi]) = (f.value?, f.ci95?);
                    Some(ErrorBar::new_vertical(
                        x0(g) + bar / 2.0,
                        lo,
                        v,
                        hi,
                        BLACK.stroke_width(1),
                        6,
                    ))
                }))
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// Writes `report.md` (`md`: [`markdown`] and anything the caller adds),
/// `per_category.csv`, `metrics.json` (`json`: [`json`] and anything the
/// caller adds) and `chart.svg` into `dir`, each atomically.
pub fn write(
    meta: &Meta,
    s: &Summary,
    dir: &Path,
    md: &str,
    json: &serde_json::Value,
) -> Result<(), EvalError> {
    let save = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        fos_image::atomic::write_atomic(&p, bytes).map_err(|source| EvalError::Io {
            path: p.clone(),
            source,
        })
    };
    save("report.md", md.as_bytes())?;
    save("per_category.csv", csv(s).as_bytes())?;
    save(
        "metrics.json",
        serde_json::to_string_pretty(json)
            .expect("serialises")
            .as_bytes(),
    )?;
    let svg = chart(meta, s).map_err(|e| EvalError::Setup(format!("chart: {e}")))?;
    save("chart.svg", svg.as_bytes())
}
