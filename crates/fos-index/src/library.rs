//! [`Library`]: a memory-mapped, verified library with exact cosine search,
//! pattern-level search and the approximate indexes of large categories.
//! It is written by [`LibraryWriter`](crate::LibraryWriter).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::ann::{AnnIndex, AnnShards};
pub use crate::ann::{ANN_CONNECTIVITY, ANN_EXPANSION_ADD, ANN_EXPANSION_SEARCH};
use crate::format::{decode_header, Dtype, Entry, Header, PatternInfo};
pub use crate::scan::{dot, top_k};
use crate::scan::{search_batch, search_one, Block};
use crate::IndexError;

/// An open library (read-only; cheap to share between threads).
pub struct Library {
    // Declared before `map`: the indexes view the mapped bytes and must be
    // dropped first.
    ann: HashMap<String, AnnShards>,
    path: PathBuf,
    map: memmap2::Mmap,
    pub(crate) header: Header,
    by_category: BTreeMap<String, Vec<u32>>,
    by_id: HashMap<String, u32>,
    patterns_by_category: HashMap<String, Vec<u32>>,
    pattern_members: Vec<Vec<u32>>,
}

/// Rows above which a scan is split over threads.
const PARALLEL_ROWS: usize = 16_384;

impl Library {
    /// Opens and verifies a library (all checksums).
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let io = |e| IndexError::Io {
            path: path.to_owned(),
            source: e,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the file is only replaced by rename, never modified in place,
        // so the mapped bytes do not change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let header = decode_header(path, &map)?;
        let mut by_category: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (i, e) in header.entries.iter().enumerate() {
            by_category
                .entry(e.category.clone())
                .or_default()
                .push(i as u32);
        }
        let mut patterns_by_category: HashMap<String, Vec<u32>> = HashMap::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, p) in header.patterns.iter().enumerate() {
            patterns_by_category
                .entry(p.category.clone())
                .or_default()
                .push(i as u32);
            index.insert((p.category.as_str(), p.pattern.as_str()), i);
        }
        let mut pattern_members = vec![Vec::new(); header.patterns.len()];
        for (i, e) in header.entries.iter().enumerate() {
            if let Some(&p) = e
                .pattern
                .as_deref()
                .and_then(|p| index.get(&(e.category.as_str(), p)))
            {
                pattern_members[p].push(i as u32);
            }
        }
        drop(index);
        let by_id = header
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i as u32))
            .collect();
        let mut graphs: HashMap<String, Vec<AnnIndex>> = HashMap::new();
        for a in &header.ann {
            let bytes = &map[a.block.offset as usize..(a.block.offset + a.block.len) as usize];
            // SAFETY: the index keeps a pointer into the mapping; `ann` is
            // declared before `map`, so it is dropped first, and the file is
            // only ever replaced by rename, never changed in place.
            let index = unsafe { AnnIndex::view(bytes, header.dim, a.connectivity, a.scale) }
                .map_err(|e| IndexError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("approximate index of {:?}: {e}", a.category),
                })?;
            graphs.entry(a.category.clone()).or_default().push(index);
        }
        let ann = graphs
            .into_iter()
            .map(|(c, shards)| (c, AnnShards::from_shards(shards)))
            .collect();
        Ok(Library {
            ann,
            path: path.to_owned(),
            map,
            header,
            by_category,
            by_id,
            patterns_by_category,
            pattern_members,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Fingerprint of the model that made the embeddings.
    pub fn model(&self) -> &str {
        &self.header.model
    }
    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.header.dim
    }
    /// Embedding storage.
    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }
    /// Number of cut-outs.
    pub fn len(&self) -> usize {
        self.header.entries.len()
    }
    /// Whether the library holds no cut-out.
    pub fn is_empty(&self) -> bool {
        self.header.entries.is_empty()
    }
    /// All cut-outs, in row order.
    pub fn entries(&self) -> &[Entry] {
        &self.header.entries
    }
    /// The cut-out in `row`.
    pub fn entry(&self, row: u32) -> &Entry {
        &self.header.entries[row as usize]
    }
    /// The row of an id.
    pub fn row_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }
    /// Categories and their sizes.
    pub fn categories(&self) -> Vec<(String, usize)> {
        self.by_category
            .iter()
            .map(|(c, r)| (c.clone(), r.len()))
            .collect()
    }
    /// Rows of a category (empty when unknown).
    pub fn rows(&self, category: &str) -> &[u32] {
        self.by_category
            .get(category)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// Patterns, in centroid row order.
    pub fn patterns(&self) -> &[PatternInfo] {
        &self.header.patterns
    }
    /// Rows of a pattern's members.
    pub fn pattern_members(&self, pattern: usize) -> &[u32] {
        &self.pattern_members[pattern]
    }

    /// The embedding in `row`, as f32.
    pub fn embedding(&self, row: u32) -> Vec<f32> {
        let mut out = vec![0f32; self.dim()];
        self.read_row(row as usize, &mut out);
        out
    }

    fn read_row(&self, row: usize, out: &mut [f32]) {
        self.block().widen(row, out);
    }

    fn centroid(&self, p: usize, out: &mut [f32]) {
        let d = self.dim();
        let s = self.header.centroids.offset as usize + p * d * 4;
        for (o, c) in out.iter_mut().zip(self.map[s..s + d * 4].chunks_exact(4)) {
            *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
    }

    /// The embedding block as stored (row = entry index), in place.
    pub fn block(&self) -> Block<'_> {
        let b = self.header.embeddings;
        let bytes = &self.map[b.offset as usize..(b.offset + b.len) as usize];
        match self.header.dtype {
            Dtype::F16 => Block::F16(bytemuck::cast_slice(bytes)),
            Dtype::F32 => Block::F32(bytemuck::cast_slice(bytes)),
        }
    }

    /// Cosine scores (dot products of unit vectors) of `query` with `rows`.
    pub fn scores(&self, query: &[f32], rows: &[u32]) -> Vec<f32> {
        let block = self.block();
        let one = |chunk: &[u32]| -> Vec<f32> {
            chunk
                .iter()
                .map(|&r| block.dot(r as usize, query))
                .collect()
        };
        if rows.len() >= PARALLEL_ROWS {
            rows.par_chunks(4096).flat_map_iter(one).collect()
        } else {
            one(rows)
        }
    }

    fn check_query(&self, query: &[f32]) -> Result<(), IndexError> {
        if query.len() != self.dim() {
            return Err(IndexError::Invalid(format!(
                "query embedding has {} values, the library {}",
                query.len(),
                self.dim()
            )));
        }
        Ok(())
    }

    /// Unknown category: the error lists the ones there are.
    /// `Ok` when the category has cut-outs; otherwise an error that lists
    /// the categories there are.
    pub fn check_category(&self, category: &str) -> Result<(), IndexError> {
        if self.by_category.contains_key(category) {
            return Ok(());
        }
        let known: Vec<String> = self
            .by_category
            .iter()
            .map(|(c, n)| format!("{c} ({})", n.len()))
            .collect();
        Err(IndexError::Invalid(if known.is_empty() {
            format!("the library {} is empty", self.path.display())
        } else {
            format!(
                "no cut-outs of category {category:?} in the library; it has: {}",
                known.join(", ")
            )
        }))
    }

    /// How many graphs (shards) a category's approximate index has; 0 where
    /// it has none.
    pub fn ann_graphs(&self, category: &str) -> usize {
        self.ann.get(category).map_or(0, |a| a.shards().len())
    }

    /// Top-`k` of a category by cosine similarity among the entries that pass
    /// `keep`: `(row, score)`, best first (ties by row). Uses the category's
    /// approximate index when it has one, the exact scan otherwise.
    pub fn search(
        &self,
        category: &str,
        query: &[f32],
        k: usize,
        keep: impl Fn(&Entry) -> bool + Sync,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        self.search_with(category, query, k, keep, false)
    }

    /// As [`search`](Self::search); `exact` forces the exact scan.
    pub fn search_with(
        &self,
        category: &str,
        query: &[f32],
        k: usize,
        keep: impl Fn(&Entry) -> bool + Sync,
        exact: bool,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        self.check_query(query)?;
        self.check_category(category)?;
        if let (false, Some(index)) = (exact, self.ann.get(category)) {
            return index.search(self.block(), query, k, |row| keep(self.entry(row)));
        }
        let rows = self.kept_rows(category, keep);
        Ok(search_one(self.block(), &rows, query, k))
    }

    /// The rows of a category that pass `keep`.
    fn kept_rows(&self, category: &str, keep: impl Fn(&Entry) -> bool) -> Vec<u32> {
        self.rows(category)
            .iter()
            .copied()
            .filter(|&r| keep(self.entry(r)))
            .collect()
    }

    /// Exact top-`k` for a batch of queries at once (`queries`: row-major,
    /// [`dim`](Self::dim) values each): one result per query, equal to what
    /// [`search_with`](Self::search_with) gives with `exact`, at a fraction
    /// of the cost per query (each stored row is read once per batch).
    pub fn search_batch(
        &self,
        category: &str,
        queries: &[f32],
        k: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Result<Vec<Vec<(u32, f32)>>, IndexError> {
        let d = self.dim();
        if queries.is_empty() || !queries.len().is_multiple_of(d) {
            return Err(IndexError::Invalid(format!(
                "a batch of queries must hold a multiple of {d} values, not {}",
                queries.len()
            )));
        }
        self.check_category(category)?;
        let rows = self.kept_rows(category, keep);
        Ok(search_batch(self.block(), d, &rows, queries, k))
    }

    /// The top-`p` patterns of a category by cosine similarity of the query with
    /// their centroids: `(pattern index, score)`, best first.
    pub fn search_patterns(
        &self,
        category: &str,
        query: &[f32],
        p: usize,
    ) -> Result<Vec<(usize, f32)>, IndexError> {
        self.check_query(query)?;
        self.check_category(category)?;
        let pats = self
            .patterns_by_category
            .get(category)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if pats.is_empty() {
            return Err(IndexError::Invalid(format!(
                "the library has no patterns for {category:?}; assign them with `fos dataset patterns` and rebuild the index"
            )));
        }
        let mut buf = vec![0f32; self.dim()];
        let scored: Vec<(u32, f32)> = pats
            .iter()
            .map(|&i| {
                self.centroid(i as usize, &mut buf);
                (i, dot(&buf, query))
            })
            .collect();
        Ok(top_k(scored, p)
            .into_iter()
            .map(|(i, s)| (i as usize, s))
            .collect())
    }

    /// All embeddings as f32, row-major (for rewriting the library).
    pub fn all_embeddings(&self) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0f32; self.len() * d];
        for (r, chunk) in out.chunks_exact_mut(d).enumerate() {
            self.read_row(r, chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LibraryWriter;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn entry(id: &str, cat: &str, pat: Option<&str>) -> Entry {
        Entry {
            id: id.into(),
            category: cat.into(),
            path: format!("/x/{id}.png"),
            aspect: 1.0,
            pattern: pat.map(Into::into),
        }
    }

    #[test]
    fn search_add_remove_patterns_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lib.fos");
        let w = LibraryWriter::lock(&p).unwrap();
        assert!(matches!(
            LibraryWriter::lock(&p),
            Err(IndexError::Locked(_))
        ));
        let emb: Vec<f32> = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.9, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.0, 0.0, 1.0]),
        ]
        .concat();
        let entries = vec![
            entry("a", "person", Some("p0")),
            entry("b", "person", Some("p0")),
            entry("c", "person", Some("p1")),
            entry("d", "dog", None),
        ];
        w.write("m1", 3, Dtype::F16, entries, &emb).unwrap();
        let lib = Library::open(&p).unwrap();
        let hits = lib
            .search("person", &unit(&[1.0, 0.05, 0.0]), 2, |_| true)
            .unwrap();
        assert_eq!(
            hits.iter()
                .map(|h| lib.entry(h.0).id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!((hits[0].1 - 0.99875).abs() < 2e-3);
        let filtered = lib
            .search("person", &unit(&[1.0, 0.0, 0.0]), 5, |e| e.id != "a")
            .unwrap();
        assert_eq!(filtered.len(), 2);
        assert!(lib
            .search("cat", &[1.0, 0.0, 0.0], 1, |_| true)
            .unwrap_err()
            .to_string()
            .contains("person (3)"));
        assert!(lib.search("person", &[1.0, 0.0], 1, |_| true).is_err());
        let pats = lib
            .search_patterns("person", &unit(&[0.0, 1.0, 0.0]), 2)
            .unwrap();
        assert_eq!(lib.patterns()[pats[0].0].pattern, "p1");
        assert_eq!(lib.pattern_members(pats[1].0).len(), 2);
        assert!(lib.search_patterns("dog", &[1.0, 0.0, 0.0], 1).is_err());
        // add / remove
        assert_eq!(
            w.add("m1", vec![entry("e", "dog", None)], &unit(&[0.0, 0.0, 1.0]))
                .unwrap(),
            5
        );
        assert!(w
            .add("m2", vec![entry("f", "dog", None)], &[0.0, 0.0, 1.0])
            .unwrap_err()
            .to_string()
            .contains("model"));
        assert!(w
            .add("m1", vec![entry("a", "dog", None)], &[0.0, 0.0, 1.0])
            .is_err());
        assert_eq!(w.remove(&["a".into(), "e".into()]).unwrap(), 3);
        assert!(w.remove(&["zzz".into()]).is_err());
        let lib2 = Library::open(&p).unwrap();
        assert_eq!(lib2.len(), 3);
        assert_eq!(lib2.embedding(0).len(), 3);
        // The earlier mapping still reads the old content (replaced by rename).
        assert_eq!(lib.len(), 4);
        drop(w);
        assert!(LibraryWriter::lock(&p).is_ok());
    }

    #[test]
    fn approximate_index_finds_the_exact_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ann.fos");
        let (n, d) = (3000usize, 64usize);
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f32 / 10_000.0 - 0.5
        };
        let mut emb = Vec::with_capacity(n * d);
        for _ in 0..n {
            let v: Vec<f32> = (0..d).map(|_| next()).collect();
            emb.extend(unit(&v));
        }
        let entries: Vec<Entry> = (0..n)
            .map(|i| {
                entry(
                    &format!("c{i}"),
                    if i % 10 == 0 { "dog" } else { "person" },
                    None,
                )
            })
            .collect();
        LibraryWriter::lock(&p)
            .unwrap()
            .ann_threshold(1000)
            .ann_shard_rows(1000)
            .write("m", d, Dtype::F16, entries, &emb)
            .unwrap();
        let lib = Library::open(&p).unwrap();
        // 2,700 people, at most 1,000 a graph: three shards, all searched.
        assert_eq!((lib.ann_graphs("person"), lib.ann_graphs("dog")), (3, 0));
        assert_eq!(lib.header.version, crate::format::VERSION);
        let (mut found, mut total) = (0, 0);
        for _ in 0..20 {
            let query: Vec<f32> = unit(&(0..d).map(|_| next()).collect::<Vec<_>>());
            let approx = lib.search("person", &query, 10, |_| true).unwrap();
            let exact = lib
                .search_with("person", &query, 10, |_| true, true)
                .unwrap();
            let want: std::collections::HashSet<u32> = exact.iter().map(|h| h.0).collect();
            found += approx.iter().filter(|h| want.contains(&h.0)).count();
            total += 10;
            assert!(approx.iter().all(|h| lib.entry(h.0).category == "person"));
            // Re-ranked: a hit found by both has the exact scan's score.
            for (row, score) in &approx {
                if let Some(e) = exact.iter().find(|e| e.0 == *row) {
                    assert_eq!(*score, e.1, "{approx:?} {exact:?}");
                }
            }
            // The filter holds for approximate search too.
            let odd = lib
                .search("person", &query, 5, |e| e.id.ends_with('1'))
                .unwrap();
            assert!(odd.iter().all(|h| lib.entry(h.0).id.ends_with('1')));
        }
        assert!(
            found as f64 / total as f64 >= 0.95,
            "recall@10 {found}/{total}"
        );
        // Add keeps the threshold and rebuilds the index; a flipped byte in it is caught.
        let w = LibraryWriter::lock(&p).unwrap();
        w.add("m", vec![entry("new", "person", None)], &emb[..d])
            .unwrap();
        let lib2 = Library::open(&p).unwrap();
        // Add keeps the shard size too: 2,701 people, three graphs.
        assert_eq!(lib2.ann_graphs("person"), 3);
        drop(lib2);
        // Given again, it changes: one graph, a version 1 file.
        let w = w.ann_shard_rows(1_000_000);
        w.remove(&["new".to_string()]).unwrap();
        let lib2 = Library::open(&p).unwrap();
        assert_eq!(lib2.ann_graphs("person"), 1);
        assert_eq!(lib2.header.version, crate::format::VERSION_ONE_GRAPH);
        drop(lib2);
        let mut bytes = std::fs::read(&p).unwrap();
        let l = bytes.len();
        bytes[l - 10] ^= 0x10;
        std::fs::write(&p, &bytes).unwrap();
        assert!(Library::open(&p).is_err());
    }

    #[test]
    fn top_k_orders_and_breaks_ties() {
        let v = vec![(3, 0.5), (1, 0.9), (2, 0.5), (0, 0.1)];
        assert_eq!(top_k(v.clone(), 3), vec![(1, 0.9), (2, 0.5), (3, 0.5)]);
        assert_eq!(top_k(v, 10).len(), 4);
        assert!((dot(&[1.0; 19], &[2.0; 19]) - 38.0).abs() < 1e-5);
    }
}
