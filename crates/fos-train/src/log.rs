//! Per-epoch training logs: a CSV and a PNG plot per stage.

use std::collections::BTreeMap;
use std::path::Path;

use fos_image::draw::{fill_rect, line, text};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::{io, TrainError};

/// One epoch of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Wall-clock seconds of the epoch (training + validation).
    pub seconds: f64,
    /// Validation metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// The CSV: `epoch,loss,lr,seconds,<metrics...>`.
pub fn csv(rows: &[EpochRow]) -> String {
    let keys: Vec<&String> = rows
        .first()
        .map(|r| r.metrics.keys().collect())
        .unwrap_or_default();
    let mut s = String::from("epoch,loss,lr,seconds");
    keys.iter().for_each(|k| s.push_str(&format!(",{k}")));
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{:.3e},{:.2}",
            r.epoch, r.loss, r.lr, r.seconds
        ));
        for k in &keys {
            s.push_str(&format!(
                ",{:.4}",
                r.metrics.get(*k).copied().unwrap_or(f64::NAN)
            ));
        }
        s.push('\n');
    }
    s
}

const COLOURS: [[u8; 3]; 5] = [
    [0, 114, 178],
    [213, 94, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
];

/// Two panels: training loss (left) and validation metrics (right) by epoch.
pub fn plot(title: &str, rows: &[EpochRow]) -> RgbImage {
    let (w, h) = (900u32, 420u32);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    text(&mut img, 16, 8, title, 2);
    let keys: Vec<String> = rows
        .first()
        .map(|r| r.metrics.keys().cloned().collect())
        .unwrap_or_default();
    let n = rows.len().max(2) as f64;
    let panel = |img: &mut RgbImage,
                 x0: u32,
                 label: &str,
                 series: Vec<(String, Vec<f64>)>,
                 fixed01: bool| {
        let (pw, ph, top) = (400u32, 250u32, 60u32);
        fill_rect(img, x0, top + ph, pw, 1, [0, 0, 0]);
        fill_rect(img, x0, top, 1, ph, [0, 0, 0]);
        text(img, x0 as i64, (top - 16) as i64, label, 1);
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = if fixed01 {
            (0.0, 1.0)
        } else {
            let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.0);
            let hi = all
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max)
                .max(lo + 1e-9);
            (lo, hi)
        };
        text(img, x0 as i64 - 2, (top + ph + 6) as i64, "1", 1);
        text(
            img,
            (x0 + pw - 24) as i64,
            (top + ph + 6) as i64,
            &format!("{}", rows.len()),
            1,
        );
        text(
            img,
            (x0 + 4) as i64,
            (top + 2) as i64,
            &format!("{hi:.3}"),
            1,
        );
        for (si, (name, ys)) in series.iter().enumerate() {
            let c = COLOURS[si % COLOURS.len()];
            let pt = |i: usize, y: f64| {
                (
                    x0 as f64 + i as f64 / (n - 1.0) * pw as f64,
                    (top + ph) as f64 - (y - lo) / (hi - lo) * ph as f64,
                )
            };
            for i in 1..ys.len() {
                if ys[i - 1].is_finite() && ys[i].is_finite() {
                    line(img, pt(i - 1, ys[i - 1]), pt(i, ys[i]), c);
                }
            }
            let ly = top + ph + 20 + 12 * si as u32;
            fill_rect(img, x0, ly, 10, 8, c);
            text(img, (x0 + 14) as i64, ly as i64, name, 1);
        }
    };
    panel(
        &mut img,
        40,
        "training loss",
        vec![("loss".into(), rows.iter().map(|r| r.loss).collect())],
        false,
    );
    let series = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                rows.iter()
                    .map(|r| r.metrics.get(k).copied().unwrap_or(f64::NAN))
                    .collect(),
            )
        })
        .collect();
    panel(&mut img, 480, "validation", series, true);
    img
}

/// Writes `DIR/NAME.csv` and `DIR/NAME.png` atomically.
pub fn write(dir: &Path, name: &str, rows: &[EpochRow]) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let p = dir.join(format!("{name}.csv"));
    fos_image::atomic::write_atomic(&p, csv(rows).as_bytes()).map_err(io(&p))?;
    let img = plot(name, rows);
    let png = fos_image::encode::png(img.as_raw(), img.width(), img.height(), 3)?;
    let p = dir.join(format!("{name}.png"));
    fos_image::atomic::write_atomic(&p, &png).map_err(io(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_column_per_metric_and_the_plot_draws() {
        let rows: Vec<EpochRow> = (1..=3)
            .map(|e| EpochRow {
                epoch: e,
                loss: 1.0 / e as f64,
                lr: 0.01,
                seconds: 1.0,
                metrics: BTreeMap::from([("val_map".to_string(), 0.1 * e as f64)]),
            })
            .collect();
        let c = csv(&rows);
        assert!(c.starts_with("epoch,loss,lr,seconds,val_map\n"), "{c}");
        assert_eq!(c.lines().count(), 4);
        let img = plot("t", &rows);
        let coloured = img.pixels().filter(|p| p.0 == COLOURS[0]).count();
        assert!(coloured > 100);
    }
}
