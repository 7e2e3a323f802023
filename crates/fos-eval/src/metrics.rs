//! The figures, computed exactly as the released FOSD evaluator computes them
//! (`utils/evaluation_metrics.py` and `evaluate/base.py` of the FOSD
//! repository; `../shared/docs/method.md`, "The released evaluator"), on any
//! scores.
//!
//! * Ranking: a query's candidates by descending score. Equal scores keep the
//!   order the candidates were given in (a stable sort; numpy's `argsort` is
//!   stable for the short rows of the released tests, and undefined for ties
//!   beyond 16 candidates).
//! * [`Suite::Sfosd`], per category: Recall@k = positives within the top k,
//!   summed over the queries, / all positives, x100, rounded to 2 decimals.
//!   fos's own figure beside it: `mrr`, the mean reciprocal rank of the
//!   first positive (not rounded).
//! * [`Suite::Rfosd`], per category: invalid candidates (the aspect rule)
//!   rank after every valid one, and `flags` = the number of valid ones.
//!   AP of a query = the mean, over the positives within the first `flags`
//!   ranked candidates, of precision at the positive's rank (each precision
//!   x100 and rounded to 2 decimals); 0 when there is none. mAP = the mean
//!   AP, rounded. mAP@20 cuts the ranking to 20 first. Precision@k pools the
//!   queries: positives within the first min(flags, k) / sum of min(flags, k).
//! * Overall: the plain mean of the category values.
//!
//! Values are fractions (the released percentages / 100). Where the released
//! evaluator divides by zero (a category without a positive for Recall@k, or
//! without a valid candidate for Precision@k) the value is `None` and the
//! category is left out of that figure's overall mean.
//!
//! One deliberate difference: the released code multiplies invalid
//! candidates' scores by 0, which ranks them after the valid ones only when
//! every valid score is above 0 (its sigmoid outputs are). fos ranks them
//! after the valid ones whatever the scores, so cosine similarities and other
//! signed scores are evaluated as the released code evaluates positive ones.

use serde::Serialize;

use crate::scores::QueryScores;

/// The K of Recall@K and Precision@K.
pub const KS: [usize; 4] = [1, 5, 10, 20];

/// Which figures: the S-FOSD or the R-FOSD set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Recall@1/5/10/20 (released) and `mrr` (fos's own).
    Sfosd,
    /// mAP, mAP@20, Precision@1/5/10/20 (released).
    Rfosd,
}

impl Suite {
    /// The figures' names, as in JSON and CSV.
    pub fn metrics(self) -> &'static [&'static str] {
        match self {
            Suite::Sfosd => &["recall@1", "recall@5", "recall@10", "recall@20", "mrr"],
            Suite::Rfosd => &[
                "map",
                "map@20",
                "precision@1",
                "precision@5",
                "precision@10",
                "precision@20",
            ],
        }
    }

    /// Short column titles for tables and charts.
    pub fn titles(self) -> &'static [&'static str] {
        match self {
            Suite::Sfosd => &["R@1", "R@5", "R@10", "R@20", "MRR"],
            Suite::Rfosd => &["mAP", "mAP@20", "P@1", "P@5", "P@10", "P@20"],
        }
    }
}

/// numpy's sum of float64 values (`np.add.reduce`, so `np.mean` = this / n):
/// pairwise, with eight accumulators in blocks of up to 128. The order of
/// the additions decides the last bit, and the last bit decides roundings
/// such as 62.194999.. against 62.195.
pub fn np_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &x| s + x)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_sum(&a[..n2]) + np_sum(&a[n2..])
    }
}

/// numpy's `np.mean` of float64 values.
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// numpy's `np.round(v, 2)`: round half to even on `v * 100`.
pub fn np_round2(v: f64) -> f64 {
    (v * 100.0).round_ties_even() / 100.0
}

/// What one query contributes to its category's figures.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryStats {
    /// S-FOSD.
    Sfosd {
        /// Positives among the candidates.
        positives: usize,
        /// Positives within the top 1, 5, 10, 20.
        found: [usize; 4],
        /// 1 / rank of the first positive (0 without one).
        rr: f64,
    },
    /// R-FOSD.
    Rfosd {
        /// Average precision in percent (not rounded).
        ap: f64,
        /// AP over the first 20, in percent.
        ap20: f64,
        /// Positives within the first min(flags, k), for each of `KS`.
        hits: [usize; 4],
        /// min(flags, k), for each of `KS`.
        seen: [usize; 4],
    },
}

/// The query's labels in ranked order, and the number of valid candidates
/// (which rank first).
pub fn ranked_labels(q: &QueryScores, use_valid: bool) -> (Vec<bool>, usize) {
    let mut idx: Vec<usize> = (0..q.candidates.len()).collect();
    let c = &q.candidates;
    let valid = |i: usize| !use_valid || c[i].valid;
    idx.sort_by(|&a, &b| {
        valid(b)
            .cmp(&valid(a))
            .then(c[b].score.total_cmp(&c[a].score))
    });
    let flags = idx.iter().filter(|&&i| valid(i)).count();
    (idx.into_iter().map(|i| c[i].label).collect(), flags)
}

/// The released `average_precision`: mean of the rounded precisions (in
/// percent) at the positives of `ranked`; 0 without one.
pub fn average_precision_pct(ranked: &[bool]) -> f64 {
    let mut hits = 0usize;
    let mut precisions = Vec::new();
    for (i, &r) in ranked.iter().enumerate() {
        if r {
            hits += 1;
            precisions.push(np_round2(hits as f64 / (i + 1) as f64 * 100.0));
        }
    }
    if precisions.is_empty() {
        0.0
    } else {
        np_mean(&precisions)
    }
}

/// One query's contribution under `suite`.
pub fn query_stats(suite: Suite, q: &QueryScores) -> QueryStats {
    match suite {
        Suite::Sfosd => {
            let (ranked, _) = ranked_labels(q, false);
            let positives = ranked.iter().filter(|&&r| r).count();
            let found = KS.map(|k| ranked.iter().take(k).filter(|&&r| r).count());
            let rr = ranked
                .iter()
                .position(|&r| r)
                .map_or(0.0, |p| 1.0 / (p + 1) as f64);
            QueryStats::Sfosd {
                positives,
                found,
                rr,
            }
        }
        Suite::Rfosd => {
            let (ranked, flags) = ranked_labels(q, true);
            let ap = average_precision_pct(&ranked[..flags]);
            let ap20 = average_precision_pct(&ranked[..flags.min(20)]);
            let seen = KS.map(|k| flags.min(k));
            let hits = seen.map(|n| ranked[..n].iter().filter(|&&r| r).count());
            QueryStats::Rfosd {
                ap,
                ap20,
                hits,
                seen,
            }
        }
    }
}

/// A category's figures (fractions, in the order of [`Suite::metrics`]) from
/// its queries' stats.
pub fn category_values<'a>(
    suite: Suite,
    stats: impl IntoIterator<Item = &'a QueryStats>,
) -> Vec<Option<f64>> {
    let pct = |num: f64, den: f64| (den > 0.0).then(|| np_round2(num / den * 100.0) / 100.0);
    match suite {
        Suite::Sfosd => {
            let (mut pos, mut found, mut rr, mut n) = (0usize, [0usize; 4], 0.0, 0usize);
            for s in stats {
                if let QueryStats::Sfosd {
                    positives,
                    found: f,
                    rr: r,
                } = s
                {
                    pos += positives;
                    for i in 0..4 {
                        found[i] += f[i];
                    }
                    rr += r;
                    n += 1;
                }
            }
            let mut v: Vec<Option<f64>> =
                found.iter().map(|&f| pct(f as f64, pos as f64)).collect();
            v.push((n > 0).then(|| rr / n as f64));
            v
        }
        Suite::Rfosd => {
            let (mut ap, mut ap20, mut hits, mut seen) =
                (Vec::new(), Vec::new(), [0usize; 4], [0usize; 4]);
            for s in stats {
                if let QueryStats::Rfosd {
                    ap: a,
                    ap20: a20,
                    hits: h,
                    seen: sn,
                } = s
                {
                    ap.push(*a);
                    ap20.push(*a20);
                    for i in 0..4 {
                        hits[i] += h[i];
                        seen[i] += sn[i];
                    }
                }
            }
            let mean = |v: &[f64]| (!v.is_empty()).then(|| np_round2(np_mean(v)) / 100.0);
            let mut v = vec![mean(&ap), mean(&ap20)];
            v.extend((0..4).map(|i| pct(hits[i] as f64, seen[i] as f64)));
            v
        }
    }
}

/// The overall figures: for each metric, the plain mean of the categories
/// that have a value.
pub fn overall(categories: &[Vec<Option<f64>>], metrics: usize) -> Vec<Option<f64>> {
    (0..metrics)
        .map(|m| {
            let vals: Vec<f64> = categories.iter().filter_map(|c| c[m]).collect();
            (!vals.is_empty()).then(|| np_mean(&vals))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::Candidate;

    fn q(rows: &[(f32, bool, bool)]) -> QueryScores {
        QueryScores {
            category: "c".into(),
            query: "q".into(),
            candidates: rows
                .iter()
                .enumerate()
                .map(|(i, &(score, label, valid))| Candidate {
                    id: format!("f{i}"),
                    score,
                    label,
                    valid,
                })
                .collect(),
        }
    }

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("a value");
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn numpy_summation_order() {
        // Checked against numpy 2.4's np.add.reduce on these values.
        let small = [0.1, 0.2, 0.3];
        assert_eq!(np_sum(&small), (0.1 + 0.2) + 0.3);
        let v: Vec<f64> = (0..20).map(|i| 0.1 * i as f64 + 0.01).collect();
        let mut r = [0.0; 8];
        r.copy_from_slice(&v[..8]);
        for j in 0..8 {
            r[j] += v[8 + j];
        }
        let want = ((r[0] + r[1]) + (r[2] + r[3]))
            + ((r[4] + r[5]) + (r[6] + r[7]))
            + v[16]
            + v[17]
            + v[18]
            + v[19];
        assert_eq!(np_sum(&v), want);
        assert_eq!(np_sum(&[]), 0.0);
        // Nine APs of a real category (student, cup, pattern protocol): numpy's
        // mean is 62.194999.. and rounds to 62.19; summed in order it is
        // 62.195 and would round to 62.2.
        let aps = [
            100.0,
            24.285,
            100.0,
            42.985,
            41.665,
            83.33500000000001,
            79.86,
            73.33500000000001,
            14.29,
        ];
        assert_eq!(np_round2(np_mean(&aps)), 62.19);
        assert_eq!(np_round2(aps.iter().sum::<f64>() / 9.0), 62.2);
    }

    #[test]
    fn numpy_rounding_is_half_to_even() {
        assert_eq!(np_round2(66.666666), 66.67);
        assert_eq!(np_round2(0.125), 0.12);
        assert_eq!(np_round2(0.375), 0.38);
        assert_eq!(np_round2(50.0), 50.0);
    }

    #[test]
    fn sfosd_by_hand() {
        // Query 1: positive at rank 2. Query 2: positive at rank 1.
        let a = query_stats(Suite::Sfosd, &q(&[(0.9, false, true), (0.5, true, true)]));
        let b = query_stats(Suite::Sfosd, &q(&[(0.1, true, true), (0.0, false, true)]));
        let v = category_values(Suite::Sfosd, [&a, &b]);
        close(v[0], 0.5); // R@1: 1 of 2 positives
        close(v[1], 1.0);
        close(v[4], (0.5 + 1.0) / 2.0);
        // Three queries, one found at 1: 33.33 %.
        let c = query_stats(Suite::Sfosd, &q(&[(0.9, false, true), (0.0, true, true)]));
        let v = category_values(Suite::Sfosd, [&a, &b, &c]);
        close(v[0], 0.3333);
    }

    #[test]
    fn ties_keep_the_given_order() {
        let s = query_stats(Suite::Sfosd, &q(&[(0.5, false, true), (0.5, true, true)]));
        assert_eq!(
            s,
            QueryStats::Sfosd {
                positives: 1,
                found: [0, 1, 1, 1],
                rr: 0.5
            }
        );
        let s = query_stats(Suite::Sfosd, &q(&[(0.5, true, true), (0.5, false, true)]));
        assert!(matches!(s, QueryStats::Sfosd { rr, .. } if rr == 1.0));
    }

    #[test]
    fn a_query_without_a_positive() {
        // S-FOSD pools positives: the empty query adds nothing to either side.
        let a = query_stats(Suite::Sfosd, &q(&[(0.9, true, true)]));
        let none = query_stats(Suite::Sfosd, &q(&[(0.9, false, true)]));
        let v = category_values(Suite::Sfosd, [&a, &none]);
        close(v[0], 1.0);
        close(v[4], 0.5); // MRR counts it as 0
                          // R-FOSD: its AP is 0 and it counts in the mean.
        let a = query_stats(Suite::Rfosd, &q(&[(0.9, true, true), (0.1, false, true)]));
        let none = query_stats(Suite::Rfosd, &q(&[(0.9, false, true), (0.1, false, true)]));
        let v = category_values(Suite::Rfosd, [&a, &none]);
        close(v[0], 0.5);
        // Precision@1 pools: 1 of 2.
        close(v[2], 0.5);
        // A category with no positive at all has no recall (released: nan).
        assert_eq!(category_values(Suite::Sfosd, [&none_s()])[0], None);
    }

    fn none_s() -> QueryStats {
        query_stats(Suite::Sfosd, &q(&[(0.9, false, true)]))
    }

    #[test]
    fn rfosd_ap_counts_only_positives_found_among_valid() {
        // Ranked: P(valid) N(valid) P(valid) P(invalid, highest score).
        let s = query_stats(
            Suite::Rfosd,
            &q(&[
                (0.9, true, true),
                (0.8, false, true),
                (0.7, true, true),
                (0.99, true, false),
            ]),
        );
        // Precisions at ranks 1 and 3: 100 and 66.67 -> AP 83.335 (not
        // divided by the 3 positives).
        match &s {
            QueryStats::Rfosd { ap, seen, hits, .. } => {
                assert!((ap - 83.335).abs() < 1e-9, "{ap}");
                assert_eq!(*seen, [1, 3, 3, 3]);
                assert_eq!(*hits, [1, 2, 2, 2]);
            }
            _ => unreachable!(),
        }
        let v = category_values(Suite::Rfosd, [&s]);
        close(v[0], 0.8334); // np.round(83.335, 2) = 83.34, as numpy gives
    }

    #[test]
    fn all_candidates_invalid() {
        let s = query_stats(Suite::Rfosd, &q(&[(0.9, true, false), (0.8, false, false)]));
        assert_eq!(
            s,
            QueryStats::Rfosd {
                ap: 0.0,
                ap20: 0.0,
                hits: [0; 4],
                seen: [0; 4]
            }
        );
        let v = category_values(Suite::Rfosd, [&s]);
        close(v[0], 0.0);
        assert_eq!(v[2], None); // 0 / 0: left out, as the released nan
    }

    #[test]
    fn fewer_valid_candidates_than_k() {
        // 3 valid (positives at 1 and 3), 2 invalid positives scored higher.
        let s = query_stats(
            Suite::Rfosd,
            &q(&[
                (0.5, true, true),
                (0.4, false, true),
                (0.3, true, true),
                (0.9, true, false),
                (0.8, true, false),
            ]),
        );
        let v = category_values(Suite::Rfosd, [&s]);
        close(v[2], 1.0); // P@1 = 1/1
        close(v[3], 0.6667); // P@5 = 2 / min(3, 5)
        close(v[5], 0.6667); // P@20 = 2 / 3
    }

    #[test]
    fn map20_cuts_before_flags() {
        // 25 valid candidates, positives at ranks 1 and 22.
        let mut rows = vec![(0.0f32, false, true); 25];
        for (i, r) in rows.iter_mut().enumerate() {
            r.0 = 1.0 - i as f32 / 100.0;
        }
        rows[0].1 = true;
        rows[21].1 = true;
        let s = query_stats(Suite::Rfosd, &q(&rows));
        let v = category_values(Suite::Rfosd, [&s]);
        close(v[1], 1.0); // only rank 1 within 20
        close(
            v[0],
            np_round2((100.0 + np_round2(2.0 / 22.0 * 100.0)) / 2.0) / 100.0,
        );
    }

    #[test]
    fn overall_is_the_mean_of_categories() {
        let cats = vec![vec![Some(0.5), None], vec![Some(1.0), Some(0.2)]];
        let o = overall(&cats, 2);
        close(o[0], 0.75);
        close(o[1], 0.2);
        // One category: its own values.
        assert_eq!(overall(&cats[1..], 2), vec![Some(1.0), Some(0.2)]);
    }
}
