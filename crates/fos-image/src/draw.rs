//! Drawing for charts and plots: filled rectangles, lines and 8x8 bitmap text.

use image::{Rgb, RgbImage};

/// Writes `s` at (`x`, `y`) in dark grey, each glyph pixel `scale` pixels wide.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64) {
    for (k, ch) in s.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[(ch as usize).min(127)];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let px = x + (k as i64 * 8 + col) * scale + dx;
                            let py = y + row as i64 * scale + dy;
                            put(img, px, py, [20, 20, 20]);
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// Fills the rectangle at (`x`, `y`) of size `w` x `h` (clipped to the image).
pub fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: [u8; 3]) {
    for yy in y..(y.saturating_add(h)).min(img.height()) {
        for xx in x..(x.saturating_add(w)).min(img.width()) {
            img.put_pixel(xx, yy, Rgb(c));
        }
    }
}

/// A 2-pixel line from `a` to `b` (clipped to the image).
pub fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: [u8; 3]) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            put(img, x as i64 + dx, y as i64 + dy, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_is_clipped_and_visible() {
        let mut img = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        fill_rect(&mut img, 15, 5, 100, 100, [1, 2, 3]);
        assert_eq!(img.get_pixel(19, 9).0, [1, 2, 3]);
        line(&mut img, (0.0, 0.0), (30.0, 30.0), [9, 9, 9]);
        assert_eq!(img.get_pixel(5, 5).0, [9, 9, 9]);
        text(&mut img, 0, 0, "A", 1);
        assert!(img.pixels().any(|p| p.0 == [20, 20, 20]));
    }
}
