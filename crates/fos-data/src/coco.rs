//! COCO instance annotations (`instances_*.json`): images, categories and
//! annotations with polygon, RLE or compressed-RLE masks.
//!
//! Parsing is per record: an annotation with a missing field, a wrong type or a
//! bad mask is reported in [`CocoFile::problems`] and skipped, never fatal; only
//! a file that is not COCO JSON at all is an error.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::mask::Mask;
use crate::DataError;

/// A photo listed in the annotation file.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoImage {
    /// COCO image id.
    pub id: u64,
    /// File name relative to the images folder.
    pub file_name: String,
    /// Width in pixels, as annotated.
    pub width: u32,
    /// Height in pixels, as annotated.
    pub height: u32,
}

/// An object category.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoCategory {
    /// COCO category id.
    pub id: u64,
    /// Name, e.g. `person`.
    pub name: String,
}

/// How a mask is stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Segmentation {
    /// One or more polygons `[x0, y0, x1, y1, ...]`.
    Polygons(Vec<Vec<f64>>),
    /// Uncompressed RLE: run lengths, column-major.
    Counts {
        /// Mask height.
        height: u32,
        /// Mask width.
        width: u32,
        /// Run lengths.
        counts: Vec<u64>,
    },
    /// Compressed RLE string.
    Compressed {
        /// Mask height.
        height: u32,
        /// Mask width.
        width: u32,
        /// The compressed string.
        counts: String,
    },
}

impl Segmentation {
    /// Decodes the mask over a `width` x `height` photo; an RLE of another size
    /// is an error.
    pub fn to_mask(&self, width: u32, height: u32) -> Result<Mask, DataError> {
        match self {
            Segmentation::Polygons(p) => Mask::from_polygons(width, height, p),
            Segmentation::Counts {
                height: h,
                width: w,
                counts,
            } => {
                same_size(*w, *h, width, height)?;
                Mask::from_rle_counts(*w, *h, counts)
            }
            Segmentation::Compressed {
                height: h,
                width: w,
                counts,
            } => {
                same_size(*w, *h, width, height)?;
                Mask::from_rle_string(*w, *h, counts)
            }
        }
    }
}

fn same_size(w: u32, h: u32, width: u32, height: u32) -> Result<(), DataError> {
    if (w, h) != (width, height) {
        return Err(DataError::BadMask(format!(
            "RLE size {w}x{h} differs from the photo's {width}x{height}"
        )));
    }
    Ok(())
}

/// One object instance.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoAnnotation {
    /// Annotation id.
    pub id: u64,
    /// Photo it belongs to.
    pub image_id: u64,
    /// Category id.
    pub category_id: u64,
    /// A crowd region (several objects under one mask).
    pub iscrowd: bool,
    /// The mask.
    pub segmentation: Segmentation,
}

/// A parsed annotation file.
#[derive(Clone, Debug, Default)]
pub struct CocoFile {
    /// Photos.
    pub images: Vec<CocoImage>,
    /// Categories.
    pub categories: Vec<CocoCategory>,
    /// Well-formed annotations.
    pub annotations: Vec<CocoAnnotation>,
    /// Records that were skipped: `(kind, detail)`, kind is `bad_image`,
    /// `bad_category` or `bad_annotation`.
    pub problems: Vec<(String, String)>,
}

impl CocoFile {
    /// Reads and parses an annotation file.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&bytes).map_err(|e| match e {
            DataError::Format(m) => DataError::Format(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses annotation JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, DataError> {
        let root: Value = serde_json::from_slice(bytes)
            .map_err(|e| DataError::Format(format!("not valid JSON: {e}")))?;
        let obj = root
            .as_object()
            .ok_or_else(|| DataError::Format("COCO JSON must be an object".into()))?;
        let list = |key: &str| -> Result<&Vec<Value>, DataError> {
            obj.get(key).and_then(Value::as_array).ok_or_else(|| {
                DataError::Format(format!(
                    "COCO JSON has no `{key}` list; is this an instances_*.json file?"
                ))
            })
        };
        let mut out = CocoFile::default();
        for v in list("images")? {
            match parse_image(v) {
                Ok(i) => out.images.push(i),
                Err(e) => out.problems.push(("bad_image".into(), e)),
            }
        }
        for v in list("categories")? {
            match (uint(v, "id"), v.get("name").and_then(Value::as_str)) {
                (Ok(id), Some(name)) => out.categories.push(CocoCategory {
                    id,
                    name: name.to_owned(),
                }),
                _ => out.problems.push(("bad_category".into(), short(v))),
            }
        }
        for v in list("annotations")? {
            match parse_annotation(v) {
                Ok(a) => out.annotations.push(a),
                Err(e) => out.problems.push(("bad_annotation".into(), e)),
            }
        }
        Ok(out)
    }

    /// Category id -> name.
    pub fn category_names(&self) -> HashMap<u64, String> {
        self.categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect()
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..s.floor_char_boundary(120)])
    } else {
        s
    }
}

fn uint(v: &Value, key: &str) -> Result<u64, String> {
    v.get(key).and_then(Value::as_u64).ok_or_else(|| {
        format!(
            "`{key}` missing or not a non-negative integer in {}",
            short(v)
        )
    })
}

fn dim(v: &Value, key: &str) -> Result<u32, String> {
    let n = uint(v, key)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0 && n <= 1 << 16)
        .ok_or_else(|| format!("`{key}` = {n} is not a plausible image size"))
}

fn parse_image(v: &Value) -> Result<CocoImage, String> {
    let file_name = v
        .get("file_name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`file_name` missing in {}", short(v)))?;
    if file_name.is_empty()
        || Path::new(file_name).is_absolute()
        || file_name.split(['/', '\\']).any(|c| c == "..")
    {
        return Err(format!(
            "`file_name` {file_name:?} must be a relative path inside the images folder"
        ));
    }
    Ok(CocoImage {
        id: uint(v, "id")?,
        file_name: file_name.to_owned(),
        width: dim(v, "width")?,
        height: dim(v, "height")?,
    })
}

fn parse_annotation(v: &Value) -> Result<CocoAnnotation, String> {
    let id = uint(v, "id")?;
    let image_id = uint(v, "image_id")?;
    let category_id = uint(v, "category_id")?;
    let iscrowd = match v.get("iscrowd") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(x) => x
            .as_u64()
            .map(|n| n != 0)
            .ok_or_else(|| format!("annotation {id}: `iscrowd` is not 0/1"))?,
    };
    let seg = v
        .get("segmentation")
        .ok_or_else(|| format!("annotation {id}: no `segmentation`"))?;
    let segmentation = parse_segmentation(seg).map_err(|e| format!("annotation {id}: {e}"))?;
    Ok(CocoAnnotation {
        id,
        image_id,
        category_id,
        iscrowd,
        segmentation,
    })
}

fn parse_segmentation(seg: &Value) -> Result<Segmentation, String> {
    match seg {
        Value::Array(polys) => {
            let mut out = Vec::with_capacity(polys.len());
            for p in polys {
                let arr = p.as_array().ok_or("a polygon is not a list of numbers")?;
                let pts: Option<Vec<f64>> = arr.iter().map(Value::as_f64).collect();
                out.push(pts.ok_or("a polygon holds a value that is not a number")?);
            }
            if out.is_empty() {
                return Err("empty polygon list".into());
            }
            Ok(Segmentation::Polygons(out))
        }
        Value::Object(o) => {
            let size = o
                .get("size")
                .and_then(Value::as_array)
                .filter(|s| s.len() == 2)
                .ok_or("RLE without a two-number `size`")?;
            let h = size[0]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("RLE `size` is not [h, w]")?;
            let w = size[1]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or("RLE `size` is not [h, w]")?;
            match o.get("counts") {
                Some(Value::String(s)) => Ok(Segmentation::Compressed {
                    height: h,
                    width: w,
                    counts: s.clone(),
                }),
                Some(Value::Array(a)) => {
                    let c: Option<Vec<u64>> = a.iter().map(Value::as_u64).collect();
                    Ok(Segmentation::Counts {
                        height: h,
                        width: w,
                        counts: c.ok_or(
                            "RLE `counts` holds a value that is not a non-negative integer",
                        )?,
                    })
                }
                _ => Err("RLE without `counts`".into()),
            }
        }
        _ => Err("`segmentation` is neither polygons nor RLE".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_three_mask_kinds_and_reports_bad_records() {
        let json = br#"{
          "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3},
                     {"id": 2, "file_name": "../etc/passwd", "width": 4, "height": 3},
                     {"id": 3, "file_name": "c.jpg", "width": 1e30, "height": 3}],
          "categories": [{"id": 1, "name": "person"}, {"id": "x"}],
          "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentation": [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0]]},
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [3, 4], "counts": [3, 3, 6]}},
            {"id": 12, "image_id": 1, "category_id": 1,
             "segmentation": {"size": [3, 4], "counts": "336"}},
            {"id": 13, "image_id": 1, "category_id": 1, "segmentation": {"size": [3, 4]}},
            {"id": 14, "image_id": "one", "category_id": 1, "segmentation": []},
            {"image_id": 1}
          ]}"#;
        let f = CocoFile::parse(json).unwrap();
        assert_eq!(f.images.len(), 1);
        assert_eq!(f.categories.len(), 1);
        assert_eq!(f.annotations.len(), 3);
        assert_eq!(f.problems.len(), 2 + 1 + 3);
        assert_eq!(
            f.annotations[0].segmentation.to_mask(4, 3).unwrap().area(),
            4
        );
        assert!(f.annotations[1].iscrowd);
        assert_eq!(
            f.annotations[1].segmentation.to_mask(4, 3).unwrap().area(),
            3
        );
        assert_eq!(
            f.annotations[2].segmentation.to_mask(4, 3).unwrap().area(),
            3
        );
        // An RLE for another photo size is refused.
        assert!(f.annotations[2].segmentation.to_mask(3, 4).is_err());
    }

    #[test]
    fn non_coco_json_is_an_error() {
        assert!(CocoFile::parse(b"[1,2]").is_err());
        assert!(CocoFile::parse(b"{\"images\": []}").is_err());
        assert!(CocoFile::parse(b"\xff\xfe").is_err());
    }
}
