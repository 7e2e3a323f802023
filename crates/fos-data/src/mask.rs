//! Binary instance masks: COCO RLE (plain and compressed) and polygon decoding,
//! area, tight box, dilation.

use crate::DataError;

/// A binary mask over a `width` x `height` photo, row-major, one byte per pixel
/// (0 or 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major pixels, 0 or 1.
    pub data: Vec<u8>,
}

/// An axis-aligned box in pixels: `x, y` of the top-left corner, `w, h` sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PixelBox {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width (> 0).
    pub w: u32,
    /// Height (> 0).
    pub h: u32,
}

impl PixelBox {
    /// `[x, y, w, h]`, COCO order.
    pub fn to_array(self) -> [u32; 4] {
        [self.x, self.y, self.w, self.h]
    }
    /// Area in pixels.
    pub fn area(self) -> u64 {
        self.w as u64 * self.h as u64
    }
}

/// Largest mask the decoders accept (pixels), so that a hostile `size` field
/// cannot make fos allocate without bound.
pub const MAX_MASK_PIXELS: u64 = 100_000_000;

fn check_size(width: u32, height: u32) -> Result<(), DataError> {
    let n = width as u64 * height as u64;
    if n == 0 || n > MAX_MASK_PIXELS {
        return Err(DataError::BadMask(format!(
            "mask size {width}x{height} is empty or larger than {MAX_MASK_PIXELS} pixels"
        )));
    }
    Ok(())
}

impl Mask {
    /// An all-zero mask.
    pub fn new(width: u32, height: u32) -> Self {
        Mask {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        }
    }

    /// Decodes COCO run lengths: column-major (Fortran order), starting with a
    /// run of zeros. The runs must cover the mask exactly.
    pub fn from_rle_counts(width: u32, height: u32, counts: &[u64]) -> Result<Self, DataError> {
        check_size(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let total = (w * h) as u64;
        let sum: u64 = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
        if sum != total {
            return Err(DataError::BadMask(format!(
                "RLE runs cover {sum} pixels, the {width}x{height} mask has {total}"
            )));
        }
        let mut m = Mask::new(width, height);
        let mut pos = 0usize;
        for (i, &c) in counts.iter().enumerate() {
            let c = c as usize;
            if i % 2 == 1 {
                for k in pos..pos + c {
                    let (x, y) = (k / h, k % h);
                    m.data[y * w + x] = 1;
                }
            }
            pos += c;
        }
        Ok(m)
    }

    /// Decodes COCO's compressed RLE string (`pycocotools` `rleFrString`).
    pub fn from_rle_string(width: u32, height: u32, s: &str) -> Result<Self, DataError> {
        let counts = decode_rle_string(s)?;
        Self::from_rle_counts(width, height, &counts)
    }

    /// Rasterises COCO polygons (`[x0, y0, x1, y1, ...]` each) with the even-odd
    /// rule, sampling pixel centres; several polygons are united.
    pub fn from_polygons(
        width: u32,
        height: u32,
        polygons: &[Vec<f64>],
    ) -> Result<Self, DataError> {
        check_size(width, height)?;
        let mut m = Mask::new(width, height);
        let mut xs: Vec<f64> = Vec::new();
        for poly in polygons {
            if poly.len() < 6 || poly.len() % 2 != 0 || poly.iter().any(|v| !v.is_finite()) {
                return Err(DataError::BadMask(format!(
                    "a polygon needs at least 3 finite (x, y) points, got {} numbers",
                    poly.len()
                )));
            }
            let pts: Vec<(f64, f64)> = poly.chunks(2).map(|p| (p[0], p[1])).collect();
            let ymin = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let ymax = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let y0 = (ymin - 0.5).ceil().max(0.0) as u32;
            let y1 = ((ymax - 0.5).floor()).min(height as f64 - 1.0);
            if y1 < 0.0 {
                continue;
            }
            for y in y0..=y1 as u32 {
                let sy = y as f64 + 0.5;
                xs.clear();
                for i in 0..pts.len() {
                    let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                    if (a.1 <= sy) != (b.1 <= sy) {
                        xs.push(a.0 + (sy - a.1) / (b.1 - a.1) * (b.0 - a.0));
                    }
                }
                xs.sort_by(f64::total_cmp);
                for pair in xs.chunks(2) {
                    if pair.len() < 2 {
                        break;
                    }
                    let xa = (pair[0] - 0.5).ceil().max(0.0);
                    let xb = (pair[1] - 0.5).floor().min(width as f64 - 1.0);
                    if xb < xa {
                        continue;
                    }
                    let row = y as usize * width as usize;
                    for x in xa as usize..=xb as usize {
                        m.data[row + x] ^= 1;
                    }
                }
            }
        }
        Ok(m)
    }

    /// Number of pixels set.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| v as u64).sum()
    }

    /// Tight box around the set pixels, `None` when the mask is empty.
    pub fn bbox(&self) -> Option<PixelBox> {
        let w = self.width as usize;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for (i, &v) in self.data.iter().enumerate() {
            if v != 0 {
                let (x, y) = (i % w, i / w);
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        (x0 != usize::MAX).then(|| PixelBox {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0 + 1) as u32,
            h: (y1 - y0 + 1) as u32,
        })
    }

    /// The mask grown by `radius` pixels (a disc, by an exact Euclidean test
    /// over the square neighbourhood of each boundary pixel).
    pub fn dilate(&self, radius: u32) -> Mask {
        if radius == 0 {
            return self.clone();
        }
        let (w, h) = (self.width as i64, self.height as i64);
        let r = radius as i64;
        let mut out = self.clone();
        let offsets: Vec<(i64, i64)> = (-r..=r)
            .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
            .filter(|(dx, dy)| dx * dx + dy * dy <= r * r)
            .collect();
        for y in 0..h {
            for x in 0..w {
                if self.data[(y * w + x) as usize] == 0 {
                    continue;
                }
                // Interior pixels (all four neighbours set) add nothing new.
                let inner = x > 0
                    && y > 0
                    && x < w - 1
                    && y < h - 1
                    && self.data[(y * w + x - 1) as usize] != 0
                    && self.data[(y * w + x + 1) as usize] != 0
                    && self.data[((y - 1) * w + x) as usize] != 0
                    && self.data[((y + 1) * w + x) as usize] != 0;
                if inner {
                    continue;
                }
                for &(dx, dy) in &offsets {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx >= 0 && ny >= 0 && nx < w && ny < h {
                        out.data[(ny * w + nx) as usize] = 1;
                    }
                }
            }
        }
        out
    }

    /// Pixels set in both masks.
    pub fn intersection_area(&self, other: &Mask) -> u64 {
        self.data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| (a & b) as u64)
            .sum()
    }

    /// The mask cropped to `b` (which must lie inside it).
    pub fn crop(&self, b: PixelBox) -> Mask {
        let mut data = Vec::with_capacity(b.area() as usize);
        for y in b.y..b.y + b.h {
            let row = (y * self.width) as usize;
            data.extend_from_slice(&self.data[row + b.x as usize..row + (b.x + b.w) as usize]);
        }
        Mask {
            width: b.w,
            height: b.h,
            data,
        }
    }

    /// The mask as an 8-bit grey image (0 or 255).
    pub fn to_luma(&self) -> image::GrayImage {
        image::GrayImage::from_raw(
            self.width,
            self.height,
            self.data.iter().map(|&v| v * 255).collect(),
        )
        .expect("buffer matches the size")
    }

    /// A mask from a grey image: pixels >= 128 are set.
    pub fn from_luma(img: &image::GrayImage) -> Mask {
        Mask {
            width: img.width(),
            height: img.height(),
            data: img.pixels().map(|p| (p.0[0] >= 128) as u8).collect(),
        }
    }
}

/// Decodes COCO's compressed RLE string into run lengths (LEB128-like, 6 bits per
/// character offset by 48, counts after the second stored as differences).
pub fn decode_rle_string(s: &str) -> Result<Vec<u64>, DataError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let mut x: i64 = 0;
        let mut k = 0;
        loop {
            if p >= bytes.len() {
                return Err(DataError::BadMask("RLE string ends inside a number".into()));
            }
            let c = bytes[p] as i64 - 48;
            if !(0..64).contains(&c) {
                return Err(DataError::BadMask(format!(
                    "RLE string has an invalid character {:?}",
                    bytes[p] as char
                )));
            }
            if k >= 12 {
                return Err(DataError::BadMask(
                    "RLE string has an over-long number".into(),
                ));
            }
            x |= (c & 0x1f) << (5 * k);
            let more = c & 0x20 != 0;
            p += 1;
            k += 1;
            if !more {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        if counts.len() > 2 {
            x = x.checked_add(counts[counts.len() - 2]).ok_or_else(|| {
                DataError::BadMask("RLE string decodes to an out-of-range run".into())
            })?;
        }
        counts.push(x);
    }
    counts
        .into_iter()
        .map(|c| {
            u64::try_from(c)
                .map_err(|_| DataError::BadMask("RLE string decodes to a negative run".into()))
        })
        .collect()
}

/// Encodes run lengths as COCO's compressed RLE string (inverse of
/// [`decode_rle_string`]).
pub fn encode_rle_string(counts: &[u64]) -> String {
    let mut out = String::new();
    for i in 0..counts.len() {
        let mut x = counts[i] as i64;
        if i > 2 {
            x -= counts[i - 2] as i64;
        }
        loop {
            let mut c = x & 0x1f;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            out.push((c as u8 + 48) as char);
            if !more {
                break;
            }
        }
    }
    out
}

/// Column-major run lengths of a mask (zeros first), as COCO stores them.
pub fn rle_counts(m: &Mask) -> Vec<u64> {
    let (w, h) = (m.width as usize, m.height as usize);
    let mut counts = Vec::new();
    let mut cur = 0u8;
    let mut run = 0u64;
    for x in 0..w {
        for y in 0..h {
            let v = m.data[y * w + x];
            if v != cur {
                counts.push(run);
                run = 0;
                cur = v;
            }
            run += 1;
        }
    }
    counts.push(run);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_runs_that_overflow_are_an_error() {
        // 2^58 a hundred times: from the third number on each is added to
        // the one two places before, so every other run grows by 2^58 and
        // passes 2^63 after 32 steps.
        let s = "PPPPPPPPPPP8".repeat(100);
        let e = decode_rle_string(&s).unwrap_err().to_string();
        assert!(e.contains("out-of-range"), "{e}");
    }

    #[test]
    fn rle_counts_are_column_major() {
        // 3x2 mask (w=3, h=2): column 0 = [0,1], column 1 = [1,1], column 2 = [0,0]
        let m = Mask::from_rle_counts(3, 2, &[1, 3, 2]).unwrap();
        assert_eq!(m.data, vec![0, 1, 0, 1, 1, 0]);
        assert_eq!(rle_counts(&m), vec![1, 3, 2]);
        assert_eq!(m.area(), 3);
        assert_eq!(
            m.bbox(),
            Some(PixelBox {
                x: 0,
                y: 0,
                w: 2,
                h: 2
            })
        );
    }

    #[test]
    fn rle_string_round_trips() {
        let counts = vec![0, 5, 100, 3, 70000, 1, 2];
        let s = encode_rle_string(&counts);
        assert_eq!(decode_rle_string(&s).unwrap(), counts);
        // A known pycocotools string: 6 pixels, runs [1, 3, 2].
        assert_eq!(encode_rle_string(&[1, 3, 2]), "132");
    }

    #[test]
    fn bad_rle_is_an_error() {
        assert!(Mask::from_rle_counts(3, 2, &[1, 3]).is_err());
        assert!(decode_rle_string("1\u{7f}").is_err());
        assert!(decode_rle_string("o").is_err()); // continuation bit, then end
        assert!(Mask::from_rle_counts(1 << 20, 1 << 20, &[1]).is_err());
        assert!(Mask::from_rle_counts(0, 5, &[]).is_err());
    }

    #[test]
    fn polygon_square_covers_its_pixels() {
        let m =
            Mask::from_polygons(10, 10, &[vec![2.0, 2.0, 6.0, 2.0, 6.0, 5.0, 2.0, 5.0]]).unwrap();
        assert_eq!(m.area(), 12);
        assert_eq!(
            m.bbox(),
            Some(PixelBox {
                x: 2,
                y: 2,
                w: 4,
                h: 3
            })
        );
        assert!(Mask::from_polygons(10, 10, &[vec![1.0, 2.0]]).is_err());
        assert!(Mask::from_polygons(10, 10, &[vec![1.0, f64::NAN, 3.0, 3.0, 4.0, 4.0]]).is_err());
        // Entirely outside: empty, not an error.
        let out = Mask::from_polygons(10, 10, &[vec![20.0, 20.0, 30.0, 20.0, 30.0, 30.0]]).unwrap();
        assert_eq!(out.area(), 0);
    }

    #[test]
    fn dilation_is_a_disc() {
        let mut m = Mask::new(11, 11);
        m.data[5 * 11 + 5] = 1;
        let d = m.dilate(2);
        assert_eq!(d.area(), 13); // lattice points with dx^2 + dy^2 <= 4
        assert_eq!(m.dilate(0), m);
    }
}
