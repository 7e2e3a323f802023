//! `fos train`: both methods' heads on a frozen backbone (or the teacher
//! through a fine-tuned one), from a data set.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args as ClapArgs, ValueEnum};
use fos_train::log::EpochRow;
use fos_train::run::{run as run_job, Job, Reporter, Which};
use fos_train::TrainConfig;

#[derive(ValueEnum, Clone, Copy, Debug)]
enum What {
    Teacher,
    Student,
    EarlyFusion,
    Discofos,
    All,
}

/// Arguments of `fos train`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos train all --dataset data/coco --out models/default
  fos train teacher --dataset data/coco --out models/mine --epochs 5
  fos train student --dataset data/coco --out models/mine --config my.json
  fos train all --dataset data/coco --out models/default --resume
  fos train teacher --fine-tune --dataset data/coco --out models/tuned --epochs 3

The backbone is frozen: its features of every cut-out, query and DiscoFOS
composite (with augmented variants) are computed once into
DATASET/cache/features-BACKBONE/ (resumable), then each head trains on them.
Order: teacher (pattern classifier + center loss), then the student and the
early-fusion baseline (cosine triplet against the teacher's embeddings), then
DiscoFOS (composite discriminator, then the distilled fusion student).
Writes OUT/model.json and OUT/weights.safetensors after each stage, per-epoch
OUT/log/STAGE.csv and .png, and OUT/checkpoints/ (--resume continues after
the last finished epoch, with the same result as an uninterrupted run).
--config FILE is JSON over the defaults (print them with --print-config).

--fine-tune trains the teacher through its backbone instead (CPU-heavy:
a backbone forward and backward pass per cut-out and epoch): padding and
colour jitter are drawn online, the backbone learns at backbone_lr_scale
times the head's rate (batch norm frozen), settings `teacher_fine_tune`.
The model then encodes cut-outs with its own backbone, stored in its
weights; queries and DiscoFOS keep the frozen one.")]
pub struct Args {
    /// What to train.
    #[arg(value_enum)]
    what: What,
    /// The data set (with patterns: `fos dataset patterns`).
    #[arg(long, required_unless_present = "print_config")]
    dataset: Option<PathBuf>,
    /// The model directory to create or extend.
    #[arg(long, required_unless_present = "print_config")]
    out: Option<PathBuf>,
    /// JSON settings over the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Epochs of every stage trained (overrides the config).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed (overrides the config).
    #[arg(long)]
    seed: Option<u64>,
    /// Continue from OUT/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Fine-tune the teacher's backbone (teacher or all) instead of training
    /// its head on cached frozen features.
    #[arg(long)]
    fine_tune: bool,
    /// Print the effective settings as JSON and exit.
    #[arg(long)]
    print_config: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

struct Cli;

impl Reporter for Cli {
    fn progress(&self, name: &str) -> Box<dyn fos_data::Progress> {
        Box::new(super::Bar::new(name))
    }
    fn epoch(&self, stage: &str, row: &EpochRow) {
        let m: Vec<String> = row
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        tracing::info!(
            "{stage} epoch {}: loss {:.4}, {} ({:.1} s)",
            row.epoch,
            row.loss,
            m.join(", "),
            row.seconds
        );
    }
}

pub fn run(a: Args, _ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            TrainConfig::from_json(&text).with_context(|| format!("{}", p.display()))?
        }
        None => TrainConfig::default(),
    };
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(e) = a.epochs {
        for s in [
            &mut cfg.teacher,
            &mut cfg.teacher_fine_tune,
            &mut cfg.student,
            &mut cfg.early_fusion,
            &mut cfg.disco_teacher,
            &mut cfg.disco_student,
        ] {
            s.epochs = e;
        }
    }
    cfg.validate()?;
    if a.print_config {
        println!("{}", serde_json::to_string_pretty(&cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(dataset), Some(out)) = (a.dataset, a.out) else {
        anyhow::bail!("--dataset and --out are required");
    };
    let which = match a.what {
        What::Teacher => Which::Teacher,
        What::Student => Which::Student,
        What::EarlyFusion => Which::EarlyFusion,
        What::Discofos => Which::Discofos,
        What::All => Which::All,
    };
    let t = std::time::Instant::now();
    let job = Job {
        dataset,
        out,
        which,
        config: cfg,
        resume: a.resume,
        fine_tune: a.fine_tune,
    };
    let s = run_job(&job, &Cli)?;
    let total = t.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        v["seconds"] = total.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("model: {}", s.model.display());
        println!("feature cache: {:.0} s", s.cache_seconds);
        for (stage, m) in &s.metrics {
            let secs = s.stage_seconds.get(stage).copied().unwrap_or(0.0);
            let m: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!("{stage:<17} {secs:>6.0} s  {}", m.join(", "));
        }
        println!("total: {total:.0} s");
    }
    Ok(ExitCode::SUCCESS)
}
