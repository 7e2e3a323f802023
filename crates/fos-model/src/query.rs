//! The query side of search: the square context crop around the rectangle and
//! the layout vector (method.md, method A, stage 2).

use fos_image::compose::Rect;
use image::{Rgb, RgbImage};

/// The square of the photo a query encoder sees: top-left corner and side, in
/// photo pixels (it may reach outside the photo when the rectangle is larger
/// than the photo's shorter side; that part is filled grey).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Square {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Side.
    pub side: f64,
}

/// The rectangle relative to the square: centre x, centre y, width, height,
/// each divided by the side and rounded to two decimals.
pub type Layout = [f32; 4];

/// The square placed so that the rectangle is as close to its centre as
/// possible while keeping as much context as possible: side = the photo's
/// shorter side (or the rectangle's longer side if that is larger), centred on
/// the rectangle, then shifted to stay inside the photo.
pub fn square_around(width: u32, height: u32, r: Rect) -> Square {
    let (w, h) = (width as f64, height as f64);
    let side = w.min(h).max(r.w.max(r.h)).max(1.0);
    let place = |centre: f64, extent: f64| -> f64 {
        let start = centre - side / 2.0;
        if side <= extent {
            start.clamp(0.0, extent - side)
        } else {
            // Larger than the photo on this axis: centre the photo in it.
            (extent - side) / 2.0
        }
    };
    Square {
        x: place(r.x + r.w / 2.0, w),
        y: place(r.y + r.h / 2.0, h),
        side,
    }
}

/// The layout vector of `r` in square `s`.
pub fn layout(s: Square, r: Rect) -> Layout {
    let q = |v: f64| ((v / s.side * 100.0).round() / 100.0) as f32;
    [
        q(r.x + r.w / 2.0 - s.x),
        q(r.y + r.h / 2.0 - s.y),
        q(r.w),
        q(r.h),
    ]
}

/// Cuts square `s` out of `photo` (grey outside the photo) and resizes it to
/// `size` x `size`; with `fill`, the rectangle `r` is painted grey (128), as
/// DiscoFOS marks the place of the missing object.
pub fn crop_square(
    photo: &RgbImage,
    s: Square,
    r: Option<Rect>,
    size: u32,
) -> Result<RgbImage, fos_image::ImageError> {
    crop_square_filled(photo, s, r.map(|r| (r, GREY)), size)
}

/// The grey DiscoFOS paints the rectangle with.
pub const GREY: Rgb<u8> = Rgb([128, 128, 128]);

/// The mean colour of `photo` (the early-fusion baseline fills the rectangle
/// with it, Zhao et al. 2018).
pub fn mean_colour(photo: &RgbImage) -> Rgb<u8> {
    let mut acc = [0u64; 3];
    for p in photo.pixels() {
        (0..3).for_each(|c| acc[c] += p.0[c] as u64);
    }
    let n = (photo.width() as u64 * photo.height() as u64).max(1);
    Rgb(acc.map(|a| (a / n) as u8))
}

/// As [`crop_square`], painting the rectangle with the given colour.
pub fn crop_square_filled(
    photo: &RgbImage,
    s: Square,
    fill: Option<(Rect, Rgb<u8>)>,
    size: u32,
) -> Result<RgbImage, fos_image::ImageError> {
    let side = s.side.round().max(1.0) as u32;
    let (x0, y0) = (s.x.round() as i64, s.y.round() as i64);
    let mut sq = RgbImage::from_pixel(side, side, GREY);
    for y in 0..side {
        let py = y0 + y as i64;
        if py < 0 || py >= photo.height() as i64 {
            continue;
        }
        for x in 0..side {
            let px = x0 + x as i64;
            if px >= 0 && px < photo.width() as i64 {
                sq.put_pixel(x, y, *photo.get_pixel(px as u32, py as u32));
            }
        }
    }
    if let Some((r, colour)) = fill {
        let (rx0, ry0) = (
            (r.x - s.x).round().max(0.0) as u32,
            (r.y - s.y).round().max(0.0) as u32,
        );
        let (rx1, ry1) = (
            ((r.x + r.w - s.x).round().max(0.0) as u32).min(side),
            ((r.y + r.h - s.y).round().max(0.0) as u32).min(side),
        );
        for y in ry0..ry1 {
            for x in rx0..rx1 {
                sq.put_pixel(x, y, colour);
            }
        }
    }
    fos_image::resize::resize_rgb(&sq, size, size, fos_image::resize::Filter::Bilinear)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_keeps_context_and_centres_the_rectangle() {
        // Landscape photo, rectangle on the left: the square is pushed to x = 0.
        let r = Rect {
            x: 10.0,
            y: 100.0,
            w: 50.0,
            h: 100.0,
        };
        let s = square_around(640, 480, r);
        assert_eq!(
            s,
            Square {
                x: 0.0,
                y: 0.0,
                side: 480.0
            }
        );
        // Rectangle in the middle: centred.
        let r2 = Rect {
            x: 300.0,
            y: 200.0,
            w: 40.0,
            h: 80.0,
        };
        let s2 = square_around(640, 480, r2);
        assert_eq!(
            s2,
            Square {
                x: 80.0,
                y: 0.0,
                side: 480.0
            }
        );
        assert_eq!(layout(s2, r2), [0.5, 0.5, 0.08, 0.17]);
        // A rectangle wider than the photo is tall: the square grows.
        let r3 = Rect {
            x: 0.0,
            y: 0.0,
            w: 600.0,
            h: 100.0,
        };
        let s3 = square_around(640, 480, r3);
        assert_eq!((s3.side, s3.y), (600.0, -60.0));
        let img = RgbImage::from_pixel(640, 480, Rgb([0, 0, 0]));
        let c = crop_square(&img, s3, None, 60).unwrap();
        assert_eq!(c.get_pixel(30, 1).0, [128; 3]); // outside the photo
        assert_eq!(c.get_pixel(30, 30).0, [0; 3]);
        let f = crop_square(&img, s2, Some(r2), 480).unwrap();
        assert_eq!(f.get_pixel(240, 240).0, [128; 3]); // the filled rectangle
    }
}
