//! `fos dataset build`: instance-segmentation data -> foreground-search data set.
//!
//! The build writes into `OUT.partial/` and renames it to `OUT` only when
//! complete, so `OUT` is never half-written. Every output file is itself
//! written atomically, so after a kill a rerun with the same settings resumes:
//! the instances whose three files exist are not redone.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fos_image::decode::DecodeOptions;
use image::{RgbImage, RgbaImage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::coco::{CocoAnnotation, CocoFile, CocoImage};
use crate::filter::{truncated_sides, DropReason, FilterConfig};
use crate::manifest::{
    category_counts, sanitize, write_dataset, DatasetInfo, Record, SourceInfo, DATASET_VERSION,
};
use crate::mask::{Mask, PixelBox};
use crate::split::SplitSpec;
use crate::stage::{check_out, partial_dir, prepare_partial, publish};
use crate::{inpaint, DataError, Progress};

/// One COCO annotation file and the folder its `file_name`s are relative to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CocoSource {
    /// `instances_*.json`.
    pub annotations: PathBuf,
    /// Images folder.
    pub images: PathBuf,
}

/// How inpainted backgrounds are stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackgroundFormat {
    /// JPEG at this quality: about a third of PNG's size; pixels outside the
    /// inpainted region differ from the photo by JPEG noise only.
    Jpeg(u8),
    /// Lossless: pixels outside the inpainted region equal the photo's.
    Png,
}

/// Settings of a build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildOptions {
    /// Keep only these categories (all when `None`).
    pub categories: Option<Vec<String>>,
    /// Instance filters.
    pub filters: FilterConfig,
    /// Split fractions.
    pub splits: SplitSpec,
    /// Seed of the split shuffle.
    pub seed: u64,
    /// Pixels by which the mask is grown before inpainting, so that no halo of
    /// the object's silhouette stays behind.
    pub dilate: u32,
    /// Neighbourhood radius of the inpainting.
    pub inpaint_radius: u32,
    /// Background file format.
    pub background: BackgroundFormat,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            categories: None,
            filters: FilterConfig::default(),
            splits: SplitSpec::default(),
            seed: 0,
            dilate: 5,
            inpaint_radius: 5,
            background: BackgroundFormat::Jpeg(92),
        }
    }
}

/// What a build did.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The `dataset.json` written.
    pub info: DatasetInfo,
    /// Instances whose files were already there from an interrupted run.
    pub resumed: u64,
    /// Instances written now.
    pub written: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Up to 20 examples of skipped records, `(reason, detail)`.
    pub examples: Vec<(String, String)>,
}

struct Source {
    name: String,
    spec: CocoSource,
    file: CocoFile,
    images_dir: PathBuf,
}

/// One photo's kept instances after filtering.
struct Plan {
    source: usize,
    image: CocoImage,
    kept: Vec<Kept>,
}

/// A kept instance and the smaller instances it carries (a tie, a handbag),
/// which are removed with it.
struct Kept {
    ann: CocoAnnotation,
    category: String,
    bbox: PixelBox,
    sides: Vec<String>,
    area: u64,
    carried: Vec<CocoAnnotation>,
}

/// Builds a data set from COCO sources into `out` (see the module docs).
/// `force` replaces an existing data set.
pub fn build_coco(
    sources: &[CocoSource],
    out: &Path,
    opts: &BuildOptions,
    decode: &DecodeOptions,
    force: bool,
    progress: &dyn Progress,
) -> Result<BuildReport, DataError> {
    let t0 = Instant::now();
    if sources.is_empty() {
        return Err(DataError::Config(
            "no source given (--coco FILE --images DIR)".into(),
        ));
    }
    check_out(out, force)?;
    let mut srcs = Vec::new();
    for spec in sources {
        let file = CocoFile::load(&spec.annotations)?;
        let images_dir =
            std::fs::canonicalize(&spec.images).map_err(|e| DataError::io(&spec.images, e))?;
        srcs.push(Source {
            name: source_name(&spec.annotations),
            spec: spec.clone(),
            file,
            images_dir,
        });
    }
    dedupe_names(&mut srcs);
    if let Some(cats) = &opts.categories {
        let known: std::collections::BTreeSet<&str> = srcs
            .iter()
            .flat_map(|s| s.file.categories.iter().map(|c| c.name.as_str()))
            .collect();
        for c in cats {
            if !known.contains(c.as_str()) {
                return Err(DataError::Config(format!(
                    "unknown category {c:?}; the sources have: {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let mut counts: BTreeMap<DropReason, u64> = BTreeMap::new();
    let mut examples: Vec<(String, String)> = Vec::new();
    let mut seen = 0u64;
    let mut plans: Vec<Plan> = Vec::new();
    for (si, src) in srcs.iter().enumerate() {
        for (kind, detail) in &src.file.problems {
            if kind == "bad_annotation" {
                *counts.entry(DropReason::BadAnnotation).or_default() += 1;
                seen += 1;
            }
            if examples.len() < 20 {
                examples.push((kind.clone(), format!("{}: {detail}", src.name)));
            }
        }
        let cats = src.file.category_names();
        let images: HashMap<u64, &CocoImage> = src.file.images.iter().map(|i| (i.id, i)).collect();
        let mut by_image: BTreeMap<u64, Vec<&CocoAnnotation>> = BTreeMap::new();
        for a in &src.file.annotations {
            seen += 1;
            if !images.contains_key(&a.image_id) {
                *counts.entry(DropReason::UnknownImage).or_default() += 1;
                if examples.len() < 20 {
                    examples.push((
                        "unknown_image".into(),
                        format!("{}: annotation {} -> image {}", src.name, a.id, a.image_id),
                    ));
                }
            } else if !cats.contains_key(&a.category_id) {
                *counts.entry(DropReason::UnknownCategory).or_default() += 1;
            } else {
                by_image.entry(a.image_id).or_default().push(a);
            }
        }
        let photo_plans: Vec<PhotoPlan> = by_image
            .into_par_iter()
            .map(|(img_id, anns)| plan_photo(si, images[&img_id], &anns, &cats, opts))
            .collect();
        for (plan, drops, ex) in photo_plans {
            for d in drops {
                *counts.entry(d).or_default() += 1;
            }
            for e in ex {
                if examples.len() < 20 {
                    examples.push(e);
                }
            }
            if !plan.kept.is_empty() {
                plans.push(plan);
            }
        }
    }
    // Splits by photo.
    let keys: Vec<String> = plans
        .iter()
        .map(|p| format!("{}/{}", srcs[p.source].name, p.image.file_name))
        .collect();
    let splits = opts.splits.assign(&keys, opts.seed);

    let partial = partial_dir(out);
    let params = serde_json::json!({"sources": sources, "options": opts});
    prepare_partial(&partial, &params)?;
    let total: u64 = plans.iter().map(|p| p.kept.len() as u64).sum();
    progress.start(total);
    let results: Vec<Result<PhotoResult, DataError>> = plans
        .par_iter()
        .zip(splits.par_iter())
        .map(|(plan, split)| {
            let r = write_photo(&srcs[plan.source], plan, split, &partial, opts, decode);
            progress.inc(plan.kept.len() as u64);
            r
        })
        .collect();
    progress.finish();
    let mut records = Vec::new();
    let (mut resumed, mut written) = (0, 0);
    for r in results {
        let (recs, drops, res, wr) = r?;
        records.extend(recs);
        for d in drops {
            *counts.entry(d).or_default() += 1;
        }
        resumed += res;
        written += wr;
    }
    let info = dataset_info(&srcs, &records, &counts, seen, opts);
    write_dataset(&partial, &info, &records)?;
    let summary = summary_table(&info);
    fos_image::atomic::write_atomic(&partial.join("summary.md"), summary.as_bytes())
        .map_err(|e| DataError::io(&partial, e))?;
    let _ = std::fs::remove_file(partial.join(crate::stage::PARAMS));
    publish(&partial, out)?;
    Ok(BuildReport {
        info,
        resumed,
        written,
        seconds: t0.elapsed().as_secs_f64(),
        examples,
    })
}

fn source_name(annotations: &Path) -> String {
    let stem = annotations
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("coco");
    let stem = stem.strip_prefix("instances_").unwrap_or(stem);
    let name = if stem == "instances" || stem.is_empty() {
        // `X/annotations/instances.json` -> `X`.
        annotations
            .canonicalize()
            .ok()
            .and_then(|p| {
                p.parent()?
                    .parent()?
                    .file_name()?
                    .to_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "coco".into())
    } else {
        stem.to_owned()
    };
    sanitize(&name)
}

fn dedupe_names(srcs: &mut [Source]) {
    for i in 0..srcs.len() {
        let mut k = 2;
        let base = srcs[i].name.clone();
        while srcs[..i].iter().any(|s| s.name == srcs[i].name) {
            srcs[i].name = format!("{base}-{k}");
            k += 1;
        }
    }
}

type PhotoPlan = (Plan, Vec<DropReason>, Vec<(String, String)>);

fn plan_photo(
    source: usize,
    image: &CocoImage,
    anns: &[&CocoAnnotation],
    cats: &HashMap<u64, String>,
    opts: &BuildOptions,
) -> PhotoPlan {
    let mut drops = Vec::new();
    let mut examples = Vec::new();
    let masks: Vec<Option<Mask>> = anns
        .iter()
        .map(
            |a| match a.segmentation.to_mask(image.width, image.height) {
                Ok(m) => Some(m),
                Err(e) => {
                    examples.push(("bad_mask".into(), format!("annotation {}: {e}", a.id)));
                    None
                }
            },
        )
        .collect();
    let mut kept = Vec::new();
    for (i, a) in anns.iter().enumerate() {
        let Some(m) = &masks[i] else {
            drops.push(DropReason::BadMask);
            continue;
        };
        let cat = &cats[&a.category_id];
        if opts.categories.as_ref().is_some_and(|c| !c.contains(cat)) {
            drops.push(DropReason::CategoryNotSelected);
            continue;
        }
        let Some(b) = m.bbox() else {
            drops.push(DropReason::BadMask);
            continue;
        };
        let others: Vec<&Mask> = masks
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, m)| m.as_ref())
            .collect();
        if let Some(d) = opts.filters.check(a.iscrowd, m, b, &others) {
            drops.push(d);
            continue;
        }
        let sides = truncated_sides(b, image.width, image.height, opts.filters.border_margin);
        let area = m.area();
        let carried = anns
            .iter()
            .zip(&masks)
            .enumerate()
            .filter(|(j, (_, o))| *j != i && o.as_ref().is_some_and(|o| carried_by(o, b, area)))
            .map(|(_, (a, _))| (*a).clone())
            .collect();
        kept.push(Kept {
            ann: (*a).clone(),
            category: cat.clone(),
            bbox: b,
            sides,
            area,
            carried,
        });
    }
    (
        Plan {
            source,
            image: image.clone(),
            kept,
        },
        drops,
        examples,
    )
}

/// Whether instance `other` is carried by an instance with box `b` and mask
/// area `area`: at least 80 % of it lies in the box and it is less than half
/// as large (a tie, a handbag, a cup in a hand). It is inpainted away with the
/// carrier, so that it does not float in the background as a trace.
fn carried_by(other: &Mask, b: PixelBox, area: u64) -> bool {
    let oa = other.area();
    if oa == 0 || oa * 2 >= area {
        return false;
    }
    let mut inside = 0u64;
    for y in b.y..b.y + b.h {
        let row = (y * other.width) as usize;
        inside += other.data[row + b.x as usize..row + (b.x + b.w) as usize]
            .iter()
            .map(|&v| v as u64)
            .sum::<u64>();
    }
    inside * 5 >= oa * 4
}

/// The tight RGBA cut-out: photo colours where the mask is set, transparent
/// black elsewhere.
pub fn cutout(photo: &RgbImage, mask: &Mask, b: PixelBox) -> RgbaImage {
    RgbaImage::from_fn(b.w, b.h, |x, y| {
        let (px, py) = (b.x + x, b.y + y);
        if mask.data[(py * mask.width + px) as usize] != 0 {
            let p = photo.get_pixel(px, py).0;
            image::Rgba([p[0], p[1], p[2], 255])
        } else {
            image::Rgba([0, 0, 0, 0])
        }
    })
}

type PhotoResult = (Vec<Record>, Vec<DropReason>, u64, u64);

fn write_photo(
    src: &Source,
    plan: &Plan,
    split: &str,
    partial: &Path,
    opts: &BuildOptions,
    decode: &DecodeOptions,
) -> Result<PhotoResult, DataError> {
    let photo_path = src.images_dir.join(&plan.image.file_name);
    let n = plan.kept.len();
    let photo = match fos_image::decode::load_rgb(&photo_path, decode) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("skipping {n} instance(s): {e}");
            return Ok((vec![], vec![DropReason::MissingImage; n], 0, 0));
        }
    };
    if (photo.width(), photo.height()) != (plan.image.width, plan.image.height) {
        tracing::warn!(
            "skipping {n} instance(s): {} is {}x{}, annotated as {}x{}",
            photo_path.display(),
            photo.width(),
            photo.height(),
            plan.image.width,
            plan.image.height
        );
        return Ok((vec![], vec![DropReason::SizeMismatch; n], 0, 0));
    }
    let bg_ext = match opts.background {
        BackgroundFormat::Jpeg(_) => "jpg",
        BackgroundFormat::Png => "png",
    };
    let (mut records, mut resumed, mut written) = (Vec::new(), 0, 0);
    for k in &plan.kept {
        let (b, ann) = (&k.bbox, &k.ann);
        let id = format!("{}-{}-{}", src.name, plan.image.id, ann.id);
        let fg = format!("fg/{id}.png");
        let mk = format!("mask/{id}.png");
        let bg = format!("bg/{id}.{bg_ext}");
        let hl = format!("hole/{id}.png");
        if [&fg, &mk, &bg, &hl]
            .iter()
            .all(|p| partial.join(p).is_file())
        {
            resumed += 1;
        } else {
            let mask = ann
                .segmentation
                .to_mask(plan.image.width, plan.image.height)?;
            let cut = cutout(&photo, &mask, *b);
            let crop = mask.crop(*b).to_luma();
            let mut hole = mask.clone();
            for c in &k.carried {
                let m = c
                    .segmentation
                    .to_mask(plan.image.width, plan.image.height)?;
                hole.data.iter_mut().zip(&m.data).for_each(|(h, v)| *h |= v);
            }
            let hole = hole.dilate(opts.dilate);
            let mut back = photo.clone();
            inpaint::telea(&mut back, &hole, opts.inpaint_radius)?;
            let hole_png = hole.to_luma();
            fos_image::encode::save(
                &partial.join(&hl),
                &fos_image::encode::png(hole_png.as_raw(), hole.width, hole.height, 1)?,
            )?;
            let bg_bytes = match opts.background {
                BackgroundFormat::Jpeg(q) => fos_image::encode::jpeg(&back, q)?,
                BackgroundFormat::Png => {
                    fos_image::encode::png(back.as_raw(), back.width(), back.height(), 3)?
                }
            };
            // Resuming needs all four files; each is written atomically.
            fos_image::encode::save(&partial.join(&bg), &bg_bytes)?;
            fos_image::encode::save(
                &partial.join(&mk),
                &fos_image::encode::png(crop.as_raw(), b.w, b.h, 1)?,
            )?;
            fos_image::encode::save(
                &partial.join(&fg),
                &fos_image::encode::png(cut.as_raw(), b.w, b.h, 4)?,
            )?;
            written += 1;
        }
        records.push(Record {
            id,
            category: k.category.clone(),
            source_image: Some(photo_path.to_string_lossy().into_owned()),
            image_size: Some([plan.image.width, plan.image.height]),
            bbox: Some(b.to_array()),
            split: split.to_owned(),
            pattern: None,
            foreground: fg,
            mask: mk,
            background: Some(bg),
            hole: Some(hl),
            area: k.area,
            fg_size: Some([b.w, b.h]),
            truncated: k.sides.clone(),
        });
    }
    Ok((records, vec![], resumed, written))
}

fn dataset_info(
    srcs: &[Source],
    records: &[Record],
    counts: &BTreeMap<DropReason, u64>,
    seen: u64,
    opts: &BuildOptions,
) -> DatasetInfo {
    let categories = category_counts(records);
    let mut c: BTreeMap<String, u64> = BTreeMap::new();
    c.insert("seen".into(), seen);
    c.insert("kept".into(), records.len() as u64);
    for r in DropReason::ALL {
        c.insert(r.name().into(), counts.get(&r).copied().unwrap_or(0));
    }
    DatasetInfo {
        version: DATASET_VERSION,
        created_by: format!("fos {}", env!("CARGO_PKG_VERSION")),
        sources: srcs
            .iter()
            .map(|s| SourceInfo {
                name: s.name.clone(),
                kind: "coco".into(),
                annotations: Some(s.spec.annotations.to_string_lossy().into_owned()),
                images: s.images_dir.to_string_lossy().into_owned(),
                photos: s.file.images.len() as u64,
                instances: s.file.annotations.len() as u64,
            })
            .collect(),
        categories,
        counts: c,
        settings: serde_json::json!({
            "filters": opts.filters,
            "categories": opts.categories,
            "splits": opts.splits.0.iter().map(|(n, f)| serde_json::json!({"name": n, "fraction": f})).collect::<Vec<_>>(),
            "seed": opts.seed,
            "inpainting": {"method": "telea", "radius": opts.inpaint_radius, "dilate": opts.dilate},
            "background": opts.background,
        }),
        patterns: None,
    }
}

/// The counts as a markdown table: instances seen, dropped per reason, kept,
/// and kept per category and split.
pub fn summary_table(info: &DatasetInfo) -> String {
    let mut s = String::from("| instances | count |\n|---|---:|\n");
    for (k, v) in &info.counts {
        if k != "kept" && k != "seen" && *v > 0 {
            s.push_str(&format!("| dropped: {k} | {v} |\n"));
        }
    }
    s.push_str(&format!(
        "| **seen** | {} |\n",
        info.counts.get("seen").copied().unwrap_or(0)
    ));
    s.push_str(&format!(
        "| **kept** | {} |\n\n",
        info.counts.get("kept").copied().unwrap_or(0)
    ));
    let split_names: Vec<String> = {
        let mut v: Vec<String> = info
            .categories
            .iter()
            .flat_map(|c| c.splits.keys().cloned())
            .collect();
        v.sort_by_key(|n| {
            (
                ["train", "val", "test"]
                    .iter()
                    .position(|x| x == n)
                    .unwrap_or(9),
                n.clone(),
            )
        });
        v.dedup();
        v
    };
    s.push_str("| category | kept |");
    for n in &split_names {
        s.push_str(&format!(" {n} |"));
    }
    s.push_str("\n|---|---:|");
    s.push_str(&"---:|".repeat(split_names.len()));
    s.push('\n');
    for c in &info.categories {
        s.push_str(&format!("| {} | {} |", c.name, c.total));
        for n in &split_names {
            s.push_str(&format!(" {} |", c.splits.get(n).copied().unwrap_or(0)));
        }
        s.push('\n');
    }
    s
}
