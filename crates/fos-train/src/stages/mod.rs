//! What each training stage optimises and how it is validated: the teacher
//! (pattern classification + center loss), the student and the early-fusion
//! baseline (cosine triplet against the frozen teacher's embeddings), and
//! DiscoFOS (a composite discriminator with BCE, then the fusion student with
//! triplet + BCE + L1 distillation of the discriminator's features).

mod disco;
mod query;
mod teacher;

pub use disco::{DiscoStudent, DiscoTeacher};
pub use query::{tune_geometry, Query};
pub use teacher::{teacher_targets, FineTune, Teacher};

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use fos_model::heads::{Binder, Head, ROI};
use fos_model::weights::Weights;
use rand_chacha::ChaCha8Rng;

use crate::cache::FeatureCache;
use crate::TrainError;

/// Validation metrics by name.
pub type Metrics = BTreeMap<String, f64>;

/// The name of a head's stage in logs, checkpoints and metrics.
pub fn stage_name(h: Head) -> &'static str {
    match h {
        Head::Teacher => "teacher",
        Head::Student => "student",
        Head::EarlyFusion => "early-fusion",
        Head::DiscoTeacher => "discofos-teacher",
        Head::DiscoStudent => "discofos-student",
    }
}

/// One stage: a head, its samples, its loss and its validation.
pub trait Stage {
    /// The head it trains.
    fn head(&self) -> Head;
    /// Its name in logs and checkpoints.
    fn name(&self) -> &'static str {
        stage_name(self.head())
    }
    /// Number of training samples per epoch.
    fn samples(&self) -> usize;
    /// Loss of a batch of sample indices (tracked through `b`).
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError>;
    /// The learning rate of parameter `name` relative to the stage's (a
    /// fine-tuned backbone learns slower than its head).
    fn lr_scale(&self, _name: &str) -> f32 {
        1.0
    }
    /// Adjusts a batch's gradients before the optimiser step (a fine-tuned
    /// backbone's batch-norm preconditioning).
    fn precondition(&self, _grads: &mut Weights) {}
    /// Called after each optimiser step (center updates).
    fn after_step(&mut self) {}
    /// Validation metrics of `params`; the key named by
    /// [`primary`](Self::primary) chooses the best epoch.
    fn validate(&self, params: &Weights) -> Result<Metrics, TrainError>;
    /// The metric that selects the best epoch (higher is better).
    fn primary(&self) -> &'static str;
    /// State beyond the parameters that a checkpoint must keep.
    fn extra(&self) -> Weights {
        Weights::new()
    }
    /// Restores [`extra`](Self::extra).
    fn restore_extra(&mut self, _w: &Weights) {}
}

/// Rows `idx` of a table with rows of `width`, concatenated, and their count.
fn gather(table: &[f32], idx: impl Iterator<Item = usize>, width: usize) -> (Vec<f32>, usize) {
    let mut v = Vec::new();
    let mut n = 0;
    for i in idx {
        v.extend_from_slice(FeatureCache::row(table, i, width));
        n += 1;
    }
    (v, n)
}

pub(crate) fn rows(
    table: &[f32],
    idx: impl Iterator<Item = usize>,
    width: usize,
    device: &Device,
) -> Tensor<2> {
    let (v, n) = gather(table, idx, width);
    Tensor::from_data(TensorData::new(v, [n, width]), device)
}

pub(crate) fn maps(
    table: &[f32],
    idx: impl Iterator<Item = usize>,
    c: usize,
    device: &Device,
) -> Tensor<4> {
    let (v, n) = gather(table, idx, c * ROI * ROI);
    Tensor::from_data(TensorData::new(v, [n, c, ROI, ROI]), device)
}

pub(crate) fn split_indices(c: &FeatureCache, split: &str) -> Vec<usize> {
    (0..c.records.len())
        .filter(|&i| c.records[i].split == split)
        .collect()
}

/// Pattern index of every cached record.
pub fn pattern_labels(c: &FeatureCache, patterns: &[String]) -> Result<Vec<usize>, TrainError> {
    let at: HashMap<&str, usize> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    c.records
        .iter()
        .map(|r| {
            r.pattern
                .as_deref()
                .and_then(|p| at.get(p).copied())
                .ok_or_else(|| {
                    TrainError::Config(format!(
                        "record {} has no pattern; run `fos dataset patterns` first",
                        r.id
                    ))
                })
        })
        .collect()
}

/// S-FOSD-style metrics on the validation records: query `k` comes from
/// record `queries[k]`, whose answer is its own cut-out among the `pool`
/// cut-outs of its category.
pub(crate) fn retrieval_metrics(
    c: &FeatureCache,
    queries: &[usize],
    pool: &[usize],
    score: impl Fn(usize, usize) -> f32,
) -> Metrics {
    let (mut r1, mut r5, mut r10, mut map) = (0.0, 0.0, 0.0, 0.0);
    for (k, &i) in queries.iter().enumerate() {
        let own = score(k, i);
        let rank = pool
            .iter()
            .filter(|&&j| j != i && c.records[j].category == c.records[i].category)
            .filter(|&&j| score(k, j) > own)
            .count();
        r1 += (rank < 1) as u8 as f64;
        r5 += (rank < 5) as u8 as f64;
        r10 += (rank < 10) as u8 as f64;
        map += 1.0 / (rank as f64 + 1.0);
    }
    let n = queries.len().max(1) as f64;
    Metrics::from([
        ("val_recall@1".into(), r1 / n),
        ("val_recall@5".into(), r5 / n),
        ("val_recall@10".into(), r10 / n),
        ("val_map".into(), map / n),
    ])
}
