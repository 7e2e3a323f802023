//! Training for fos, on a CPU: both published methods (method.md) on a frozen
//! EfficientNet-Lite backbone.
//!
//! * [`cache`]: the frozen backbone's features of every training cut-out,
//!   query and DiscoFOS composite, with their augmentation variants, computed
//!   once and kept on disk (resumable, chunk by chunk).
//! * [`augment`]: white padding, colour jitter, rectangle resize and zoom.
//! * [`loss`]: cross-entropy, center loss, cosine triplet, BCE, L1.
//! * [`optim`]: SGD with momentum and Adam over named parameters.
//! * [`stages`]: the teacher, the student, the early-fusion baseline and
//!   DiscoFOS (teacher discriminator, then the distilled fusion student).
//! * [`run`]: the whole job: cache, stages, per-epoch checkpoints, logs
//!   (CSV and PNG), and the model directory.
//!
//! Only heads are trained (the backbone is frozen), so an epoch is a pass over
//! cached vectors: the whole default model trains in minutes after the cache.

#![warn(missing_docs)]

pub mod augment;
pub mod cache;
pub mod config;
pub mod log;
pub mod loss;
pub mod optim;
pub mod run;
pub mod stages;

pub use config::TrainConfig;

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A model operation failed.
    #[error(transparent)]
    Model(#[from] fos_model::ModelError),
    /// Reading the data set failed.
    #[error(transparent)]
    Data(#[from] fos_data::DataError),
    /// An image failed.
    #[error(transparent)]
    Image(#[from] fos_image::ImageError),
    /// Bad settings or data unfit for training.
    #[error("{0}")]
    Config(String),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<fos_model::weights::WeightsError> for TrainError {
    fn from(e: fos_model::weights::WeightsError) -> Self {
        TrainError::Model(e.into())
    }
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_owned(),
        source,
    }
}
