//! The S-FOSD and pattern protocols.

use std::collections::BTreeMap;

use fos_data::manifest::{Dataset, Record};
use fos_data::Progress;
use fos_image::compose::Rect;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::methods::{Case, Method};
use crate::EvalError;

/// Which ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The background's own cut-out is the one answer (Recall@K, mAP = MRR).
    Sfosd,
    /// Every cut-out of the own cut-out's pattern is an answer (mAP).
    Patterns,
    /// Human labels (FOSD test_set2.json): mAP, mAP@20, Precision@K, averaged
    /// per category, then over categories.
    Rfosd,
}

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Split to evaluate.
    pub split: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Categories with fewer pool cut-outs are left out.
    pub min_pool: usize,
    /// Each side of the query rectangle is scaled by a random factor in
    /// [1 - j, 1 + j] (seeded, centre kept, clamped to the photo). With exact
    /// boxes, S-FOSD is solved by aspect ratio alone, since the answer's
    /// aspect ratio *is* the box's.
    pub box_jitter: f64,
    /// Seed of the jitter.
    pub seed: u64,
}

impl EvalOptions {
    /// Defaults: min pool 5, box jitter 0.3, seed 0.
    pub fn new(split: &str, protocol: Protocol) -> Self {
        EvalOptions {
            split: split.into(),
            protocol,
            min_pool: 5,
            box_jitter: 0.3,
            seed: 0,
        }
    }
}

/// Sums for one method in one category.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Queries.
    pub queries: usize,
    /// Queries whose answer is within the top 1, 5, 10, 20.
    pub hits: [usize; 4],
    /// Sum of average precisions.
    pub ap_sum: f64,
    /// Sum of average precisions over the top 20 (R-FOSD).
    pub ap20_sum: f64,
    /// Sums of precision at 1, 5, 10, 20 (R-FOSD).
    pub prec_sum: [f64; 4],
}

/// The K of Recall@K.
pub const KS: [usize; 4] = [1, 5, 10, 20];

impl Tally {
    /// Recall@K for `KS[i]`.
    pub fn recall(&self, i: usize) -> f64 {
        self.hits[i] as f64 / self.queries.max(1) as f64
    }
    /// Mean average precision.
    pub fn map(&self) -> f64 {
        self.ap_sum / self.queries.max(1) as f64
    }
    /// Mean AP@20.
    pub fn map20(&self) -> f64 {
        self.ap20_sum / self.queries.max(1) as f64
    }
    /// Mean precision at `KS[i]`.
    pub fn precision(&self, i: usize) -> f64 {
        self.prec_sum[i] / self.queries.max(1) as f64
    }
    fn add(&mut self, o: &Tally) {
        self.queries += o.queries;
        self.ap_sum += o.ap_sum;
        self.ap20_sum += o.ap20_sum;
        for i in 0..4 {
            self.prec_sum[i] += o.prec_sum[i];
        }
        for i in 0..4 {
            self.hits[i] += o.hits[i];
        }
    }
}

/// The result of an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Protocol.
    pub protocol: Protocol,
    /// Split.
    pub split: String,
    /// Box jitter used.
    pub box_jitter: f64,
    /// Methods, in the order given.
    pub methods: Vec<String>,
    /// category -> (pool size, per-method tallies).
    pub categories: BTreeMap<String, (usize, Vec<Tally>)>,
}

impl EvalReport {
    /// R-FOSD's overall figures: the mean over categories of each
    /// category's mean (as a tally of one query per category).
    pub fn macro_overall(&self, m: usize) -> Tally {
        let mut t = Tally::default();
        for (_, ts) in self.categories.values() {
            let c = &ts[m];
            if c.queries == 0 {
                continue;
            }
            t.queries += 1;
            t.ap_sum += c.map();
            t.ap20_sum += c.map20();
            for i in 0..4 {
                t.prec_sum[i] += c.precision(i);
            }
        }
        t
    }

    /// All queries of a method (micro average over categories).
    pub fn overall(&self, m: usize) -> Tally {
        let mut t = Tally::default();
        for (_, ts) in self.categories.values() {
            t.add(&ts[m]);
        }
        t
    }
    /// Number of queries.
    pub fn queries(&self) -> usize {
        self.categories
            .values()
            .map(|(_, t)| t.first().map_or(0, |t| t.queries))
            .sum()
    }
}

/// Average precision of a ranking: `relevant[i]` for the items in ranked order.
pub fn average_precision(relevant: &[bool]) -> f64 {
    let total = relevant.iter().filter(|&&r| r).count();
    if total == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, &r) in relevant.iter().enumerate() {
        if r {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / total as f64
}

/// Ranks pool indices by score, best first; ties are broken against the
/// answer (pessimistic) by putting the query's own cut-out last among equals.
fn ranking(scores: &[f32], own: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then((a == own).cmp(&(b == own)))
            .then(a.cmp(&b))
    });
    idx
}

fn jitter(r: &Record, j: f64, rng: &mut ChaCha8Rng) -> Rect {
    let [x, y, w, h] = r.bbox.expect("cases have boxes").map(|v| v as f64);
    let [iw, ih] = r
        .image_size
        .unwrap_or([u32::MAX, u32::MAX])
        .map(|v| v as f64);
    if j <= 0.0 {
        return Rect { x, y, w, h };
    }
    let (cx, cy) = (x + w / 2.0, y + h / 2.0);
    let nw = (w * (1.0 + rng.random_range(-j..=j))).clamp(1.0, iw);
    let nh = (h * (1.0 + rng.random_range(-j..=j))).clamp(1.0, ih);
    let nx = (cx - nw / 2.0).clamp(0.0, iw - nw);
    let ny = (cy - nh / 2.0).clamp(0.0, ih - nh);
    Rect {
        x: nx,
        y: ny,
        w: nw,
        h: nh,
    }
}

/// Runs `methods` on the split's queries.
pub fn evaluate(
    ds: &Dataset,
    methods: &mut [Box<dyn Method>],
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    if opts.protocol == Protocol::Rfosd {
        return evaluate_rfosd(ds, methods, opts, progress);
    }
    let mut by_cat: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in ds.split(&opts.split) {
        by_cat.entry(r.category.as_str()).or_default().push(r);
    }
    if by_cat.is_empty() {
        let splits: std::collections::BTreeSet<&str> =
            ds.records.iter().map(|r| r.split.as_str()).collect();
        return Err(EvalError::Setup(format!(
            "no cut-outs in split {:?}; the data set has: {}",
            opts.split,
            splits.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    by_cat.retain(|_, v| v.len() >= opts.min_pool);
    if opts.protocol == Protocol::Patterns && !ds.records.iter().any(|r| r.pattern.is_some()) {
        return Err(EvalError::Setup(
            "the data set has no patterns; assign them with `fos dataset patterns DIR --cluster auto` (or --labels)".into(),
        ));
    }
    if by_cat.is_empty() {
        return Err(EvalError::Setup(format!(
            "no category has {} or more cut-outs in split {:?}",
            opts.min_pool, opts.split
        )));
    }
    let all_pool: Vec<&Record> = by_cat.values().flatten().copied().collect();
    for m in methods.iter_mut() {
        m.prepare(ds, &all_pool)?;
    }
    let total: usize = by_cat
        .values()
        .map(|v| {
            v.iter()
                .filter(|r| r.background.is_some() && r.bbox.is_some())
                .count()
        })
        .sum();
    progress.start((total * methods.len()) as u64);
    let mut categories = BTreeMap::new();
    let mut index = 0usize;
    for (cat, pool) in &by_cat {
        let mut tallies = vec![Tally::default(); methods.len()];
        for (own, r) in pool.iter().enumerate() {
            if r.background.is_none() || r.bbox.is_none() {
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(
                opts.seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            let background = ds.path(r.background.as_deref().expect("checked above"));
            let case = Case {
                index,
                background,
                rect: jitter(r, opts.box_jitter, &mut rng),
            };
            index += 1;
            for (m, t) in methods.iter_mut().zip(tallies.iter_mut()) {
                let scores = m.scores(ds, &case, pool)?;
                let order = ranking(&scores, own);
                let rank = order
                    .iter()
                    .position(|&i| i == own)
                    .expect("own is in the pool")
                    + 1;
                t.queries += 1;
                for (h, k) in t.hits.iter_mut().zip(KS) {
                    *h += (rank <= k) as usize;
                }
                t.ap_sum += match opts.protocol {
                    Protocol::Sfosd => 1.0 / rank as f64,
                    Protocol::Rfosd => unreachable!("evaluate_rfosd"),
                    Protocol::Patterns => {
                        let rel: Vec<bool> = order
                            .iter()
                            .map(|&i| {
                                i == own || (r.pattern.is_some() && pool[i].pattern == r.pattern)
                            })
                            .collect();
                        average_precision(&rel)
                    }
                };
                progress.inc(1);
            }
        }
        if tallies[0].queries > 0 {
            categories.insert(cat.to_string(), (pool.len(), tallies));
        }
    }
    progress.finish();
    Ok(EvalReport {
        protocol: opts.protocol,
        split: opts.split.clone(),
        box_jitter: opts.box_jitter,
        methods: methods.iter().map(|m| m.name()).collect(),
        categories,
    })
}

/// AP over the top `k` of a ranking: the sum of precisions at the relevant
/// items within the top `k`, divided by min(relevant, k).
pub fn average_precision_at(relevant: &[bool], k: usize) -> f64 {
    let total = relevant.iter().filter(|&&r| r).count().min(k);
    if total == 0 {
        return 0.0;
    }
    let mut hits = 0usize;
    let mut sum = 0.0;
    for (i, &r) in relevant.iter().take(k).enumerate() {
        if r {
            hits += 1;
            sum += hits as f64 / (i + 1) as f64;
        }
    }
    sum / total as f64
}

/// R-FOSD: every labelled cut-out of the query's category is a candidate,
/// those whose aspect ratio differs from the box's by a factor of 1.2 or more
/// are dropped (as the released evaluator does), positives are the cut-outs
/// people marked compatible. Queries with no positive left are skipped.
fn evaluate_rfosd(
    ds: &Dataset,
    methods: &mut [Box<dyn Method>],
    _opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    let queries = fos_data::fosd::read_rfosd(&ds.root)?.ok_or_else(|| {
        EvalError::Setup(format!(
            "{} has no human labels (rfosd.json); build the data set from a FOSD folder with `fos dataset build --fosd DIR`",
            ds.root.display()
        ))
    })?;
    let by_id: std::collections::HashMap<&str, &Record> =
        ds.records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut seen = std::collections::HashSet::new();
    let all_pool: Vec<&Record> = queries
        .iter()
        .flat_map(|q| q.labels.keys())
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .filter(|r| seen.insert(r.id.as_str()))
        .collect();
    for m in methods.iter_mut() {
        m.prepare(ds, &all_pool)?;
    }
    progress.start((queries.len() * methods.len()) as u64);
    let mut categories: BTreeMap<String, (usize, Vec<Tally>)> = BTreeMap::new();
    for (index, q) in queries.iter().enumerate() {
        let [x, y, w, h] = q.bbox.map(|v| v as f64);
        let box_aspect = w / h.max(1.0);
        let pool: Vec<&Record> = q
            .labels
            .keys()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .filter(|r| {
                let ratio = r.aspect() / box_aspect;
                ratio.max(1.0 / ratio) < 1.2
            })
            .collect();
        let positives: Vec<bool> = pool
            .iter()
            .map(|r| q.labels.get(&r.id) == Some(&1))
            .collect();
        if !positives.iter().any(|&p| p) {
            progress.inc(methods.len() as u64);
            continue;
        }
        let case = Case {
            index,
            background: ds.path(&q.background),
            rect: Rect { x, y, w, h },
        };
        let entry = categories
            .entry(q.category.clone())
            .or_insert_with(|| (0, vec![Tally::default(); methods.len()]));
        entry.0 = entry.0.max(pool.len());
        for (m, t) in methods.iter_mut().zip(entry.1.iter_mut()) {
            let scores = m.scores(ds, &case, &pool)?;
            // Ties broken by pool order (no answer to be pessimistic about).
            let order = ranking(&scores, usize::MAX);
            let rel: Vec<bool> = order.iter().map(|&i| positives[i]).collect();
            t.queries += 1;
            t.ap_sum += average_precision(&rel);
            t.ap20_sum += average_precision_at(&rel, 20);
            for (p, k) in t.prec_sum.iter_mut().zip(KS) {
                *p += rel.iter().take(k).filter(|&&r| r).count() as f64 / k as f64;
            }
            for (hh, k) in t.hits.iter_mut().zip(KS) {
                *hh += rel.iter().take(k).any(|&r| r) as usize;
            }
            progress.inc(1);
        }
    }
    progress.finish();
    if categories.is_empty() {
        return Err(EvalError::Setup(
            "no R-FOSD query has a compatible cut-out left after the aspect-ratio filter".into(),
        ));
    }
    Ok(EvalReport {
        protocol: Protocol::Rfosd,
        split: "test".into(),
        box_jitter: 0.0,
        methods: methods.iter().map(|m| m.name()).collect(),
        categories,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // Relevant at ranks 1 and 3: (1/1 + 2/3) / 2.
        assert!(
            (average_precision(&[true, false, true, false]) - (1.0 + 2.0 / 3.0) / 2.0).abs()
                < 1e-12
        );
        assert_eq!(average_precision(&[false, false]), 0.0);
        assert!((average_precision(&[false, true]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ap_at_20_and_precision_by_hand() {
        let mut rel = vec![false; 30];
        rel[0] = true;
        rel[25] = true;
        // Within the top 20 only rank 1 is relevant: 1 / min(2, 20).
        assert!((average_precision_at(&rel, 20) - 0.5).abs() < 1e-12);
        assert!((average_precision(&rel) - (1.0 + 2.0 / 26.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn ties_are_broken_against_the_answer() {
        assert_eq!(ranking(&[0.5, 0.5, 0.9], 0), vec![2, 1, 0]);
        assert_eq!(ranking(&[0.5, 0.5, 0.9], 1), vec![2, 0, 1]);
    }
}
