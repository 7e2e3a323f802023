//! Evaluation of foreground search with the published protocols, computed
//! exactly as the released FOSD evaluator computes them, on fos's methods or
//! on any model's scores, with error bars.
//!
//! Data flows: a data set and methods -> [`protocol`] -> [`scores`] (every
//! candidate's score; also read from and written to CSV) -> [`metrics`] (the
//! released evaluator's figures) -> [`summary`] (per category and overall,
//! 95% bootstrap intervals, paired differences) -> [`report`] (markdown, CSV,
//! JSON, SVG chart).
//!
//! * [`protocol`] - S-FOSD (the background's own cut-out is the answer),
//!   patterns (pattern-mates are answers) and R-FOSD (human labels).
//! * [`methods`] - the rankers compared: `random`, `aspect`, embeddings
//!   (`pretrained`, `student`, `early-fusion`), `discofos` re-ranking, and
//!   `served` (exactly what `fos search` returns with its defaults).
//!
//! ```no_run
//! use fos_eval::{methods::{Aspect, Method, Random}, protocol::{evaluate, EvalOptions, Protocol}};
//! use fos_eval::summary::{summarise, SummaryOptions};
//! let ds = fos_data::manifest::Dataset::open("data/coco".as_ref())?;
//! let mut methods: Vec<Box<dyn Method>> = vec![Box::new(Random::new(0)), Box::new(Aspect)];
//! let run = evaluate(&ds, &mut methods, &EvalOptions::new("test", Protocol::Sfosd), &())?;
//! let summary = summarise(Protocol::Sfosd.suite(), &run.scores, &SummaryOptions::default());
//! println!("{:?}", summary.methods[1].overall);
//! # Ok::<(), fos_eval::EvalError>(())
//! ```

#![warn(missing_docs)]

pub mod methods;
pub mod metrics;
pub mod protocol;
pub mod report;
pub mod scores;
pub mod summary;

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data set cannot be evaluated as asked.
    #[error("{0}")]
    Setup(String),
    /// Reading the data set failed.
    #[error(transparent)]
    Data(#[from] fos_data::DataError),
    /// A model failed.
    #[error(transparent)]
    Model(#[from] fos_model::ModelError),
    /// An image failed.
    #[error(transparent)]
    Image(#[from] fos_image::ImageError),
    /// Indexing or searching failed (the `served` method).
    #[error(transparent)]
    Search(#[from] fos_search::SearchError),
    /// A scores file is malformed.
    #[error("{file}: line {line}: {message}")]
    Scores {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// What is wrong, naming the column.
        message: String,
    },
    /// Writing the report failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}
