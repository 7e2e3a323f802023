//! Method A's student and the early-fusion baseline, and the aspect channel's weight.

use burn::tensor::{Device, Tensor, TensorData};
use fos_model::embed::l2_normalize;
use fos_model::heads::{Binder, Head};
use fos_model::weights::Weights;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{retrieval_metrics, rows, split_indices, Metrics, Stage};
use crate::cache::FeatureCache;
use crate::loss;
use crate::{TrainConfig, TrainError};

/// Method A's student (late fusion) or the early-fusion baseline: query views
/// -> embedding, triplet against the teacher's embeddings.
pub struct Query<'a> {
    cache: &'a FeatureCache,
    head: Head,
    targets: &'a [f32],
    embed: usize,
    train: Vec<usize>,
    val: Vec<usize>,
    mates: Vec<Vec<usize>>,
    others: Vec<Vec<usize>>,
    margin: f64,
    own_positive: f32,
}

impl<'a> Query<'a> {
    /// `head` is [`Head::Student`] or [`Head::EarlyFusion`]; `targets` from
    /// [`teacher_targets`].
    pub fn new(
        cache: &'a FeatureCache,
        head: Head,
        targets: &'a [f32],
        embed: usize,
        cfg: &TrainConfig,
    ) -> Self {
        let train = split_indices(cache, "train");
        let rec = |i: usize| &cache.records[i];
        let mates = train
            .iter()
            .map(|&i| {
                train
                    .iter()
                    .copied()
                    .filter(|&j| rec(j).pattern == rec(i).pattern)
                    .collect()
            })
            .collect();
        let others = train
            .iter()
            .map(|&i| {
                let same: Vec<usize> = train
                    .iter()
                    .copied()
                    .filter(|&j| {
                        rec(j).category == rec(i).category && rec(j).pattern != rec(i).pattern
                    })
                    .collect();
                if same.is_empty() {
                    train
                        .iter()
                        .copied()
                        .filter(|&j| rec(j).category != rec(i).category)
                        .collect()
                } else {
                    same
                }
            })
            .collect();
        Query {
            cache,
            head,
            targets,
            embed,
            val: split_indices(cache, "val"),
            train,
            mates,
            others,
            margin: cfg.margin as f64,
            own_positive: cfg.own_positive,
        }
    }

    fn encode(
        &self,
        b: &mut Binder,
        views: &[usize],
        device: &Device,
    ) -> Result<Tensor<2>, TrainError> {
        let c = self.cache;
        Ok(match self.head {
            Head::Student => {
                let x = rows(&c.query, views.iter().copied(), c.dim, device);
                let l = rows(&c.layout, views.iter().copied(), 4, device);
                b.student_embed(x, l)?
            }
            _ => b.early_embed(rows(&c.early, views.iter().copied(), c.dim, device))?,
        })
    }

    fn target(&self, record: usize, view: usize) -> &[f32] {
        let i = record * self.cache.fg_variants + view;
        &self.targets[i * self.embed..(i + 1) * self.embed]
    }
}

impl Stage for Query<'_> {
    fn head(&self) -> Head {
        self.head
    }
    fn samples(&self) -> usize {
        self.train.len() * self.cache.query_variants
    }
    fn loss(
        &mut self,
        b: &mut Binder,
        batch: &[usize],
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Tensor<1>, TrainError> {
        let (vq, vf) = (self.cache.query_variants, self.cache.fg_variants);
        let views: Vec<usize> = batch
            .iter()
            .map(|&s| self.train[s / vq] * vq + s % vq)
            .collect();
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for &s in batch {
            let k = s / vq;
            let i = self.train[k];
            let p = if rng.random::<f32>() < self.own_positive {
                i
            } else {
                self.mates[k][rng.random_range(0..self.mates[k].len())]
            };
            pos.extend_from_slice(self.target(p, rng.random_range(0..vf)));
            let o = &self.others[k];
            let n = if o.is_empty() {
                i
            } else {
                o[rng.random_range(0..o.len())]
            };
            neg.extend_from_slice(self.target(n, rng.random_range(0..vf)));
        }
        let q = self.encode(b, &views, device)?;
        let t = |v: Vec<f32>| {
            Tensor::<2>::from_data(TensorData::new(v, [batch.len(), self.embed]), device)
        };
        Ok(loss::cosine_triplet(q, t(pos), t(neg), self.margin))
    }
    fn validate(&self, params: &Weights) -> Result<Metrics, TrainError> {
        let device = fos_model::device();
        let mut b = Binder::new(params, &device, false);
        let vq = self.cache.query_variants;
        let views: Vec<usize> = self.val.iter().map(|&i| i * vq).collect();
        if views.is_empty() {
            return Ok(Metrics::new());
        }
        let q = fos_model::to_vec(self.encode(&mut b, &views, &device)?)?;
        let scores = |k: usize, j: usize| -> f32 {
            let qv = &q[k * self.embed..(k + 1) * self.embed];
            qv.iter().zip(self.target(j, 0)).map(|(a, b)| a * b).sum()
        };
        Ok(retrieval_metrics(self.cache, &self.val, &self.val, scores))
    }
    fn primary(&self) -> &'static str {
        "val_map"
    }
}

/// Chooses the weight of the aspect channel ([`fos_model::geometry::with_geometry`])
/// on the validation split: the S-FOSD mAP of the trained student for
/// weights 0, 0.05, ..., 0.95, with the augmented query views (rectangle
/// resized by up to half its width and height, zoom, colour jitter) as
/// queries, because a user's rectangle is not the object's exact box (with
/// exact boxes the aspect ratio alone finds the answer and the weight would
/// go to 1). Returns the best weight and the metrics at 0 and at the best.
pub fn tune_geometry(
    cache: &FeatureCache,
    params: &Weights,
    targets: &[f32],
    embed: usize,
) -> Result<(f32, Metrics), TrainError> {
    let val = split_indices(cache, "val");
    if val.is_empty() {
        return Ok((0.0, Metrics::new()));
    }
    let device = fos_model::device();
    let mut b = Binder::new(params, &device, false);
    let vq = cache.query_variants;
    let first = if vq > 1 { 1 } else { 0 };
    let (mut views, mut qrec) = (Vec::new(), Vec::new());
    for &i in &val {
        for v in first..vq {
            views.push(i * vq + v);
            qrec.push(i);
        }
    }
    let x = rows(&cache.query, views.iter().copied(), cache.dim, &device);
    let l = rows(&cache.layout, views.iter().copied(), 4, &device);
    let mut q = fos_model::to_vec(b.student_embed(x, l)?)?;
    q.chunks_mut(embed).for_each(l2_normalize);
    let channel = |a: f64| fos_model::geometry::geometry_channel(a);
    // The rectangle's aspect from the view's layout (w, h over the side).
    let q_aspect: Vec<f64> = views
        .iter()
        .map(|&v| {
            let l = FeatureCache::row(&cache.layout, v, 4);
            l[2].max(0.01) as f64 / l[3].max(0.01) as f64
        })
        .collect();
    let metrics_at = |w: f32| {
        retrieval_metrics(cache, &qrec, &val, |k, j| {
            let qv = &q[k * embed..(k + 1) * embed];
            let t = &targets[j * cache.fg_variants * embed..(j * cache.fg_variants + 1) * embed];
            let cos: f32 = qv.iter().zip(t).map(|(a, b)| a * b).sum();
            let (g, h) = (channel(q_aspect[k]), channel(cache.records[j].aspect()));
            (1.0 - w) * cos + w * (g[0] * h[0] + g[1] * h[1])
        })
    };
    let mut best = (0.0f32, metrics_at(0.0));
    let plain = best.1.clone();
    for step in 1..20 {
        let w = step as f32 * 0.05;
        let m = metrics_at(w);
        if m["val_map"] > best.1["val_map"] {
            best = (w, m);
        }
    }
    let mut out = Metrics::new();
    for (k, v) in plain {
        out.insert(format!("tuning_{k}_learned_only"), v);
    }
    for (k, v) in best.1 {
        out.insert(format!("tuning_{k}_with_geometry"), v);
    }
    out.insert("geometry_weight".into(), best.0 as f64);
    Ok((best.0, out))
}
