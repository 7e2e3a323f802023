//! Embeddings from a pretrained backbone alone: the stand-in encoder that
//! indexing, search, pattern clustering and the `pretrained` baseline use
//! until a trained model is given.
//!
//! A foreground is seen as the cut-out on a white square (method.md); a query
//! as the square context crop around the rectangle, with the rectangle filled
//! grey. Both are the backbone's pooled features, L2-normalised.

use burn::tensor::Device;
use fos_image::compose::{on_white_square, Rect};
use image::{RgbImage, RgbaImage};

use crate::backbone::Backbone;
use crate::query::{crop_square, square_around};
use crate::ModelError;

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// What search needs of a model: embeddings of cut-outs and of queries in one
/// space, and a fingerprint that names the model exactly (an index made with
/// one model is refused by another).
pub trait Encoder: Send + Sync {
    /// Names the model and its weights, e.g.
    /// `pretrained:efficientnet-lite0:sha256=1a2b...`.
    fn fingerprint(&self) -> String;
    /// Embedding size.
    fn dim(&self) -> usize;
    /// L2-normalised embeddings of cut-outs.
    fn foregrounds(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// L2-normalised embedding of a query (background + rectangle).
    fn query(&self, background: &RgbImage, rect: Rect) -> Result<Vec<f32>, ModelError>;
    /// The DiscoFOS re-ranker of this model, if it has one.
    fn reranker(&self) -> Option<&dyn Reranker> {
        None
    }
}

/// Scores (query, cut-out) pairs directly, more accurately and more slowly
/// than embeddings: used on the top candidates of a search.
pub trait Reranker: Send + Sync {
    /// Compatibility of each cut-out with the query (higher is better).
    fn rerank(
        &self,
        background: &RgbImage,
        rect: Rect,
        cutouts: &[RgbaImage],
    ) -> Result<Vec<f32>, ModelError>;
}

/// A backbone used as an embedding function.
pub struct PretrainedEncoder {
    /// The network.
    pub backbone: Backbone,
    device: Device,
    fingerprint: String,
}

impl PretrainedEncoder {
    /// Wraps a loaded backbone; `weights_digest` identifies its weights.
    pub fn new(backbone: Backbone, device: Device) -> Self {
        let fingerprint = format!("pretrained:{}", backbone.kind().name());
        PretrainedEncoder {
            backbone,
            device,
            fingerprint,
        }
    }

    /// Loads the installed weights of `kind` and fingerprints them by the
    /// digest of their tensors.
    pub fn load(kind: crate::backbone::BackboneKind, device: Device) -> Result<Self, ModelError> {
        let (backbone, digest) = crate::trained::load_backbone(kind, &device)?;
        let mut enc = Self::new(backbone, device);
        enc.fingerprint = format!("pretrained:{}:sha256={}", kind.name(), &digest[..16]);
        Ok(enc)
    }

    fn pooled(&self, squares: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (mut pooled, _, _) = crate::trained::features(&self.backbone, squares, &self.device)?;
        pooled.iter_mut().for_each(|c| l2_normalize(c));
        Ok(pooled)
    }
}

impl Encoder for PretrainedEncoder {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn dim(&self) -> usize {
        self.backbone.kind().feature_dim()
    }

    /// The cut-out on a white square (one forward pass for the slice).
    fn foregrounds(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        self.pooled(&squares)
    }

    /// The context square around `rect` with the rectangle filled grey.
    fn query(&self, background: &RgbImage, rect: Rect) -> Result<Vec<f32>, ModelError> {
        let s = square_around(background.width(), background.height(), rect);
        let size = self.backbone.kind().input_size();
        let sq = crop_square(background, s, Some(rect), size)?;
        Ok(self.pooled(&[sq])?.remove(0))
    }
}
