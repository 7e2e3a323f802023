//! The on-disk data set: `dataset.json` (what it is and how it was made) and
//! `manifest.jsonl` (one line per foreground), beside the image folders
//! `fg/`, `mask/` and `bg/`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Format version written to `dataset.json`; readers refuse other versions.
pub const DATASET_VERSION: u32 = 1;

/// One foreground of the data set (one line of `manifest.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unique, URL-safe id (`[A-Za-z0-9._-]`).
    pub id: String,
    /// Category name.
    pub category: String,
    /// The photo the instance was cut from, if any.
    pub source_image: Option<String>,
    /// That photo's `[width, height]`.
    pub image_size: Option<[u32; 2]>,
    /// The instance's tight box in the source photo, `[x, y, w, h]` pixels;
    /// this is the query rectangle on `background`.
    pub bbox: Option<[u32; 4]>,
    /// Split name (`train`, `val`, `test`, ...).
    pub split: String,
    /// Pattern id (interchangeable foregrounds), when assigned.
    pub pattern: Option<String>,
    /// Tight RGBA cut-out PNG, relative to the data set folder.
    pub foreground: String,
    /// Mask PNG of the same size (255 inside), relative to the data set folder.
    pub mask: String,
    /// The source photo with this object inpainted away, relative to the data
    /// set folder; `None` for a foreground without a photo.
    pub background: Option<String>,
    /// Where `background` was inpainted (the dilated mask of this object and
    /// of the objects it carries), a PNG of the photo's size.
    #[serde(default)]
    pub hole: Option<String>,
    /// Mask area in pixels.
    pub area: u64,
    /// The cut-out's `[width, height]` (its tight box).
    #[serde(default)]
    pub fg_size: Option<[u32; 2]>,
    /// Photo sides the instance touches (`left`, `top`, `right`, `bottom`).
    #[serde(default)]
    pub truncated: Vec<String>,
}

impl Record {
    /// Width / height of the cut-out (of its box in the photo when the size
    /// is not recorded; 1 when neither is known).
    pub fn aspect(&self) -> f64 {
        match (self.fg_size, self.bbox) {
            (Some([w, h]), _) | (None, Some([_, _, w, h])) if h > 0 => w as f64 / h as f64,
            _ => 1.0,
        }
    }
}

/// A source the data set was built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Short name, the prefix of ids.
    pub name: String,
    /// Kind: `coco`, `fosd` or `folder`.
    pub kind: String,
    /// Annotation file, if any.
    pub annotations: Option<String>,
    /// Images folder.
    pub images: String,
    /// Photos listed.
    pub photos: u64,
    /// Instances listed.
    pub instances: u64,
}

/// Kept foregrounds of one category, per split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryCount {
    /// Category name.
    pub name: String,
    /// All kept.
    pub total: u64,
    /// Per split.
    pub splits: BTreeMap<String, u64>,
}

/// Kept foregrounds per category and split, largest category first.
pub fn category_counts(records: &[Record]) -> Vec<CategoryCount> {
    let mut cats: BTreeMap<String, CategoryCount> = BTreeMap::new();
    for r in records {
        let c = cats
            .entry(r.category.clone())
            .or_insert_with(|| CategoryCount {
                name: r.category.clone(),
                ..Default::default()
            });
        c.total += 1;
        *c.splits.entry(r.split.clone()).or_default() += 1;
    }
    let mut v: Vec<CategoryCount> = cats.into_values().collect();
    v.sort_by(|a, b| b.total.cmp(&a.total).then(a.name.cmp(&b.name)));
    v
}

/// `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// [`DATASET_VERSION`].
    pub version: u32,
    /// The program that wrote it.
    pub created_by: String,
    /// Sources.
    pub sources: Vec<SourceInfo>,
    /// Kept foregrounds per category.
    pub categories: Vec<CategoryCount>,
    /// `kept`, `seen` and one entry per drop reason.
    pub counts: BTreeMap<String, u64>,
    /// Build settings: filters, splits, seed, inpainting.
    pub settings: serde_json::Value,
    /// How patterns were assigned, when they were.
    pub patterns: Option<serde_json::Value>,
}

/// A data set opened for reading.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Its folder.
    pub root: PathBuf,
    /// `dataset.json`.
    pub info: DatasetInfo,
    /// `manifest.jsonl`.
    pub records: Vec<Record>,
}

impl Dataset {
    /// Opens a data set folder, checking the version and every record.
    pub fn open(root: &Path) -> Result<Self, DataError> {
        let info_path = root.join("dataset.json");
        let bytes = std::fs::read(&info_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::Format(format!(
                    "{} is not a fos data set (no dataset.json); make one with `fos dataset build`",
                    root.display()
                ))
            } else {
                DataError::io(&info_path, e)
            }
        })?;
        let version: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::Format(format!("{}: {e}", info_path.display())))?;
        match version.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == DATASET_VERSION as u64 => {}
            v => {
                return Err(DataError::Format(format!(
                    "{}: data set version {v:?}, this fos reads version {DATASET_VERSION}; rebuild it with `fos dataset build`",
                    info_path.display()
                )))
            }
        }
        let info: DatasetInfo = serde_json::from_value(version)
            .map_err(|e| DataError::Format(format!("{}: {e}", info_path.display())))?;
        let records = read_manifest(&root.join("manifest.jsonl"))?;
        Ok(Dataset {
            root: root.to_owned(),
            info,
            records,
        })
    }

    /// Absolute path of a file named in a record.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Records of one split.
    pub fn split<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.split == name)
    }
}

/// Reads `manifest.jsonl`, checking ids and relative paths.
pub fn read_manifest(path: &Path) -> Result<Vec<Record>, DataError> {
    let f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: String| DataError::Format(format!("{} line {}: {m}", path.display(), n + 1));
        let r: Record = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if !valid_id(&r.id) {
            return Err(bad(format!("id {:?} is not [A-Za-z0-9._-]+", r.id)));
        }
        for p in [
            Some(&r.foreground),
            Some(&r.mask),
            r.background.as_ref(),
            r.hole.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !safe_relative(p) {
                return Err(bad(format!("path {p:?} leaves the data set folder")));
            }
        }
        if !ids.insert(r.id.clone()) {
            return Err(bad(format!("id {:?} appears twice", r.id)));
        }
        out.push(r);
    }
    Ok(out)
}

/// Writes `manifest.jsonl` and `dataset.json` into `dir` (each atomically).
pub fn write_dataset(dir: &Path, info: &DatasetInfo, records: &[Record]) -> Result<(), DataError> {
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r).expect("records serialise");
        buf.write_all(b"\n").expect("in memory");
    }
    let p = dir.join("manifest.jsonl");
    fos_image::atomic::write_atomic(&p, &buf).map_err(|e| DataError::io(&p, e))?;
    let p = dir.join("dataset.json");
    let json = serde_json::to_vec_pretty(info).expect("info serialises");
    fos_image::atomic::write_atomic(&p, &json).map_err(|e| DataError::io(&p, e))
}

/// An id usable in file names and URLs.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A relative path with no `..`, root or drive component.
pub fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Makes a string into an id fragment: other characters become `_`.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.trim_start_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_paths_are_checked() {
        assert!(valid_id("val2017-285-1234"));
        assert!(!valid_id("../x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(".hidden"));
        assert!(safe_relative("fg/a.png"));
        assert!(!safe_relative("../a.png"));
        assert!(!safe_relative("/etc/passwd"));
        assert_eq!(sanitize("my photos/x y"), "my_photos_x_y");
    }
}
