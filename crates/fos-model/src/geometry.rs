//! The aspect-ratio channel of trained embeddings: two numbers appended to
//! every cut-out and query embedding so that their cosine mixes the learned
//! similarity with how well the aspect ratios agree (docs/training.md).

use image::RgbaImage;

/// The aspect-ratio channel: `ln(w / h)`, clamped to +-ln 4 (the data sets'
/// largest elongation), mapped to an angle in [-pi/2, pi/2], as (cos, sin).
/// The cosine of two such channels falls from 1 (same aspect) to -1 (a 4:1
/// against a 1:4 shape).
pub fn geometry_channel(aspect: f64) -> [f32; 2] {
    let l4 = 4f64.ln();
    let phi = aspect.max(1e-6).ln().clamp(-l4, l4) / l4 * std::f64::consts::FRAC_PI_2;
    [phi.cos() as f32, phi.sin() as f32]
}

/// `[sqrt(1 - w) e, sqrt(w) geometry_channel(aspect)]` for a unit vector `e`:
/// still a unit vector, and the cosine of two such embeddings is
/// `(1 - w) cos(e1, e2) + w cos(angle difference)`. `w` in [0, 1].
pub fn with_geometry(mut e: Vec<f32>, aspect: f64, w: f32) -> Vec<f32> {
    let w = w.clamp(0.0, 1.0);
    let a = (1.0 - w).sqrt();
    e.iter_mut().for_each(|v| *v *= a);
    let g = geometry_channel(aspect);
    e.extend([g[0] * w.sqrt(), g[1] * w.sqrt()]);
    e
}

/// Width / height of the visible part of a cut-out (alpha > 0); of the whole
/// image when nothing is visible.
pub fn alpha_aspect(img: &RgbaImage) -> f64 {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[3] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return img.width().max(1) as f64 / img.height().max(1) as f64;
    }
    (x1 - x0 + 1) as f64 / (y1 - y0 + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_channel_mixes_cosines_as_documented() {
        let e1 = vec![1.0, 0.0];
        let e2 = vec![0.6, 0.8];
        for w in [0.0f32, 0.3, 1.0] {
            let a = with_geometry(e1.clone(), 2.0, w);
            let b = with_geometry(e2.clone(), 0.5, w);
            let norm: f32 = a.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5);
            let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let g = geometry_channel(2.0);
            let h = geometry_channel(0.5);
            let want = (1.0 - w) * 0.6 + w * (g[0] * h[0] + g[1] * h[1]);
            assert!((cos - want).abs() < 1e-5, "{cos} vs {want}");
        }
        // Same aspect: 1; 4:1 against 1:4: -1.
        let c = |a: f64, b: f64| {
            let (g, h) = (geometry_channel(a), geometry_channel(b));
            g[0] * h[0] + g[1] * h[1]
        };
        assert!((c(1.5, 1.5) - 1.0).abs() < 1e-6);
        assert!((c(4.0, 0.25) + 1.0).abs() < 1e-6);
        assert!(c(1.0, 1.2) > c(1.0, 2.0));
    }

    #[test]
    fn alpha_aspect_uses_the_visible_box() {
        let mut img = RgbaImage::new(40, 10);
        for y in 2..8 {
            for x in 10..13 {
                img.put_pixel(x, y, image::Rgba([0, 0, 0, 255]));
            }
        }
        assert!((alpha_aspect(&img) - 0.5).abs() < 1e-9);
        assert!((alpha_aspect(&RgbaImage::new(40, 10)) - 4.0).abs() < 1e-9);
    }
}
