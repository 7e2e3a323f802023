//! Reports: overall markdown table, per-category CSV, PNG bar chart, JSON.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::protocol::{EvalReport, Protocol};
use crate::EvalError;
use fos_image::draw::{fill_rect, text};

/// The `--json` object: protocol, split, queries, and per method the
/// overall recall@1/5/10/20 and mAP.
pub fn json(r: &EvalReport) -> serde_json::Value {
    let mut methods = serde_json::Map::new();
    for (i, m) in r.methods.iter().enumerate() {
        if r.protocol == Protocol::Rfosd {
            let t = r.macro_overall(i);
            methods.insert(
                m.clone(),
                serde_json::json!({
                    "map": t.map(), "map@20": t.map20(), "precision@1": t.precision(0),
                    "precision@5": t.precision(1), "precision@10": t.precision(2), "precision@20": t.precision(3),
                }),
            );
            continue;
        }
        let t = r.overall(i);
        methods.insert(
            m.clone(),
            serde_json::json!({
                "recall@1": t.recall(0), "recall@5": t.recall(1), "recall@10": t.recall(2),
                "recall@20": t.recall(3), "map": t.map(),
            }),
        );
    }
    serde_json::json!({
        "protocol": r.protocol, "split": r.split, "queries": r.queries(),
        "categories": r.categories.len(), "box_jitter": r.box_jitter, "methods": methods,
    })
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Sfosd => "S-FOSD",
        Protocol::Patterns => "Pattern",
        Protocol::Rfosd => "R-FOSD",
    }
}

/// The overall table in markdown.
pub fn markdown(r: &EvalReport) -> String {
    if r.protocol == Protocol::Rfosd {
        let mut s = format!(
            "R-FOSD protocol, {} queries in {} categories (averaged per category, then over categories)\n\n| method | mAP | mAP@20 | P@1 | P@5 | P@10 | P@20 |\n|---|---:|---:|---:|---:|---:|---:|\n",
            r.queries(),
            r.categories.len()
        );
        for (i, m) in r.methods.iter().enumerate() {
            let t = r.macro_overall(i);
            s.push_str(&format!(
                "| {m} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                t.map(),
                t.map20(),
                t.precision(0),
                t.precision(1),
                t.precision(2),
                t.precision(3)
            ));
        }
        return s;
    }
    let map_name = match r.protocol {
        Protocol::Sfosd => "mAP (= MRR)",
        Protocol::Patterns | Protocol::Rfosd => "mAP (pattern-mates)",
    };
    let mut s = format!(
        "{} protocol, split `{}`, {} queries in {} categories, box jitter {}\n\n| method | R@1 | R@5 | R@10 | R@20 | {map_name} |\n|---|---:|---:|---:|---:|---:|\n",
        protocol_name(r.protocol),
        r.split,
        r.queries(),
        r.categories.len(),
        r.box_jitter
    );
    for (i, m) in r.methods.iter().enumerate() {
        let t = r.overall(i);
        s.push_str(&format!(
            "| {m} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            t.recall(0),
            t.recall(1),
            t.recall(2),
            t.recall(3),
            t.map()
        ));
    }
    s
}

/// One row per (category, method).
pub fn csv(r: &EvalReport) -> String {
    let mut s =
        String::from("category,pool,queries,method,recall@1,recall@5,recall@10,recall@20,map\n");
    for (cat, (pool, ts)) in &r.categories {
        for (m, t) in r.methods.iter().zip(ts) {
            let cat = if cat.contains(',') {
                format!("\"{cat}\"")
            } else {
                cat.clone()
            };
            s.push_str(&format!(
                "{cat},{pool},{},{m},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                t.queries,
                t.recall(0),
                t.recall(1),
                t.recall(2),
                t.recall(3),
                t.map()
            ));
        }
    }
    s
}

const COLOURS: [[u8; 3]; 8] = [
    [120, 120, 120],
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [213, 94, 0],
    [204, 121, 167],
    [0, 114, 178],
    [240, 228, 66],
];

/// A grouped bar chart: R@1/5/10/20 and mAP, one bar per method.
pub fn chart(r: &EvalReport) -> RgbImage {
    let metrics = if r.protocol == Protocol::Rfosd {
        ["P@1", "P@5", "P@10", "P@20", "mAP"]
    } else {
        ["R@1", "R@5", "R@10", "R@20", "mAP"]
    };
    let n = r.methods.len().max(1) as u32;
    let (bar, gap, plot_h, left, top) = (22u32, 30u32, 300u32, 50u32, 40u32);
    let group = n * bar + gap;
    let title = format!(
        "{} protocol, split {}, {} queries",
        protocol_name(r.protocol),
        r.split,
        r.queries()
    );
    let w = (left + group * metrics.len() as u32 + 20).max(left + 16 * title.len() as u32 + 10);
    let h = top + plot_h + 40 + 20 * n;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    text(&mut img, left as i64, 10, &title, 2);
    for i in 0..=4 {
        let y = top + plot_h - plot_h * i / 4;
        fill_rect(
            &mut img,
            left,
            y,
            group * metrics.len() as u32,
            1,
            [220, 220, 220],
        );
        text(
            &mut img,
            6,
            y as i64 - 4,
            &format!("{:.2}", i as f64 / 4.0),
            1,
        );
    }
    for (gi, name) in metrics.iter().enumerate() {
        let gx = left + gap / 2 + gi as u32 * group;
        for (mi, _) in r.methods.iter().enumerate() {
            let t = r.overall(mi);
            let v = match (r.protocol, gi) {
                (Protocol::Rfosd, 4) => r.macro_overall(mi).map(),
                (Protocol::Rfosd, g) => r.macro_overall(mi).precision(g),
                (_, 4) => t.map(),
                (_, g) => t.recall(g),
            };
            let bh = (v.clamp(0.0, 1.0) * plot_h as f64).round() as u32;
            fill_rect(
                &mut img,
                gx + mi as u32 * bar,
                top + plot_h - bh,
                bar - 3,
                bh.max(1),
                COLOURS[mi % COLOURS.len()],
            );
        }
        text(&mut img, gx as i64, (top + plot_h + 8) as i64, name, 2);
    }
    for (mi, m) in r.methods.iter().enumerate() {
        let y = top + plot_h + 36 + mi as u32 * 20;
        fill_rect(&mut img, left, y, 14, 14, COLOURS[mi % COLOURS.len()]);
        text(&mut img, (left + 22) as i64, y as i64 + 3, m, 1);
    }
    img
}

/// Writes `report.md`, `per_category.csv`, `metrics.json` and `chart.png`
/// into `dir` (each atomically).
pub fn write(r: &EvalReport, dir: &Path) -> Result<(), EvalError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EvalError::Io { path, source }
    };
    let save = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        fos_image::atomic::write_atomic(&p, bytes).map_err(io(&p))
    };
    save("report.md", markdown(r).as_bytes())?;
    save("per_category.csv", csv(r).as_bytes())?;
    save(
        "metrics.json",
        serde_json::to_string_pretty(&json(r))
            .expect("serialises")
            .as_bytes(),
    )?;
    let img = chart(r);
    let png = fos_image::encode::png(img.as_raw(), img.width(), img.height(), 3)?;
    save("chart.png", &png)
}
