//! `fos eval`: the published protocols on a data set split, all methods in one run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, ValueEnum};
use std::sync::Arc;

use fos_eval::methods::{teacher_accuracy, Aspect, DiscoFos, Embedding, Method, Random, Served};
use fos_eval::protocol::{evaluate, EvalOptions, Protocol};
use fos_eval::report::Meta;
use fos_eval::summary::{summarise, SummaryOptions};
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
  fos eval --dataset data/coco --baselines aspect,served --dump-scores scores.csv --out r
  fos eval --scores my-model.csv --protocol rfosd --name mine --out reports/mine

The figures are the released FOSD evaluator's (docs/evaluation.md): per
category, then the plain mean over categories. S-FOSD: Recall@1/5/10/20 (and
fos's MRR); R-FOSD and patterns: mAP, mAP@20, Precision@1/5/10/20, where a
candidate is valid when |box_w/box_h - fg_w/fg_h| < 1.2. Every figure comes
with its query count and a 95% bootstrap interval (queries resampled within
categories, seeded), and each method is compared with `served` (what `fos
search` returns with its defaults) on the same resamples.

S-FOSD on a data set: each background of the split is a query, its own
cut-out the answer, the pool that category's cut-outs of the split. The query
box is jittered (--box-jitter, default 0.3 per side, seeded): with the exact
box the answer's aspect ratio equals the box's and aspect ratio alone finds it.

--scores FILE.csv evaluates any model's scores without a data set. Header:
category,query,candidate,score,label[,valid][,method]; label 1 marks a
positive (S-FOSD: exactly one per query), valid 0/1 (default 1) the outcome of
R-FOSD's aspect rule, method names the method when one file holds several.
--dump-scores writes that format for every method evaluated.

Writes report.md, per_category.csv, metrics.json and chart.svg to OUT. With
--json, stdout is {\"protocol\", \"queries\", \"methods\": {NAME: {\"recall@1\", ...,
\"queries\", \"ci95\": {\"recall@1\": [lo, hi], ...}, \"per_category\"}}, \"comparisons\"}.")]
pub struct Args {
    /// The data set.
    #[arg(long, required_unless_present = "scores", conflicts_with = "scores")]
    dataset: Option<PathBuf>,
    /// Evaluate these scores (CSV, see below) instead of running methods.
    #[arg(long)]
    scores: Vec<PathBuf>,
    /// The method's name for a --scores file without a method column
    /// (default: the file's stem).
    #[arg(long, requires = "scores")]
    name: Option<String>,
    /// Write every evaluated method's scores to this CSV.
    #[arg(long)]
    dump_scores: Option<PathBuf>,
    /// The split to evaluate.
    #[arg(long, default_value = "test")]
    split: String,
    /// The protocol.
    #[arg(long, value_enum, default_value = "sfosd")]
    protocol: ProtocolArg,
    /// Methods, comma-separated: random, aspect, pretrained, early-fusion,
    /// student, discofos (these three use the trained model), served (what
    /// `fos search` returns with its defaults).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,aspect,pretrained,early-fusion,student,discofos,served"
    )]
    baselines: Vec<String>,
    /// Weight of the trained model's aspect-ratio channel for student,
    /// early-fusion and discofos (default: the model's own, tuned on the val
    /// split; 0 scores the learned part alone). `served` keeps the model's own.
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
    /// Seed of the jitter, of `random` and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples behind the 95% intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// The method the others are compared with (default: served, if
    /// evaluated, else the first).
    #[arg(long)]
    reference: Option<String>,
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
    let suite = protocol.suite();
    let mut extra_md = String::new();
    let mut extra_json = serde_json::Map::new();
    let (scores, meta) = if let Some(dir) = &a.dataset {
        let ds = fos_data::manifest::Dataset::open(dir)?;
        let (run, model) = run_methods(&a, protocol, &ds, ctx)?;
        if protocol == Protocol::Patterns {
            if let Some(model) = model.filter(|m| m.has(fos_model::heads::Head::Teacher)) {
                let (top1, top5, n) = teacher_accuracy(&ds, &a.split, &model, &ctx.decode)?;
                extra_json.insert("teacher".into(), serde_json::json!({"top1": top1, "top5": top5, "cutouts": n, "patterns": model.info().patterns.len()}));
                extra_md = format!(
                    "\nTeacher as a pattern classifier on {} ({} cut-outs, {} patterns): top-1 {:.3}, top-5 {:.3}\n",
                    a.split, n, model.info().patterns.len(), top1, top5
                );
            }
        }
        let meta = Meta {
            protocol: protocol_id(protocol).into(),
            title: protocol.title().into(),
            split: Some(run.split.clone()),
            box_jitter: Some(run.box_jitter),
        };
        (run.scores, meta)
    } else {
        if a.name.is_some() && a.scores.len() > 1 {
            bail!(
                "--name names the method of one --scores file; give one file, or a method column"
            );
        }
        let mut all = Vec::new();
        for f in &a.scores {
            let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("scores");
            let name = a.name.as_deref().unwrap_or(stem);
            all.extend(fos_eval::scores::read_csv(f, name, suite)?);
        }
        let mut names = std::collections::HashSet::new();
        if let Some(m) = all.iter().find(|m| !names.insert(m.name.clone())) {
            bail!("method {:?} is given twice; name the files' methods apart (--name or a method column)", m.name);
        }
        let meta = Meta {
            protocol: protocol_id(protocol).into(),
            title: protocol.title().into(),
            split: None,
            box_jitter: None,
        };
        (all, meta)
    };
    if let Some(r) = a
        .reference
        .as_deref()
        .filter(|r| !scores.iter().any(|m| &m.name == r))
    {
        bail!("--reference {r:?} is not among the methods evaluated");
    }
    let summary = summarise(
        suite,
        &scores,
        &SummaryOptions {
            bootstrap: a.bootstrap,
            seed: a.seed,
            reference: a.reference.clone(),
        },
    );
    let md = format!("{}{extra_md}", fos_eval::report::markdown(&meta, &summary));
    let mut json = fos_eval::report::json(&meta, &summary);
    for (k, v) in extra_json {
        json[k] = v;
    }
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    fos_eval::report::write(&meta, &summary, &a.out, &md, &json)?;
    if let Some(p) = &a.dump_scores {
        fos_eval::scores::write_csv(&scores, p)?;
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{md}");
        println!("\nreport: {}", a.out.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn protocol_id(p: Protocol) -> &'static str {
    match p {
        Protocol::Sfosd => "sfosd",
        Protocol::Patterns => "patterns",
        Protocol::Rfosd => "rfosd",
    }
}

/// Runs the --baselines on the data set; also returns the trained model if
/// one was loaded.
fn run_methods(
    a: &Args,
    protocol: Protocol,
    ds: &fos_data::manifest::Dataset,
    ctx: &super::Context,
) -> anyhow::Result<(fos_eval::protocol::Run, Option<Arc<TrainedModel>>)> {
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
            "served" => methods.push(Box::new(Served::new(a.enc.load()?, ctx.decode)?)),
            m => bail!(
                "unknown method {m:?}; choose from random, aspect, pretrained, student, early-fusion, discofos, served"
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
    let run = evaluate(ds, &mut methods, &opts, &bar);
    if let Some(pb) = embed_bar {
        pb.finish_and_clear();
    }
    Ok((run?, model_cache))
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
