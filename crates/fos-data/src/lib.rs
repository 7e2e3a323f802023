//! Foreground-search data sets: from instance-segmentation data (COCO, FOSD, a
//! folder of cut-outs) to (background, rectangle, foreground) triples that
//! training, indexing and evaluation read.
//!
//! * [`coco`]: COCO instance JSON with polygon, RLE and compressed-RLE masks.
//! * [`mask`]: mask decoding, boxes, dilation.
//! * [`filter`]: crowd / small / truncated / occluded / elongated instances.
//! * [`inpaint`]: Telea fast-marching inpainting of the removed object.
//! * [`split`]: deterministic splits by source photo.
//! * [`build`]: the `fos dataset build` pipeline (atomic, resumable).
//! * [`stage`]: build in `OUT.partial`, resume, publish by rename.
//! * [`manifest`]: the on-disk format (`dataset.json` + `manifest.jsonl`).
//! * [`folder`]: a folder of cut-outs (PNG with alpha, or JPEG + mask).
//! * [`fosd`]: the S-FOSD / R-FOSD layout, with R-FOSD labels kept for evaluation.
//! * [`patterns`]: interchangeable-foreground patterns from labels or clustering.
//!
//! ```no_run
//! use fos_data::manifest::Dataset;
//! let ds = Dataset::open("data/coco".as_ref())?;
//! for r in ds.split("test").filter(|r| r.category == "person") {
//!     println!("{} {:?} {}", r.id, r.bbox, r.foreground);
//! }
//! # Ok::<(), fos_data::DataError>(())
//! ```

#![warn(missing_docs)]

pub mod build;
pub mod coco;
pub mod filter;
pub mod folder;
pub mod fosd;
pub mod inpaint;
pub mod manifest;
pub mod mask;
pub mod patterns;
pub mod split;
pub mod stage;

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or building a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not in the expected format.
    #[error("{0}")]
    Format(String),
    /// A mask cannot be decoded.
    #[error("bad mask: {0}")]
    BadMask(String),
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
    /// The output exists.
    #[error("{0}")]
    Exists(String),
    /// An image could not be read or written.
    #[error(transparent)]
    Image(#[from] fos_image::ImageError),
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Progress of a long job, reported by the library and drawn by the front end.
pub trait Progress: Sync {
    /// The job has `total` steps.
    fn start(&self, total: u64);
    /// `n` more steps are done.
    fn inc(&self, n: u64);
    /// The job is over.
    fn finish(&self) {}
}

/// No progress reporting.
impl Progress for () {
    fn start(&self, _: u64) {}
    fn inc(&self, _: u64) {}
}
