//! Encoding images to bytes and writing them atomically.

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use crate::ImageError;

fn enc_err(path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Encode {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// PNG bytes of 8-bit pixels (`channels` 1 = grey, 3 = RGB, 4 = RGBA).
pub fn png(pixels: &[u8], width: u32, height: u32, channels: u8) -> Result<Vec<u8>, ImageError> {
    let color = match channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        4 => ExtendedColorType::Rgba8,
        n => {
            return Err(ImageError::Resize(format!(
                "{n} channels cannot be written as PNG"
            )))
        }
    };
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(pixels, width, height, color)
        .map_err(|e| enc_err(Path::new("<png>"), e))?;
    Ok(out)
}

/// JPEG bytes of an RGB image at `quality` (1-100).
pub fn jpeg(img: &image::RgbImage, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| enc_err(Path::new("<jpeg>"), e))?;
    Ok(out)
}

/// Writes encoded bytes atomically (temp file + rename).
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    crate::atomic::write_atomic(path, bytes).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes an RGB or RGBA image as PNG, atomically.
pub fn save_png(path: &Path, img: &image::DynamicImage) -> Result<(), ImageError> {
    let bytes = match img {
        image::DynamicImage::ImageRgba8(i) => png(i.as_raw(), i.width(), i.height(), 4),
        image::DynamicImage::ImageLuma8(i) => png(i.as_raw(), i.width(), i.height(), 1),
        other => {
            let i = other.to_rgb8();
            png(i.as_raw(), i.width(), i.height(), 3)
        }
    }
    .map_err(|e| match e {
        ImageError::Encode { reason, .. } => enc_err(path, reason),
        e => e,
    })?;
    save(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_and_jpeg_is_close() {
        let img = image::RgbaImage::from_fn(7, 5, |x, y| {
            image::Rgba([x as u8 * 30, y as u8 * 40, 9, (x * y) as u8])
        });
        let bytes = png(img.as_raw(), 7, 5, 4).unwrap();
        let back = image::load_from_memory(&bytes).unwrap().to_rgba8();
        assert_eq!(back, img);
        let rgb = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 100, 50]));
        let j = image::load_from_memory(&jpeg(&rgb, 95).unwrap())
            .unwrap()
            .to_rgb8();
        assert!(j.pixels().all(|p| (p.0[0] as i32 - 200).abs() < 4));
        assert!(png(&[0; 4], 2, 2, 2).is_err());
    }
}
