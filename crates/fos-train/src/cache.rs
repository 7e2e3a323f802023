//! The frozen backbone's features, computed once: this is what makes CPU
//! training practical (an epoch is then a pass over vectors).
//!
//! For each training and validation record it stores, in f16:
//! * the pooled feature of `fg_variants` views of the cut-out on a white
//!   square (view 0 plain; the others padded and colour-jittered) and the
//!   7x7 compact map of view 0 (DiscoFOS);
//! * for `query_variants` views of the query (view 0 the exact rectangle;
//!   the others with a resized rectangle, zoom and colour jitter): the layout,
//!   the pooled feature of the grey-filled context square (student) and of
//!   the mean-filled one (early fusion); the RoIAlign of view 0's map at the
//!   rectangle (DiscoFOS);
//! * the pooled features of 1 + `negatives` composites (the own cut-out, then
//!   incompatible ones, pasted into the rectangle; crop enlarged sqrt(2) per
//!   side) for DiscoFOS's teacher.
//!
//! Records are processed in chunks, each written atomically to its own file,
//! so a killed run resumes at the first missing chunk. `cache.json` names the
//! data set, backbone weights and settings; a change starts the cache over.

use std::path::{Path, PathBuf};

use fos_data::manifest::{Dataset, Record};
use fos_data::Progress;
use fos_image::compose::{on_white_square, paste, Rect};
use fos_image::decode::DecodeOptions;
use fos_model::backbone::Backbone;
use fos_model::heads::{roi_align, ROI};
use fos_model::query::{crop_square_filled, layout, mean_colour, square_around, Square, GREY};
use fos_model::trained::{features, roi_box};
use image::{RgbImage, RgbaImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{jitter_query, jitter_rgb, jitter_rgba, pad_cutout, AugmentConfig, Jitter};
use crate::{io, TrainConfig, TrainError};

/// Records per chunk file.
const CHUNK: usize = 32;
/// Images per backbone batch.
const BATCH: usize = 32;

/// What the cache was made from; any change invalidates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    /// SHA-256 of the data set's manifest.
    pub dataset: String,
    /// SHA-256 of the backbone weights.
    pub backbone: String,
    /// Backbone name.
    pub backbone_name: String,
    /// Settings that change the cached views.
    pub settings: serde_json::Value,
    /// Ids of the cached records, in order (SHA-256).
    pub records: String,
}

/// The cached features, in memory (f32).
pub struct FeatureCache {
    /// The cached records (train and val splits, with a background).
    pub records: Vec<Record>,
    /// Pooled feature width.
    pub dim: usize,
    /// `C * 7 * 7`.
    pub map_len: usize,
    /// Cut-out views per record.
    pub fg_variants: usize,
    /// Query views per record.
    pub query_variants: usize,
    /// Negatives per record.
    pub negatives: usize,
    /// `[record][view][dim]`.
    pub fg: Vec<f32>,
    /// `[record][map_len]`, view 0.
    pub fg_map: Vec<f32>,
    /// `[record][view][dim]`, grey-filled context square.
    pub query: Vec<f32>,
    /// `[record][view][4]`.
    pub layout: Vec<f32>,
    /// `[record][view][dim]`, mean-filled context square.
    pub early: Vec<f32>,
    /// `[record][map_len]`, view 0.
    pub roi: Vec<f32>,
    /// `[record][1 + negatives][dim]`: own cut-out first.
    pub composite: Vec<f32>,
    /// `[record][negatives]`: indices into `records`.
    pub negatives_of: Vec<Vec<usize>>,
}

impl FeatureCache {
    /// Row `i` of a table with rows of `width`.
    pub fn row(table: &[f32], i: usize, width: usize) -> &[f32] {
        &table[i * width..(i + 1) * width]
    }
}

/// The records training uses: train and val splits with a photo and box.
pub fn training_records(ds: &Dataset) -> Vec<Record> {
    ds.records
        .iter()
        .filter(|r| {
            (r.split == "train" || r.split == "val") && r.background.is_some() && r.bbox.is_some()
        })
        .cloned()
        .collect()
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache key for `ds` under `cfg`.
pub fn key(
    ds: &Dataset,
    records: &[Record],
    cfg: &TrainConfig,
    backbone_sha: &str,
) -> Result<CacheKey, TrainError> {
    let manifest = ds.root.join("manifest.jsonl");
    let bytes = std::fs::read(&manifest).map_err(io(&manifest))?;
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    Ok(CacheKey {
        dataset: sha_hex(&bytes),
        backbone: backbone_sha.to_owned(),
        backbone_name: cfg.backbone.clone(),
        settings: serde_json::json!({
            "seed": cfg.seed,
            "fg_variants": cfg.fg_variants,
            "query_variants": cfg.query_variants,
            "negatives": cfg.negatives,
            "augment": cfg.augment,
            "format": 1,
        }),
        records: sha_hex(ids.join("\n").as_bytes()),
    })
}

/// The negatives of record `i`: same split and category, another pattern
/// (else another category), drawn with the record's own seed.
fn pick_negatives(records: &[Record], i: usize, k: usize, seed: u64) -> Vec<usize> {
    let r = &records[i];
    let mut pool: Vec<usize> = (0..records.len())
        .filter(|&j| {
            let o = &records[j];
            j != i && o.split == r.split && o.category == r.category && o.pattern != r.pattern
        })
        .collect();
    if pool.is_empty() {
        pool = (0..records.len())
            .filter(|&j| records[j].split == r.split && records[j].category != r.category)
            .collect();
    }
    if pool.is_empty() {
        pool = (0..records.len()).filter(|&j| j != i).collect();
    }
    if pool.is_empty() {
        return vec![i; k];
    }
    let mut rng = rng_for(seed, 1, i);
    (0..k)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect()
}

/// A generator seeded by (seed, purpose, record).
pub fn rng_for(seed: u64, purpose: u64, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F)
            ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// The images of one record, in the order the chunk stores their features.
struct RecordImages {
    squares: Vec<RgbImage>,
    layouts: Vec<[f32; 4]>,
    roi: [f32; 4],
}

/// A cut-out on a white square at `size`: as it is (`plain`), or white-padded
/// and colour-jittered by `rng` (the teacher's augmentation).
pub fn cutout_view(
    fg: &RgbaImage,
    plain: bool,
    rng: &mut ChaCha8Rng,
    augment: &AugmentConfig,
    size: u32,
) -> Result<RgbImage, TrainError> {
    let sq = if plain {
        on_white_square(fg)
    } else {
        let mut c: RgbaImage = pad_cutout(fg, rng, augment.pad);
        jitter_rgba(&mut c, &Jitter::draw(rng, augment));
        on_white_square(&c)
    };
    Ok(fos_image::resize::resize_rgb(
        &sq,
        size,
        size,
        fos_image::resize::Filter::Bilinear,
    )?)
}

/// The `fg_variants` cached views of one cut-out (view 0 plain), drawn from
/// the record's generator.
fn fg_views(
    fg: &RgbaImage,
    rng: &mut ChaCha8Rng,
    cfg: &TrainConfig,
    size: u32,
) -> Result<Vec<RgbImage>, TrainError> {
    (0..cfg.fg_variants)
        .map(|v| cutout_view(fg, v == 0, rng, &cfg.augment, size))
        .collect()
}

/// Pooled features `[record][view][dim]` of the same cut-out views the cache
/// holds, through another backbone (a fine-tuned teacher's).
pub fn foreground_view_features(
    ds: &Dataset,
    records: &[Record],
    cfg: &TrainConfig,
    backbone: &Backbone,
    progress: &dyn Progress,
) -> Result<Vec<f32>, TrainError> {
    let device = fos_model::device();
    let size = backbone.kind().input_size();
    let opts = DecodeOptions::default();
    progress.start(records.len() as u64);
    let mut out = Vec::new();
    for chunk in (0..records.len()).collect::<Vec<_>>().chunks(CHUNK) {
        let views: Vec<Vec<RgbImage>> = chunk
            .par_iter()
            .map(|&i| {
                let fg = fos_image::decode::load_rgba(&ds.path(&records[i].foreground), &opts)?;
                fg_views(&fg, &mut rng_for(cfg.seed, 2, i), cfg, size)
            })
            .collect::<Result<_, TrainError>>()?;
        let flat: Vec<RgbImage> = views.into_iter().flatten().collect();
        for b in flat.chunks(BATCH) {
            out.extend(features(backbone, b, &device)?.0.concat());
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    Ok(out)
}

fn record_images(
    ds: &Dataset,
    records: &[Record],
    i: usize,
    negs: &[usize],
    cfg: &TrainConfig,
    size: u32,
) -> Result<RecordImages, TrainError> {
    let opts = DecodeOptions::default();
    let r = &records[i];
    let fg = fos_image::decode::load_rgba(&ds.path(&r.foreground), &opts)?;
    let bg_rel = r
        .background
        .as_deref()
        .expect("training records have a background");
    let bg = fos_image::decode::load_rgb(&ds.path(bg_rel), &opts)?;
    let [x, y, w, h] = r.bbox.expect("training records have a box");
    let rect = Rect {
        x: x as f64,
        y: y as f64,
        w: w.max(1) as f64,
        h: h.max(1) as f64,
    };
    let mut rng = rng_for(cfg.seed, 2, i);
    let mut squares = fg_views(&fg, &mut rng, cfg, size)?;
    // Query views: grey-filled then mean-filled, per view.
    let mean = mean_colour(&bg);
    let mut layouts = Vec::new();
    let mut roi = [0.0; 4];
    for v in 0..cfg.query_variants {
        let (s, q) = if v == 0 {
            (square_around(bg.width(), bg.height(), rect), rect)
        } else {
            jitter_query(bg.width(), bg.height(), rect, &mut rng, &cfg.augment)
        };
        if v == 0 {
            roi = roi_box(s, q);
        }
        let mut grey = crop_square_filled(&bg, s, Some((q, GREY)), size)?;
        let mut early = crop_square_filled(&bg, s, Some((q, mean)), size)?;
        if v > 0 {
            let j = Jitter::draw(&mut rng, &cfg.augment);
            jitter_rgb(&mut grey, &j);
            jitter_rgb(&mut early, &j);
        }
        layouts.push(layout(s, q));
        squares.push(grey);
        squares.push(early);
    }
    // Composites: own cut-out, then the negatives.
    let side = rect.w.max(rect.h) * std::f64::consts::SQRT_2;
    let crop = Square {
        x: rect.x + rect.w / 2.0 - side / 2.0,
        y: rect.y + rect.h / 2.0 - side / 2.0,
        side,
    };
    for &j in std::iter::once(&i).chain(negs) {
        let cut = if j == i {
            fg.clone()
        } else {
            fos_image::decode::load_rgba(&ds.path(&records[j].foreground), &opts)?
        };
        let mut comp = bg.clone();
        paste(&mut comp, &cut, rect)?;
        squares.push(crop_square_filled(&comp, crop, None, size)?);
    }
    Ok(RecordImages {
        squares,
        layouts,
        roi,
    })
}

fn chunk_path(dir: &Path, c: usize) -> PathBuf {
    dir.join(format!("chunk-{c:05}.f16"))
}

/// Computes (or resumes) the cache under `dir` and loads it.
pub fn build(
    ds: &Dataset,
    cfg: &TrainConfig,
    backbone: &Backbone,
    backbone_sha: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<FeatureCache, TrainError> {
    let records = training_records(ds);
    if records.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no train or val records with a background photo; build the data set from COCO (fos dataset build --coco)",
            ds.root.display()
        )));
    }
    let key = key(ds, &records, cfg, backbone_sha)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let kpath = dir.join("cache.json");
    let old: Option<CacheKey> = std::fs::read(&kpath)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if old.as_ref() != Some(&key) {
        if old.is_some() {
            tracing::info!("feature cache settings changed: starting it over");
        }
        for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
            if e.file_name().to_string_lossy().starts_with("chunk-") {
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
            }
        }
        let bytes = serde_json::to_vec_pretty(&key).expect("serialisable");
        fos_image::atomic::write_atomic(&kpath, &bytes).map_err(io(&kpath))?;
    }
    let device = fos_model::device();
    let size = backbone.kind().input_size();
    let dim = backbone.kind().feature_dim();
    let c = backbone.kind().map_channels();
    let map_len = c * ROI * ROI;
    let negatives_of: Vec<Vec<usize>> = (0..records.len())
        .map(|i| pick_negatives(&records, i, cfg.negatives, cfg.seed))
        .collect();
    let (vf, vq, k) = (cfg.fg_variants, cfg.query_variants, cfg.negatives);
    let per_record = vf * dim + map_len + vq * (2 * dim + 4) + map_len + (1 + k) * dim;
    let chunks = records.len().div_ceil(CHUNK);
    progress.start(records.len() as u64);
    let mut all: Vec<f32> = Vec::with_capacity(records.len() * per_record);
    for ci in 0..chunks {
        let range = ci * CHUNK..((ci + 1) * CHUNK).min(records.len());
        let path = chunk_path(dir, ci);
        let want = range.len() * per_record;
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == want * 2 {
                all.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                );
                progress.inc(range.len() as u64);
                continue;
            }
        }
        let imgs: Vec<RecordImages> = range
            .clone()
            .into_par_iter()
            .map(|i| record_images(ds, &records, i, &negatives_of[i], cfg, size))
            .collect::<Result<_, _>>()?;
        let flat: Vec<&RgbImage> = imgs.iter().flat_map(|r| r.squares.iter()).collect();
        let (mut pooled, mut maps) = (
            Vec::with_capacity(flat.len()),
            Vec::with_capacity(flat.len()),
        );
        let mut hw = [0, 0];
        for b in flat.chunks(BATCH) {
            let owned: Vec<RgbImage> = b.iter().map(|i| (*i).clone()).collect();
            let (p, m, s) = features(backbone, &owned, &device)?;
            pooled.extend(p);
            maps.extend(m);
            hw = s;
        }
        let mut out: Vec<f32> = Vec::with_capacity(want);
        let mut at = 0;
        for ri in &imgs {
            let n_imgs = vf + 2 * vq + 1 + k;
            let p = &pooled[at..at + n_imgs];
            let m = &maps[at..at + n_imgs];
            at += n_imgs;
            (0..vf).for_each(|v| out.extend_from_slice(&p[v]));
            out.extend(roi_align(&m[0], c, hw[0], hw[1], [0.0, 0.0, 1.0, 1.0]));
            for v in 0..vq {
                out.extend_from_slice(&ri.layouts[v]);
                out.extend_from_slice(&p[vf + 2 * v]);
                out.extend_from_slice(&p[vf + 2 * v + 1]);
            }
            out.extend(roi_align(&m[vf], c, hw[0], hw[1], ri.roi));
            (0..=k).for_each(|j| out.extend_from_slice(&p[vf + 2 * vq + j]));
        }
        debug_assert_eq!(out.len(), want);
        let bytes: Vec<u8> = out
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        fos_image::atomic::write_atomic(&path, &bytes).map_err(io(&path))?;
        // Keep exactly what a resumed run would read back.
        all.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        );
        progress.inc(range.len() as u64);
    }
    progress.finish();
    Ok(unpack(records, all, dim, map_len, vf, vq, k, negatives_of))
}

#[allow(clippy::too_many_arguments)]
fn unpack(
    records: Vec<Record>,
    all: Vec<f32>,
    dim: usize,
    map_len: usize,
    vf: usize,
    vq: usize,
    k: usize,
    negatives_of: Vec<Vec<usize>>,
) -> FeatureCache {
    let n = records.len();
    let mut c = FeatureCache {
        records,
        dim,
        map_len,
        fg_variants: vf,
        query_variants: vq,
        negatives: k,
        fg: Vec::with_capacity(n * vf * dim),
        fg_map: Vec::with_capacity(n * map_len),
        query: Vec::with_capacity(n * vq * dim),
        layout: Vec::with_capacity(n * vq * 4),
        early: Vec::with_capacity(n * vq * dim),
        roi: Vec::with_capacity(n * map_len),
        composite: Vec::with_capacity(n * (1 + k) * dim),
        negatives_of,
    };
    let mut it = all.into_iter();
    let mut take = |dst: &mut Vec<f32>, len: usize| dst.extend(it.by_ref().take(len));
    for _ in 0..n {
        take(&mut c.fg, vf * dim);
        take(&mut c.fg_map, map_len);
        for _ in 0..vq {
            take(&mut c.layout, 4);
            take(&mut c.query, dim);
            take(&mut c.early, dim);
        }
        take(&mut c.roi, map_len);
        take(&mut c.composite, (1 + k) * dim);
    }
    c
}
