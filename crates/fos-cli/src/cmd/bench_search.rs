//! `fos bench search`: end-to-end query latency (decode, crop, backbone,
//! query head, search, hits) through the same `Searcher` that `fos search`
//! and the server use, over libraries of synthetic embeddings of several
//! sizes made for the encoder in use (its dimension and fingerprint).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use fos_image::compose::Rect;
use fos_index::{Dtype, Library, LibraryWriter};
use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::embed::{Encoder, PretrainedEncoder};
use fos_search::{Query, Searcher};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Arguments of `fos bench search`.
#[derive(ClapArgs, Debug)]
pub struct SearchArgs {
    /// Library sizes (cut-outs), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    sizes: Vec<usize>,
    /// Queries timed per size.
    #[arg(long, default_value_t = 30)]
    queries: usize,
    /// The background photo (default: a coco-sample photo, else a generated one).
    #[arg(long)]
    background: Option<PathBuf>,
    /// Use the pretrained stand-in with random backbone weights (same speed
    /// as the real backbone, no head) instead of the model in use.
    #[arg(long)]
    synthetic: bool,
    #[command(flatten)]
    enc: super::encoder::EncoderArgs,
    /// Keep the synthetic libraries in this folder (they carry the encoder's
    /// fingerprint, so `fos serve --index` can serve them for load tests).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also build the approximate (HNSW) index and measure its recall@10
    /// against the exact scan and its latency (100 random queries).
    #[arg(long)]
    ann: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Recall@10 of the approximate index against the exact scan, and both
/// latencies, over 100 random unit queries.
fn ann_figures(lib: &Library, dim: usize) -> anyhow::Result<serde_json::Value> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let (mut found, mut ann_ms, mut exact_ms) = (0usize, vec![], vec![]);
    for _ in 0..100 {
        let mut q: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        fos_model::embed::l2_normalize(&mut q);
        let t = Instant::now();
        let approx = lib.search_with("person", &q, 10, |_| true, false)?;
        ann_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let exact = lib.search_with("person", &q, 10, |_| true, true)?;
        exact_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        found += approx
            .iter()
            .filter(|h| exact.iter().any(|e| e.0 == h.0))
            .count();
    }
    Ok(serde_json::json!({
        "recall@10": found as f64 / 1000.0,
        "ann_ms_p50": pct(&mut ann_ms.clone(), 0.5), "ann_ms_p99": pct(&mut ann_ms, 0.99),
        "exact_ms_p50": pct(&mut exact_ms, 0.5),
    }))
}

/// One encoder shared by the searchers of all sizes.
struct Shared(std::sync::Arc<dyn Encoder>);

impl Encoder for Shared {
    fn fingerprint(&self) -> String {
        self.0.fingerprint()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn foregrounds(
        &self,
        cutouts: &[image::RgbaImage],
    ) -> Result<Vec<Vec<f32>>, fos_model::ModelError> {
        self.0.foregrounds(cutouts)
    }
    fn query(
        &self,
        background: &image::RgbImage,
        rect: Rect,
    ) -> Result<Vec<f32>, fos_model::ModelError> {
        self.0.query(background, rect)
    }
}

/// The `p` quantile of `v` (sorted in place).
pub(crate) fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(a: SearchArgs, ctx: &super::Context) -> anyhow::Result<std::process::ExitCode> {
    let kind = BackboneKind::EfficientNetLite0;
    let device = fos_model::device();
    let enc: std::sync::Arc<dyn Encoder> = if a.synthetic {
        std::sync::Arc::new(PretrainedEncoder::new(
            Backbone::from_weights(kind, &Backbone::synthetic_weights(kind, 0), &device)?,
            device,
        ))
    } else {
        std::sync::Arc::from(
            a.enc
                .load()
                .context("use --synthetic to time random weights")?,
        )
    };
    let dim = enc.dim();
    let bg_bytes = match &a.background {
        Some(p) => std::fs::read(p).with_context(|| p.display().to_string())?,
        None => {
            let p = PathBuf::from("../shared/data/coco-sample/images/val2017/000000001818.jpg");
            std::fs::read(&p).or_else(|_| {
                let img = image::RgbImage::from_fn(640, 480, |x, y| {
                    image::Rgb([(x / 3) as u8, (y / 2) as u8, 90])
                });
                fos_image::encode::jpeg(&img, 90)
            })?
        }
    };
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for &n in &a.sizes {
        let path = dir.join(format!("bench-{n}x{}.fos", dim));
        let t = Instant::now();
        let pb = super::spinner(&format!("writing a library of {n} random embeddings"));
        {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
            let mut emb = vec![0f32; n * dim];
            for row in emb.chunks_exact_mut(dim) {
                row.iter_mut().for_each(|v| *v = rng.random::<f32>() - 0.5);
                fos_model::embed::l2_normalize(row);
            }
            let entries = super::bench_vectors::synthetic_entries(n, "c");
            let threshold = if a.ann { 1 } else { usize::MAX };
            LibraryWriter::lock(&path)?.ann_threshold(threshold).write(
                &enc.fingerprint(),
                dim,
                Dtype::F16,
                entries,
                &emb,
            )?;
        }
        pb.finish_and_clear();
        let write_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let searcher = Searcher::new(Library::open(&path)?, Box::new(Shared(enc.clone())))?;
        let open_s = t.elapsed().as_secs_f64();
        let (mut dec, mut total, mut stage) = (vec![], vec![], BTreeMap::<String, Vec<f64>>::new());
        let pb = super::progress(a.queries as u64, &format!("{n} cut-outs"));
        for q in 0..a.queries + 1 {
            let t0 = Instant::now();
            let bg = fos_image::decode::decode_bytes(
                &bg_bytes,
                std::path::Path::new("background"),
                &ctx.decode,
            )?
            .to_rgb8();
            let t1 = Instant::now();
            let (w, h) = (bg.width() as f64, bg.height() as f64);
            let mut query = Query::new([w * 0.4, h * 0.3, w * 0.15, h * 0.5], "person");
            query.aspect_factor = None;
            let resp = searcher.search(&bg, &query)?;
            let t2 = Instant::now();
            assert_eq!(resp.results.len(), 10.min(n));
            if q > 0 {
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
                dec.push(ms(t0, t1));
                for (k, v) in &resp.timing_ms {
                    stage.entry(k.clone()).or_default().push(*v);
                }
                total.push(ms(t0, t2));
                pb.inc(1);
            }
        }
        let lib = Library::open(&path)?;
        let lib = &lib;
        let p50 = |k: &str, stage: &mut BTreeMap<String, Vec<f64>>| {
            stage.get_mut(k).map_or(0.0, |v| pct(v, 0.5))
        };
        let (mut crop, mut search) = (
            vec![p50("encode", &mut stage)],
            stage.remove("search").unwrap_or_default(),
        );
        pb.finish_and_clear();
        let ann = if a.ann {
            Some(ann_figures(lib, dim)?)
        } else {
            None
        };
        let bytes = std::fs::metadata(&path)?.len();
        if a.dir.is_none() {
            std::fs::remove_file(&path)?;
        }
        rows.push(serde_json::json!({
            "cutouts": n, "dim": dim, "dtype": "f16", "encoder": enc.fingerprint(), "file_mb": bytes as f64 / 1e6,
            "write_s": write_s, "open_verify_s": open_s,
            "decode_ms_p50": pct(&mut dec, 0.5), "encode_ms_p50": pct(&mut crop, 0.5),
            "search_ms_p50": pct(&mut search.clone(), 0.5), "search_ms_p99": pct(&mut search, 0.99),
            "total_ms_p50": pct(&mut total.clone(), 0.5), "total_ms_p99": pct(&mut total, 0.99),
            "ann": ann,
        }));
    }
    let threads = rayon::current_num_threads();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"threads": threads, "queries": a.queries, "synthetic_weights": a.synthetic, "sizes": rows})
        );
    } else {
        println!("end-to-end query latency, {threads} threads, {} queries per size, EfficientNet-Lite0 224, exact top-10 over f16 embeddings\n", a.queries);
        println!("| cut-outs | file MB | open+verify s | decode p50 ms | crop+backbone p50 ms | search p50 ms | search p99 ms | total p50 ms | total p99 ms |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} |",
                r["cutouts"],
                r["file_mb"].as_f64().unwrap_or(0.0),
                r["open_verify_s"].as_f64().unwrap_or(0.0),
                r["decode_ms_p50"].as_f64().unwrap_or(0.0),
                r["encode_ms_p50"].as_f64().unwrap_or(0.0),
                r["search_ms_p50"].as_f64().unwrap_or(0.0),
                r["search_ms_p99"].as_f64().unwrap_or(0.0),
                r["total_ms_p50"].as_f64().unwrap_or(0.0),
                r["total_ms_p99"].as_f64().unwrap_or(0.0)
            );
        }
        for r in rows.iter().filter(|r| !r["ann"].is_null()) {
            let x = &r["ann"];
            println!(
                "\nHNSW (usearch, f16, M={}, ef_search={}) over {} cut-outs: built in {:.1} s (with the file), recall@10 {:.3}, {:.2} ms p50 / {:.2} ms p99 per query; exact {:.2} ms p50",
                fos_index::library::ANN_CONNECTIVITY,
                fos_index::library::ANN_EXPANSION_SEARCH,
                r["cutouts"],
                r["write_s"].as_f64().unwrap_or(0.0),
                x["recall@10"].as_f64().unwrap_or(0.0),
                x["ann_ms_p50"].as_f64().unwrap_or(0.0),
                x["ann_ms_p99"].as_f64().unwrap_or(0.0),
                x["exact_ms_p50"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
