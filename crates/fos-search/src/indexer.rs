//! Indexing: cut-outs -> embeddings -> a library, the one pipeline behind
//! `fos index build|add`, the demo's library and the evaluation's `served`
//! method.
//!
//! ```no_run
//! # fn demo(enc: &dyn fos_model::embed::Encoder) -> Result<(), fos_search::SearchError> {
//! use fos_search::indexer::{BuildSettings, Indexer};
//! let ds = fos_data::manifest::Dataset::open("data/coco".as_ref())?;
//! let ix = Indexer::new(enc, Default::default());
//! let entries = Indexer::dataset_entries(&ds, Some("test"))?;
//! ix.build("test.fos".as_ref(), entries, &BuildSettings::default(), &())?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use fos_data::manifest::{Dataset, Record};
use fos_data::Progress;
use fos_image::decode::DecodeOptions;
use fos_index::{Dtype, Entry, Library, LibraryWriter};
use fos_model::embed::Encoder;

use crate::SearchError;

/// How a new library is laid out.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// Embedding storage.
    pub dtype: Dtype,
    /// Categories with at least this many cut-outs get approximate graphs.
    pub ann_threshold: usize,
    /// Most cut-outs of one approximate graph.
    pub ann_shard_rows: usize,
}

impl Default for BuildSettings {
    /// f16, the library's default ANN threshold and shard size.
    fn default() -> Self {
        BuildSettings {
            dtype: Dtype::F16,
            ann_threshold: fos_index::format::DEFAULT_ANN_THRESHOLD,
            ann_shard_rows: fos_index::ann::ANN_SHARD_ROWS,
        }
    }
}

/// Embeds cut-outs with one encoder and writes them into libraries.
pub struct Indexer<'a> {
    encoder: &'a dyn Encoder,
    decode: DecodeOptions,
    batch: usize,
}

fn input(msg: String) -> SearchError {
    SearchError::Input(msg)
}

impl<'a> Indexer<'a> {
    /// An indexer with `encoder`, decoding cut-outs with `decode`, 16 a batch.
    pub fn new(encoder: &'a dyn Encoder, decode: DecodeOptions) -> Self {
        Indexer {
            encoder,
            decode,
            batch: 16,
        }
    }

    /// Cut-outs per forward pass.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The library entry of a data-set record.
    pub fn entry_of(ds: &Dataset, r: &Record) -> Result<Entry, SearchError> {
        let path = ds.path(&r.foreground);
        let path = std::fs::canonicalize(&path)
            .map_err(|e| input(format!("cut-out of {}: {}: {e}", r.id, path.display())))?;
        let aspect = match (r.fg_size, r.bbox) {
            (Some(_), _) | (_, Some(_)) => r.aspect() as f32,
            (None, None) => {
                let (w, h) = image::image_dimensions(&path)
                    .map_err(|e| input(format!("{}: {e}", path.display())))?;
                w as f32 / h.max(1) as f32
            }
        };
        Ok(Entry {
            id: r.id.clone(),
            category: r.category.clone(),
            path: path.to_string_lossy().into_owned(),
            aspect,
            pattern: r.pattern.clone(),
        })
    }

    /// The entries of a data set, or of one split of it.
    pub fn dataset_entries(ds: &Dataset, split: Option<&str>) -> Result<Vec<Entry>, SearchError> {
        let recs: Vec<&Record> = ds
            .records
            .iter()
            .filter(|r| split.is_none_or(|s| r.split == s))
            .collect();
        if recs.is_empty() {
            return Err(input(format!(
                "{} has no cut-outs{}",
                ds.root.display(),
                split
                    .map(|s| format!(" in split {s:?}"))
                    .unwrap_or_default()
            )));
        }
        recs.iter().map(|r| Self::entry_of(ds, r)).collect()
    }

    /// The entry of a cut-out PNG with alpha; its category is `category`,
    /// else its folder's name.
    pub fn png_entry(p: &Path, category: Option<&str>) -> Result<Entry, SearchError> {
        let img = fos_image::decode::load(p, &DecodeOptions::default())?;
        if !img.color().has_alpha() {
            return Err(input(format!(
                "{}: a cut-out needs an alpha channel; for JPEG + mask files run `fos dataset build --foregrounds DIR` first and index that",
                p.display()
            )));
        }
        let category = match category {
            Some(c) => c.to_owned(),
            None => p
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    input(format!(
                        "{}: give --category (no folder name to take it from)",
                        p.display()
                    ))
                })?,
        };
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("cutout");
        let path = std::fs::canonicalize(p).map_err(|e| input(format!("{}: {e}", p.display())))?;
        Ok(Entry {
            id: fos_data::manifest::sanitize(&format!("{category}-{stem}")),
            category,
            path: path.to_string_lossy().into_owned(),
            aspect: img.width() as f32 / img.height().max(1) as f32,
            pattern: None,
        })
    }

    /// The entries of a folder `DIR/CATEGORY/NAME.png` of cut-outs with alpha.
    pub fn folder_entries(dir: &Path) -> Result<Vec<Entry>, SearchError> {
        let files = fos_data::folder::scan(dir)?;
        if files.is_empty() {
            return Err(input(format!(
                "{}: no cut-outs found (DIR/CATEGORY/NAME.png)",
                dir.display()
            )));
        }
        files
            .iter()
            .map(|f| Self::png_entry(&f.image, Some(&f.category)))
            .collect()
    }

    /// Embeds cut-out images, row-major f32, one progress step a cut-out.
    pub fn embed(
        &self,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<Vec<f32>, SearchError> {
        progress.start(paths.len() as u64);
        let mut out = Vec::with_capacity(paths.len() * self.encoder.dim());
        for chunk in paths.chunks(self.batch) {
            let imgs = chunk
                .iter()
                .map(|p| fos_image::decode::load_rgba(p, &self.decode))
                .collect::<Result<Vec<_>, _>>()?;
            for v in self.encoder.foregrounds(&imgs)? {
                out.extend(v);
            }
            progress.inc(chunk.len() as u64);
        }
        progress.finish();
        Ok(out)
    }

    fn embed_entries(
        &self,
        entries: &[Entry],
        progress: &dyn Progress,
    ) -> Result<Vec<f32>, SearchError> {
        let paths: Vec<PathBuf> = entries.iter().map(|e| PathBuf::from(&e.path)).collect();
        self.embed(&paths, progress)
    }

    /// Embeds `entries` and writes them as a new library at `out` (replacing
    /// any old one atomically); returns the library, opened.
    pub fn build(
        &self,
        out: &Path,
        entries: Vec<Entry>,
        settings: &BuildSettings,
        progress: &dyn Progress,
    ) -> Result<Library, SearchError> {
        let emb = self.embed_entries(&entries, progress)?;
        Self::write(out, self.encoder, entries, &emb, settings)
    }

    /// Writes entries with embeddings made by `encoder` as a new library.
    pub fn write(
        out: &Path,
        encoder: &dyn Encoder,
        entries: Vec<Entry>,
        embeddings: &[f32],
        settings: &BuildSettings,
    ) -> Result<Library, SearchError> {
        let w = LibraryWriter::lock(out)?
            .ann_threshold(settings.ann_threshold)
            .ann_shard_rows(settings.ann_shard_rows);
        w.write(
            &encoder.fingerprint(),
            encoder.dim(),
            settings.dtype,
            entries,
            embeddings,
        )?;
        drop(w);
        Ok(Library::open(out)?)
    }

    /// Embeds `entries` and adds them to the library at `library` (same
    /// model required); returns its new size.
    pub fn add(
        &self,
        library: &Path,
        entries: Vec<Entry>,
        progress: &dyn Progress,
    ) -> Result<usize, SearchError> {
        let w = LibraryWriter::lock(library)?;
        let lib = Library::open(library)?;
        if lib.model() != self.encoder.fingerprint() {
            return Err(SearchError::ModelMismatch {
                library: library.display().to_string(),
                indexed: lib.model().to_owned(),
                current: self.encoder.fingerprint(),
            });
        }
        drop(lib);
        let emb = self.embed_entries(&entries, progress)?;
        Ok(w.add(&self.encoder.fingerprint(), entries, &emb)?)
    }
}

/// Pattern ids by k-means, per category, on each cut-out's embedding (from
/// any encoder) plus its geometry (log aspect ratio, truncated sides) times
/// `geometry_weight`; written into the data set's manifest. `embeddings`
/// holds one row of `dim` values per record, in record order; `features`
/// describes them in `dataset.json`. Returns the number of patterns per
/// category.
pub fn cluster_patterns(
    ds: &mut Dataset,
    embeddings: &[f32],
    dim: usize,
    geometry_weight: f32,
    k: Option<usize>,
    seed: u64,
    features: &str,
) -> Result<std::collections::BTreeMap<String, usize>, SearchError> {
    use fos_data::patterns;
    if embeddings.len() != ds.records.len() * dim {
        return Err(input(format!(
            "{} embedding values for {} cut-outs of dimension {dim}",
            embeddings.len(),
            ds.records.len()
        )));
    }
    let feats: Vec<Vec<f32>> = ds
        .records
        .iter()
        .zip(embeddings.chunks(dim.max(1)))
        .map(|(r, e)| {
            let mut f = e.to_vec();
            f.extend(patterns::geometry(r, geometry_weight));
            f
        })
        .collect();
    let refs: Vec<&Record> = ds.records.iter().collect();
    let (map, ks) = patterns::cluster(&refs, &feats, k, seed);
    let method = serde_json::json!({
        "method": "kmeans",
        "k": k.map_or("auto".to_owned(), |k| k.to_string()),
        "k_per_category": ks,
        "features": format!("{features} + geometry x {geometry_weight}"),
        "seed": seed,
    });
    patterns::write_patterns(ds, &map, method)?;
    Ok(ks)
}
