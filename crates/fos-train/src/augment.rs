//! Augmentation (method.md): random white padding of cut-outs, colour jitter
//! (brightness, contrast, saturation, hue), and for queries a resized
//! rectangle and a random zoom of the square that keeps the rectangle in view.

use fos_image::compose::Rect;
use fos_model::query::{square_around, Square};
use image::{Rgb, RgbImage, RgbaImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Augmentation strengths.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Extra transparent margin per side, up to this fraction of the cut-out's
    /// longer side (becomes white on the square).
    pub pad: f32,
    /// Brightness factor range `1 +- brightness`.
    pub brightness: f32,
    /// Contrast factor range `1 +- contrast`.
    pub contrast: f32,
    /// Saturation factor range `1 +- saturation`.
    pub saturation: f32,
    /// Hue shift range, a fraction of the colour circle (`+- hue`).
    pub hue: f32,
    /// The query rectangle's width and height are scaled by `1 +- rect_resize`.
    pub rect_resize: f32,
    /// Random zoom of the query square (keeping the rectangle in view).
    pub zoom: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            pad: 0.3,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.2,
            rect_resize: 0.5,
            zoom: true,
        }
    }
}

fn factor(rng: &mut impl Rng, s: f32) -> f32 {
    if s <= 0.0 {
        1.0
    } else {
        rng.random_range((1.0 - s).max(0.0)..=1.0 + s)
    }
}

/// A colour transform drawn once and applied to many pixels.
#[derive(Debug, Clone, Copy)]
pub struct Jitter {
    b: f32,
    c: f32,
    s: f32,
    h: f32,
}

impl Jitter {
    /// Draws factors in the configured ranges.
    pub fn draw(rng: &mut impl Rng, cfg: &AugmentConfig) -> Self {
        Jitter {
            b: factor(rng, cfg.brightness),
            c: factor(rng, cfg.contrast),
            s: factor(rng, cfg.saturation),
            h: if cfg.hue > 0.0 {
                rng.random_range(-cfg.hue..=cfg.hue)
            } else {
                0.0
            },
        }
    }

    /// Applies brightness, contrast (around `mean_grey`), saturation and hue.
    pub fn apply(&self, p: [u8; 3], mean_grey: f32) -> [u8; 3] {
        let mut v = p.map(|x| x as f32 * self.b);
        v = v.map(|x| (x - mean_grey * self.b) * self.c + mean_grey * self.b);
        let g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
        v = v.map(|x| g + (x - g) * self.s);
        if self.h != 0.0 {
            v = rotate_hue(v, self.h);
        }
        v.map(|x| x.round().clamp(0.0, 255.0) as u8)
    }
}

/// Rotates the hue of an RGB colour by `turn` of the circle (a rotation
/// about the grey axis, which keeps luma close).
fn rotate_hue(v: [f32; 3], turn: f32) -> [f32; 3] {
    let a = turn * std::f32::consts::TAU;
    let (c, s) = (a.cos(), a.sin());
    let k: f32 = 1.0 / 3.0;
    let r = k.sqrt() * s;
    let m = [
        [c + (1.0 - c) * k, k * (1.0 - c) - r, k * (1.0 - c) + r],
        [k * (1.0 - c) + r, c + k * (1.0 - c), k * (1.0 - c) - r],
        [k * (1.0 - c) - r, k * (1.0 - c) + r, c + k * (1.0 - c)],
    ];
    [0, 1, 2].map(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2])
}

fn mean_grey<'a>(pixels: impl Iterator<Item = &'a [u8]>) -> f32 {
    let (mut sum, mut n) = (0f64, 0f64);
    for p in pixels {
        sum += 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        n += 1.0;
    }
    if n > 0.0 {
        (sum / n) as f32
    } else {
        128.0
    }
}

/// Colour-jitters an RGB image in place.
pub fn jitter_rgb(img: &mut RgbImage, j: &Jitter) {
    let g = mean_grey(img.pixels().map(|p| &p.0[..]));
    for p in img.pixels_mut() {
        *p = Rgb(j.apply(p.0, g));
    }
}

/// Colour-jitters the visible pixels of a cut-out in place.
pub fn jitter_rgba(img: &mut RgbaImage, j: &Jitter) {
    let g = mean_grey(img.pixels().filter(|p| p.0[3] > 0).map(|p| &p.0[..3]));
    for p in img.pixels_mut() {
        if p.0[3] > 0 {
            let c = j.apply([p.0[0], p.0[1], p.0[2]], g);
            p.0[..3].copy_from_slice(&c);
        }
    }
}

/// The cut-out with a random transparent margin on each side (white once
/// put on its square): the offline padding augmentation.
pub fn pad_cutout(fg: &RgbaImage, rng: &mut impl Rng, frac: f32) -> RgbaImage {
    let long = fg.width().max(fg.height()) as f32;
    let mut m = || (rng.random_range(0.0..=frac.max(0.0)) * long).round() as u32;
    let (l, t, r, b) = (m(), m(), m(), m());
    let mut out = RgbaImage::new(fg.width() + l + r, fg.height() + t + b);
    image::imageops::replace(&mut out, fg, l as i64, t as i64);
    out
}

/// An augmented query geometry for a photo of `w` x `h` and rectangle `r`:
/// the rectangle resized about its centre by up to `rect_resize` (kept inside
/// the photo), then the context square zoomed in by a random amount, placed at
/// random, always containing the whole rectangle.
pub fn jitter_query(
    w: u32,
    h: u32,
    r: Rect,
    rng: &mut impl Rng,
    cfg: &AugmentConfig,
) -> (Square, Rect) {
    let (fw, fh) = (factor(rng, cfg.rect_resize), factor(rng, cfg.rect_resize));
    let (cx, cy) = (r.x + r.w / 2.0, r.y + r.h / 2.0);
    let nw = (r.w * fw as f64).clamp(2.0, w as f64);
    let nh = (r.h * fh as f64).clamp(2.0, h as f64);
    let rect = Rect {
        x: (cx - nw / 2.0).clamp(0.0, w as f64 - nw),
        y: (cy - nh / 2.0).clamp(0.0, h as f64 - nh),
        w: nw,
        h: nh,
    };
    let base = square_around(w, h, rect);
    if !cfg.zoom {
        return (base, rect);
    }
    let min_side = rect.w.max(rect.h) * 1.05;
    if min_side >= base.side {
        return (base, rect);
    }
    let side = rng.random_range(min_side..=base.side);
    // Any placement with the rectangle inside the square and the square inside
    // the photo (the photo is at least `side` on both axes here).
    let place = |rng: &mut dyn rand::RngCore, start: f64, len: f64, extent: f64| -> f64 {
        let lo = (start + len - side).max(0.0);
        let hi = start.min(extent - side).max(lo);
        lo + (hi - lo) * (rng.next_u32() as f64 / u32::MAX as f64)
    };
    let s = Square {
        x: place(rng, rect.x, rect.w, w as f64),
        y: place(rng, rect.y, rect.h, h as f64),
        side,
    };
    (s, rect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn query_jitter_keeps_the_rectangle_in_the_square_and_photo() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cfg = AugmentConfig::default();
        let r = Rect {
            x: 100.0,
            y: 50.0,
            w: 80.0,
            h: 200.0,
        };
        for _ in 0..500 {
            let (s, q) = jitter_query(640, 480, r, &mut rng, &cfg);
            assert!(q.x >= 0.0 && q.y >= 0.0 && q.x + q.w <= 640.0 && q.y + q.h <= 480.0);
            assert!(q.w >= r.w * 0.5 - 1e-9 && q.w <= r.w * 1.5 + 1e-9, "{q:?}");
            assert!(s.x <= q.x + 1e-6 && s.y <= q.y + 1e-6, "{s:?} {q:?}");
            assert!(s.x + s.side >= q.x + q.w - 1e-6 && s.y + s.side >= q.y + q.h - 1e-6);
            assert!(s.side <= 480.0 + 1e-9);
        }
    }

    #[test]
    fn jitter_is_identity_at_zero_strength_and_keeps_grey_under_hue() {
        let cfg = AugmentConfig {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let j = Jitter::draw(&mut rng, &cfg);
        assert_eq!(j.apply([10, 200, 30], 90.0), [10, 200, 30]);
        let grey = rotate_hue([100.0, 100.0, 100.0], 0.3);
        assert!(grey.iter().all(|v| (v - 100.0).abs() < 1e-3));
        let red = rotate_hue([255.0, 0.0, 0.0], 1.0 / 3.0);
        assert!(red[1] > 250.0, "{red:?}");
    }

    #[test]
    fn padding_adds_transparent_margins() {
        let fg = RgbaImage::from_pixel(10, 20, image::Rgba([1, 2, 3, 255]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let p = pad_cutout(&fg, &mut rng, 0.3);
        assert!(p.width() >= 10 && p.width() <= 22 && p.height() >= 20 && p.height() <= 32);
        let opaque = p.pixels().filter(|q| q.0[3] == 255).count();
        assert_eq!(opaque, 200);
    }
}
