//! Search: a background photo, a rectangle in it and a category -> the
//! library's cut-outs ranked by how well they fit, at instance level (top-k)
//! and pattern level (top-p patterns x top-m members), with composite previews.
//!
//! ```no_run
//! use fos_search::{Query, Searcher};
//! # fn demo(searcher: &Searcher, bg: &image::RgbImage) -> Result<(), fos_search::SearchError> {
//! let q = Query::new([100.0, 80.0, 60.0, 150.0], "person");
//! let resp = searcher.search(bg, &q)?;
//! for hit in &resp.results {
//!     println!("{} {} {:.3}", hit.rank, hit.id, hit.score);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod composite;
pub mod indexer;
pub mod model;

use std::collections::BTreeMap;
use std::time::Instant;

use fos_image::compose::Rect;
use fos_index::{AspectFilter, Store};
use fos_model::embed::Encoder;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Errors of a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query is invalid (box, category, sizes).
    #[error("{0}")]
    Query(String),
    /// The library was made by another model.
    #[error("the library {library} was indexed with model {indexed}, but the model in use is {current}; rebuild the library with `fos index build` using this model, or search with the model that built it")]
    ModelMismatch {
        /// The library file.
        library: String,
        /// Its model.
        indexed: String,
        /// The model in use.
        current: String,
    },
    /// The library failed.
    #[error(transparent)]
    Index(#[from] fos_index::IndexError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] fos_model::ModelError),
    /// An image failed.
    #[error(transparent)]
    Image(#[from] fos_image::ImageError),
    /// A data set or folder of cut-outs failed.
    #[error(transparent)]
    Data(#[from] fos_data::DataError),
    /// A cut-out or input that cannot be indexed.
    #[error("{0}")]
    Input(String),
}

/// Default aspect-ratio filter: candidates whose aspect ratio differs from the
/// rectangle's by this factor or more are dropped. This is fos's rule, not the
/// FOSD evaluator's (which takes an absolute difference of aspect ratios,
/// `|w/h - w'/h'| < 1.2`): a factor treats tall and wide shapes alike (a
/// 0.3 box keeps 0.25..0.36, a 3.0 box keeps 2.5..3.6), where an absolute
/// difference of 1.2 keeps every shape from 0 to 1.5 for a 0.3 box and
/// almost nothing of the same relative spread for a wide one.
pub const DEFAULT_ASPECT_FACTOR: f64 = 1.2;

/// With re-ranking, the fusion head re-scores this many embedding candidates
/// (or `k`, if larger).
pub const RERANK_POOL: usize = 20;

/// A search request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The rectangle `[x, y, w, h]` in background pixels (COCO order).
    #[serde(rename = "box")]
    pub rect: [f64; 4],
    /// Category name.
    pub category: String,
    /// Instance results.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Pattern level: `[p, m]` = top-p patterns x top-m members.
    #[serde(default)]
    pub patterns: Option<[usize; 2]>,
    /// Aspect-ratio filter factor (`None`: off).
    #[serde(default = "default_aspect")]
    pub aspect_factor: Option<f64>,
    /// DiscoFOS re-ranking (needs a trained model; refused otherwise).
    #[serde(default)]
    pub rerank: bool,
    /// Force the exact scan even where the category has an approximate index.
    #[serde(default)]
    pub exact: bool,
}

fn default_k() -> usize {
    10
}
fn default_aspect() -> Option<f64> {
    Some(DEFAULT_ASPECT_FACTOR)
}

impl Query {
    /// A query with the defaults: k = 10, no patterns, aspect filter 1.2.
    pub fn new(rect: [f64; 4], category: &str) -> Self {
        Query {
            rect,
            category: category.to_owned(),
            k: 10,
            patterns: None,
            aspect_factor: default_aspect(),
            rerank: false,
            exact: false,
        }
    }

    /// Checks the query against a background of `width` x `height`.
    pub fn validate(&self, width: u32, height: u32) -> Result<Rect, SearchError> {
        let [x, y, w, h] = self.rect;
        if !self.rect.iter().all(|v| v.is_finite()) {
            return Err(SearchError::Query(format!(
                "box {:?} holds a value that is not a finite number",
                self.rect
            )));
        }
        if w <= 0.0 || h <= 0.0 {
            return Err(SearchError::Query(format!(
                "box {:?} has zero or negative size",
                self.rect
            )));
        }
        let tol = 0.5;
        if x < -tol || y < -tol || x + w > width as f64 + tol || y + h > height as f64 + tol {
            return Err(SearchError::Query(format!(
                "box [x={x}, y={y}, w={w}, h={h}] is not inside the {width}x{height} background"
            )));
        }
        if !(1..=1000).contains(&self.k) {
            return Err(SearchError::Query(format!(
                "k = {} must be between 1 and 1000",
                self.k
            )));
        }
        if let Some([p, m]) = self.patterns {
            if !(1..=100).contains(&p) || !(1..=100).contains(&m) {
                return Err(SearchError::Query(format!(
                    "patterns {p} x {m}: each must be between 1 and 100"
                )));
            }
        }
        if let Some(f) = self.aspect_factor {
            if !(f.is_finite() && f > 1.0) {
                return Err(SearchError::Query(format!("aspect factor {f} must be > 1")));
            }
        }
        Ok(Rect { x, y, w, h })
    }
}

/// One ranked cut-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// 1-based rank.
    pub rank: usize,
    /// Cut-out id.
    pub id: String,
    /// Cut-out image.
    pub path: String,
    /// Category.
    pub category: String,
    /// Cosine similarity.
    pub score: f32,
    /// Pattern, if any.
    pub pattern: Option<String>,
}

/// One pattern of the pattern-level results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatternHit {
    /// Pattern id.
    pub pattern: String,
    /// Cosine similarity of the query with the pattern's centroid.
    pub score: f32,
    /// Its best members.
    pub members: Vec<Hit>,
}

/// The answer to a query (the `--json` output of `fos search`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The query as understood.
    pub query: serde_json::Value,
    /// Instance-level results.
    pub results: Vec<Hit>,
    /// Pattern-level results (empty unless asked).
    pub patterns: Vec<PatternHit>,
    /// Time per stage in milliseconds (`encode`, `search`, `patterns`, `total`).
    pub timing_ms: BTreeMap<String, f64>,
}

/// A library and the encoder that made it.
pub struct Searcher {
    store: Box<dyn Store>,
    encoder: Box<dyn Encoder>,
}

impl Searcher {
    /// Pairs a library (any [`Store`]: a [`fos_index::Library`] file, ...)
    /// with an encoder; refused unless the encoder's fingerprint is the
    /// library's.
    pub fn new(
        store: impl Store + 'static,
        encoder: Box<dyn Encoder>,
    ) -> Result<Self, SearchError> {
        Self::from_store(Box::new(store), encoder)
    }

    /// As [`new`](Self::new), for a boxed store.
    pub fn from_store(
        store: Box<dyn Store>,
        encoder: Box<dyn Encoder>,
    ) -> Result<Self, SearchError> {
        if store.model() != encoder.fingerprint() {
            return Err(SearchError::ModelMismatch {
                library: store.location(),
                indexed: store.model().to_owned(),
                current: encoder.fingerprint(),
            });
        }
        Ok(Searcher { store, encoder })
    }

    /// The library.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The encoder.
    pub fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// Runs a query on a decoded background.
    pub fn search(&self, background: &RgbImage, q: &Query) -> Result<Response, SearchError> {
        let t0 = Instant::now();
        let rect = q.validate(background.width(), background.height())?;
        if q.rerank && self.encoder.reranker().is_none() {
            return Err(SearchError::Query(
                "re-ranking needs a trained DiscoFOS model; the model in use has no fusion head \
                 (train one with `fos train discofos`)"
                    .into(),
            ));
        }
        // Before the encoder's work: an unknown category lists the known ones.
        self.store.check_category(&q.category)?;
        let emb = self.encoder.query(background, rect)?;
        let t_enc = t0.elapsed();
        let aspect = q.aspect_factor.map(|factor| AspectFilter {
            box_aspect: rect.w / rect.h,
            factor,
        });
        let pool = if q.rerank { q.k.max(RERANK_POOL) } else { q.k };
        let mut hits = self.store.top_k(&q.category, &emb, pool, aspect, q.exact)?;
        let t_retrieve = t0.elapsed();
        if let Some(r) = self.encoder.reranker().filter(|_| q.rerank) {
            let cutouts = hits
                .iter()
                .map(|(e, _)| {
                    fos_image::decode::load_rgba(
                        std::path::Path::new(&e.path),
                        &fos_image::decode::DecodeOptions::default(),
                    )
                    .map_err(|err| {
                        SearchError::Query(format!("cut-out {} ({}): {err}", e.id, e.path))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let fused = r.rerank(background, rect, &cutouts)?;
            for (h, f) in hits.iter_mut().zip(fused) {
                h.1 = f;
            }
            // Stable: equal fused scores keep the embedding order.
            hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        }
        hits.truncate(q.k);
        let t_rerank = t0.elapsed();
        let results = hits
            .into_iter()
            .enumerate()
            .map(|(i, (e, s))| hit(i + 1, e, s))
            .collect();
        let t_search = t0.elapsed();
        let mut patterns = Vec::new();
        if let Some([p, m]) = q.patterns {
            for ph in self.store.top_patterns(&q.category, &emb, p, m)? {
                patterns.push(PatternHit {
                    pattern: ph.pattern,
                    score: ph.score,
                    members: ph
                        .members
                        .into_iter()
                        .enumerate()
                        .map(|(i, (e, s))| hit(i + 1, e, s))
                        .collect(),
                });
            }
        }
        let t_all = t0.elapsed();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let timing_ms = BTreeMap::from([
            ("encode".to_owned(), ms(t_enc)),
            ("search".to_owned(), ms(t_retrieve - t_enc)),
            ("rerank".to_owned(), ms(t_rerank - t_retrieve)),
            ("patterns".to_owned(), ms(t_all - t_search)),
            ("total".to_owned(), ms(t_all)),
        ]);
        Ok(Response {
            query: serde_json::json!({
                "box": q.rect, "category": q.category, "k": q.k, "patterns": q.patterns,
                "aspect_factor": q.aspect_factor, "rerank": q.rerank, "background_size": [background.width(), background.height()],
                "approximate": !q.exact && self.store.approximate(&q.category),
                "model": self.store.model(),
            }),
            results,
            patterns,
            timing_ms,
        })
    }
}

fn hit(rank: usize, e: fos_index::Entry, score: f32) -> Hit {
    Hit {
        rank,
        id: e.id,
        path: e.path,
        category: e.category,
        score,
        pattern: e.pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_validated() {
        let q = |r: [f64; 4]| Query::new(r, "person").validate(100, 50);
        assert!(q([10.0, 10.0, 20.0, 30.0]).is_ok());
        assert!(q([0.0, 0.0, 100.0, 50.0]).is_ok());
        assert!(q([90.0, 10.0, 20.0, 30.0])
            .unwrap_err()
            .to_string()
            .contains("not inside"));
        assert!(q([10.0, 10.0, 0.0, 30.0])
            .unwrap_err()
            .to_string()
            .contains("zero or negative"));
        assert!(q([10.0, 10.0, -5.0, 30.0]).is_err());
        assert!(q([f64::NAN, 10.0, 5.0, 30.0])
            .unwrap_err()
            .to_string()
            .contains("finite"));
        let mut bad = Query::new([1.0, 1.0, 5.0, 5.0], "person");
        bad.k = 0;
        assert!(bad.validate(100, 50).is_err());
        let j: Query =
            serde_json::from_str(r#"{"box": [1, 2, 3, 4], "category": "person"}"#).unwrap();
        assert_eq!((j.k, j.aspect_factor, j.patterns), (10, Some(1.2), None));
    }
}
