//! `fos eval`: the published protocols on a data set split, all methods in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, ValueEnum};
use std::sync::Arc;

use fos_eval::methods::{teacher_accuracy, Aspect, DiscoFos, Embedding, Method, Random};
use fos_eval::protocol::{evaluate, EvalOptions, Protocol};
use fos_model::trained::{QueryHead, TrainedModel};

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
    /// Methods, comma-separated: random, aspect, pretrained, early-fusion,
    /// student, discofos (the last three use the trained model).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,aspect,pretrained,early-fusion,student,discofos"
    )]
    baselines: Vec<String>,
    /// Weight of the trained model's aspect-ratio channel (default: the
    /// model's own, tuned on the val split; 0 scores the learned part alone).
    #[arg(long)]
    geometry_weight: Option<f32>,
    /// DiscoFOS re-ranks this many top candidates of the student.
    #[arg(long, default_value_t = 20)]
    rerank: usize,
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
    let mut model_cache = None;
    let mut embed_bar = None;
    for name in &a.baselines {
        match name.trim() {
            "random" => methods.push(Box::new(Random::new(a.seed))),
            "aspect" => methods.push(Box::new(Aspect)),
            "pretrained" => {
                let enc = a.enc.pretrained()?;
                let pb = super::spinner("embedding the pool");
                let pb2 = pb.clone();
                methods.push(Box::new(
                    Embedding::new("pretrained", Box::new(enc), ctx.decode)
                        .with_progress(move |n| pb2.set_message(format!("embedded {n} pool cut-outs"))),
                ));
                embed_bar = Some(pb);
            }
            m @ ("student" | "early-fusion") => {
                let model = trained(&a.enc, &mut model_cache, m, a.geometry_weight)?;
                let head = if m == "student" {
                    QueryHead::Student
                } else {
                    QueryHead::EarlyFusion
                };
                methods.push(Box::new(Embedding::new(m, Box::new(model.encoder(head)?), ctx.decode)));
            }
            "discofos" => {
                let model = trained(&a.enc, &mut model_cache, "discofos", a.geometry_weight)?;
                methods.push(Box::new(DiscoFos::new(model, ctx.decode, a.rerank)));
            }
            m => bail!(
                "unknown method {m:?}; choose from random, aspect, pretrained, student, early-fusion, discofos"
            ),
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
    let mut json = fos_eval::report::json(&report);
    if protocol == Protocol::Patterns {
        if let Some(model) = model_cache
            .as_ref()
            .filter(|m: &&Arc<TrainedModel>| m.has(fos_model::heads::Head::Teacher))
        {
            let (top1, top5, n) = teacher_accuracy(&ds, &a.split, model, &ctx.decode)?;
            json["teacher"] = serde_json::json!({"top1": top1, "top5": top5, "cutouts": n, "patterns": model.info().patterns.len()});
            let line = format!(
                "\nTeacher as a pattern classifier on {} ({} cut-outs, {} patterns): top-1 {:.3}, top-5 {:.3}\n",
                a.split, n, model.info().patterns.len(), top1, top5
            );
            let md = a.out.join("report.md");
            let mut text = std::fs::read_to_string(&md).unwrap_or_default();
            text.push_str(&line);
            fos_image::atomic::write_atomic(&md, text.as_bytes())
                .with_context(|| md.display().to_string())?;
            let mj = a.out.join("metrics.json");
            fos_image::atomic::write_atomic(&mj, serde_json::to_string_pretty(&json)?.as_bytes())
                .with_context(|| mj.display().to_string())?;
            if !a.json {
                print!("{line}");
            }
        }
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{}", fos_eval::report::markdown(&report));
        println!("\nreport: {}", a.out.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The trained model, loaded once for all methods that use it.
fn trained(
    enc: &EncoderArgs,
    cache: &mut Option<Arc<TrainedModel>>,
    method: &str,
    geometry_weight: Option<f32>,
) -> anyhow::Result<Arc<TrainedModel>> {
    if let Some(m) = cache {
        return Ok(m.clone());
    }
    let mut m = enc.trained()?.ok_or_else(|| {
        anyhow::anyhow!(
            "method {method:?} needs a trained model (--model DIR; train one with `fos train`)"
        )
    })?;
    if let (Some(w), Some(model)) = (geometry_weight, Arc::get_mut(&mut m)) {
        model.set_geometry_weight(w);
    }
    *cache = Some(m.clone());
    Ok(m)
}
