//! `fos bench`: throughput measurements, printed as a table or JSON.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Subcommand};
use fos_model::backbone::{batch, Backbone, BackboneKind};

/// Arguments of `fos bench`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos bench backbone --threads 2
  fos bench backbone --backbone efficientnet-lite2 --batches 1,32 --json
  fos bench search --sizes 1000,100000,1000000 --threads 2
  fos bench vectors --n 100000 --dim 1280 --out bench/work
  fos bench exact --library bench/work/base-100000-1280.fos --queries bench/work/queries-1280.fos --batches 1,64
  fos bench ann --library bench/work/base-100000-1280.fos --queries bench/work/queries-1280.fos
  fos bench memory --mib 1024
  fos bench http --addr 127.0.0.1:8080 --clients 100 --seconds 30 --background photo.jpg")]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// End-to-end search latency over synthetic libraries of several sizes.
    Search(super::bench_search::SearchArgs),
    /// Load test of a running `fos serve` (many concurrent clients).
    Http(super::bench_http::HttpArgs),
    /// Write a synthetic base library and query library (for `exact`/`ann`
    /// and the Python peers in bench/).
    Vectors(super::bench_vectors::VectorsArgs),
    /// Exact top-k search throughput at several query batch sizes.
    Exact(super::bench_vectors::ExactArgs),
    /// Approximate (HNSW) search: build time, recall@10 and latency per ef.
    Ann(super::bench_vectors::AnnArgs),
    /// Memory bandwidth of a streaming read (the floor of a flat scan).
    Memory(super::bench_vectors::MemoryArgs),
    /// Backbone forward throughput (images/s) at several batch sizes.
    Backbone {
        /// Backbone to measure.
        #[arg(long, default_value = "efficientnet-lite0")]
        backbone: BackboneKind,
        /// Batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batches: Vec<usize>,
        /// Input resolution (default: the backbone's own).
        #[arg(long)]
        size: Option<u32>,
        /// Minimum images per batch size to time (after one warm-up pass).
        #[arg(long, default_value_t = 64)]
        images: usize,
        /// Use random weights instead of the installed ones (speed is the same).
        #[arg(long)]
        synthetic: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let What::Backbone {
        backbone,
        batches,
        size,
        images,
        synthetic,
        json,
    } = args.what
    else {
        return match args.what {
            What::Search(a) => super::bench_search::run(a, ctx),
            What::Http(a) => super::bench_http::run(a),
            What::Vectors(a) => super::bench_vectors::vectors(a).map(|()| ExitCode::SUCCESS),
            What::Exact(a) => super::bench_vectors::exact(a).map(|()| ExitCode::SUCCESS),
            What::Ann(a) => super::bench_vectors::ann(a).map(|()| ExitCode::SUCCESS),
            What::Memory(a) => super::bench_vectors::memory(a).map(|()| ExitCode::SUCCESS),
            What::Backbone { .. } => unreachable!("matched above"),
        };
    };
    let device = fos_model::device();
    let net = if synthetic {
        Backbone::from_weights(backbone, &Backbone::synthetic_weights(backbone, 0), &device)?
    } else {
        Backbone::load(backbone, &device).context("use --synthetic to time random weights")?
    };
    let size = size.unwrap_or(backbone.input_size());
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for &b in batches.iter().filter(|&&b| b > 0) {
        // A fixed, non-constant input (constant inputs can hit fast paths).
        let chw: Vec<Vec<f32>> = (0..b)
            .map(|i| {
                (0..3 * (size * size) as usize)
                    .map(|j| ((i * 31 + j) % 97) as f32 / 48.0 - 1.0)
                    .collect()
            })
            .collect();
        let x = batch(&chw, size, &device)?;
        // Warm-up; image 0's first pooled features let the peers check that
        // they run the same network on the same input.
        let pooled = fos_model::to_vec(net.forward(x.clone()).pooled)?;
        let iters = images.div_ceil(b).max(2);
        let pb = super::progress(iters as u64, &format!("batch {b}"));
        let t = Instant::now();
        for _ in 0..iters {
            let _ = fos_model::to_vec(net.forward(x.clone()).pooled)?;
            pb.inc(1);
        }
        let secs = t.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let ips = (iters * b) as f64 / secs;
        rows.push(serde_json::json!({
            "batch": b, "images": iters * b, "seconds": secs,
            "images_per_s": ips, "ms_per_batch": secs * 1e3 / iters as f64,
            "pooled0_head": &pooled[..8.min(pooled.len())],
        }));
    }
    if json {
        let v = serde_json::json!({
            "bench": "backbone", "backbone": backbone.name(), "size": size,
            "threads": threads, "synthetic": synthetic, "results": rows,
        });
        println!("{v}");
    } else {
        println!(
            "{} forward, {size}x{size}, {threads} threads",
            backbone.name()
        );
        println!("{:>6} {:>12} {:>14}", "batch", "images/s", "ms/batch");
        for r in &rows {
            println!(
                "{:>6} {:>12.1} {:>14.1}",
                r["batch"],
                r["images_per_s"].as_f64().unwrap_or(0.0),
                r["ms_per_batch"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
