//! `fos bench vectors | exact | ann | memory`: the vector-search side of the
//! side-by-side benchmark (`bench/run.sh`). `vectors` writes a base library
//! and a query library that the Python peers read too (the `.fos` layout is
//! a JSON header and an aligned f16 block), so both sides search the very
//! same numbers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;
use fos_index::ann::AnnShards;
use fos_index::scan::Block;
use fos_index::{Dtype, Entry, Library, LibraryWriter};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::json;

use super::bench_search::pct;

/// Fingerprint written into the synthetic libraries.
const MODEL: &str = "bench-synthetic";
/// Latent factors of the synthetic embeddings.
const LATENT: usize = 32;
/// Share of each vector's variance that is isotropic noise.
const NOISE: f32 = 0.25;

/// Arguments of `fos bench vectors`.
#[derive(ClapArgs, Debug)]
pub struct VectorsArgs {
    /// Vectors in the base library.
    #[arg(long)]
    n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 1280)]
    dim: usize,
    /// Vectors in the query library.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Output folder: base-N-DIM.fos and queries-DIM.fos.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `fos bench exact`.
#[derive(ClapArgs, Debug)]
pub struct ExactArgs {
    /// Base library.
    #[arg(long)]
    library: PathBuf,
    /// Query library.
    #[arg(long)]
    queries: PathBuf,
    /// Query batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batches: Vec<usize>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Seconds to time each batch size (at least 3 batches are timed).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `fos bench ann`.
#[derive(ClapArgs, Debug)]
pub struct AnnArgs {
    /// Base library.
    #[arg(long)]
    library: PathBuf,
    /// Query library.
    #[arg(long)]
    queries: PathBuf,
    /// Queries used for recall and latency.
    #[arg(long, default_value_t = 200)]
    n_queries: usize,
    /// Search candidate list sizes (ef) to try, in increasing order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "16,32,64,96,128,160,192,224,256,288,320,384,448,512"
    )]
    efs: Vec<usize>,
    /// Graph connectivity (M).
    #[arg(long, default_value_t = fos_index::ann::ANN_CONNECTIVITY)]
    m: usize,
    /// Build-time candidate list size (efConstruction).
    #[arg(long, default_value_t = fos_index::ann::ANN_EXPANSION_ADD)]
    ef_construction: usize,
    /// Most rows of one graph: more are split into shards searched in
    /// parallel (the library's own setting by default).
    #[arg(long, default_value_t = fos_index::ann::ANN_SHARD_ROWS)]
    shard_rows: usize,
    /// Target recall@10; the report picks the smallest ef that reaches it.
    #[arg(long, default_value_t = 0.95)]
    recall: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `fos bench memory`.
#[derive(ClapArgs, Debug)]
pub struct MemoryArgs {
    /// Buffer size in MiB (well above the last-level cache).
    #[arg(long, default_value_t = 1024)]
    mib: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `n` unit vectors of a latent-factor model: `W z + noise`, z ~ N(0, I_32),
/// noise `NOISE` of the variance; row `i` depends only on `(seed, i)`.
fn synthetic(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let w: Vec<f32> = (0..dim * LATENT).map(|_| gauss(&mut rng)).collect();
    let noise = (NOISE / (1.0 - NOISE) * LATENT as f32 * 12.0).sqrt();
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim * 1024)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (c as u64) << 20);
            for row in chunk.chunks_exact_mut(dim) {
                let z: Vec<f32> = (0..LATENT).map(|_| gauss(&mut rng)).collect();
                for (j, v) in row.iter_mut().enumerate() {
                    let wz: f32 = w[j * LATENT..(j + 1) * LATENT]
                        .iter()
                        .zip(&z)
                        .map(|(a, b)| a * b)
                        .sum();
                    *v = wz + noise * (rng.random::<f32>() - 0.5);
                }
                fos_model::embed::l2_normalize(row);
            }
        });
    out
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut impl Rng) -> f32 {
    let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// `n` synthetic "person" entries for a benchmark library, ids `{prefix}{i}`.
pub(crate) fn synthetic_entries(n: usize, prefix: &str) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            id: format!("{prefix}{i}"),
            category: "person".into(),
            path: format!("/bench/{prefix}{i}.png"),
            aspect: 0.5,
            pattern: None,
        })
        .collect()
}

fn write_lib(path: &Path, emb: &[f32], dim: usize) -> anyhow::Result<()> {
    let entries = synthetic_entries(emb.len() / dim, "v");
    LibraryWriter::lock(path)?.write(MODEL, dim, Dtype::F16, entries, emb)?;
    Ok(())
}

/// `fos bench vectors`.
pub fn vectors(a: VectorsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out)?;
    let pb = super::spinner(&format!("{} synthetic {}-d vectors", a.n, a.dim));
    let base = a.out.join(format!("base-{}-{}.fos", a.n, a.dim));
    write_lib(&base, &synthetic(a.n, a.dim, 1), a.dim)?;
    let queries = a.out.join(format!("queries-{}.fos", a.dim));
    write_lib(&queries, &synthetic(a.queries, a.dim, 2), a.dim)?;
    pb.finish_and_clear();
    println!("{}\n{}", base.display(), queries.display());
    Ok(())
}

fn open_pair(library: &Path, queries: &Path) -> anyhow::Result<(Library, Vec<f32>)> {
    let lib = Library::open(library).with_context(|| library.display().to_string())?;
    let q = Library::open(queries).with_context(|| queries.display().to_string())?;
    if q.dim() != lib.dim() {
        bail!(
            "the queries have {} values, the library {}",
            q.dim(),
            lib.dim()
        );
    }
    Ok((lib, q.all_embeddings()))
}

/// `fos bench exact`: top-k per query at several batch sizes.
pub fn exact(a: ExactArgs) -> anyhow::Result<()> {
    let (lib, q) = open_pair(&a.library, &a.queries)?;
    let d = lib.dim();
    let nq = q.len() / d;
    let mut rows = Vec::new();
    let mut first = Vec::new();
    for &b in &a.batches {
        if b == 0 || b > nq {
            bail!("batch {b}: the query library has {nq} queries");
        }
        let pb = super::spinner(&format!("exact top-{} at batch {b}", a.k));
        let (mut lat, mut done, t) = (vec![], 0usize, Instant::now());
        while lat.len() < 3 || t.elapsed().as_secs_f64() < a.seconds {
            let s = (done % (nq / b)) * b;
            let t0 = Instant::now();
            let hits = lib.search_batch("person", &q[s * d..(s + b) * d], a.k, |_| true)?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            if first.is_empty() && b == 1 && s == 0 {
                first = hits;
            }
            done += 1;
        }
        pb.finish_and_clear();
        let total: f64 = lat.iter().sum();
        rows.push(json!({
            "batch": b, "batches": lat.len(),
            "ms_per_batch_p50": pct(&mut lat, 0.5),
            "ms_per_query": total / (lat.len() * b) as f64,
            "queries_per_s": (lat.len() * b) as f64 / total * 1e3,
        }));
    }
    let v = json!({
        "bench": "exact", "n": lib.len(), "dim": d, "dtype": lib.dtype(), "k": a.k,
        "threads": rayon::current_num_threads(), "results": rows,
        "query0_top": first.first().map(|h| h.iter().map(|x| x.0).collect::<Vec<_>>()),
    });
    print(&v, a.json);
    Ok(())
}

/// `fos bench ann`: HNSW build time, then recall@10 and latency per ef.
pub fn ann(a: AnnArgs) -> anyhow::Result<()> {
    let (lib, q) = open_pair(&a.library, &a.queries)?;
    let d = lib.dim();
    let nq = (q.len() / d).min(a.n_queries);
    let rows: Vec<u32> = (0..lib.len() as u32).collect();
    let all = lib.all_embeddings();
    let pb = super::spinner(&format!("building HNSW over {} vectors", lib.len()));
    let t = Instant::now();
    let index = AnnShards::build_with(
        Block::F32(&all),
        d,
        &rows,
        a.shard_rows,
        a.m,
        a.ef_construction,
    )?;
    let build_s = t.elapsed().as_secs_f64();
    drop(all);
    pb.finish_and_clear();
    let truth = lib.search_batch("person", &q[..nq * d], 10, |_| true)?;
    let mut curve = Vec::new();
    for &ef in &a.efs {
        index.set_expansion(ef);
        let (mut lat, mut found) = (Vec::new(), 0usize);
        for (i, want) in truth.iter().enumerate() {
            let t = Instant::now();
            let got = index.search(lib.block(), &q[i * d..(i + 1) * d], 10, |_| true)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            found += got
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.0))
                .count();
        }
        let total: f64 = lat.iter().sum();
        let recall = found as f64 / (10 * nq) as f64;
        curve.push(json!({
            "ef": ef, "recall@10": recall, "ms_p50": pct(&mut lat, 0.5),
            "ms_p99": pct(&mut lat, 0.99), "queries_per_s": nq as f64 / total * 1e3,
        }));
        if recall >= a.recall {
            break;
        }
    }
    let mut chosen = curve
        .iter()
        .find(|c| c["recall@10"].as_f64().unwrap_or(0.0) >= a.recall)
        .cloned();
    // Throughput under load at the chosen ef: all queries at once, spread
    // over the threads (one query at a time leaves cores idle whenever the
    // graph is one shard).
    if let Some(c) = chosen.as_mut() {
        index.set_expansion(c["ef"].as_u64().unwrap_or(0) as usize);
        let t = Instant::now();
        (0..nq).into_par_iter().try_for_each(|i| {
            index
                .search(lib.block(), &q[i * d..(i + 1) * d], 10, |_| true)
                .map(drop)
        })?;
        c["parallel_queries_per_s"] = json!(nq as f64 / t.elapsed().as_secs_f64());
    }
    let v = json!({
        "bench": "ann", "n": lib.len(), "dim": d, "m": a.m,
        "graph": format!(
            "usearch HNSW over i8 vectors, {} shard(s) searched in parallel, {}×k candidates \
             re-ranked on the f16 rows",
            index.shards().len(),
            fos_index::ann::ANN_RERANK
        ),
        "ef_construction": a.ef_construction, "build_s": build_s,
        "shards": index.shards().len(),
        "threads": rayon::current_num_threads(), "target_recall": a.recall,
        "chosen": chosen, "curve": curve,
    });
    print(&v, a.json);
    Ok(())
}

/// `fos bench memory`: a streaming read of a large buffer on all threads,
/// the floor under any flat scan.
pub fn memory(a: MemoryArgs) -> anyhow::Result<()> {
    let n = a.mib * (1 << 20) / 8;
    let buf: Vec<u64> = (0..n as u64).into_par_iter().collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        let gbs = (n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9;
        std::hint::black_box(s);
        best = best.max(gbs);
    }
    let v = json!({
        "bench": "memory", "mib": a.mib, "threads": rayon::current_num_threads(),
        "read_gb_per_s": best,
    });
    print(&v, a.json);
    Ok(())
}

fn print(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}
