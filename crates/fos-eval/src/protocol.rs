//! The protocols: which queries, which candidates, which positives. Each runs
//! the methods on a data set and returns their scores ([`MethodScores`]);
//! [`crate::summary`] turns scores into figures.
//!
//! * S-FOSD: every background of the split is a query; its candidates are the
//!   split's cut-outs of its category; its own cut-out is the one positive.
//!   Figures: [`Suite::Sfosd`].
//! * Patterns: the same queries and candidates; every cut-out of the own
//!   cut-out's pattern is a positive (Li et al. 2020). Figures:
//!   [`Suite::Rfosd`] with every candidate valid.
//! * R-FOSD: human labels (FOSD `test_set2.json`, read by `fos dataset build
//!   --fosd`); every labelled cut-out is a candidate; a candidate is valid
//!   when `|box_w/box_h - fg_w/fg_h| < 1.2`. Figures: [`Suite::Rfosd`].

use std::collections::BTreeMap;

use fos_data::manifest::{Dataset, Record};
use fos_data::Progress;
use fos_image::compose::Rect;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::methods::{Case, Method};
use crate::metrics::Suite;
use crate::scores::{Candidate, MethodScores, QueryScores};
use crate::EvalError;

/// R-FOSD's validity rule: the absolute difference of the aspect ratios
/// (width / height, original pixels) must be below this.
pub const RFOSD_ASPECT_DIFF: f64 = 1.2;

/// Which ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The background's own cut-out is the one answer.
    Sfosd,
    /// Every cut-out of the own cut-out's pattern is an answer.
    Patterns,
    /// Human labels (FOSD test_set2.json).
    Rfosd,
}

impl Protocol {
    /// The figures this protocol reports.
    pub fn suite(self) -> Suite {
        match self {
            Protocol::Sfosd => Suite::Sfosd,
            Protocol::Patterns | Protocol::Rfosd => Suite::Rfosd,
        }
    }

    /// Name in reports.
    pub fn title(self) -> &'static str {
        match self {
            Protocol::Sfosd => "S-FOSD",
            Protocol::Patterns => "Pattern",
            Protocol::Rfosd => "R-FOSD",
        }
    }
}

/// Settings of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Split to evaluate.
    pub split: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Categories with fewer pool cut-outs are left out (S-FOSD, patterns).
    pub min_pool: usize,
    /// Each side of the query rectangle is scaled by a random factor in
    /// [1 - j, 1 + j] (seeded, centre kept, clamped to the photo). With exact
    /// boxes, S-FOSD is solved by aspect ratio alone, since the answer's
    /// aspect ratio *is* the box's. Not applied to R-FOSD (boxes drawn by
    /// hand).
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

/// What an evaluation of a data set produced: every method's scores.
#[derive(Clone, Debug)]
pub struct Run {
    /// Protocol.
    pub protocol: Protocol,
    /// Split.
    pub split: String,
    /// Box jitter used.
    pub box_jitter: f64,
    /// Scores, one entry per method in the order given.
    pub scores: Vec<MethodScores>,
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

/// One query to run: the case, its pool, labels and validity.
struct Job<'a> {
    category: String,
    query: String,
    case: Case,
    pool: Vec<&'a Record>,
    labels: Vec<bool>,
    valid: Vec<bool>,
}

/// Runs `methods` on the split's queries under `opts.protocol`.
pub fn evaluate(
    ds: &Dataset,
    methods: &mut [Box<dyn Method>],
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<Run, EvalError> {
    let jobs = match opts.protocol {
        Protocol::Rfosd => rfosd_jobs(ds)?,
        _ => split_jobs(ds, opts)?,
    };
    let mut seen = std::collections::HashSet::new();
    let all_pool: Vec<&Record> = jobs
        .iter()
        .flat_map(|j| j.pool.iter().copied())
        .filter(|r| seen.insert(r.id.as_str()))
        .collect();
    for m in methods.iter_mut() {
        m.prepare(ds, &all_pool)?;
    }
    progress.start((jobs.len() * methods.len()) as u64);
    let mut scores: Vec<MethodScores> = methods
        .iter()
        .map(|m| MethodScores {
            name: m.name(),
            queries: Vec::with_capacity(jobs.len()),
        })
        .collect();
    for job in &jobs {
        for (m, out) in methods.iter_mut().zip(scores.iter_mut()) {
            let s = m.scores(ds, &job.case, &job.pool)?;
            out.queries.push(QueryScores {
                category: job.category.clone(),
                query: job.query.clone(),
                candidates: job
                    .pool
                    .iter()
                    .zip(s)
                    .zip(job.labels.iter().zip(&job.valid))
                    .map(|((r, score), (&label, &valid))| Candidate {
                        id: r.id.clone(),
                        score,
                        label,
                        valid,
                    })
                    .collect(),
            });
            progress.inc(1);
        }
    }
    progress.finish();
    Ok(Run {
        protocol: opts.protocol,
        split: if opts.protocol == Protocol::Rfosd {
            "test".into()
        } else {
            opts.split.clone()
        },
        box_jitter: if opts.protocol == Protocol::Rfosd {
            0.0
        } else {
            opts.box_jitter
        },
        scores,
    })
}

/// S-FOSD and pattern queries: the split's backgrounds, by category.
fn split_jobs<'a>(ds: &'a Dataset, opts: &EvalOptions) -> Result<Vec<Job<'a>>, EvalError> {
    let mut by_cat: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in ds.records.iter().filter(|r| r.split == opts.split) {
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
    let mut jobs = Vec::new();
    for (cat, pool) in &by_cat {
        for (own, r) in pool.iter().enumerate() {
            let Some(bg) = r.background.as_deref().filter(|_| r.bbox.is_some()) else {
                continue;
            };
            let index = jobs.len();
            let mut rng = ChaCha8Rng::seed_from_u64(
                opts.seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            let labels = pool
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    i == own
                        || (opts.protocol == Protocol::Patterns
                            && r.pattern.is_some()
                            && p.pattern == r.pattern)
                })
                .collect();
            jobs.push(Job {
                category: cat.to_string(),
                query: r.id.clone(),
                case: Case {
                    index,
                    category: cat.to_string(),
                    background: ds.path(bg),
                    rect: jitter(r, opts.box_jitter, &mut rng),
                },
                pool: pool.clone(),
                labels,
                valid: vec![true; pool.len()],
            });
        }
    }
    Ok(jobs)
}

/// R-FOSD queries: every labelled background; every labelled cut-out in the
/// data set is a candidate.
fn rfosd_jobs(ds: &Dataset) -> Result<Vec<Job<'_>>, EvalError> {
    let queries = fos_data::fosd::read_rfosd(&ds.root)?.ok_or_else(|| {
        EvalError::Setup(format!(
            "{} has no human labels (rfosd.json); build the data set from a FOSD folder with `fos dataset build --fosd DIR`",
            ds.root.display()
        ))
    })?;
    let by_id: std::collections::HashMap<&str, &Record> =
        ds.records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut jobs = Vec::new();
    for q in &queries {
        let [x, y, w, h] = q.bbox.map(|v| v as f64);
        let box_aspect = w / h.max(1.0);
        let pool: Vec<&Record> = q
            .labels
            .keys()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .collect();
        if pool.is_empty() {
            continue;
        }
        let labels = pool
            .iter()
            .map(|r| q.labels.get(&r.id) == Some(&1))
            .collect();
        let valid = pool
            .iter()
            .map(|r| (box_aspect - r.aspect()).abs() < RFOSD_ASPECT_DIFF)
            .collect();
        let index = jobs.len();
        jobs.push(Job {
            category: q.category.clone(),
            query: q.background.clone(),
            case: Case {
                index,
                category: q.category.clone(),
                background: ds.path(&q.background),
                rect: Rect { x, y, w, h },
            },
            pool,
            labels,
            valid,
        });
    }
    if jobs.is_empty() {
        return Err(EvalError::Setup(
            "no R-FOSD query has a labelled cut-out in the data set".into(),
        ));
    }
    Ok(jobs)
}
