//! Compositing: cut-outs on white squares (the network's view of a foreground)
//! and cut-outs pasted into a rectangle of a background (the preview a user
//! sees).

use image::{Rgb, RgbImage, RgbaImage};

use crate::resize::{resize_rgba, Filter};
use crate::ImageError;

/// The cut-out alpha-blended over white, centred on a white square whose side
/// is the cut-out's longer side (the foreground encoder's input; method.md).
pub fn on_white_square(fg: &RgbaImage) -> RgbImage {
    let side = fg.width().max(fg.height()).max(1);
    let mut out = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let (ox, oy) = ((side - fg.width()) / 2, (side - fg.height()) / 2);
    for (x, y, p) in fg.enumerate_pixels() {
        let a = p.0[3] as u32;
        let px = out.get_pixel_mut(ox + x, oy + y);
        for c in 0..3 {
            px.0[c] = ((p.0[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// A rectangle in pixels of a background.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// Pastes `fg` into `rect` of `bg`: scaled to fit inside the rectangle keeping
/// its aspect ratio, centred horizontally, bottom-aligned (objects stand on the
/// rectangle's bottom edge), alpha-blended. Returns the pixel box it covers.
pub fn paste(bg: &mut RgbImage, fg: &RgbaImage, rect: Rect) -> Result<[u32; 4], ImageError> {
    if fg.width() == 0 || fg.height() == 0 || !(rect.w >= 1.0 && rect.h >= 1.0) {
        return Err(ImageError::Resize("nothing to paste".into()));
    }
    let s = (rect.w / fg.width() as f64).min(rect.h / fg.height() as f64);
    let w = ((fg.width() as f64 * s).round() as u32).max(1);
    let h = ((fg.height() as f64 * s).round() as u32).max(1);
    let scaled = resize_rgba(fg, w, h, Filter::Lanczos3)?;
    let x0 = (rect.x + (rect.w - w as f64) / 2.0).round() as i64;
    let y0 = (rect.y + rect.h - h as f64).round() as i64;
    for (x, y, p) in scaled.enumerate_pixels() {
        let (bx, by) = (x0 + x as i64, y0 + y as i64);
        if bx < 0 || by < 0 || bx >= bg.width() as i64 || by >= bg.height() as i64 {
            continue;
        }
        let a = p.0[3] as u32;
        if a == 0 {
            continue;
        }
        let q = bg.get_pixel_mut(bx as u32, by as u32);
        for c in 0..3 {
            q.0[c] = ((p.0[c] as u32 * a + q.0[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
    Ok([x0.max(0) as u32, y0.max(0) as u32, w, h])
}

/// Tiles images into a contact sheet: `cols` columns of `cell` x `cell` cells,
/// each image scaled to fit its cell on a white ground.
pub fn contact_sheet(images: &[RgbImage], cols: u32, cell: u32) -> Result<RgbImage, ImageError> {
    let cols = cols.max(1);
    let rows = (images.len() as u32).div_ceil(cols).max(1);
    let gap = 6;
    let mut out = RgbImage::from_pixel(
        cols * (cell + gap) + gap,
        rows * (cell + gap) + gap,
        Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let s = (cell as f64 / img.width() as f64).min(cell as f64 / img.height() as f64);
        let w = ((img.width() as f64 * s).round() as u32).clamp(1, cell);
        let h = ((img.height() as f64 * s).round() as u32).clamp(1, cell);
        let small = crate::resize::resize_rgb(img, w, h, Filter::Bilinear)?;
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let ox = gap + c * (cell + gap) + (cell - w) / 2;
        let oy = gap + r * (cell + gap) + (cell - h) / 2;
        image::imageops::replace(&mut out, &small, ox as i64, oy as i64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_square_blends_alpha() {
        let mut fg = RgbaImage::from_pixel(4, 2, image::Rgba([0, 0, 0, 255]));
        fg.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        let sq = on_white_square(&fg);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [255; 3]); // padding
        assert_eq!(sq.get_pixel(0, 1).0, [255; 3]); // transparent pixel
        assert_eq!(sq.get_pixel(1, 1).0, [0; 3]);
    }

    #[test]
    fn paste_fits_and_bottom_aligns() {
        let mut bg = RgbImage::from_pixel(100, 100, Rgb([0, 0, 0]));
        let fg = RgbaImage::from_pixel(10, 20, image::Rgba([255, 255, 255, 255]));
        let b = paste(
            &mut bg,
            &fg,
            Rect {
                x: 10.0,
                y: 10.0,
                w: 40.0,
                h: 40.0,
            },
        )
        .unwrap();
        assert_eq!(b, [20, 10, 20, 40]);
        assert_eq!(bg.get_pixel(30, 30).0, [255; 3]);
        assert_eq!(bg.get_pixel(15, 30).0, [0; 3]);
        let sheet = contact_sheet(&[bg.clone(), bg], 2, 50).unwrap();
        assert_eq!(sheet.dimensions(), (2 * 56 + 6, 62));
    }
}
