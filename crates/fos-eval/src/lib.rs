//! Evaluation of foreground search with the published protocols.
//!
//! * [`protocol`] - S-FOSD (Recall@1/5/10/20 and mAP; the background's own
//!   cut-out is the answer, the pool is that category's cut-outs of the split)
//!   and the pattern protocol (mAP with pattern-mates as positives), over any
//!   set of [`methods`].
//! * [`methods`] - the rankers compared: `random`, `aspect` (aspect ratio
//!   only), `pretrained` (plain pretrained-feature similarity).
//! * [`report`] - per-category CSV, overall markdown table, PNG bar chart.
//!
//! ```no_run
//! use fos_eval::{methods::{Aspect, Method, Random}, protocol::{evaluate, EvalOptions, Protocol}};
//! let ds = fos_data::manifest::Dataset::open("data/coco".as_ref())?;
//! let mut methods: Vec<Box<dyn Method>> = vec![Box::new(Random::new(0)), Box::new(Aspect)];
//! let report = evaluate(&ds, &mut methods, &EvalOptions::new("test", Protocol::Sfosd), &())?;
//! println!("{}", fos_eval::report::markdown(&report));
//! # Ok::<(), fos_eval::EvalError>(())
//! ```

#![warn(missing_docs)]

pub mod methods;
pub mod protocol;
pub mod report;

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
