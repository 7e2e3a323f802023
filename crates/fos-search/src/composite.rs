//! Composite previews: each result pasted into the query rectangle, and a
//! contact sheet of them.

use std::path::{Path, PathBuf};

use fos_image::compose::{contact_sheet, paste, Rect};
use fos_image::decode::DecodeOptions;
use image::RgbImage;

use crate::{Hit, SearchError};

/// The background with `hit`'s cut-out pasted into `rect` (scaled to fit,
/// bottom-aligned, alpha-blended).
pub fn composite(
    background: &RgbImage,
    rect: Rect,
    hit: &Hit,
    decode: &DecodeOptions,
) -> Result<RgbImage, SearchError> {
    let fg = fos_image::decode::load_rgba(Path::new(&hit.path), decode)?;
    let mut out = background.clone();
    paste(&mut out, &fg, rect)?;
    Ok(out)
}

/// Writes `RANK-ID.png` for each hit and `contact-sheet.png` (4 columns) into
/// `dir`; returns the paths written, the contact sheet last.
pub fn write_composites(
    background: &RgbImage,
    rect: Rect,
    hits: &[Hit],
    dir: &Path,
    decode: &DecodeOptions,
) -> Result<Vec<PathBuf>, SearchError> {
    let mut paths = Vec::new();
    let mut tiles = Vec::new();
    for h in hits {
        let img = composite(background, rect, h, decode)?;
        let p = dir.join(format!("{:02}-{}.png", h.rank, h.id));
        fos_image::encode::save_png(&p, &image::DynamicImage::ImageRgb8(img.clone()))?;
        paths.push(p);
        tiles.push(img);
    }
    if !tiles.is_empty() {
        let sheet = contact_sheet(&tiles, 4, 320)?;
        let p = dir.join("contact-sheet.png");
        fos_image::encode::save_png(&p, &image::DynamicImage::ImageRgb8(sheet))?;
        paths.push(p);
    }
    Ok(paths)
}
