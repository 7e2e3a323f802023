//! Writing a library: [`LibraryWriter`] holds the lock file, writes a new
//! library (embeddings, pattern centroids, approximate indexes) and rewrites
//! it atomically to add or remove cut-outs.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::ann::{AnnShards, ANN_CONNECTIVITY, ANN_EXPANSION_ADD};
use crate::format::{encode, AnnBlob, AnnSettings, Dtype, Entry, PatternInfo};
use crate::scan::Block;
use crate::{IndexError, Library};

/// The only writer of a library: holds `LIB.fos.lock` (an advisory file lock,
/// released when the process ends, even by `kill -9`).
pub struct LibraryWriter {
    path: PathBuf,
    _lock: File,
    ann_threshold: Option<usize>,
    ann_shard_rows: Option<usize>,
}

impl LibraryWriter {
    /// Takes the lock of `path`; another writer gets [`IndexError::Locked`].
    pub fn lock(path: &Path) -> Result<Self, IndexError> {
        let mut lp = path.as_os_str().to_os_string();
        lp.push(".lock");
        let lp = PathBuf::from(lp);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lp)
            .map_err(|e| IndexError::Io {
                path: lp.clone(),
                source: e,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(LibraryWriter {
                path: path.to_owned(),
                _lock: file,
                ann_threshold: None,
                ann_shard_rows: None,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(IndexError::Locked(path.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => Err(IndexError::Io {
                path: lp,
                source: e,
            }),
        }
    }

    /// Categories with at least `n` cut-outs get an approximate (HNSW) index
    /// (default [`crate::format::DEFAULT_ANN_THRESHOLD`], or the old
    /// library's threshold on add/remove).
    pub fn ann_threshold(mut self, n: usize) -> Self {
        self.ann_threshold = Some(n);
        self
    }

    /// At most `n` cut-outs a graph: a larger category's approximate index is
    /// split into shards, searched in parallel (default
    /// [`ANN_SHARD_ROWS`](crate::ann::ANN_SHARD_ROWS), or the old library's
    /// setting on add/remove).
    pub fn ann_shard_rows(mut self, n: usize) -> Self {
        self.ann_shard_rows = Some(n.max(1));
        self
    }

    /// The approximate-index settings to write with: those given, else the
    /// old library's (`old`), else the defaults.
    fn ann_settings(&self, old: Option<&Library>) -> AnnSettings {
        let base = old.map_or_else(AnnSettings::default, |l| l.header.ann_settings());
        AnnSettings {
            threshold: self.ann_threshold.unwrap_or(base.threshold),
            shard_rows: self.ann_shard_rows.unwrap_or(base.shard_rows),
        }
    }

    /// Writes a new library with these entries and f32 embeddings (row-major),
    /// replacing any old one atomically.
    pub fn write(
        &self,
        model: &str,
        dim: usize,
        dtype: Dtype,
        entries: Vec<Entry>,
        embeddings: &[f32],
    ) -> Result<(), IndexError> {
        if embeddings.len() != entries.len() * dim {
            return Err(IndexError::Invalid(format!(
                "{} entries but {} embedding values of size {dim}",
                entries.len(),
                embeddings.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !seen.insert(e.id.as_str()) {
                return Err(IndexError::Invalid(format!("id {:?} given twice", e.id)));
            }
        }
        let settings = self.ann_settings(None);
        self.write_with(model, dim, dtype, entries, embeddings, settings)
    }

    fn write_with(
        &self,
        model: &str,
        dim: usize,
        dtype: Dtype,
        entries: Vec<Entry>,
        embeddings: &[f32],
        settings: AnnSettings,
    ) -> Result<(), IndexError> {
        let (patterns, centroids) = centroids(&entries, embeddings, dim);
        let mut by_cat: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_cat
                .entry(e.category.as_str())
                .or_default()
                .push(i as u32);
        }
        let mut ann = Vec::new();
        for (cat, rows) in by_cat
            .iter()
            .filter(|(_, r)| r.len() >= settings.threshold.max(1))
        {
            tracing::info!(
                "building the approximate index of {cat} ({} cut-outs)",
                rows.len()
            );
            let graphs = AnnShards::build_with(
                Block::F32(embeddings),
                dim,
                rows,
                settings.shard_rows,
                ANN_CONNECTIVITY,
                ANN_EXPANSION_ADD,
            )?;
            for index in graphs.shards() {
                ann.push(AnnBlob {
                    category: cat.to_string(),
                    connectivity: ANN_CONNECTIVITY,
                    scale: index.scale(),
                    bytes: index.to_bytes()?,
                });
            }
        }
        let bytes = encode(
            model, dim, dtype, entries, embeddings, patterns, &centroids, ann, settings,
        );
        fos_image::atomic::write_atomic(&self.path, &bytes).map_err(|e| IndexError::Io {
            path: self.path.clone(),
            source: e,
        })
    }

    /// Adds entries to the existing library (same model required; ids must be
    /// new). Returns the new size.
    pub fn add(
        &self,
        model: &str,
        entries: Vec<Entry>,
        embeddings: &[f32],
    ) -> Result<usize, IndexError> {
        let old = Library::open(&self.path)?;
        if old.model() != model {
            return Err(IndexError::Invalid(format!(
                "the library was made with model {}, these embeddings with {model}; rebuild it with `fos index build`",
                old.model()
            )));
        }
        if let Some(e) = entries.iter().find(|e| old.row_of(&e.id).is_some()) {
            return Err(IndexError::Invalid(format!(
                "id {:?} is already in the library; remove it first",
                e.id
            )));
        }
        let mut all = old.entries().to_vec();
        let mut emb = old.all_embeddings();
        all.extend(entries);
        emb.extend_from_slice(embeddings);
        let n = all.len();
        let settings = self.ann_settings(Some(&old));
        self.write_with(model, old.dim(), old.dtype(), all, &emb, settings)?;
        Ok(n)
    }

    /// Removes entries by id; unknown ids are an error (nothing is changed).
    /// Returns the new size.
    pub fn remove(&self, ids: &[String]) -> Result<usize, IndexError> {
        let old = Library::open(&self.path)?;
        if let Some(id) = ids.iter().find(|id| old.row_of(id).is_none()) {
            return Err(IndexError::Invalid(format!(
                "no cut-out with id {id:?} in the library"
            )));
        }
        let drop: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let d = old.dim();
        let emb = old.all_embeddings();
        let mut entries = Vec::new();
        let mut kept = Vec::new();
        for (i, e) in old.entries().iter().enumerate() {
            if !drop.contains(e.id.as_str()) {
                entries.push(e.clone());
                kept.extend_from_slice(&emb[i * d..(i + 1) * d]);
            }
        }
        let n = entries.len();
        let settings = self.ann_settings(Some(&old));
        self.write_with(old.model(), d, old.dtype(), entries, &kept, settings)?;
        Ok(n)
    }
}

/// Unit-length mean embedding of each (category, pattern).
fn centroids(entries: &[Entry], emb: &[f32], dim: usize) -> (Vec<PatternInfo>, Vec<f32>) {
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(p) = &e.pattern {
            groups
                .entry((e.category.as_str(), p.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut infos = Vec::new();
    let mut out = Vec::with_capacity(groups.len() * dim);
    for ((c, p), rows) in groups {
        let mut m = vec![0f32; dim];
        for r in &rows {
            m.iter_mut()
                .zip(&emb[r * dim..(r + 1) * dim])
                .for_each(|(a, v)| *a += v);
        }
        let n = m.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            m.iter_mut().for_each(|v| *v /= n);
        }
        out.extend(m);
        infos.push(PatternInfo {
            category: c.to_owned(),
            pattern: p.to_owned(),
            members: rows.len() as u32,
        });
    }
    (infos, out)
}
