//! Which instances make usable foregrounds, and why the others are dropped.

use serde::{Deserialize, Serialize};

use crate::mask::{Mask, PixelBox};

/// Thresholds for dropping instances. The defaults suit person-like objects in
/// COCO-sized photos.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterConfig {
    /// Drop crowd regions (`iscrowd`).
    pub drop_crowd: bool,
    /// Smallest mask area, as a fraction of the photo's area.
    pub min_area: f64,
    /// Drop instances whose box touches the photo border (within
    /// `border_margin` pixels): they are cut off.
    pub drop_truncated: bool,
    /// Margin in pixels for the truncation test.
    pub border_margin: u32,
    /// Largest fraction of the instance's box covered by other instances'
    /// masks; above it the instance is taken as occluded or in clutter.
    pub max_overlap: f64,
    /// Largest box elongation, max(w/h, h/w).
    pub max_aspect: f64,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            drop_crowd: true,
            min_area: 0.005,
            drop_truncated: true,
            border_margin: 1,
            max_overlap: 0.5,
            max_aspect: 4.0,
        }
    }
}

/// Why an instance or record was not kept. The names are those of the summary
/// table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A crowd region.
    Crowd,
    /// Smaller than `min_area`.
    TooSmall,
    /// Touches the photo border.
    Truncated,
    /// Other instances cover too much of its box.
    Occluded,
    /// Too elongated.
    Aspect,
    /// Category not asked for.
    CategoryNotSelected,
    /// Mask could not be decoded, or is empty.
    BadMask,
    /// Malformed annotation record.
    BadAnnotation,
    /// Refers to a photo that the file does not list.
    UnknownImage,
    /// Refers to a category that the file does not list.
    UnknownCategory,
    /// The photo file is missing or cannot be decoded.
    MissingImage,
    /// The photo's size differs from the annotated size.
    SizeMismatch,
}

impl DropReason {
    /// Every reason, in table order.
    pub const ALL: [DropReason; 12] = [
        DropReason::Crowd,
        DropReason::TooSmall,
        DropReason::Truncated,
        DropReason::Occluded,
        DropReason::Aspect,
        DropReason::CategoryNotSelected,
        DropReason::BadMask,
        DropReason::BadAnnotation,
        DropReason::UnknownImage,
        DropReason::UnknownCategory,
        DropReason::MissingImage,
        DropReason::SizeMismatch,
    ];

    /// Snake-case name.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Crowd => "crowd",
            DropReason::TooSmall => "too_small",
            DropReason::Truncated => "truncated",
            DropReason::Occluded => "occluded",
            DropReason::Aspect => "aspect",
            DropReason::CategoryNotSelected => "category_not_selected",
            DropReason::BadMask => "bad_mask",
            DropReason::BadAnnotation => "bad_annotation",
            DropReason::UnknownImage => "unknown_image",
            DropReason::UnknownCategory => "unknown_category",
            DropReason::MissingImage => "missing_image",
            DropReason::SizeMismatch => "size_mismatch",
        }
    }
}

/// Sides of the photo an instance's box touches.
pub fn truncated_sides(b: PixelBox, width: u32, height: u32, margin: u32) -> Vec<String> {
    let mut s = Vec::new();
    if b.x <= margin {
        s.push("left".to_owned());
    }
    if b.y <= margin {
        s.push("top".to_owned());
    }
    if b.x + b.w + margin >= width {
        s.push("right".to_owned());
    }
    if b.y + b.h + margin >= height {
        s.push("bottom".to_owned());
    }
    s
}

/// Fraction of `b` covered by the union of `others`.
pub fn overlap_fraction(b: PixelBox, others: &[&Mask]) -> f64 {
    if others.is_empty() || b.area() == 0 {
        return 0.0;
    }
    let w = others[0].width as usize;
    let mut covered = 0u64;
    for y in b.y as usize..(b.y + b.h) as usize {
        for x in b.x as usize..(b.x + b.w) as usize {
            let i = y * w + x;
            if others.iter().any(|m| m.data[i] != 0) {
                covered += 1;
            }
        }
    }
    covered as f64 / b.area() as f64
}

impl FilterConfig {
    /// The first reason to drop an instance with `mask` (tight box `b`) among
    /// the masks of the other instances of its photo, or `None` to keep it.
    pub fn check(
        &self,
        iscrowd: bool,
        mask: &Mask,
        b: PixelBox,
        others: &[&Mask],
    ) -> Option<DropReason> {
        let (w, h) = (mask.width, mask.height);
        if self.drop_crowd && iscrowd {
            return Some(DropReason::Crowd);
        }
        if (mask.area() as f64) < self.min_area * (w as f64 * h as f64) {
            return Some(DropReason::TooSmall);
        }
        if self.drop_truncated && !truncated_sides(b, w, h, self.border_margin).is_empty() {
            return Some(DropReason::Truncated);
        }
        let aspect = b.w as f64 / b.h as f64;
        if aspect.max(1.0 / aspect) > self.max_aspect {
            return Some(DropReason::Aspect);
        }
        if overlap_fraction(b, others) > self.max_overlap {
            return Some(DropReason::Occluded);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(w: u32, h: u32, b: PixelBox) -> Mask {
        let mut m = Mask::new(w, h);
        for y in b.y..b.y + b.h {
            for x in b.x..b.x + b.w {
                m.data[(y * w + x) as usize] = 1;
            }
        }
        m
    }

    #[test]
    fn each_filter_fires_on_its_case() {
        let f = FilterConfig::default();
        let b = PixelBox {
            x: 20,
            y: 20,
            w: 20,
            h: 40,
        };
        let m = rect(100, 100, b);
        assert_eq!(f.check(false, &m, b, &[]), None);
        assert_eq!(f.check(true, &m, b, &[]), Some(DropReason::Crowd));
        let small = PixelBox {
            x: 20,
            y: 20,
            w: 5,
            h: 5,
        };
        assert_eq!(
            f.check(false, &rect(100, 100, small), small, &[]),
            Some(DropReason::TooSmall)
        );
        let edge = PixelBox {
            x: 0,
            y: 20,
            w: 20,
            h: 40,
        };
        assert_eq!(
            f.check(false, &rect(100, 100, edge), edge, &[]),
            Some(DropReason::Truncated)
        );
        assert_eq!(truncated_sides(edge, 100, 100, 1), vec!["left"]);
        let thin = PixelBox {
            x: 10,
            y: 10,
            w: 60,
            h: 10,
        };
        assert_eq!(
            f.check(false, &rect(100, 100, thin), thin, &[]),
            Some(DropReason::Aspect)
        );
        let occluder = rect(
            100,
            100,
            PixelBox {
                x: 15,
                y: 15,
                w: 30,
                h: 35,
            },
        );
        assert_eq!(
            f.check(false, &m, b, &[&occluder]),
            Some(DropReason::Occluded)
        );
        assert!((overlap_fraction(b, &[&occluder]) - 0.75).abs() < 1e-9);
    }
}
