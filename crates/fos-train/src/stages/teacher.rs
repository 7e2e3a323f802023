//! Method A's teacher: the foreground encoder trained as a pattern classifier,
//! on the cached features of a frozen backbone or, fine-tuning, through the
//! backbone itself.

use burn::tensor::{Device, Tensor, TensorData};
use fos_data::manifest::Dataset;
use fos_image::decode::DecodeOptions;
use fos_image::preprocess::Preprocess;
use fos_model::backbone::{batch as stack, Backbone, BackboneKind};
use fos_model::embed::l2_normalize;
use fos_model::heads::{Binder, Head, HeadDims};
use fos_model::trained::FG_BACKBONE;
use fos_model::weights::Weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{rows, split_indices, Metrics, Stage};
use crate::augment::AugmentConfig;
use crate::cache::{cutout_view, FeatureCache};
use crate::loss;
use crate::{TrainConfig, TrainError};

/// Images per backbone batch when validating a fine-tuned backbone.
const VAL_BATCH: usize = 32;

/// Fine-tuning: the backbone runs in the loss on freshly augmented cut-outs;
/// its folded parameters are trained under [`FG_BACKBONE`].
pub struct FineTune<'a> {
    /// The data set the cut-outs are read from.
    pub dataset: &'a Dataset,
    /// The backbone.
    pub kind: BackboneKind,
    /// Padding and colour jitter, drawn online.
    pub augment: AugmentConfig,
    /// The backbone's learning rate relative to the head's.
    pub lr_scale: f32,
    /// Batch-norm scale per output channel of each folded kernel, named as
    /// the kernels ([`Backbone::fold_scales`], under [`FG_BACKBONE`]).
    pub scales: &'a Weights,
}

impl FineTune<'_> {
    /// Pooled features of records `recs` of `cache`, through the backbone in
    /// `b` (tracked when `b` is): augmented views with seeds `seeds`, or the
    /// plain cut-outs when `seeds` is `None`.
    fn pooled(
        &self,
        b: &mut Binder,
        cache: &FeatureCache,
        recs: &[usize],
        seeds: Option<&[u64]>,
        device: &Device,
    ) -> Result<Tensor<2>, TrainError> {
        let size = self.kind.input_size();
        let pre = Preprocess::fit(size);
        let opts = DecodeOptions::default();
        let chw: Vec<Vec<f32>> = recs
            .par_iter()
            .enumerate()
            .map(|(k, &r)| {
                let path = self.dataset.path(&cache.records[r].foreground);
                let fg = fos_image::decode::load_rgba(&path, &opts)?;
                let mut rng = ChaCha8Rng::seed_from_u64(seeds.map_or(0, |s| s[k]));
                let view = cutout_view(&fg, seeds.is_none(), &mut rng, &self.augment, size)?;
                Ok(pre.apply(&view)?)
            })
            .collect::<Result<_, TrainError>>()?;
        let net: Backbone = b.backbone(self.kind, FG_BACKBONE)?;
        Ok(net.forward(stack(&chw, size, device)?).pooled)
    }
}

/// Method A's teacher: cut-out views -> embedding -> pattern logits.
pub struct Teacher<'a> {
    cache: &'a FeatureCache,
    fine_tune: Option<FineTune<'a>>,
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
            fine_tune: None,
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

impl<'a> Teacher<'a> {
    /// The same teacher, trained through its backbone ([`FineTune`]).
    pub fn fine_tuned(mut self, f: FineTune<'a>) -> Self {
        self.fine_tune = Some(f);
        self
    }

    /// Starts the class centres at the mean embedding of each pattern's
    /// training views under the head in `params` (a warm start: zero centres
    /// would pull a trained head's embeddings toward the origin).
    pub fn init_centres(&mut self, params: &Weights) -> Result<(), TrainError> {
        let (vf, e) = (self.cache.fg_variants, self.dims.embed);
        let device = fos_model::device();
        let mut sums = vec![0f32; self.centres.len()];
        let mut counts = vec![0f32; self.dims.patterns];
        for chunk in self.train.chunks(256) {
            let mut b = Binder::new(params, &device, false);
            let x = rows(
                &self.cache.fg,
                chunk.iter().flat_map(|&r| (0..vf).map(move |v| r * vf + v)),
                self.cache.dim,
                &device,
            );
            let emb = fos_model::to_vec(b.teacher_embed(x)?)?;
            for (k, row) in emb.chunks(e).enumerate() {
                let y = self.labels[chunk[k / vf]];
                counts[y] += 1.0;
                sums[y * e..(y + 1) * e]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(s, v)| *s += v);
            }
        }
        for (y, &n) in counts.iter().enumerate() {
            if n > 0.0 {
                for k in 0..e {
                    self.centres[y * e + k] = sums[y * e + k] / n;
                }
            }
        }
        Ok(())
    }
}

impl Stage for Teacher<'_> {
    fn head(&self) -> Head {
        Head::Teacher
    }
    fn name(&self) -> &'static str {
        match self.fine_tune {
            Some(_) => "teacher-fine-tune",
            None => "teacher",
        }
    }
    fn samples(&self) -> usize {
        match self.fine_tune {
            // One freshly augmented view per cut-out and epoch.
            Some(_) => self.train.len(),
            None => self.train.len() * self.cache.fg_variants,
        }
    }
    fn precondition(&self, grads: &mut Weights) {
        let Some(f) = &self.fine_tune else { return };
        for name in f.scales.names() {
            let s = &f.scales.tensor(name).expect("listed").data;
            if let Some(g) = grads.tensor_mut(name) {
                precondition_kernel(&mut g.data, s);
            }
        }
    }
    fn lr_scale(&self, name: &str) -> f32 {
        match &self.fine_tune {
            Some(f) if name.starts_with(FG_BACKBONE) => f.lr_scale,
            _ => 1.0,
        }
    }
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError> {
        let (recs, x) = match &self.fine_tune {
            Some(f) => {
                let recs: Vec<usize> = batch.iter().map(|&s| self.train[s]).collect();
                let seeds: Vec<u64> = recs.iter().map(|_| rng.random()).collect();
                let x = f.pooled(b, self.cache, &recs, Some(&seeds), device)?;
                (recs, x)
            }
            None => {
                let vf = self.cache.fg_variants;
                let recs: Vec<usize> = batch.iter().map(|&s| self.train[s / vf]).collect();
                let x = rows(
                    &self.cache.fg,
                    batch.iter().map(|&s| self.train[s / vf] * vf + s % vf),
                    self.cache.dim,
                    device,
                );
                (recs, x)
            }
        };
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
        let mut logits = Vec::new();
        for chunk in self.val.chunks(VAL_BATCH) {
            let x = match &self.fine_tune {
                Some(f) => f.pooled(&mut b, self.cache, chunk, None, &device)?,
                None => rows(
                    &self.cache.fg,
                    chunk.iter().map(|&r| r * vf),
                    self.cache.dim,
                    &device,
                ),
            };
            let emb = b.teacher_embed(x)?;
            logits.extend(fos_model::to_vec(b.teacher_logits(emb)?)?);
        }
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

/// Scales the gradient of a folded kernel `[out, ...]` by the square of each
/// output channel's batch-norm scale `s`: a step on the folded kernel
/// `w' = s w` is then the step an optimiser takes on `w` (with weight decay
/// and momentum, which are linear), mapped through the fold.
fn precondition_kernel(grad: &mut [f32], s: &[f32]) {
    let per = grad.len() / s.len().max(1);
    for (row, s) in grad.chunks_mut(per.max(1)).zip(s) {
        row.iter_mut().for_each(|v| *v *= s * s);
    }
}

/// Teacher embeddings (normalised) of every cut-out view, from the pooled
/// features `fg` (`[record][view][dim]`: the cache's, or a fine-tuned
/// backbone's): `[record][view][embed]`.
pub fn teacher_targets(
    fg: &[f32],
    dim: usize,
    params: &Weights,
    embed: usize,
) -> Result<Vec<f32>, TrainError> {
    let device = fos_model::device();
    let n = fg.len() / dim;
    let mut out = Vec::with_capacity(n * embed);
    for start in (0..n).step_by(256) {
        let mut b = Binder::new(params, &device, false);
        let x = rows(fg, start..(start + 256).min(n), dim, &device);
        let v = fos_model::to_vec(b.teacher_embed(x)?)?;
        for c in v.chunks(embed) {
            let mut c = c.to_vec();
            l2_normalize(&mut c);
            out.extend(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preconditioned_folded_step_is_the_unfolded_step() {
        // Two output channels of two weights each, scales 0.1 and 4.
        let (w, s) = ([0.3f32, -0.2, 0.5, 0.1], [0.1f32, 4.0]);
        let folded: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * s[i / 2]).collect();
        // A loss L(w') with gradient g' = w' - t; so dL/dw = s * g'.
        let t = [0.0f32, 0.1, 0.2, 0.3];
        let g_folded: Vec<f32> = folded.iter().zip(t).map(|(a, b)| a - b).collect();
        let (lr, wd) = (0.01f32, 0.1f32);
        // Unfolded SGD step with weight decay, then folded.
        let want: Vec<f32> = (0..4)
            .map(|i| {
                let g = s[i / 2] * g_folded[i] + wd * w[i];
                (w[i] - lr * g) * s[i / 2]
            })
            .collect();
        // Folded step with the preconditioned gradient.
        let mut g = g_folded.clone();
        precondition_kernel(&mut g, &s);
        let got: Vec<f32> = (0..4)
            .map(|i| folded[i] - lr * (g[i] + wd * folded[i]))
            .collect();
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-6, "{want:?} vs {got:?}");
        }
    }
}
