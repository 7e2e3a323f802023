//! The rankers an evaluation compares.

use std::collections::HashMap;

use fos_data::manifest::{Dataset, Record};
use fos_image::compose::Rect;
use fos_image::decode::DecodeOptions;
use fos_model::embed::Encoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::EvalError;

/// One query of an evaluation: a background and a rectangle.
pub struct Case {
    /// Index of the query (seeds per-query randomness).
    pub index: usize,
    /// Category asked for.
    pub category: String,
    /// The background photo.
    pub background: std::path::PathBuf,
    /// The query rectangle.
    pub rect: Rect,
}

/// A ranker: scores every pool cut-out for a query (higher = better fit).
pub trait Method {
    /// Name in reports.
    fn name(&self) -> String;
    /// Called once with every pool cut-out before the queries.
    fn prepare(&mut self, _ds: &Dataset, _pool: &[&Record]) -> Result<(), EvalError> {
        Ok(())
    }
    /// Scores of `pool` for `case`, in pool order.
    fn scores(
        &mut self,
        ds: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError>;
}

/// Decodes the cut-outs of `records`.
fn load_cutouts<'a>(
    ds: &Dataset,
    records: impl Iterator<Item = &'a Record>,
    decode: &DecodeOptions,
) -> Result<Vec<image::RgbaImage>, EvalError> {
    records
        .map(|r| {
            Ok(fos_image::decode::load_rgba(
                &ds.path(&r.foreground),
                decode,
            )?)
        })
        .collect()
}

/// Uniform random scores (seeded per query): the chance level.
pub struct Random {
    seed: u64,
}

impl Random {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Random { seed }
    }
}

impl Method for Random {
    fn name(&self) -> String {
        "random".into()
    }
    fn scores(
        &mut self,
        _: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (case.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        Ok(pool.iter().map(|_| rng.random::<f32>()).collect())
    }
}

/// Aspect ratio only: -|ln(cut-out aspect / rectangle aspect)|.
pub struct Aspect;

impl Method for Aspect {
    fn name(&self) -> String {
        "aspect".into()
    }
    fn scores(
        &mut self,
        _: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError> {
        let q = case.rect.w / case.rect.h;
        Ok(pool
            .iter()
            .map(|r| -((r.aspect() / q).ln().abs()) as f32)
            .collect())
    }
}

/// Cosine similarity of embeddings from an [`Encoder`] (with the pretrained
/// stand-in encoder: plain pretrained-feature similarity).
pub struct Embedding {
    name: String,
    encoder: Box<dyn Encoder>,
    decode: DecodeOptions,
    pool: HashMap<String, Vec<f32>>,
    progress: Option<Box<dyn Fn(usize) + Send>>,
}

impl Embedding {
    /// Scores with `encoder`, reported as `name`.
    pub fn new(name: &str, encoder: Box<dyn Encoder>, decode: DecodeOptions) -> Self {
        Embedding {
            name: name.into(),
            encoder,
            decode,
            pool: HashMap::new(),
            progress: None,
        }
    }

    /// Called with the number of cut-outs embedded so far while preparing.
    pub fn with_progress(mut self, f: impl Fn(usize) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

impl Method for Embedding {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn prepare(&mut self, ds: &Dataset, pool: &[&Record]) -> Result<(), EvalError> {
        for chunk in pool.chunks(16) {
            let imgs = load_cutouts(ds, chunk.iter().copied(), &self.decode)?;
            for (r, e) in chunk.iter().zip(self.encoder.foregrounds(&imgs)?) {
                self.pool.insert(r.id.clone(), e);
            }
            if let Some(p) = &self.progress {
                p(self.pool.len());
            }
        }
        Ok(())
    }
    fn scores(
        &mut self,
        _ds: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError> {
        let bg = fos_image::decode::load_rgb(&case.background, &self.decode)?;
        let q = self.encoder.query(&bg, case.rect)?;
        Ok(pool
            .iter()
            .map(|r| {
                self.pool
                    .get(&r.id)
                    .map_or(f32::NEG_INFINITY, |e| fos_index::library::dot(e, &q))
            })
            .collect())
    }
}

/// DiscoFOS search: candidates by the student's embedding, then the top
/// `rerank` re-scored by the fusion head (they rank first, by fusion score).
pub struct DiscoFos {
    model: std::sync::Arc<fos_model::trained::TrainedModel>,
    decode: DecodeOptions,
    rerank: usize,
    emb: HashMap<String, Vec<f32>>,
    maps: HashMap<String, Vec<f32>>,
    aspects: HashMap<String, f64>,
}

impl DiscoFos {
    /// Re-ranks the top `rerank` candidates of each query.
    pub fn new(
        model: std::sync::Arc<fos_model::trained::TrainedModel>,
        decode: DecodeOptions,
        rerank: usize,
    ) -> Self {
        DiscoFos {
            model,
            decode,
            rerank,
            emb: HashMap::new(),
            maps: HashMap::new(),
            aspects: HashMap::new(),
        }
    }
}

impl Method for DiscoFos {
    fn name(&self) -> String {
        "discofos".into()
    }
    fn prepare(&mut self, ds: &Dataset, pool: &[&Record]) -> Result<(), EvalError> {
        for chunk in pool.chunks(16) {
            let imgs = load_cutouts(ds, chunk.iter().copied(), &self.decode)?;
            let (e, m) = self.model.foreground_features(&imgs)?;
            for (((r, e), m), img) in chunk.iter().zip(e).zip(m).zip(&imgs) {
                self.emb.insert(r.id.clone(), e);
                self.maps.insert(r.id.clone(), m);
                self.aspects
                    .insert(r.id.clone(), fos_model::geometry::alpha_aspect(img));
            }
        }
        Ok(())
    }
    fn scores(
        &mut self,
        _ds: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError> {
        let bg = fos_image::decode::load_rgb(&case.background, &self.decode)?;
        let q = self.model.query_features(&bg, case.rect)?;
        let e = self.model.student_embed(&q)?;
        let mut s: Vec<f32> = pool
            .iter()
            .map(|r| {
                self.emb
                    .get(&r.id)
                    .map_or(f32::NEG_INFINITY, |v| fos_index::library::dot(v, &e))
            })
            .collect();
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        order.truncate(self.rerank);
        let maps: Vec<&[f32]> = order
            .iter()
            .filter_map(|&i| self.maps.get(&pool[i].id).map(Vec::as_slice))
            .collect();
        let aspects: Vec<f64> = order
            .iter()
            .filter_map(|&i| self.aspects.get(&pool[i].id).copied())
            .collect();
        if maps.len() == order.len() && aspects.len() == order.len() {
            let fused = self.model.rerank_scores(&q, &maps, &aspects)?;
            // Both scores are in [-1, 1]: the re-ranked ones go above all others.
            s.iter_mut().for_each(|v| *v -= 3.0);
            for (&i, f) in order.iter().zip(fused) {
                s[i] = f;
            }
        }
        Ok(s)
    }
}

/// What `fos search` serves with its defaults: the candidates indexed into a
/// library with the encoder search uses, then each query run through
/// [`fos_search::Searcher`] with [`fos_search::Query::new`]'s settings (aspect
/// filter, no re-ranking) and k = the pool (at most 1,000). Candidates the
/// search does not return (dropped by the aspect filter) score `-inf`.
pub struct Served {
    encoder: Option<Box<dyn Encoder>>,
    searcher: Option<fos_search::Searcher>,
    decode: DecodeOptions,
    dir: tempfile::TempDir,
}

impl Served {
    /// Serves with `encoder` (the one `fos search` would load).
    pub fn new(encoder: Box<dyn Encoder>, decode: DecodeOptions) -> Result<Self, EvalError> {
        let dir = tempfile::tempdir().map_err(|source| EvalError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        Ok(Served {
            encoder: Some(encoder),
            searcher: None,
            decode,
            dir,
        })
    }
}

impl Method for Served {
    fn name(&self) -> String {
        "served".into()
    }
    fn prepare(&mut self, ds: &Dataset, pool: &[&Record]) -> Result<(), EvalError> {
        let encoder = self
            .encoder
            .take()
            .ok_or_else(|| EvalError::Setup("served: prepared twice".into()))?;
        let entries = pool
            .iter()
            .map(|r| fos_search::indexer::Indexer::entry_of(ds, r))
            .collect::<Result<Vec<_>, _>>()?;
        let library = fos_search::indexer::Indexer::new(encoder.as_ref(), self.decode).build(
            &self.dir.path().join("served.fos"),
            entries,
            &Default::default(),
            &(),
        )?;
        self.searcher = Some(fos_search::Searcher::new(library, encoder)?);
        Ok(())
    }
    fn scores(
        &mut self,
        _ds: &Dataset,
        case: &Case,
        pool: &[&Record],
    ) -> Result<Vec<f32>, EvalError> {
        let searcher = self
            .searcher
            .as_ref()
            .ok_or_else(|| EvalError::Setup("served: not prepared".into()))?;
        let bg = fos_image::decode::load_rgb(&case.background, &self.decode)?;
        let r = case.rect;
        let mut q = fos_search::Query::new([r.x, r.y, r.w, r.h], &case.category);
        q.k = pool.len().clamp(1, 1000);
        let resp = searcher.search(&bg, &q)?;
        let got: HashMap<&str, f32> = resp
            .results
            .iter()
            .map(|h| (h.id.as_str(), h.score))
            .collect();
        Ok(pool
            .iter()
            .map(|r| got.get(r.id.as_str()).copied().unwrap_or(f32::NEG_INFINITY))
            .collect())
    }
}

/// The foreground encoder as a pattern classifier on a split: (top-1, top-5,
/// cut-outs counted), over cut-outs whose pattern the model knows.
pub fn teacher_accuracy(
    ds: &Dataset,
    split: &str,
    model: &fos_model::trained::TrainedModel,
    decode: &DecodeOptions,
) -> Result<(f64, f64, usize), EvalError> {
    let known: HashMap<&str, usize> = model
        .info()
        .patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let recs: Vec<(&Record, usize)> = ds
        .split(split)
        .filter_map(|r| Some((r, *known.get(r.pattern.as_deref()?)?)))
        .collect();
    let (mut top1, mut top5) = (0usize, 0usize);
    for chunk in recs.chunks(16) {
        let imgs = load_cutouts(ds, chunk.iter().map(|(r, _)| *r), decode)?;
        for (l, (_, y)) in model.pattern_logits(&imgs)?.iter().zip(chunk) {
            let rank = l.iter().filter(|&&v| v > l[*y]).count();
            top1 += (rank == 0) as usize;
            top5 += (rank < 5) as usize;
        }
    }
    let n = recs.len().max(1) as f64;
    Ok((top1 as f64 / n, top5 as f64 / n, recs.len()))
}
