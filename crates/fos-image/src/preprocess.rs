//! Network input preparation: the ImageNet evaluation transform.
//!
//! Shorter side resized (bilinear) to `round(size * 256 / 224)`, centre crop of
//! `size x size`, values scaled to [0, 1] and normalised with a per-channel mean
//! and standard deviation, laid out channel-major (CHW). This is exactly the
//! transform of the reference oracle (`shared/tools/reference/effnet_lite.py`),
//! including Python's round-half-to-even.

use crate::resize::{resize_rgb, Filter};
use crate::{ImageError, RgbImage};

/// ImageNet channel means (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A resize + centre-crop + normalise transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Side of the square network input.
    pub size: u32,
    /// Target of the shorter side before cropping (`size` or larger).
    pub resize_shorter: u32,
    /// Per-channel mean, subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Preprocess {
    /// The ImageNet evaluation transform for an input of `size x size`.
    pub fn imagenet(size: u32) -> Self {
        let shorter = (f64::from(size) * 256.0 / 224.0).round_ties_even() as u32;
        Self {
            size,
            resize_shorter: shorter,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Resize the shorter side to `size`, then centre-crop: a square image
    /// (a cut-out on a white square) is seen whole.
    pub fn fit(size: u32) -> Self {
        Self {
            size,
            resize_shorter: size,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Resizes and crops `img` to the `size x size` RGB image the network sees.
    pub fn crop(&self, img: &RgbImage) -> Result<RgbImage, ImageError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(ImageError::Resize("source image is empty".into()));
        }
        let short = f64::from(self.resize_shorter);
        let s = short / f64::from(w.min(h));
        let nw = ((f64::from(w) * s).round_ties_even() as u32).max(self.resize_shorter);
        let nh = ((f64::from(h) * s).round_ties_even() as u32).max(self.resize_shorter);
        let resized = resize_rgb(img, nw, nh, Filter::Bilinear)?;
        let (l, t) = ((nw - self.size) / 2, (nh - self.size) / 2);
        Ok(image::imageops::crop_imm(&resized, l, t, self.size, self.size).to_image())
    }

    /// Normalises an RGB image (of any size) into a CHW buffer.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let plane = (w * h) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(p.0[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// [`crop`](Self::crop) then [`normalize`](Self::normalize): `3 * size * size` floats.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>, ImageError> {
        Ok(self.normalize(&self.crop(img)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_targets_match_python_round() {
        assert_eq!(Preprocess::imagenet(224).resize_shorter, 256);
        assert_eq!(Preprocess::imagenet(240).resize_shorter, 274);
        assert_eq!(Preprocess::imagenet(260).resize_shorter, 297);
    }

    #[test]
    fn output_shape_and_normalisation() {
        let img = RgbImage::from_pixel(640, 480, image::Rgb([255, 0, 124]));
        let p = Preprocess::imagenet(224);
        let v = p.apply(&img).unwrap();
        assert_eq!(v.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((v[plane] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
        assert!((v[2 * plane + 17] - (124.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
    }

    #[test]
    fn tall_and_tiny_images_are_handled() {
        let p = Preprocess::imagenet(224);
        assert_eq!(
            p.crop(&RgbImage::new(3, 900)).unwrap().dimensions(),
            (224, 224)
        );
        assert_eq!(
            p.crop(&RgbImage::new(1, 1)).unwrap().dimensions(),
            (224, 224)
        );
    }
}
