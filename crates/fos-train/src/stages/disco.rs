//! DiscoFOS: the composite discriminator and the distilled fusion student.

use std::collections::HashMap;

use burn::tensor::{Device, Tensor};
use fos_model::heads::{Binder, Head, HeadDims};
use fos_model::weights::Weights;
use rand_chacha::ChaCha8Rng;

use super::{maps, retrieval_metrics, rows, split_indices, Metrics, Stage};
use crate::cache::FeatureCache;
use crate::loss;
use crate::{TrainConfig, TrainError};

/// DiscoFOS's teacher: composite features -> (feature, compatibility).
pub struct DiscoTeacher<'a> {
    cache: &'a FeatureCache,
    train: Vec<usize>,
    val: Vec<usize>,
}

impl<'a> DiscoTeacher<'a> {
    /// Over the cached composites.
    pub fn new(cache: &'a FeatureCache) -> Self {
        DiscoTeacher {
            cache,
            train: split_indices(cache, "train"),
            val: split_indices(cache, "val"),
        }
    }
}

fn pair_accuracy(records: &[usize], k: usize, score: &[f32]) -> f64 {
    let mut ok = 0.0;
    for r in 0..records.len() {
        let s = &score[r * (k + 1)..(r + 1) * (k + 1)];
        ok += s[1..].iter().filter(|&&n| s[0] > n).count() as f64 / k as f64;
    }
    ok / records.len().max(1) as f64
}

impl Stage for DiscoTeacher<'_> {
    fn head(&self) -> Head {
        Head::DiscoTeacher
    }
    fn samples(&self) -> usize {
        self.train.len() * (1 + self.cache.negatives)
    }
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        _: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError> {
        let per = 1 + self.cache.negatives;
        let idx = batch.iter().map(|&s| self.train[s / per] * per + s % per);
        let x = rows(&self.cache.composite, idx, self.cache.dim, device);
        let targets: Vec<f32> = batch.iter().map(|&s| (s % per == 0) as u8 as f32).collect();
        let (_, logit) = b.disco_teacher(x)?;
        Ok(loss::bce_with_logits(logit, &targets, device))
    }
    fn validate(&self, params: &Weights) -> Result<Metrics, TrainError> {
        let device = fos_model::device();
        let per = 1 + self.cache.negatives;
        let mut b = Binder::new(params, &device, false);
        let idx = self
            .val
            .iter()
            .flat_map(|&r| (0..per).map(move |j| r * per + j));
        let x = rows(&self.cache.composite, idx, self.cache.dim, &device);
        let (_, logit) = b.disco_teacher(x)?;
        let s = fos_model::to_vec(logit)?;
        Ok(Metrics::from([(
            "val_pair_accuracy".into(),
            pair_accuracy(&self.val, self.cache.negatives, &s),
        )]))
    }
    fn primary(&self) -> &'static str {
        "val_pair_accuracy"
    }
}

/// DiscoFOS's student: the fusion head on (background RoI, cut-out map),
/// trained with triplet + BCE on its scores and L1 to the teacher's features.
pub struct DiscoStudent<'a> {
    cache: &'a FeatureCache,
    teacher: &'a Weights,
    train: Vec<usize>,
    val: Vec<usize>,
    c: usize,
    margin: f64,
    distill: f64,
}

impl<'a> DiscoStudent<'a> {
    /// `teacher` holds the trained DiscoFOS teacher.
    pub fn new(
        cache: &'a FeatureCache,
        teacher: &'a Weights,
        dims: &HeadDims,
        cfg: &TrainConfig,
    ) -> Self {
        DiscoStudent {
            cache,
            teacher,
            train: split_indices(cache, "train"),
            val: split_indices(cache, "val"),
            c: dims.map_channels,
            margin: cfg.margin as f64,
            distill: cfg.distill_weight as f64,
        }
    }

    fn score(
        &self,
        b: &mut Binder,
        q: &[usize],
        fg: &[usize],
        device: &Device,
    ) -> Result<(Tensor<2>, Tensor<1>), TrainError> {
        let roi = maps(&self.cache.roi, q.iter().copied(), self.c, device);
        let f = maps(&self.cache.fg_map, fg.iter().copied(), self.c, device);
        Ok(b.disco_student(roi, f)?)
    }
}

impl Stage for DiscoStudent<'_> {
    fn head(&self) -> Head {
        Head::DiscoStudent
    }
    fn samples(&self) -> usize {
        self.train.len() * self.cache.negatives
    }
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        _: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError> {
        let k = self.cache.negatives;
        let per = 1 + k;
        let q: Vec<usize> = batch.iter().map(|&s| self.train[s / k]).collect();
        let negs: Vec<usize> = batch
            .iter()
            .map(|&s| self.cache.negatives_of[self.train[s / k]][s % k])
            .collect();
        let (fp, sp) = self.score(b, &q, &q, device)?;
        let (fneg, sn) = self.score(b, &q, &negs, device)?;
        // The teacher's features of the same composites (constants).
        let mut tb = Binder::new(self.teacher, device, false);
        let comp = |j: &dyn Fn(usize) -> usize| {
            rows(
                &self.cache.composite,
                batch.iter().map(|&s| self.train[s / k] * per + j(s)),
                self.cache.dim,
                device,
            )
        };
        let (tp, _) = tb.disco_teacher(comp(&|_| 0))?;
        let (tn, _) = tb.disco_teacher(comp(&|s| 1 + s % k))?;
        let n = batch.len();
        let sig = |x: Tensor<1>| burn::tensor::activation::sigmoid(x);
        let triplet = loss::score_triplet(sig(sp.clone()), sig(sn.clone()), self.margin);
        let logits = Tensor::cat(vec![sp, sn], 0);
        let mut targets = vec![1.0; n];
        targets.extend(vec![0.0; n]);
        let bce = loss::bce_with_logits(logits, &targets, device);
        let l1 = loss::l1(fp, tp.detach()) + loss::l1(fneg, tn.detach());
        Ok(triplet + bce + l1 * self.distill)
    }
    fn validate(&self, params: &Weights) -> Result<Metrics, TrainError> {
        let device = fos_model::device();
        let mut b = Binder::new(params, &device, false);
        let k = self.cache.negatives;
        let mut q = Vec::new();
        let mut fg = Vec::new();
        for &r in &self.val {
            q.extend(std::iter::repeat_n(r, 1 + k));
            fg.push(r);
            fg.extend(&self.cache.negatives_of[r]);
        }
        if q.is_empty() {
            return Ok(Metrics::new());
        }
        let (_, s) = self.score(&mut b, &q, &fg, &device)?;
        let s = fos_model::to_vec(s)?;
        let mut m = Metrics::from([("val_pair_accuracy".into(), pair_accuracy(&self.val, k, &s))]);
        // As a ranker over each validation query's category pool.
        let mut table: HashMap<(usize, usize), f32> = HashMap::new();
        for (k2, &i) in self.val.iter().enumerate() {
            let pool: Vec<usize> = self
                .val
                .iter()
                .copied()
                .filter(|&j| self.cache.records[j].category == self.cache.records[i].category)
                .collect();
            let (_, s) = self.score(&mut b, &vec![i; pool.len()], &pool, &device)?;
            for (j, v) in pool.iter().zip(fos_model::to_vec(s)?) {
                table.insert((k2, *j), v);
            }
        }
        m.extend(retrieval_metrics(
            self.cache,
            &self.val,
            &self.val,
            |k2, j| table.get(&(k2, j)).copied().unwrap_or(f32::MIN),
        ));
        Ok(m)
    }
    fn primary(&self) -> &'static str {
        "val_map"
    }
}
