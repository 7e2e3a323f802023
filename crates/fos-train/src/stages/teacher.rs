//! Method A's teacher: the foreground encoder trained as a pattern classifier.

use burn::tensor::{Device, Tensor, TensorData};
use fos_model::embed::l2_normalize;
use fos_model::heads::{Binder, Head, HeadDims};
use fos_model::weights::Weights;
use rand_chacha::ChaCha8Rng;

use super::{rows, split_indices, Metrics, Stage};
use crate::cache::FeatureCache;
use crate::loss;
use crate::{TrainConfig, TrainError};

/// Method A's teacher: cut-out views -> embedding -> pattern logits.
pub struct Teacher<'a> {
    cache: &'a FeatureCache,
    labels: Vec<usize>,
    train: Vec<usize>,
    val: Vec<usize>,
    dims: HeadDims,
    centres: Vec<f32>,
    center_weight: f32,
    center_lr: f32,
    pending: Option<(Vec<f32>, Vec<usize>)>,
}

impl<'a> Teacher<'a> {
    /// Over `cache`, with pattern labels.
    pub fn new(
        cache: &'a FeatureCache,
        labels: Vec<usize>,
        dims: HeadDims,
        cfg: &TrainConfig,
    ) -> Self {
        Teacher {
            cache,
            labels,
            train: split_indices(cache, "train"),
            val: split_indices(cache, "val"),
            centres: vec![0.0; dims.patterns * dims.embed],
            dims,
            center_weight: cfg.center_weight,
            center_lr: cfg.center_lr,
            pending: None,
        }
    }
}

impl Stage for Teacher<'_> {
    fn head(&self) -> Head {
        Head::Teacher
    }
    fn samples(&self) -> usize {
        self.train.len() * self.cache.fg_variants
    }
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        _: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError> {
        let vf = self.cache.fg_variants;
        let recs: Vec<usize> = batch.iter().map(|&s| self.train[s / vf]).collect();
        let x = rows(
            &self.cache.fg,
            batch.iter().map(|&s| self.train[s / vf] * vf + s % vf),
            self.cache.dim,
            device,
        );
        let labels: Vec<usize> = recs.iter().map(|&r| self.labels[r]).collect();
        let emb = b.teacher_embed(x)?;
        let logits = b.teacher_logits(emb.clone())?;
        let e = self.dims.embed;
        let centres: Vec<f32> = labels
            .iter()
            .flat_map(|&y| self.centres[y * e..(y + 1) * e].iter().copied())
            .collect();
        let ct = Tensor::<2>::from_data(TensorData::new(centres, [labels.len(), e]), device);
        let values = fos_model::to_vec(emb.clone().detach())?;
        self.pending = Some((values, labels.clone()));
        Ok(loss::cross_entropy(logits, &labels, device)
            + loss::center_loss(emb, ct) * self.center_weight as f64)
    }
    fn after_step(&mut self) {
        if let Some((v, y)) = self.pending.take() {
            loss::update_centres(&mut self.centres, self.dims.embed, &v, &y, self.center_lr);
        }
    }
    fn validate(&self, params: &Weights) -> Result<Metrics, TrainError> {
        let device = fos_model::device();
        let mut b = Binder::new(params, &device, false);
        let vf = self.cache.fg_variants;
        let mut m = Metrics::new();
        if self.val.is_empty() {
            return Ok(m);
        }
        let x = rows(
            &self.cache.fg,
            self.val.iter().map(|&r| r * vf),
            self.cache.dim,
            &device,
        );
        let emb = b.teacher_embed(x)?;
        let logits = fos_model::to_vec(b.teacher_logits(emb)?)?;
        let p = self.dims.patterns;
        let (mut top1, mut top5) = (0usize, 0usize);
        for (k, &r) in self.val.iter().enumerate() {
            let l = &logits[k * p..(k + 1) * p];
            let y = self.labels[r];
            let rank = l.iter().filter(|&&v| v > l[y]).count();
            top1 += (rank == 0) as usize;
            top5 += (rank < 5) as usize;
        }
        let n = self.val.len() as f64;
        m.insert("val_top1".into(), top1 as f64 / n);
        m.insert("val_top5".into(), top5 as f64 / n);
        Ok(m)
    }
    fn primary(&self) -> &'static str {
        "val_top1"
    }
    fn extra(&self) -> Weights {
        let mut w = Weights::new();
        w.insert(
            "centres",
            vec![self.dims.patterns, self.dims.embed],
            self.centres.clone(),
        );
        w
    }
    fn restore_extra(&mut self, w: &Weights) {
        if let Some(t) = w.tensor("centres") {
            if t.data.len() == self.centres.len() {
                self.centres = t.data.clone();
            }
        }
    }
}

/// Teacher embeddings (normalised) of every cached cut-out view:
/// `[record][view][embed]`.
pub fn teacher_targets(
    cache: &FeatureCache,
    params: &Weights,
    embed: usize,
) -> Result<Vec<f32>, TrainError> {
    let device = fos_model::device();
    let mut out = Vec::with_capacity(cache.fg.len() / cache.dim * embed);
    let n = cache.fg.len() / cache.dim;
    for start in (0..n).step_by(256) {
        let mut b = Binder::new(params, &device, false);
        let x = rows(&cache.fg, start..(start + 256).min(n), cache.dim, &device);
        let v = fos_model::to_vec(b.teacher_embed(x)?)?;
        for c in v.chunks(embed) {
            let mut c = c.to_vec();
            l2_normalize(&mut c);
            out.extend(c);
        }
    }
    Ok(out)
}
