//! The training job: feature cache, then each stage with per-epoch
//! checkpoints and logs, then the model directory.
//!
//! Layout of `OUT`: `model.json` + `weights.safetensors` (updated after each
//! stage, so finished heads survive a kill), `log/STAGE.csv` and
//! `log/STAGE.png`, `checkpoints/STAGE.{safetensors,json}` (parameters,
//! optimiser state, best epoch so far: `--resume` continues from the last
//! finished epoch and gives the same result as an uninterrupted run). The
//! feature cache lives in `DATASET/cache/features-BACKBONE/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fos_data::manifest::Dataset;
use fos_data::Progress;
use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::heads::{Binder, Head, HeadDims};
use fos_model::trained::{
    file_sha256, load_backbone, read_model, save_model, ModelInfo, FG_BACKBONE, MODEL_VERSION,
};
use fos_model::weights::Weights;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::cache::{self, rng_for};
use crate::config::StageConfig;
use crate::log::{self, EpochRow};
use crate::optim::Optimizer;
use crate::stages::{self, DiscoStudent, DiscoTeacher, FineTune, Metrics, Query, Stage, Teacher};
use crate::{io, TrainConfig, TrainError};

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The foreground encoder.
    Teacher,
    /// The query encoder (needs the teacher).
    Student,
    /// The early-fusion baseline (needs the teacher).
    EarlyFusion,
    /// DiscoFOS teacher and fusion student.
    Discofos,
    /// Everything, in order.
    All,
}

impl Which {
    fn heads(self) -> Vec<Head> {
        match self {
            Which::Teacher => vec![Head::Teacher],
            Which::Student => vec![Head::Student],
            Which::EarlyFusion => vec![Head::EarlyFusion],
            Which::Discofos => vec![Head::DiscoTeacher, Head::DiscoStudent],
            Which::All => Head::ALL.to_vec(),
        }
    }
}

/// A training job.
pub struct Job {
    /// The data set folder (with patterns assigned).
    pub dataset: PathBuf,
    /// The model directory to create or extend.
    pub out: PathBuf,
    /// What to train.
    pub which: Which,
    /// Settings.
    pub config: TrainConfig,
    /// Continue from the checkpoints in `out`.
    pub resume: bool,
    /// Train the teacher through its backbone (fine-tuning) instead of on
    /// the frozen backbone's cached features.
    pub fine_tune: bool,
}

/// Hooks for the front end: progress of the cache and of each stage.
pub trait Reporter {
    /// A progress sink for a named job (`cache`, `teacher`, ...).
    fn progress(&self, name: &str) -> Box<dyn Progress>;
    /// An epoch finished.
    fn epoch(&self, stage: &str, row: &EpochRow);
}

/// What a job did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Seconds spent on the feature cache (0 when it was complete).
    pub cache_seconds: f64,
    /// Seconds per stage.
    pub stage_seconds: BTreeMap<String, f64>,
    /// Best validation metrics per stage.
    pub metrics: BTreeMap<String, Metrics>,
    /// The model directory.
    pub model: PathBuf,
}

/// Runs `job`.
pub fn run(job: &Job, reporter: &dyn Reporter) -> Result<Summary, TrainError> {
    job.config.validate()?;
    // Refuse an unusable output folder before the long cache step.
    std::fs::create_dir_all(&job.out).map_err(io(&job.out))?;
    let cfg = &job.config;
    let ds = Dataset::open(&job.dataset)?;
    let kind: BackboneKind = cfg.backbone.parse()?;
    let device = fos_model::device();
    let (backbone, backbone_sha) = load_backbone(kind, &device)?;
    let mut patterns: Vec<String> = ds
        .records
        .iter()
        .filter_map(|r| r.pattern.clone())
        .collect();
    patterns.sort();
    patterns.dedup();
    if patterns.is_empty() {
        return Err(TrainError::Config(format!(
            "{}: no patterns assigned; run `fos dataset patterns {} --cluster auto` first",
            job.dataset.display(),
            job.dataset.display()
        )));
    }
    let dims = HeadDims {
        feature: kind.feature_dim(),
        map_channels: kind.map_channels(),
        embed: cfg.embed,
        hidden: cfg.hidden,
        patterns: patterns.len(),
        reduce: cfg.reduce,
        fusion: cfg.fusion,
    };
    // Start from the heads already in OUT when they fit.
    let (mut info, mut weights) = match read_model(&job.out) {
        Ok((i, w)) if i.backbone_sha256 == backbone_sha && i.dims == dims && i.patterns == patterns => (i, w),
        _ => (
            ModelInfo {
                format: "fos-model".into(),
                version: MODEL_VERSION,
                backbone: kind.name().into(),
                backbone_sha256: backbone_sha.clone(),
                input_size: kind.input_size(),
                preprocess: BTreeMap::from([
                    ("normalise".into(), "ImageNet mean/std, whole square resized".into()),
                    ("foreground".into(), "cut-out centred on a white square".into()),
                    ("query".into(), "square context crop around the rectangle, rectangle grey (128); early fusion: photo mean colour".into()),
                ]),
                dims,
                heads: vec![],
                patterns: patterns.clone(),
                training: serde_json::Value::Null,
                metrics: BTreeMap::new(),
                geometry_weight: 0.0,
                fine_tuned_backbone: false,
                weights_sha256: String::new(),
            },
            Weights::new(),
        ),
    };
    let heads = job.which.heads();
    if job.fine_tune && !heads.contains(&Head::Teacher) {
        return Err(TrainError::Config(
            "--fine-tune trains the teacher's backbone: use it with `fos train teacher` or `all`"
                .into(),
        ));
    }
    // Fine-tuning starts from the pretrained backbone, batch norm folded in;
    // the batch-norm scales precondition its gradients.
    let fine_tune_init = match job.fine_tune {
        true => {
            let w = fos_model::weights::Cache::default().load(kind.name(), &kind.install_hint())?;
            let (mut init, mut scales) = (Weights::new(), Weights::new());
            add(&mut init, &Backbone::fold(kind, &w)?, FG_BACKBONE);
            add(&mut scales, &Backbone::fold_scales(kind, &w)?, FG_BACKBONE);
            Some((init, scales))
        }
        false => None,
    };
    if heads
        .iter()
        .any(|h| matches!(h, Head::Student | Head::EarlyFusion))
        && !heads.contains(&Head::Teacher)
        && !info.heads.contains(&Head::Teacher)
    {
        return Err(TrainError::Config(format!(
            "{} has no trained teacher (with these patterns and sizes): train it first with `fos train teacher`",
            job.out.display()
        )));
    }
    let t0 = Instant::now();
    let cache_dir = job
        .dataset
        .join("cache")
        .join(format!("features-{}", kind.name()));
    let p = reporter.progress("cache");
    let cache = cache::build(&ds, cfg, &backbone, &backbone_sha, &cache_dir, p.as_ref())?;
    drop(backbone);
    let cache_seconds = t0.elapsed().as_secs_f64();
    let dataset_sha256 = cache::key(&ds, &cache.records, cfg, &backbone_sha)?.dataset;
    let labels = stages::pattern_labels(&cache, &patterns)?;
    let mut summary = Summary {
        cache_seconds,
        stage_seconds: BTreeMap::new(),
        metrics: BTreeMap::new(),
        model: job.out.clone(),
    };
    let mut targets: Option<Vec<f32>> = None;
    for head in heads {
        let t = Instant::now();
        let sc = stage_config(cfg, head);
        let mut init = Weights::new();
        head.init(&dims, cfg.seed ^ head as u64, &mut init);
        let (best, metrics) = match head {
            Head::Teacher => {
                // Fine-tuning starts from a head trained on the frozen
                // backbone: the one in OUT, else one trained first.
                let warm = info.heads.contains(&Head::Teacher) && !info.fine_tuned_backbone;
                let (mut best, mut metrics) = match (&fine_tune_init, warm) {
                    (Some(_), true) => (
                        weights.with_prefix("teacher."),
                        info.metrics.get("teacher").cloned().unwrap_or_default(),
                    ),
                    _ => {
                        let mut s = Teacher::new(&cache, labels.clone(), dims, cfg);
                        train_stage(&mut s, job, sc, init, reporter)?
                    }
                };
                if let Some((w, scales)) = &fine_tune_init {
                    let mut s =
                        Teacher::new(&cache, labels.clone(), dims, cfg).fine_tuned(FineTune {
                            dataset: &ds,
                            kind,
                            augment: cfg.augment,
                            lr_scale: cfg.backbone_lr_scale,
                            scales,
                        });
                    s.init_centres(&best)?;
                    best.extend(w.clone());
                    let frozen = std::mem::take(&mut metrics);
                    (best, metrics) =
                        train_stage(&mut s, job, cfg.teacher_fine_tune, best, reporter)?;
                    for (k, v) in frozen {
                        metrics.insert(format!("frozen_{k}"), v);
                    }
                }
                (best, metrics)
            }
            Head::Student | Head::EarlyFusion => {
                if targets.is_none() {
                    targets = Some(teacher_targets(
                        &ds, &cache, &info, &weights, cfg, reporter,
                    )?);
                }
                let tg = targets.as_deref().expect("computed above");
                let mut s = Query::new(&cache, head, tg, dims.embed, cfg);
                train_stage(&mut s, job, sc, init, reporter)?
            }
            Head::DiscoTeacher => {
                let mut s = DiscoTeacher::new(&cache);
                train_stage(&mut s, job, sc, init, reporter)?
            }
            Head::DiscoStudent => {
                let teacher = weights.with_prefix("disco_teacher.");
                if teacher.is_empty() {
                    return Err(TrainError::Config(
                        "DiscoFOS's student needs its teacher: train `discofos`".into(),
                    ));
                }
                let mut s = DiscoStudent::new(&cache, &teacher, &dims, cfg);
                train_stage(&mut s, job, sc, init, reporter)?
            }
        };
        if head == Head::Teacher {
            targets = None;
            // A frozen teacher drops the backbone an earlier fine-tuning left.
            for name in weights.with_prefix(FG_BACKBONE).names() {
                weights.take(name);
            }
            info.fine_tuned_backbone = job.fine_tune;
        }
        weights.extend(best);
        if !info.heads.contains(&head) {
            info.heads.push(head);
        }
        info.heads
            .sort_by_key(|h| Head::ALL.iter().position(|x| x == h));
        let mut metrics = metrics;
        if head == Head::Student {
            let tg = targets.as_deref().expect("computed for the student");
            let (w, m) = stages::tune_geometry(&cache, &weights, tg, dims.embed)?;
            info.geometry_weight = w;
            metrics.extend(m);
        }
        info.metrics
            .insert(stage_name(head).into(), metrics.clone());
        summary.metrics.insert(stage_name(head).into(), metrics);
        summary
            .stage_seconds
            .insert(stage_name(head).into(), t.elapsed().as_secs_f64());
        // Stages trained by earlier runs into this folder keep their times.
        let mut seconds: BTreeMap<String, f64> = info
            .training
            .get("stage_seconds")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        seconds.extend(summary.stage_seconds.clone());
        info.training = serde_json::json!({
            "dataset": job.dataset.display().to_string(),
            "dataset_sha256": dataset_sha256,
            "records": {"train": cache.records.iter().filter(|r| r.split == "train").count(),
                        "val": cache.records.iter().filter(|r| r.split == "val").count()},
            "source_images": source_images(&cache.records),
            "seed": cfg.seed,
            "config": cfg,
            "cache_seconds": summary.cache_seconds,
            "stage_seconds": seconds,
        });
        save_model(&job.out, &mut info, &weights)?;
    }
    Ok(summary)
}

/// The teacher's normalised embeddings of every cached cut-out view: from the
/// cache, or through the fine-tuned backbone when the model has one.
fn teacher_targets(
    ds: &Dataset,
    cache: &cache::FeatureCache,
    info: &ModelInfo,
    weights: &Weights,
    cfg: &TrainConfig,
    reporter: &dyn Reporter,
) -> Result<Vec<f32>, TrainError> {
    if !info.fine_tuned_backbone {
        return stages::teacher_targets(&cache.fg, cache.dim, weights, info.dims.embed);
    }
    let kind: BackboneKind = info.backbone.parse()?;
    let net = Backbone::from_folded_weights(kind, weights, FG_BACKBONE, &fos_model::device())?;
    let p = reporter.progress("teacher-features");
    let fg = cache::foreground_view_features(ds, &cache.records, cfg, &net, p.as_ref())?;
    stages::teacher_targets(&fg, cache.dim, weights, info.dims.embed)
}

/// File names of the photos the model was trained and validated on (sorted),
/// so that a demo or an evaluation can keep its queries out of them.
fn source_images(records: &[fos_data::manifest::Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter_map(|r| r.source_image.as_deref())
        .filter_map(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub use crate::stages::stage_name;

fn stage_config(cfg: &TrainConfig, h: Head) -> StageConfig {
    match h {
        Head::Teacher => cfg.teacher,
        Head::Student => cfg.student,
        Head::EarlyFusion => cfg.early_fusion,
        Head::DiscoTeacher => cfg.disco_teacher,
        Head::DiscoStudent => cfg.disco_student,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    epochs_done: usize,
    optimizer_steps: u64,
    best_epoch: usize,
    /// Best primary metric so far (`None`: none measured).
    best: Option<f64>,
    best_metrics: Metrics,
    rows: Vec<EpochRow>,
    stage: StageConfig,
    seed: u64,
}

fn train_stage(
    stage: &mut dyn Stage,
    job: &Job,
    sc: StageConfig,
    init: Weights,
    reporter: &dyn Reporter,
) -> Result<(Weights, Metrics), TrainError> {
    let name = stage.name();
    let seed = job.config.seed;
    let ckdir = job.out.join("checkpoints");
    std::fs::create_dir_all(&ckdir).map_err(io(&ckdir))?;
    let (ckw, ckj) = (
        ckdir.join(format!("{name}.safetensors")),
        ckdir.join(format!("{name}.json")),
    );
    let mut params = init;
    let mut opt = Optimizer::new(sc.optimizer);
    let mut best = params.clone();
    let mut ck = Checkpoint {
        epochs_done: 0,
        optimizer_steps: 0,
        best_epoch: 0,
        best: None,
        best_metrics: Metrics::new(),
        rows: vec![],
        stage: sc,
        seed,
    };
    if job.resume {
        if let Some((c, w)) = load_checkpoint(&ckj, &ckw)? {
            if c.stage != sc || c.seed != seed {
                return Err(TrainError::Config(format!(
                    "{}: the checkpoint was made with other settings; train without --resume to start over",
                    ckj.display()
                )));
            }
            params = strip(&w, "p.");
            best = strip(&w, "b.");
            opt.restore(strip(&w, "o."), c.optimizer_steps);
            stage.restore_extra(&strip(&w, "x."));
            ck = c;
            tracing::info!("{name}: resuming after epoch {}", ck.epochs_done);
        }
    }
    let n = stage.samples();
    if n == 0 {
        return Err(TrainError::Config(format!("{name}: no training samples")));
    }
    let steps = n.div_ceil(sc.batch);
    let progress = reporter.progress(name);
    progress.start((sc.epochs * steps) as u64);
    progress.inc((ck.epochs_done * steps) as u64);
    let ad = fos_model::device().autodiff();
    let head_id = stage.head() as u64 + 1;
    for epoch in ck.epochs_done..sc.epochs {
        let t = Instant::now();
        let lr = match epoch.checked_div(sc.lr_halve_every) {
            Some(halvings) => sc.lr * 0.5f32.powi(halvings as i32),
            None => sc.lr,
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng_for(seed, 10 + head_id, epoch));
        let mut rng = rng_for(seed, 20 + head_id, epoch);
        let mut total = 0.0;
        for batch in order.chunks(sc.batch) {
            let mut b = Binder::new(&params, &ad, true);
            let loss = stage.loss(&mut b, batch, &mut rng, &ad)?;
            let value = fos_model::to_vec(loss.clone().detach())?[0] as f64;
            if !value.is_finite() {
                return Err(TrainError::Config(format!(
                    "{name}: the loss diverged (epoch {}); lower the learning rate",
                    epoch + 1
                )));
            }
            total += value;
            let mut grads = b.grads(&loss.backward())?;
            stage.precondition(&mut grads);
            opt.step_scaled(lr, &mut params, &grads, &|n| stage.lr_scale(n))?;
            stage.after_step();
            progress.inc(1);
        }
        let metrics = stage.validate(&params)?;
        // Without validation data the last epoch is kept.
        let score = metrics.get(stage.primary()).copied();
        let better = match (score, ck.best) {
            (Some(s), Some(b)) => s > b,
            _ => true,
        };
        if better || ck.best_epoch == 0 {
            ck.best = score;
            ck.best_epoch = epoch + 1;
            ck.best_metrics = metrics.clone();
            best = params.clone();
        }
        let row = EpochRow {
            epoch: epoch + 1,
            loss: total / steps as f64,
            lr: lr as f64,
            seconds: t.elapsed().as_secs_f64(),
            metrics,
        };
        reporter.epoch(name, &row);
        ck.rows.push(row);
        ck.epochs_done = epoch + 1;
        ck.optimizer_steps = opt.steps();
        save_checkpoint(&ckj, &ckw, &ck, &params, &best, &opt, stage)?;
        log::write(&job.out.join("log"), name, &ck.rows)?;
    }
    progress.finish();
    let mut m = ck.best_metrics.clone();
    m.insert("best_epoch".into(), ck.best_epoch as f64);
    Ok((best, m))
}

fn strip(w: &Weights, prefix: &str) -> Weights {
    let mut out = Weights::new();
    for name in w.names().filter(|n| n.starts_with(prefix)) {
        let t = w.tensor(name).expect("listed");
        out.insert(&name[prefix.len()..], t.shape.clone(), t.data.clone());
    }
    out
}

fn add(into: &mut Weights, w: &Weights, prefix: &str) {
    for name in w.names() {
        let t = w.tensor(name).expect("listed");
        into.insert(format!("{prefix}{name}"), t.shape.clone(), t.data.clone());
    }
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    json: &Path,
    st: &Path,
    ck: &Checkpoint,
    params: &Weights,
    best: &Weights,
    opt: &Optimizer,
    stage: &dyn Stage,
) -> Result<(), TrainError> {
    let mut w = Weights::new();
    add(&mut w, params, "p.");
    add(&mut w, best, "b.");
    add(&mut w, opt.state().0, "o.");
    add(&mut w, &stage.extra(), "x.");
    // Tensors first, then the description that points at them: a kill between
    // the two leaves the previous epoch's description, whose tensors are
    // replaced by newer ones; resuming then redoes one epoch from newer
    // weights, so the digest below ties the two together.
    w.save_safetensors(st, None)?;
    let digest = file_sha256(st)?;
    let mut v = serde_json::to_value(ck).expect("serialisable");
    v["tensors_sha256"] = serde_json::Value::String(digest);
    let bytes = serde_json::to_vec_pretty(&v).expect("serialisable");
    fos_image::atomic::write_atomic(json, &bytes).map_err(io(json))
}

fn load_checkpoint(json: &Path, st: &Path) -> Result<Option<(Checkpoint, Weights)>, TrainError> {
    let Ok(bytes) = std::fs::read(json) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", json.display())))?;
    let c: Checkpoint = serde_json::from_value(v.clone())
        .map_err(|e| TrainError::Config(format!("{}: {e}", json.display())))?;
    match file_sha256(st) {
        Ok(d) if Some(d.as_str()) == v["tensors_sha256"].as_str() => {}
        _ => {
            tracing::warn!(
                "{}: checkpoint tensors missing or from another epoch; starting this stage over",
                st.display()
            );
            return Ok(None);
        }
    }
    let w = Weights::load_safetensors(st)?;
    Ok(Some((c, w)))
}
