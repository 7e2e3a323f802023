//! The cut-out library (`LIB.fos`): per cut-out its id, category, path, aspect
//! ratio, pattern and embedding, plus pattern centroids and the fingerprint of
//! the model that made the embeddings.
//!
//! * [`format`](mod@format): the single-file layout (magic, checksummed JSON header,
//!   64-byte aligned f16/f32 embedding and centroid blocks) and atomic writes.
//! * [`library`]: [`Library`] (open, memory-mapped, verified) with exact
//!   cosine search per category and pattern-level search.
//! * [`writer`]: [`LibraryWriter`] (one writer at a time, by a lock file):
//!   build, add, remove, always a new file renamed over the old.
//! * [`ann`]: the optional approximate (HNSW) index of large categories.
//! * [`scan`]: the exact-scan kernels (SIMD f16 dot products for one query,
//!   tiled matrix products for a batch) and the running top-`k`.
//!
//! ```no_run
//! use fos_index::Library;
//! let lib = Library::open("lib.fos".as_ref())?;
//! let q = vec![0.0f32; lib.dim()];
//! for (row, score) in lib.search("person", &q, 10, |_| true)? {
//!     println!("{} {score:.3}", lib.entry(row).id);
//! }
//! # Ok::<(), fos_index::IndexError>(())
//! ```

#![warn(missing_docs)]

pub mod ann;
pub mod format;
pub mod library;
pub mod scan;
pub mod store;
pub mod writer;

pub use format::{Dtype, Entry};
pub use library::Library;
pub use store::{AspectFilter, PatternHits, Store};
pub use writer::LibraryWriter;

use std::path::PathBuf;

/// Everything that can go wrong with a library file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a library, of another version, truncated or corrupt.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process is writing the library.
    #[error("{0} is being written by another fos process (lock held); try again when it is done")]
    Locked(PathBuf),
    /// A request that the library cannot answer.
    #[error("{0}")]
    Invalid(String),
}
