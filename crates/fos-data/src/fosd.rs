//! The FOSD layout (S-FOSD / R-FOSD, Sui et al. 2023), read unchanged:
//!
//! ```text
//! train/{bg,fg,labels/{masks/,train_sfosd.json,...}}
//! test/{bg_set1,bg_set2,fg,labels/{masks/,test_set1.json,test_set2.json}}
//! ```
//!
//! Training labels `{bg: {"bbox": [x1,y1,x2,y2] in 0..1, "class": cat, ...}}`
//! (the cut-out with the background's file name is its own); S-FOSD test
//! `{cat: {"bg": [[bg, bbox]], "fg": [fg, ...]}}`; R-FOSD test
//! `{cat: {bg: [bbox, {fg: 0|1}]}}`, written to `rfosd.json` for `fos eval
//! --protocol rfosd`. Cut-outs are RGB with white outside the mask; fos makes
//! them RGBA with alpha = mask.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fos_image::decode::DecodeOptions;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::build::BuildReport;
use crate::manifest::{
    category_counts, sanitize, write_dataset, DatasetInfo, Record, SourceInfo, DATASET_VERSION,
};
use crate::mask::Mask;
use crate::stage::{check_out, partial_dir, prepare_partial, publish};
use crate::{DataError, Progress};

/// One R-FOSD query: a real background, a hand-drawn box, and people's
/// compatibility labels for cut-outs of its category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfosdQuery {
    /// Background, relative to the data set folder.
    pub background: String,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [u32; 4],
    /// Category.
    pub category: String,
    /// Cut-out id -> compatible (1) or not (0).
    pub labels: BTreeMap<String, u8>,
}

/// Reads `rfosd.json` of a data set, if it has one.
pub fn read_rfosd(root: &Path) -> Result<Option<Vec<RfosdQuery>>, DataError> {
    let p = root.join("rfosd.json");
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| DataError::Format(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::io(&p, e)),
    }
}

/// An R-FOSD query as read: category, background name, box in 0..1, labels.
type RawQuery = (String, String, [f64; 4], BTreeMap<String, u8>);

struct Item {
    split: &'static str,
    category: String,
    fg: PathBuf,
    mask: PathBuf,
    bg: Option<(PathBuf, [f64; 4])>,
}

fn read_json(p: &Path) -> Result<Value, DataError> {
    let b = std::fs::read(p).map_err(|e| DataError::io(p, e))?;
    serde_json::from_slice(&b).map_err(|e| DataError::Format(format!("{}: {e}", p.display())))
}

fn bbox01(v: &Value, ctx: &str) -> Result<[f64; 4], DataError> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 4)
        .ok_or_else(|| DataError::Format(format!("{ctx}: bbox is not [x1, y1, x2, y2]")))?;
    let mut out = [0f64; 4];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x
            .as_f64()
            .filter(|f| (-0.01..=1.01).contains(f))
            .ok_or_else(|| DataError::Format(format!("{ctx}: bbox values must be in 0..1")))?;
    }
    if out[2] <= out[0] || out[3] <= out[1] {
        return Err(DataError::Format(format!("{ctx}: empty bbox {out:?}")));
    }
    Ok(out)
}

fn mask_for(masks: &Path, fg_name: &str) -> PathBuf {
    let direct = masks.join(fg_name);
    if direct.is_file() {
        return direct;
    }
    let stem = Path::new(fg_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(fg_name);
    masks.join(format!("{stem}.png"))
}

fn id_of(split: &str, fg_name: &str) -> String {
    let stem = Path::new(fg_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(fg_name);
    sanitize(&format!("fosd-{split}-{stem}"))
}

/// Builds a data set from a FOSD folder (see the module docs).
pub fn build_fosd(
    root: &Path,
    out: &Path,
    decode: &DecodeOptions,
    force: bool,
    progress: &dyn Progress,
) -> Result<BuildReport, DataError> {
    let t0 = Instant::now();
    check_out(out, force)?;
    let mut items: Vec<Item> = Vec::new();
    let train = root.join("train/labels/train_sfosd.json");
    if train.is_file() {
        let v = read_json(&train)?;
        let obj = v
            .as_object()
            .ok_or_else(|| DataError::Format(format!("{}: not an object", train.display())))?;
        for (bg, lab) in obj {
            let category = lab.get("class").and_then(Value::as_str).ok_or_else(|| {
                DataError::Format(format!("{}: {bg} has no class", train.display()))
            })?;
            let b = bbox01(
                lab.get("bbox").unwrap_or(&Value::Null),
                &format!("{} {bg}", train.display()),
            )?;
            items.push(Item {
                split: "train",
                category: category.to_owned(),
                fg: root.join("train/fg").join(bg),
                mask: mask_for(&root.join("train/labels/masks"), bg),
                bg: Some((root.join("train/bg").join(bg), b)),
            });
        }
    }
    let set1 = root.join("test/labels/test_set1.json");
    let mut test_ids: HashMap<String, usize> = HashMap::new();
    if set1.is_file() {
        let v = read_json(&set1)?;
        for (cat, entry) in v.as_object().into_iter().flatten() {
            let mut bgs: HashMap<String, [f64; 4]> = HashMap::new();
            for pair in entry
                .get("bg")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = pair.get(0).and_then(Value::as_str).ok_or_else(|| {
                    DataError::Format(format!("{}: bad bg entry in {cat}", set1.display()))
                })?;
                bgs.insert(
                    name.to_owned(),
                    bbox01(
                        pair.get(1).unwrap_or(&Value::Null),
                        &format!("{} {name}", set1.display()),
                    )?,
                );
            }
            for fg in entry
                .get("fg")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                test_ids.insert(fg.to_owned(), items.len());
                items.push(Item {
                    split: "test",
                    category: cat.clone(),
                    fg: root.join("test/fg").join(fg),
                    mask: mask_for(&root.join("test/labels/masks"), fg),
                    bg: bgs
                        .get(fg)
                        .map(|b| (root.join("test/bg_set1").join(fg), *b)),
                });
            }
        }
    }
    let set2 = root.join("test/labels/test_set2.json");
    let mut rfosd_raw: Vec<RawQuery> = Vec::new();
    if set2.is_file() {
        let v = read_json(&set2)?;
        for (cat, bgs) in v.as_object().into_iter().flatten() {
            for (bg, pair) in bgs.as_object().into_iter().flatten() {
                let b = bbox01(
                    pair.get(0).unwrap_or(&Value::Null),
                    &format!("{} {bg}", set2.display()),
                )?;
                let mut labels = BTreeMap::new();
                for (fg, l) in pair.get(1).and_then(Value::as_object).into_iter().flatten() {
                    if !test_ids.contains_key(fg) {
                        test_ids.insert(fg.clone(), items.len());
                        items.push(Item {
                            split: "test",
                            category: cat.clone(),
                            fg: root.join("test/fg").join(fg),
                            mask: mask_for(&root.join("test/labels/masks"), fg),
                            bg: None,
                        });
                    }
                    labels.insert(id_of("test", fg), (l.as_u64() == Some(1)) as u8);
                }
                rfosd_raw.push((cat.clone(), bg.clone(), b, labels));
            }
        }
    }
    if items.is_empty() {
        return Err(DataError::Format(format!(
            "{}: no FOSD labels found (expected train/labels/train_sfosd.json or test/labels/test_set1.json)",
            root.display()
        )));
    }
    let partial = partial_dir(out);
    prepare_partial(&partial, &serde_json::json!({"fosd": root}))?;
    progress.start(items.len() as u64);
    let results: Vec<Result<Record, String>> = items
        .par_iter()
        .map(|it| {
            let r = convert(it, &partial, decode).map_err(|e| format!("{}: {e}", it.fg.display()));
            progress.inc(1);
            r
        })
        .collect();
    progress.finish();
    let mut records = Vec::new();
    let mut examples = Vec::new();
    let mut bad = 0u64;
    for r in results {
        match r {
            Ok(rec) => records.push(rec),
            Err(e) => {
                bad += 1;
                if examples.len() < 20 {
                    examples.push(("bad_item".to_owned(), e));
                }
            }
        }
    }
    let mut queries = Vec::new();
    for (i, (cat, bg, b, labels)) in rfosd_raw.into_iter().enumerate() {
        let src = root.join("test/bg_set2").join(&bg);
        let ext = src
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("jpg")
            .to_owned();
        let rel = format!("bg2/{}.{ext}", sanitize(&format!("{i:05}-{bg}")));
        let (w, h) = match image::image_dimensions(&src) {
            Ok(d) => d,
            Err(e) => {
                bad += 1;
                examples.push(("bad_background".into(), format!("{}: {e}", src.display())));
                continue;
            }
        };
        link_or_copy(&src, &partial.join(&rel))?;
        queries.push(RfosdQuery {
            background: rel,
            bbox: to_px(b, w, h),
            category: cat,
            labels,
        });
    }
    if !queries.is_empty() {
        let p = partial.join("rfosd.json");
        fos_image::atomic::write_atomic(&p, &serde_json::to_vec(&queries).expect("serialises"))
            .map_err(|e| DataError::io(&p, e))?;
    }
    let info = DatasetInfo {
        version: DATASET_VERSION,
        created_by: format!("fos {}", env!("CARGO_PKG_VERSION")),
        sources: vec![SourceInfo {
            name: "fosd".into(),
            kind: "fosd".into(),
            annotations: None,
            images: root.to_string_lossy().into_owned(),
            photos: items.iter().filter(|i| i.bg.is_some()).count() as u64,
            instances: items.len() as u64,
        }],
        categories: category_counts(&records),
        counts: BTreeMap::from([
            ("seen".to_owned(), items.len() as u64),
            ("kept".to_owned(), records.len() as u64),
            ("bad_mask".to_owned(), bad),
            ("rfosd_queries".to_owned(), queries.len() as u64),
        ]),
        settings: serde_json::json!({"reader": "fosd"}),
        patterns: None,
    };
    write_dataset(&partial, &info, &records)?;
    let _ = std::fs::remove_file(partial.join("build-params.json"));
    publish(&partial, out)?;
    let written = records.len() as u64;
    Ok(BuildReport {
        info,
        resumed: 0,
        written,
        seconds: t0.elapsed().as_secs_f64(),
        examples,
    })
}

fn to_px(b: [f64; 4], w: u32, h: u32) -> [u32; 4] {
    let x1 = (b[0].clamp(0.0, 1.0) * w as f64).round() as u32;
    let y1 = (b[1].clamp(0.0, 1.0) * h as f64).round() as u32;
    let x2 = ((b[2].clamp(0.0, 1.0) * w as f64).round() as u32)
        .max(x1 + 1)
        .min(w);
    let y2 = ((b[3].clamp(0.0, 1.0) * h as f64).round() as u32)
        .max(y1 + 1)
        .min(h);
    [
        x1,
        y1,
        x2.saturating_sub(x1).max(1),
        y2.saturating_sub(y1).max(1),
    ]
}

fn link_or_copy(src: &Path, dst: &Path) -> Result<(), DataError> {
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).map_err(|e| DataError::io(d, e))?;
    }
    let _ = std::fs::remove_file(dst);
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let bytes = std::fs::read(src).map_err(|e| DataError::io(src, e))?;
    fos_image::atomic::write_atomic(dst, &bytes).map_err(|e| DataError::io(dst, e))
}

fn convert(it: &Item, partial: &Path, decode: &DecodeOptions) -> Result<Record, DataError> {
    let name = it.fg.file_name().and_then(|n| n.to_str()).unwrap_or("fg");
    let id = id_of(it.split, name);
    let rgb = fos_image::decode::load_rgb(&it.fg, decode)?;
    let mask = Mask::from_luma(&fos_image::decode::load(&it.mask, decode)?.to_luma8());
    if (mask.width, mask.height) != rgb.dimensions() {
        return Err(DataError::BadMask(format!(
            "mask {}x{} vs cut-out {}x{}",
            mask.width,
            mask.height,
            rgb.width(),
            rgb.height()
        )));
    }
    let b = mask
        .bbox()
        .ok_or_else(|| DataError::BadMask("empty mask".into()))?;
    let cut = crate::build::cutout(&rgb, &mask, b);
    let fg = format!("fg/{id}.png");
    let mk = format!("mask/{id}.png");
    fos_image::encode::save(
        &partial.join(&fg),
        &fos_image::encode::png(cut.as_raw(), b.w, b.h, 4)?,
    )?;
    fos_image::encode::save(
        &partial.join(&mk),
        &fos_image::encode::png(mask.crop(b).to_luma().as_raw(), b.w, b.h, 1)?,
    )?;
    let (background, bbox, image_size, source_image) = match &it.bg {
        Some((p, b01)) => {
            let (w, h) = image::image_dimensions(p)
                .map_err(|e| DataError::Format(format!("{}: {e}", p.display())))?;
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("jpg");
            let rel = format!("bg/{id}.{ext}");
            link_or_copy(p, &partial.join(&rel))?;
            (
                Some(rel),
                Some(to_px(*b01, w, h)),
                Some([w, h]),
                Some(p.to_string_lossy().into_owned()),
            )
        }
        None => (None, None, None, None),
    };
    Ok(Record {
        id,
        category: it.category.clone(),
        source_image,
        image_size,
        bbox,
        split: it.split.to_owned(),
        pattern: None,
        foreground: fg,
        mask: mk,
        background,
        hole: None,
        area: mask.area(),
        fg_size: Some([b.w, b.h]),
        truncated: vec![],
    })
}
