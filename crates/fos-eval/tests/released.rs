//! Property test: fos's figures on random score matrices equal a plain,
//! independent implementation of the released FOSD evaluator written here
//! from its specification (../shared/docs/method.md, "The released
//! evaluator"), matrix by matrix as the released code works: scores of
//! invalid candidates multiplied by 0, rows ranked by a stable sort of
//! -score, then the metric formulas.

use fos_eval::metrics::Suite;
use fos_eval::scores::{Candidate, MethodScores, QueryScores};
use fos_eval::summary::{summarise, SummaryOptions};
use proptest::prelude::*;

/// One category: scores, labels and validity, queries x candidates.
#[derive(Clone, Debug)]
struct Cat {
    scores: Vec<Vec<f64>>,
    labels: Vec<Vec<u8>>,
    valid: Vec<Vec<u8>>,
}

fn round2(x: f64) -> f64 {
    // numpy's np.round(x, 2): rint(x * 100) / 100, ties to even.
    let y = x * 100.0;
    let r = y.round();
    let r = if (y - y.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - y.signum()
    } else {
        r
    };
    r / 100.0
}

/// Labels of each row sorted by descending score (stable), after invalid
/// scores are set to 0; and flags = valid count per row.
fn rank(c: &Cat, use_valid: bool) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut ranked = Vec::new();
    let mut flags = Vec::new();
    for i in 0..c.scores.len() {
        let s: Vec<f64> = (0..c.scores[i].len())
            .map(|j| {
                if use_valid {
                    c.scores[i][j] * c.valid[i][j] as f64
                } else {
                    c.scores[i][j]
                }
            })
            .collect();
        let mut idx: Vec<usize> = (0..s.len()).collect();
        idx.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap());
        ranked.push(idx.iter().map(|&j| c.labels[i][j]).collect());
        flags.push(c.valid[i].iter().map(|&v| v as usize).sum());
    }
    (ranked, flags)
}

/// numpy's float64 sum (`np.add.reduce`): pairwise, 8-way unrolled blocks
/// of at most 128 values; `np.mean` divides it by the count.
fn numpy_sum(v: &[f64]) -> f64 {
    if v.len() > 128 {
        let half = v.len() / 2 - (v.len() / 2) % 8;
        return numpy_sum(&v[..half]) + numpy_sum(&v[half..]);
    }
    if v.len() < 8 {
        return v.iter().fold(0.0, |a, b| a + b);
    }
    let whole = v.len() / 8 * 8;
    let mut acc = v[..8].to_vec();
    for block in v[8..whole].chunks(8) {
        for (a, b) in acc.iter_mut().zip(block) {
            *a += b;
        }
    }
    let head = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    v[whole..].iter().fold(head, |a, b| a + b)
}

fn numpy_mean(v: &[f64]) -> f64 {
    numpy_sum(v) / v.len() as f64
}

fn precision_pct(row: &[u8], k: usize) -> f64 {
    let hits = row[..k].iter().filter(|&&v| v != 0).count();
    round2(hits as f64 / k as f64 * 100.0)
}

fn ap(row: &[u8]) -> f64 {
    let out: Vec<f64> = (0..row.len())
        .filter(|&k| row[k] != 0)
        .map(|k| precision_pct(row, k + 1))
        .collect();
    if out.is_empty() {
        0.0
    } else {
        numpy_mean(&out)
    }
}

/// The released figures of one category, in percent; NaN where it divides
/// by zero.
fn released(c: &Cat, suite: Suite) -> Vec<f64> {
    match suite {
        Suite::Sfosd => {
            let (r, _) = rank(c, false);
            let total: usize = r.iter().flatten().map(|&v| v as usize).sum();
            let mut out: Vec<f64> = [1, 5, 10, 20]
                .iter()
                .map(|&k| {
                    let found: usize = r
                        .iter()
                        .map(|row| row.iter().take(k).map(|&v| v as usize).sum::<usize>())
                        .sum();
                    round2(found as f64 / total as f64 * 100.0)
                })
                .collect();
            // fos's own MRR, in percent here.
            let rr: f64 = r
                .iter()
                .map(|row| {
                    row.iter()
                        .position(|&v| v != 0)
                        .map_or(0.0, |p| 1.0 / (p + 1) as f64)
                })
                .sum();
            out.push(rr / r.len() as f64 * 100.0);
            out
        }
        Suite::Rfosd => {
            let (r, flags) = rank(c, true);
            let n = r.len() as f64;
            let map = round2(
                r.iter()
                    .zip(&flags)
                    .map(|(row, &f)| ap(&row[..f]))
                    .sum::<f64>()
                    / n,
            );
            let map20 = round2(
                r.iter()
                    .zip(&flags)
                    .map(|(row, &f)| {
                        let cut = &row[..row.len().min(20)];
                        ap(&cut[..f.min(cut.len())])
                    })
                    .sum::<f64>()
                    / n,
            );
            let mut out = vec![map, map20];
            for k in [1, 5, 10, 20] {
                let (mut sum, mut total) = (0usize, 0usize);
                for (row, &f) in r.iter().zip(&flags) {
                    let m = f.min(k);
                    sum += row[..m].iter().map(|&v| v as usize).sum::<usize>();
                    total += m;
                }
                out.push(round2(sum as f64 / total as f64 * 100.0));
            }
            out
        }
    }
}

fn to_scores(cats: &[Cat]) -> MethodScores {
    let mut queries = Vec::new();
    for (ci, c) in cats.iter().enumerate() {
        for i in 0..c.scores.len() {
            queries.push(QueryScores {
                category: format!("cat{ci}"),
                query: format!("q{i:02}"),
                candidates: (0..c.scores[i].len())
                    .map(|j| Candidate {
                        id: format!("f{j}"),
                        score: c.scores[i][j] as f32,
                        label: c.labels[i][j] == 1,
                        valid: c.valid[i][j] == 1,
                    })
                    .collect(),
            });
        }
    }
    MethodScores {
        name: "m".into(),
        queries,
    }
}

/// Categories of 1..6 queries over 1..30 candidates; scores from eight
/// levels in (0, 1] (ties are common); S-FOSD rows have one positive.
fn cats(sfosd: bool) -> impl Strategy<Value = Vec<Cat>> {
    let cat = (1usize..6, 1usize..30).prop_flat_map(move |(nq, nf)| {
        let row = (
            prop::collection::vec(1u8..=8, nf),
            prop::collection::vec(prop::bool::weighted(0.3), nf),
            prop::collection::vec(prop::bool::weighted(0.7), nf),
            0..nf,
        );
        prop::collection::vec(row, nq).prop_map(move |rows| {
            let mut c = Cat {
                scores: vec![],
                labels: vec![],
                valid: vec![],
            };
            for (s, l, v, pos) in rows {
                c.scores.push(s.iter().map(|&x| x as f64 / 8.0).collect());
                c.labels.push(if sfosd {
                    (0..l.len()).map(|j| (j == pos) as u8).collect()
                } else {
                    l.iter().map(|&b| b as u8).collect()
                });
                c.valid.push(v.iter().map(|&b| b as u8).collect());
            }
            c
        })
    });
    prop::collection::vec(cat, 1..4)
}

fn check(cats: &[Cat], suite: Suite) -> Result<(), TestCaseError> {
    let s = summarise(
        suite,
        &[to_scores(cats)],
        &SummaryOptions {
            bootstrap: 0,
            ..Default::default()
        },
    );
    let per_cat: Vec<Vec<f64>> = cats.iter().map(|c| released(c, suite)).collect();
    for (ci, want) in per_cat.iter().enumerate() {
        let got = &s.methods[0].categories[&format!("cat{ci}")].figures;
        for (m, (g, w)) in got.iter().zip(want).enumerate() {
            match g.value {
                Some(v) => prop_assert!(
                    (v * 100.0 - w).abs() < 1e-9,
                    "cat {ci} metric {m}: {v} vs {w}"
                ),
                None => prop_assert!(w.is_nan(), "cat {ci} metric {m}: None vs {w}"),
            }
        }
    }
    // Overall: the plain mean over the categories that have a value.
    for (m, g) in s.methods[0].overall.iter().enumerate() {
        let vals: Vec<f64> = per_cat
            .iter()
            .map(|c| c[m])
            .filter(|v| !v.is_nan())
            .collect();
        match g.value {
            Some(v) => {
                let want = numpy_mean(&vals);
                prop_assert!(
                    (v * 100.0 - want).abs() < 1e-9,
                    "overall {m}: {v} vs {want}"
                );
            }
            None => prop_assert!(vals.is_empty()),
        }
    }
    Ok(())
}

proptest! {
    // A fixed seed: the same 400 cases on every run.
    #![proptest_config(ProptestConfig {
        cases: 400,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0f05_e7a1),
        ..ProptestConfig::default()
    })]

    #[test]
    fn sfosd_equals_the_released_evaluator(c in cats(true)) {
        check(&c, Suite::Sfosd)?;
    }

    #[test]
    fn rfosd_equals_the_released_evaluator(c in cats(false)) {
        check(&c, Suite::Rfosd)?;
    }
}
