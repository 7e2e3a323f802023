//! From scores to figures with error bars: every method's figures per
//! category and overall ([`crate::metrics`]), each with its query count and a
//! 95% bootstrap confidence interval, and paired differences against a
//! reference method.
//!
//! The bootstrap resamples queries with replacement within each category
//! (each category keeps its number of queries), recomputes the category
//! values and their mean, and takes the 2.5th and 97.5th percentiles over
//! the replicates. It is seeded, and every method is resampled with the same
//! draws when all methods have the same queries, so differences between
//! methods are paired: a difference whose interval holds 0 is inside the
//! noise of the test set.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::metrics::{category_values, overall, query_stats, QueryStats, Suite};
use crate::scores::MethodScores;

/// A value with its 95% interval (both `None` where undefined or not
/// bootstrapped).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Figure {
    /// The figure.
    pub value: Option<f64>,
    /// 2.5th and 97.5th bootstrap percentiles.
    pub ci95: Option<[f64; 2]>,
}

impl Figure {
    /// Whether the interval holds `x` (no interval: `true`).
    pub fn holds(&self, x: f64) -> bool {
        self.ci95.is_none_or(|[lo, hi]| lo <= x && x <= hi)
    }
}

/// One method in one category.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryResult {
    /// Queries.
    pub queries: usize,
    /// Most candidates of one query.
    pub pool: usize,
    /// Figures, in the order of [`Suite::metrics`].
    pub figures: Vec<Figure>,
}

/// One method's figures.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// Method name.
    pub name: String,
    /// Queries over all categories.
    pub queries: usize,
    /// Overall figures (mean over categories).
    pub overall: Vec<Figure>,
    /// Per category.
    pub categories: BTreeMap<String, CategoryResult>,
}

/// A method minus the reference, paired over the same resampled queries.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The method.
    pub method: String,
    /// The reference method.
    pub reference: String,
    /// Differences of the overall figures.
    pub diffs: Vec<Figure>,
}

/// Settings of [`summarise`].
#[derive(Clone, Debug)]
pub struct SummaryOptions {
    /// Bootstrap replicates (0: no intervals).
    pub bootstrap: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// The method others are compared with (default: `served` if evaluated,
    /// else the first method).
    pub reference: Option<String>,
}

impl Default for SummaryOptions {
    /// 1,000 replicates, seed 0.
    fn default() -> Self {
        SummaryOptions {
            bootstrap: 1000,
            seed: 0,
            reference: None,
        }
    }
}

/// Every method's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Which figures.
    pub suite: Suite,
    /// Bootstrap replicates behind the intervals.
    pub bootstrap: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Methods, in the order given.
    pub methods: Vec<MethodResult>,
    /// Paired differences against the reference (empty when the methods do
    /// not share their queries, or with one method).
    pub comparisons: Vec<Comparison>,
}

/// A method's query stats, by category, queries sorted by id.
type ByCategory = BTreeMap<String, Vec<(String, QueryStats, usize)>>;

fn by_category(suite: Suite, m: &MethodScores) -> ByCategory {
    let mut out: ByCategory = BTreeMap::new();
    for q in &m.queries {
        out.entry(q.category.clone()).or_default().push((
            q.query.clone(),
            query_stats(suite, q),
            q.candidates.len(),
        ));
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// Linear-interpolated percentile `p` (0..=100) of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let x = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
}

fn interval(samples: impl Iterator<Item = Option<f64>>) -> Option<[f64; 2]> {
    let mut v: Vec<f64> = samples.flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some([percentile(&v, 2.5), percentile(&v, 97.5)])
}

/// Replicates of one method: `[replicate][category]` value vectors and
/// `[replicate]` overall vectors.
struct Replicates {
    categories: Vec<Vec<Vec<Option<f64>>>>,
    overall: Vec<Vec<Option<f64>>>,
}

fn resample(suite: Suite, cats: &ByCategory, b: usize, seed: u64) -> Replicates {
    let n_metrics = suite.metrics().len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reps = Replicates {
        categories: Vec::with_capacity(b),
        overall: Vec::with_capacity(b),
    };
    for _ in 0..b {
        let vals: Vec<Vec<Option<f64>>> = cats
            .values()
            .map(|qs| {
                let draw: Vec<&QueryStats> = (0..qs.len())
                    .map(|_| &qs[rng.random_range(0..qs.len())].1)
                    .collect();
                category_values(suite, draw)
            })
            .collect();
        reps.overall.push(overall(&vals, n_metrics));
        reps.categories.push(vals);
    }
    reps
}

/// Figures, intervals and paired differences of `methods` under `suite`.
pub fn summarise(suite: Suite, methods: &[MethodScores], opts: &SummaryOptions) -> Summary {
    let n_metrics = suite.metrics().len();
    let grouped: Vec<ByCategory> = methods.iter().map(|m| by_category(suite, m)).collect();
    let keys = |g: &ByCategory| -> Vec<(String, Vec<String>)> {
        g.iter()
            .map(|(c, qs)| (c.clone(), qs.iter().map(|q| q.0.clone()).collect()))
            .collect()
    };
    let paired = grouped.windows(2).all(|w| keys(&w[0]) == keys(&w[1]));
    let mut reps = Vec::new();
    let mut results = Vec::new();
    for (m, g) in methods.iter().zip(&grouped) {
        let values: Vec<Vec<Option<f64>>> = g
            .values()
            .map(|qs| category_values(suite, qs.iter().map(|q| &q.1)))
            .collect();
        let all = overall(&values, n_metrics);
        let r = (opts.bootstrap > 0).then(|| resample(suite, g, opts.bootstrap, opts.seed));
        let fig = |value: Option<f64>, ci: Option<[f64; 2]>| Figure { value, ci95: ci };
        let overall_figs = (0..n_metrics)
            .map(|i| {
                let ci = r
                    .as_ref()
                    .and_then(|r| interval(r.overall.iter().map(|v| v[i])));
                fig(all[i], ci)
            })
            .collect();
        let categories = g
            .iter()
            .zip(&values)
            .enumerate()
            .map(|(ci, ((cat, qs), v))| {
                let figures = (0..n_metrics)
                    .map(|i| {
                        let iv = r
                            .as_ref()
                            .and_then(|r| interval(r.categories.iter().map(|c| c[ci][i])));
                        fig(v[i], iv)
                    })
                    .collect();
                let res = CategoryResult {
                    queries: qs.len(),
                    pool: qs.iter().map(|q| q.2).max().unwrap_or(0),
                    figures,
                };
                (cat.clone(), res)
            })
            .collect();
        results.push(MethodResult {
            name: m.name.clone(),
            queries: m.queries.len(),
            overall: overall_figs,
            categories,
        });
        reps.push(r);
    }
    let reference = opts
        .reference
        .as_deref()
        .and_then(|r| methods.iter().position(|m| m.name == r))
        .or_else(|| methods.iter().position(|m| m.name == "served"))
        .unwrap_or(0);
    let mut comparisons = Vec::new();
    if paired && methods.len() > 1 {
        for (i, m) in results.iter().enumerate().filter(|&(i, _)| i != reference) {
            let diffs = (0..n_metrics)
                .map(|k| {
                    let value = m.overall[k]
                        .value
                        .zip(results[reference].overall[k].value)
                        .map(|(a, b)| a - b);
                    let ci95 = match (&reps[i], &reps[reference]) {
                        (Some(a), Some(b)) => interval(
                            a.overall
                                .iter()
                                .zip(&b.overall)
                                .map(|(x, y)| x[k].zip(y[k]).map(|(x, y)| x - y)),
                        ),
                        _ => None,
                    };
                    Figure { value, ci95 }
                })
                .collect();
            comparisons.push(Comparison {
                method: m.name.clone(),
                reference: results[reference].name.clone(),
                diffs,
            });
        }
    }
    Summary {
        suite,
        bootstrap: opts.bootstrap,
        seed: opts.seed,
        methods: results,
        comparisons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::{Candidate, QueryScores};

    /// `n` queries in one category; the positive is at rank `rank(i)`.
    fn method(name: &str, n: usize, rank: impl Fn(usize) -> usize) -> MethodScores {
        MethodScores {
            name: name.into(),
            queries: (0..n)
                .map(|i| QueryScores {
                    category: "dog".into(),
                    query: format!("q{i:03}"),
                    candidates: (0..30)
                        .map(|j| Candidate {
                            id: format!("f{j}"),
                            score: -(j as f32),
                            label: j + 1 == rank(i),
                            valid: true,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn intervals_hold_the_value_and_are_seeded() {
        let m = method("a", 40, |i| 1 + i % 15);
        let s = summarise(
            Suite::Sfosd,
            std::slice::from_ref(&m),
            &SummaryOptions::default(),
        );
        let r10 = s.methods[0].overall[2];
        let [lo, hi] = r10.ci95.unwrap();
        assert!(
            lo < r10.value.unwrap() && r10.value.unwrap() < hi,
            "{r10:?}"
        );
        assert_eq!(s.methods[0].queries, 40);
        let again = summarise(Suite::Sfosd, &[m], &SummaryOptions::default());
        assert_eq!(again.methods[0].overall, s.methods[0].overall);
    }

    #[test]
    fn a_perfect_method_has_a_zero_width_interval() {
        let m = method("a", 10, |_| 1);
        let s = summarise(Suite::Sfosd, &[m], &SummaryOptions::default());
        assert_eq!(s.methods[0].overall[0].ci95, Some([1.0, 1.0]));
    }

    #[test]
    fn paired_differences_against_served() {
        let a = method("aspect", 40, |i| 1 + i % 15);
        let b = method("served", 40, |i| 1 + i % 3);
        let same = method("copy", 40, |i| 1 + i % 3);
        let s = summarise(Suite::Sfosd, &[a, b, same], &SummaryOptions::default());
        assert_eq!(s.comparisons.len(), 2);
        let c = &s.comparisons[0];
        assert_eq!(
            (c.method.as_str(), c.reference.as_str()),
            ("aspect", "served")
        );
        // R@10: aspect finds 10/15 of its queries' positives, served all.
        let d = c.diffs[2];
        assert!(d.value.unwrap() < 0.0 && !d.holds(0.0), "{d:?}");
        // Identical rankings: the difference is exactly 0 in every replicate.
        assert_eq!(s.comparisons[1].diffs[2].ci95, Some([0.0, 0.0]));
    }

    #[test]
    fn no_pairing_across_different_queries() {
        let a = method("a", 10, |_| 1);
        let b = method("b", 12, |_| 1);
        let s = summarise(Suite::Sfosd, &[a, b], &SummaryOptions::default());
        assert!(s.comparisons.is_empty());
        let s = summarise(
            Suite::Sfosd,
            &[method("a", 5, |_| 2)],
            &SummaryOptions {
                bootstrap: 0,
                ..Default::default()
            },
        );
        assert_eq!(s.methods[0].overall[0].ci95, None);
        assert_eq!(s.methods[0].overall[0].value, Some(0.0));
    }
}
