//! `fos eval`: the published protocols on a data set split, all methods in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, ValueEnum};
use fos_eval::methods::{Aspect, Embedding, Method, Random};
use fos_eval::protocol::{evaluate, EvalOptions, Protocol};

use super::index::EncoderArgs;

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ProtocolArg {
    Sfosd,
    Patterns,
    Rfosd,
}

/// Arguments of `fos eval`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos eval --dataset data/coco --out reports/sfosd
  fos eval --dataset data/coco --protocol patterns --out reports/patterns --json
  fos eval --dataset data/foreign --split test --baselines random,aspect --out r

S-FOSD: each test background is a query, its own cut-out is the answer, the
pool is that category's cut-outs of the split (categories with at least
--min-pool of them). The query box is jittered (--box-jitter, default 0.3 per
side, seeded): with the exact box, the answer's aspect ratio equals the box's
and aspect ratio alone finds it. Writes report.md, per_category.csv,
metrics.json and chart.png to OUT. With --json, stdout is
{\"protocol\", \"split\", \"queries\", \"methods\": {NAME: {\"recall@1\", ..., \"map\"}}}.")]
pub struct Args {
    /// The data set.
    #[arg(long)]
    dataset: PathBuf,
    /// The split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// The protocol.
    #[arg(long, value_enum, default_value = "sfosd")]
    protocol: ProtocolArg,
    /// Methods, comma-separated: random, aspect, pretrained (early-fusion, student, discofos need trained models).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,aspect,pretrained"
    )]
    baselines: Vec<String>,
    /// Report folder.
    #[arg(long)]
    out: PathBuf,
    /// Smallest pool for a category to be evaluated.
    #[arg(long, default_value_t = 5)]
    min_pool: usize,
    /// Random scaling of each side of the query box, in [1-j, 1+j].
    #[arg(long, default_value_t = 0.3)]
    box_jitter: f64,
    /// Seed of the jitter and of `random`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the metrics object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    enc: EncoderArgs,
}

pub fn run(a: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let protocol = match a.protocol {
        ProtocolArg::Sfosd => Protocol::Sfosd,
        ProtocolArg::Patterns => Protocol::Patterns,
        ProtocolArg::Rfosd => Protocol::Rfosd,
    };
    if !(0.0..1.0).contains(&a.box_jitter) {
        bail!("--box-jitter {} must be in [0, 1)", a.box_jitter);
    }
    let ds = fos_data::manifest::Dataset::open(&a.dataset)?;
    let mut methods: Vec<Box<dyn Method>> = Vec::new();
    let mut embed_bar = None;
    for name in &a.baselines {
        match name.trim() {
            "random" => methods.push(Box::new(Random::new(a.seed))),
            "aspect" => methods.push(Box::new(Aspect)),
            "pretrained" => {
                let enc = a.enc.load()?;
                let pb = super::spinner("embedding the pool");
                let pb2 = pb.clone();
                methods.push(Box::new(
                    Embedding::new("pretrained", Box::new(enc), ctx.decode)
                        .with_progress(move |n| pb2.set_message(format!("embedded {n} pool cut-outs"))),
                ));
                embed_bar = Some(pb);
            }
            m @ ("early-fusion" | "student" | "discofos") => bail!(
                "method {m:?} needs a trained model, which the Models issue adds; available now: random, aspect, pretrained"
            ),
            m => bail!("unknown method {m:?}; choose from random, aspect, pretrained"),
        }
    }
    if methods.is_empty() {
        bail!("no method given (--baselines)");
    }
    let mut opts = EvalOptions::new(&a.split, protocol);
    opts.min_pool = a.min_pool.max(2);
    opts.box_jitter = a.box_jitter;
    opts.seed = a.seed;
    let bar = super::Bar::new("queries");
    let report = evaluate(&ds, &mut methods, &opts, &bar);
    if let Some(pb) = embed_bar {
        pb.finish_and_clear();
    }
    let report = report?;
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    fos_eval::report::write(&report, &a.out)?;
    if a.json {
        println!("{}", fos_eval::report::json(&report));
    } else {
        print!("{}", fos_eval::report::markdown(&report));
        println!("\nreport: {}", a.out.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}
