//! Image utilities for fos: the one place where images enter and leave the product.
//!
//! * [`decode`]: guarded decoding of JPEG, PNG (with alpha) and WebP. The pixel count
//!   is checked from the header *before* any pixel is decoded, so a decompression
//!   bomb is refused cheaply; EXIF orientation is applied; truncated or corrupt files
//!   are clear errors.
//! * [`resize`]: SIMD resizing (fast_image_resize) with PIL-compatible filters.
//! * [`preprocess`]: the ImageNet network input (shorter side to `size*256/224`,
//!   centre crop, mean/std normalisation) as a CHW `f32` buffer.
//! * [`compose`]: cut-outs on white squares, pasted into rectangles, contact sheets.
//! * [`draw`]: rectangles, lines and bitmap text for charts.
//! * [`encode`]: PNG/JPEG encoding and atomic saving.
//! * [`atomic`]: write a file through a temporary file and a rename, so a crash
//!   never leaves a half-written file behind.
//!
//! ```no_run
//! use fos_image::{decode::{load_rgb, DecodeOptions}, preprocess::Preprocess};
//! let img = load_rgb("photo.jpg".as_ref(), &DecodeOptions::default())?;
//! let chw = Preprocess::imagenet(224).apply(&img)?; // 3 * 224 * 224 floats
//! assert_eq!(chw.len(), 3 * 224 * 224);
//! # Ok::<(), fos_image::ImageError>(())
//! ```

#![warn(missing_docs)]

pub mod atomic;
pub mod compose;
pub mod decode;
pub mod draw;
pub mod encode;
pub mod preprocess;
pub mod resize;

pub use image::{RgbImage, RgbaImage};

use std::path::PathBuf;

/// Everything that can go wrong when reading, resizing or writing an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not in any supported image format.
    #[error("{path}: not a supported image (JPEG, PNG or WebP expected)")]
    NotAnImage {
        /// The file concerned.
        path: PathBuf,
    },
    /// The header declares more pixels than allowed.
    #[error(
        "{path}: image of {width}x{height} pixels exceeds the limit of {limit} pixels \
         (raise it with --max-pixels if the image is genuine)"
    )]
    TooLarge {
        /// The file concerned.
        path: PathBuf,
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
        /// The pixel limit in force.
        limit: u64,
    },
    /// The image has a zero dimension.
    #[error("{path}: image has zero width or height")]
    Empty {
        /// The file concerned.
        path: PathBuf,
    },
    /// The file is truncated or corrupt.
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
    /// Resizing failed (invalid sizes).
    #[error("resize failed: {0}")]
    Resize(String),
    /// Encoding an output image failed.
    #[error("{path}: could not encode image: {reason}")]
    Encode {
        /// The file concerned.
        path: PathBuf,
        /// What the encoder reported.
        reason: String,
    },
}
