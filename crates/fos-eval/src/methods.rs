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
            let imgs = chunk
                .iter()
                .map(|r| fos_image::decode::load_rgba(&ds.path(&r.foreground), &self.decode))
                .collect::<Result<Vec<_>, _>>()?;
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
