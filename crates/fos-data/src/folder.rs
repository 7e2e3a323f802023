//! A plain folder of cut-outs, `DIR/CATEGORY/NAME.png` (PNG with alpha) or
//! `DIR/CATEGORY/NAME.jpg` with a mask `NAME.mask.png` beside it, into a data
//! set of foregrounds without backgrounds (for indexing a user's library).

use std::path::{Path, PathBuf};
use std::time::Instant;

use fos_image::decode::DecodeOptions;
use image::{GrayImage, RgbaImage};
use rayon::prelude::*;

use crate::build::BuildReport;
use crate::filter::DropReason;
use crate::manifest::{
    category_counts, sanitize, write_dataset, DatasetInfo, Record, SourceInfo, DATASET_VERSION,
};
use crate::mask::Mask;
use crate::split::SplitSpec;
use crate::stage::{check_out, partial_dir, prepare_partial, publish};
use crate::{DataError, Progress};

/// One cut-out file found in the folder.
#[derive(Clone, Debug)]
pub struct CutoutFile {
    /// Category (the sub-folder's name).
    pub category: String,
    /// The image.
    pub image: PathBuf,
    /// Its mask, when the image has no alpha.
    pub mask: Option<PathBuf>,
}

/// Lists the cut-outs under `dir` (one sub-folder per category, sorted).
pub fn scan(dir: &Path) -> Result<Vec<CutoutFile>, DataError> {
    let mut out = Vec::new();
    let mut cats: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cats.sort();
    for c in cats {
        let category = c
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&c)
            .map_err(|e| DataError::io(&c, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if name.starts_with('.') || name.ends_with(".mask.png") || name.ends_with("_mask.png") {
                continue;
            }
            if !(name.ends_with(".png")
                || name.ends_with(".jpg")
                || name.ends_with(".jpeg")
                || name.ends_with(".webp"))
            {
                continue;
            }
            let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            let mask = [format!("{stem}.mask.png"), format!("{stem}_mask.png")]
                .into_iter()
                .map(|m| f.with_file_name(m))
                .find(|m| m.is_file());
            out.push(CutoutFile {
                category: category.clone(),
                image: f,
                mask,
            });
        }
    }
    Ok(out)
}

/// Reads one cut-out as RGBA (alpha from the mask file when there is one).
/// An image without alpha and without a mask file is an error.
pub fn load_cutout(f: &CutoutFile, decode: &DecodeOptions) -> Result<RgbaImage, DataError> {
    let img = fos_image::decode::load(&f.image, decode)?;
    match &f.mask {
        Some(m) => {
            let mask: GrayImage = fos_image::decode::load(m, decode)?.to_luma8();
            if mask.dimensions() != (img.width(), img.height()) {
                return Err(DataError::BadMask(format!(
                    "{} is {}x{}, its image {}x{}",
                    m.display(),
                    mask.width(),
                    mask.height(),
                    img.width(),
                    img.height()
                )));
            }
            let mut rgba = img.to_rgba8();
            for (p, a) in rgba.pixels_mut().zip(mask.pixels()) {
                p.0[3] = a.0[0];
            }
            Ok(rgba)
        }
        None if img.color().has_alpha() => Ok(img.to_rgba8()),
        None => Err(DataError::BadMask(format!(
            "{} has no alpha channel and no NAME.mask.png beside it",
            f.image.display()
        ))),
    }
}

/// Builds a data set of foregrounds from a folder (see the module docs). Each
/// cut-out is cropped to its alpha's tight box; split by file under `seed`.
pub fn build_folder(
    dir: &Path,
    out: &Path,
    splits: &SplitSpec,
    seed: u64,
    decode: &DecodeOptions,
    force: bool,
    progress: &dyn Progress,
) -> Result<BuildReport, DataError> {
    let t0 = Instant::now();
    check_out(out, force)?;
    let files = scan(dir)?;
    if files.is_empty() {
        return Err(DataError::Format(format!(
            "{}: no cut-outs found; expected DIR/CATEGORY/NAME.png (with alpha) or NAME.jpg + NAME.mask.png",
            dir.display()
        )));
    }
    let partial = partial_dir(out);
    prepare_partial(
        &partial,
        &serde_json::json!({"folder": dir, "splits": splits, "seed": seed}),
    )?;
    let keys: Vec<String> = files
        .iter()
        .map(|f| f.image.to_string_lossy().into_owned())
        .collect();
    let split_of = splits.assign(&keys, seed);
    progress.start(files.len() as u64);
    let results: Vec<Result<Record, (DropReason, String)>> = files
        .par_iter()
        .zip(split_of.par_iter())
        .map(|(f, split)| {
            let r = one(f, split, &partial, decode);
            progress.inc(1);
            r
        })
        .collect();
    progress.finish();
    let mut records = Vec::new();
    let mut examples = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for r in results {
        match r {
            Ok(rec) => records.push(rec),
            Err((reason, detail)) => {
                *counts.entry(reason.name().to_owned()).or_insert(0u64) += 1;
                if examples.len() < 20 {
                    examples.push((reason.name().to_owned(), detail));
                }
            }
        }
    }
    let mut dedup = std::collections::HashSet::new();
    records.retain(|r| dedup.insert(r.id.clone()));
    counts.insert("seen".into(), files.len() as u64);
    counts.insert("kept".into(), records.len() as u64);
    let info = DatasetInfo {
        version: DATASET_VERSION,
        created_by: format!("fos {}", env!("CARGO_PKG_VERSION")),
        sources: vec![SourceInfo {
            name: "folder".into(),
            kind: "folder".into(),
            annotations: None,
            images: dir.to_string_lossy().into_owned(),
            photos: files.len() as u64,
            instances: files.len() as u64,
        }],
        categories: category_counts(&records),
        counts,
        settings: serde_json::json!({"splits": splits.0, "seed": seed}),
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

fn one(
    f: &CutoutFile,
    split: &str,
    partial: &Path,
    decode: &DecodeOptions,
) -> Result<Record, (DropReason, String)> {
    let rgba = load_cutout(f, decode).map_err(|e| match e {
        DataError::BadMask(m) => (DropReason::BadMask, m),
        e => (DropReason::MissingImage, e.to_string()),
    })?;
    let mask = Mask {
        width: rgba.width(),
        height: rgba.height(),
        data: rgba.pixels().map(|p| (p.0[3] >= 128) as u8).collect(),
    };
    let b = mask.bbox().ok_or_else(|| {
        (
            DropReason::BadMask,
            format!("{}: fully transparent", f.image.display()),
        )
    })?;
    let cut = image::imageops::crop_imm(&rgba, b.x, b.y, b.w, b.h).to_image();
    let stem = f
        .image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("cutout");
    let id = sanitize(&format!("{}-{}", f.category, stem));
    let fg = format!("fg/{id}.png");
    let mk = format!("mask/{id}.png");
    let save = |rel: &str, bytes: Result<Vec<u8>, fos_image::ImageError>| {
        bytes
            .and_then(|b| fos_image::encode::save(&partial.join(rel), &b))
            .map_err(|e| (DropReason::MissingImage, e.to_string()))
    };
    save(&fg, fos_image::encode::png(cut.as_raw(), b.w, b.h, 4))?;
    save(
        &mk,
        fos_image::encode::png(mask.crop(b).to_luma().as_raw(), b.w, b.h, 1),
    )?;
    Ok(Record {
        id,
        category: f.category.clone(),
        source_image: Some(f.image.to_string_lossy().into_owned()),
        image_size: Some([rgba.width(), rgba.height()]),
        bbox: None,
        split: split.to_owned(),
        pattern: None,
        foreground: fg,
        mask: mk,
        background: None,
        hole: None,
        area: mask.area(),
        fg_size: Some([b.w, b.h]),
        truncated: vec![],
    })
}
