//! Guarded image decoding.
//!
//! The order of checks matters for hostile input: the file is read, its format is
//! sniffed from the bytes (not the extension), the header is parsed for the
//! dimensions, and only when `width * height` is within [`DecodeOptions::max_pixels`]
//! are the pixels decoded. EXIF orientation is then applied so that the image is
//! upright as a viewer shows it.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::{ImageError, RgbImage, RgbaImage};

/// Default pixel limit: 64 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// Options for [`load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`, checked from the header before decoding.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Reads and decodes an image file, upright (EXIF orientation applied).
pub fn load(path: &Path, opts: &DecodeOptions) -> Result<DynamicImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    decode_bytes(&bytes, path, opts)
}

/// Reads an image file as 8-bit RGB (alpha dropped), upright.
pub fn load_rgb(path: &Path, opts: &DecodeOptions) -> Result<RgbImage, ImageError> {
    Ok(load(path, opts)?.into_rgb8())
}

/// Reads an image file as 8-bit RGBA (opaque if the file has no alpha), upright.
pub fn load_rgba(path: &Path, opts: &DecodeOptions) -> Result<RgbaImage, ImageError> {
    Ok(load(path, opts)?.into_rgba8())
}

/// Decodes an in-memory image; `path` only names it in errors (use the upload's
/// name for network input).
pub fn decode_bytes(
    bytes: &[u8],
    path: &Path,
    opts: &DecodeOptions,
) -> Result<DynamicImage, ImageError> {
    let corrupt = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ImageError::Corrupt {
            path: path.to_owned(),
            reason: format!("decoder memory limit exceeded ({e})"),
        },
        other => ImageError::Corrupt {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    };
    let format = image::guess_format(bytes).map_err(|_| ImageError::NotAnImage {
        path: path.to_owned(),
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
    ) {
        return Err(ImageError::NotAnImage {
            path: path.to_owned(),
        });
    }
    // Dimensions straight from the header bytes, before any decoder runs: a bomb is
    // refused even when the rest of the file is missing or hostile.
    if let Ok(size) = imagesize::blob_size(bytes) {
        check_size(path, size.width as u64, size.height as u64, opts)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // Bytes of the largest accepted image at 16 bits x 4 channels, plus slack.
    limits.max_alloc = Some(opts.max_pixels.saturating_mul(8).saturating_add(1 << 26));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_size(path, width.into(), height.into(), opts)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(ImageError::Corrupt {
            path: path.to_owned(),
            reason: "JPEG data ends before its end-of-image marker (truncated file)".into(),
        });
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn check_size(
    path: &Path,
    width: u64,
    height: u64,
    opts: &DecodeOptions,
) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            path: path.to_owned(),
        });
    }
    if width.saturating_mul(height) > opts.max_pixels {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            width,
            height,
            limit: opts.max_pixels,
        });
    }
    Ok(())
}

/// True when a JPEG stream holds its end-of-image marker (FF D9) near its end.
///
/// The JPEG decoder pads a truncated scan with grey instead of failing, which
/// would silently feed half an image to the models. Writers may append a few
/// bytes of padding after the marker, so the last 64 bytes are searched.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(64)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    fn png_bytes(w: u32, h: u32, rgba: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let (ch, ty) = if rgba {
            (4, ExtendedColorType::Rgba8)
        } else {
            (3, ExtendedColorType::Rgb8)
        };
        let px: Vec<u8> = (0..w * h * ch).map(|i| (i % 251) as u8).collect();
        PngEncoder::new(&mut out)
            .write_image(&px, w, h, ty)
            .unwrap();
        out
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    /// A valid PNG whose IHDR claims `w x h` (CRC fixed up), with no pixel data.
    pub(crate) fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut b = png_bytes(4, 4, false);
        b[16..20].copy_from_slice(&w.to_be_bytes());
        b[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&b[12..29]);
        b[29..33].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &byte in data {
            c ^= u32::from(byte);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn decodes_png_with_alpha() {
        let img = decode_bytes(
            &png_bytes(5, 3, true),
            Path::new("a.png"),
            &Default::default(),
        )
        .unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        assert!(img.color().has_alpha());
    }

    #[test]
    fn decodes_lossless_webp_with_alpha() {
        let img = RgbaImage::from_fn(6, 4, |x, y| {
            image::Rgba([x as u8 * 40, y as u8 * 60, 9, 128])
        });
        let mut out = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .write_image(img.as_raw(), 6, 4, ExtendedColorType::Rgba8)
            .unwrap();
        let back = decode_bytes(&out, Path::new("a.webp"), &Default::default()).unwrap();
        assert_eq!(back.into_rgba8(), img);
    }

    #[test]
    fn refuses_bomb_before_decoding() {
        let b = png_header_claiming(100_000, 100_000);
        let err = decode_bytes(&b, Path::new("bomb.png"), &Default::default()).unwrap_err();
        assert!(
            matches!(err, ImageError::TooLarge { width: 100_000, .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_jpeg_bomb_from_its_frame_header() {
        let mut j = jpeg_bytes(16, 16);
        // Patch the SOF0 frame header (FF C0 len P Y X) to claim 60000x60000.
        let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        j[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
        j[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
        let err = decode_bytes(&j, Path::new("bomb.jpg"), &Default::default()).unwrap_err();
        assert!(
            matches!(err, ImageError::TooLarge { width: 60000, .. }),
            "{err}"
        );
    }

    #[test]
    fn pixel_limit_is_configurable() {
        let b = png_bytes(10, 10, false);
        let opts = DecodeOptions { max_pixels: 99 };
        assert!(matches!(
            decode_bytes(&b, Path::new("x.png"), &opts),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(decode_bytes(&b, Path::new("x.png"), &DecodeOptions { max_pixels: 100 }).is_ok());
    }

    #[test]
    fn refuses_text_and_empty() {
        for bytes in [&b"hello, I am text"[..], &b""[..]] {
            let err = decode_bytes(bytes, Path::new("t.jpg"), &Default::default()).unwrap_err();
            assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        }
    }

    #[test]
    fn refuses_truncated_jpeg_and_png() {
        let j = jpeg_bytes(64, 48);
        assert!(decode_bytes(&j, Path::new("ok.jpg"), &Default::default()).is_ok());
        for cut in [j.len() / 2, j.len() - 10] {
            let err = decode_bytes(&j[..cut], Path::new("t.jpg"), &Default::default()).unwrap_err();
            assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
        }
        let p = png_bytes(64, 48, false);
        let err =
            decode_bytes(&p[..p.len() / 2], Path::new("t.png"), &Default::default()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = load(Path::new("/nonexistent/x.jpg"), &Default::default()).unwrap_err();
        assert!(matches!(err, ImageError::Io { .. }));
    }

    #[test]
    fn applies_exif_orientation() {
        // A 4x2 JPEG with an APP1 Exif segment saying "rotate 90 CW" (orientation 6).
        let j = jpeg_bytes(4, 2);
        let tiff: Vec<u8> = [
            &b"II*\0"[..],
            &8u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &0x0112u16.to_le_bytes(),
            &3u16.to_le_bytes(),
            &1u32.to_le_bytes(),
            &6u16.to_le_bytes(),
            &[0, 0],
            &0u32.to_le_bytes(),
        ]
        .concat();
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE1];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&app1);
        b.extend_from_slice(&j[2..]);
        let img = decode_bytes(&b, Path::new("r.jpg"), &Default::default()).unwrap();
        assert_eq!((img.width(), img.height()), (2, 4));
    }
}
