//! SIMD resizing with fast_image_resize. The convolution filters follow Pillow's
//! definitions, so a bilinear downscale here matches `PIL.Image.resize(...,
//! BILINEAR)` to within rounding, which keeps the network inputs comparable with
//! the Python reference.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};

use crate::{ImageError, RgbImage, RgbaImage};

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Nearest neighbour (masks, labels).
    Nearest,
    /// Bilinear (triangle) convolution, as Pillow's `BILINEAR`.
    #[default]
    Bilinear,
    /// Lanczos3 convolution, sharper (previews).
    Lanczos3,
}

impl Filter {
    fn options(self) -> ResizeOptions {
        let alg = match self {
            Filter::Nearest => ResizeAlg::Nearest,
            Filter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Filter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
        };
        ResizeOptions::new().resize_alg(alg)
    }
}

fn check(w: u32, h: u32) -> Result<(), ImageError> {
    if w == 0 || h == 0 {
        return Err(ImageError::Resize(format!("target size {w}x{h} is empty")));
    }
    Ok(())
}

/// Resizes an RGB image to exactly `width x height`.
pub fn resize_rgb(
    src: &RgbImage,
    width: u32,
    height: u32,
    filter: Filter,
) -> Result<RgbImage, ImageError> {
    check(width, height)?;
    if src.dimensions() == (width, height) {
        return Ok(src.clone());
    }
    let mut dst = RgbImage::new(width, height);
    Resizer::new()
        .resize(src, &mut dst, &filter.options())
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    Ok(dst)
}

/// Resizes an RGBA image to exactly `width x height`; colour is resized
/// premultiplied by alpha so that transparent pixels do not bleed into edges.
pub fn resize_rgba(
    src: &RgbaImage,
    width: u32,
    height: u32,
    filter: Filter,
) -> Result<RgbaImage, ImageError> {
    check(width, height)?;
    if src.dimensions() == (width, height) {
        return Ok(src.clone());
    }
    let mut dst = RgbaImage::new(width, height);
    Resizer::new()
        .resize(src, &mut dst, &filter.options().use_alpha(true))
        .map_err(|e| ImageError::Resize(e.to_string()))?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let src = RgbImage::from_pixel(37, 23, image::Rgb([10, 200, 77]));
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Lanczos3] {
            let dst = resize_rgb(&src, 11, 50, f).unwrap();
            assert_eq!(dst.dimensions(), (11, 50));
            assert!(dst.pixels().all(|p| p.0 == [10, 200, 77]), "{f:?}");
        }
    }

    #[test]
    fn transparent_pixels_do_not_bleed() {
        // Left half opaque red, right half fully transparent green.
        let src = RgbaImage::from_fn(16, 4, |x, _| {
            if x < 8 {
                image::Rgba([255, 0, 0, 255])
            } else {
                image::Rgba([0, 255, 0, 0])
            }
        });
        let dst = resize_rgba(&src, 7, 2, Filter::Bilinear).unwrap();
        for p in dst.pixels().filter(|p| p.0[3] > 0) {
            assert!(p.0[1] < 3, "green bled into an edge pixel: {p:?}");
        }
    }

    #[test]
    fn empty_target_is_an_error() {
        let src = RgbImage::new(4, 4);
        assert!(resize_rgb(&src, 0, 3, Filter::Bilinear).is_err());
    }
}
