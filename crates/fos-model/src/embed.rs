//! Embeddings from a pretrained backbone alone: the stand-in encoder that
//! indexing, search, pattern clustering and the `pretrained` baseline use
//! until a trained model is given.
//!
//! A foreground is seen as the cut-out on a white square (method.md); a query
//! as the square context crop around the rectangle, with the rectangle filled
//! grey. Both are the backbone's pooled features, L2-normalised.

use burn::tensor::Device;
use fos_image::compose::{on_white_square, Rect};
use fos_image::preprocess::Preprocess;
use image::{RgbImage, RgbaImage};

use crate::backbone::{batch, Backbone};
use crate::query::{crop_square, square_around};
use crate::ModelError;

/// L2-normalises `v` in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// A backbone used as an embedding function.
pub struct PretrainedEncoder {
    /// The network.
    pub backbone: Backbone,
    device: Device,
}

impl PretrainedEncoder {
    /// Wraps a loaded backbone.
    pub fn new(backbone: Backbone, device: Device) -> Self {
        PretrainedEncoder { backbone, device }
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.backbone.kind().feature_dim()
    }

    fn pooled(&self, squares: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        if squares.is_empty() {
            return Ok(vec![]);
        }
        let size = self.backbone.kind().input_size();
        let pre = Preprocess::fit(size);
        let chw = squares
            .iter()
            .map(|i| pre.apply(i))
            .collect::<Result<Vec<_>, _>>()?;
        let f = self.backbone.forward(batch(&chw, size, &self.device)?);
        let v = crate::to_vec(f.pooled)?;
        let d = self.dim();
        Ok(v.chunks(d)
            .map(|c| {
                let mut c = c.to_vec();
                l2_normalize(&mut c);
                c
            })
            .collect())
    }

    /// Embeddings of cut-outs (one forward pass for the slice).
    pub fn foregrounds(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        self.pooled(&squares)
    }

    /// Embedding of a query: the context square around `rect` with the
    /// rectangle filled grey.
    pub fn query(&self, background: &RgbImage, rect: Rect) -> Result<Vec<f32>, ModelError> {
        let s = square_around(background.width(), background.height(), rect);
        let size = self.backbone.kind().input_size();
        let sq = crop_square(background, s, Some(rect), size)?;
        Ok(self.pooled(&[sq])?.remove(0))
    }
}
