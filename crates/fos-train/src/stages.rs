//! What each training stage optimises and how it is validated: the teacher
//! (pattern classification + center loss), the student and the early-fusion
//! baseline (cosine triplet against the frozen teacher's embeddings), and
//! DiscoFOS (a composite discriminator with BCE, then the fusion student with
//! triplet + BCE + L1 distillation of the discriminator's features).

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use fos_model::embed::l2_normalize;
use fos_model::heads::{Binder, Head, HeadDims, ROI};
use fos_model::weights::Weights;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cache::FeatureCache;
use crate::loss;
use crate::{TrainConfig, TrainError};

/// Validation metrics by name.
pub type Metrics = BTreeMap<String, f64>;

/// One stage: a head, its samples, its loss and its validation.
pub trait Stage {
    /// The head it trains.
    fn head(&self) -> Head;
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

fn rows(
    table: &[f32],
    idx: impl Iterator<Item = usize>,
    width: usize,
    device: &Device,
) -> Tensor<2> {
    let mut v = Vec::new();
    let mut n = 0;
    for i in idx {
        v.extend_from_slice(FeatureCache::row(table, i, width));
        n += 1;
    }
    Tensor::from_data(TensorData::new(v, [n, width]), device)
}

fn maps(table: &[f32], idx: impl Iterator<Item = usize>, c: usize, device: &Device) -> Tensor<4> {
    let len = c * ROI * ROI;
    let mut v = Vec::new();
    let mut n = 0;
    for i in idx {
        v.extend_from_slice(FeatureCache::row(table, i, len));
        n += 1;
    }
    Tensor::from_data(TensorData::new(v, [n, c, ROI, ROI]), device)
}

fn split_indices(c: &FeatureCache, split: &str) -> Vec<usize> {
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

/// S-FOSD-style metrics on the validation records: query `k` comes from
/// record `queries[k]`, whose answer is its own cut-out among the `pool`
/// cut-outs of its category.
fn retrieval_metrics(
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

/// Chooses the weight of the aspect channel ([`fos_model::trained::with_geometry`])
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
    let channel = |a: f64| fos_model::trained::geometry_channel(a);
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
