//! The approximate index: HNSW graphs per large category (usearch, inner
//! product over i8 vectors, results re-scored on the library's rows), built
//! from the embedding block, serialised into the library file and viewed in
//! place when the file is opened. A category of more than
//! [`ANN_SHARD_ROWS`] cut-outs gets several graphs ([`AnnShards`]), searched
//! in parallel and merged.

use rayon::prelude::*;

use crate::scan::Block;
use crate::IndexError;

/// HNSW graph connectivity (M) of new approximate indexes.
pub const ANN_CONNECTIVITY: usize = 32;
/// Candidate list size while building (efConstruction).
pub const ANN_EXPANSION_ADD: usize = 128;
/// Candidate list size while searching (ef); `fos bench ann` measures the
/// recall and latency that each choice gives.
pub const ANN_EXPANSION_SEARCH: usize = 128;

/// Most rows of one graph: a larger category is split into
/// `ceil(rows / ANN_SHARD_ROWS)` graphs of equal size, searched in parallel.
/// One query then runs on as many cores as there are shards, and each graph
/// is shallower (`fos bench ann --shard-rows` measures the choice).
pub const ANN_SHARD_ROWS: usize = 500_000;

/// Rows sampled to choose the quantisation scale.
const SCALE_SAMPLE: usize = 4096;
/// Candidates taken from the graph per result wanted, then re-ranked by the
/// exact inner product with the library's own vectors.
pub const ANN_RERANK: usize = 4;

fn options(
    dim: usize,
    connectivity: usize,
    expansion_add: usize,
    quantization: usearch::ScalarKind,
) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::IP,
        quantization,
        connectivity,
        expansion_add,
        expansion_search: ANN_EXPANSION_SEARCH,
        multi: false,
    }
}

/// Installs fos's own distance (`1 - dot`, usearch's IP distance) as the
/// graph's metric. usearch's kernels are slow here (numkong's Haswell f16 one
/// keeps one accumulator, so each 1280-d distance waits on 160 chained FMAs;
/// it was 89% of build and search time); fos's are in [`crate::scan`].
fn install_metric(
    index: &mut usearch::Index,
    dim: usize,
    scale: Option<f32>,
) -> Result<(), cxx::Exception> {
    match scale {
        Some(scale) => {
            let kernel = crate::scan::dot_i8_kernel();
            let unit = 1.0 / (scale * scale);
            let metric = move |a: *const i8, b: *const i8| -> f32 {
                // SAFETY: usearch passes two vectors of the index's `dim`
                // values (checked against the header when viewing).
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(a, dim),
                        std::slice::from_raw_parts(b, dim),
                    )
                };
                1.0 - kernel(a, b) as f32 * unit
            };
            <i8 as usearch::VectorType>::change_metric(index, Box::new(metric))
        }
        None => {
            let kernel = crate::scan::dot_f16_pair_kernel();
            let metric = move |a: *const usearch::f16, b: *const usearch::f16| -> f32 {
                // SAFETY: as above; `usearch::f16` is a transparent 16-bit
                // wrapper like `half::f16`.
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(a as *const half::f16, dim),
                        std::slice::from_raw_parts(b as *const half::f16, dim),
                    )
                };
                1.0 - kernel(a, b)
            };
            <usearch::f16 as usearch::VectorType>::change_metric(index, Box::new(metric))
        }
    }
}

/// The quantisation scale of `rows`: the largest magnitude among (a sample
/// of) their values maps to 127.
fn choose_scale(block: Block<'_>, dim: usize, rows: &[u32]) -> f32 {
    let step = rows.len().div_ceil(SCALE_SAMPLE).max(1);
    let mut buf = vec![0f32; dim];
    let mut max = 0f32;
    for &r in rows.iter().step_by(step) {
        block.widen(r as usize, &mut buf);
        max = buf
            .iter()
            .filter(|v| v.is_finite())
            .fold(max, |m, v| m.max(v.abs()));
    }
    if max > 0.0 {
        127.0 / max
    } else {
        1.0
    }
}

/// `v` as i8: `round(v * scale)`, saturated at ±127 (NaN becomes 0).
fn quantise(v: &[f32], scale: f32, out: &mut [i8]) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o = (x * scale).round().clamp(-127.0, 127.0) as i8;
    }
}

fn err(what: &str) -> impl Fn(cxx::Exception) -> IndexError + '_ {
    move |e| IndexError::Invalid(format!("{what}: {e}"))
}

/// An HNSW index over some rows of an embedding block (keys = rows). The
/// graph holds the vectors as i8 (a quarter of f32's bytes, so each step of
/// the memory-bound traversal reads less); results are re-ranked by the exact
/// inner product with the library's own vectors.
pub struct AnnIndex {
    index: usearch::Index,
    /// i8 scale; `None` for a graph of f16 vectors (older libraries).
    scale: Option<f32>,
}

impl AnnIndex {
    /// Builds the index of `rows` of `block` (`dim` values a row) with the
    /// library's settings ([`ANN_CONNECTIVITY`], [`ANN_EXPANSION_ADD`]), on
    /// all rayon threads.
    pub fn build(block: Block<'_>, dim: usize, rows: &[u32]) -> Result<Self, IndexError> {
        Self::build_with(block, dim, rows, ANN_CONNECTIVITY, ANN_EXPANSION_ADD)
    }

    /// As [`build`](Self::build) with another connectivity (M) and build-time
    /// candidate list size (efConstruction).
    pub fn build_with(
        block: Block<'_>,
        dim: usize,
        rows: &[u32],
        connectivity: usize,
        expansion_add: usize,
    ) -> Result<Self, IndexError> {
        let e = err("building the approximate index");
        let scale = choose_scale(block, dim, rows);
        let kind = usearch::ScalarKind::I8;
        let mut index =
            usearch::Index::new(&options(dim, connectivity, expansion_add, kind)).map_err(&e)?;
        install_metric(&mut index, dim, Some(scale)).map_err(&e)?;
        index
            .reserve_capacity_and_threads(rows.len(), rayon::current_num_threads())
            .map_err(&e)?;
        rows.par_iter()
            .map_init(
                || (vec![0f32; dim], vec![0i8; dim]),
                |(buf, q), &r| {
                    block.widen(r as usize, buf);
                    quantise(buf, scale, q);
                    index.add(r as u64, q)
                },
            )
            .collect::<Result<(), _>>()
            .map_err(&e)?;
        Ok(AnnIndex {
            index,
            scale: Some(scale),
        })
    }

    /// Views a serialised index in place: `scale` as recorded with it
    /// (`None`: a graph of f16 vectors).
    ///
    /// # Safety
    /// `bytes` must outlive the index and not change while it is in use.
    pub unsafe fn view(
        bytes: &[u8],
        dim: usize,
        connectivity: usize,
        scale: Option<f32>,
    ) -> Result<Self, String> {
        let kind = match scale {
            Some(_) => usearch::ScalarKind::I8,
            None => usearch::ScalarKind::F16,
        };
        let mut index = usearch::Index::new(&options(dim, connectivity, ANN_EXPANSION_ADD, kind))
            .map_err(|e| e.to_string())?;
        // SAFETY: upheld by the caller.
        unsafe { index.view_from_buffer(bytes) }.map_err(|e| e.to_string())?;
        // The metric reads `dim` values of the scalar kind from each vector:
        // the graph's own header must agree before it is installed.
        if index.dimensions() != dim || index.scalar_kind() != kind {
            return Err(format!(
                "graph of {} values ({:?}), expected {dim} ({kind:?})",
                index.dimensions(),
                index.scalar_kind()
            ));
        }
        // After the view, which resets the metric to the one in the header.
        install_metric(&mut index, dim, scale).map_err(|e| e.to_string())?;
        Ok(AnnIndex { index, scale })
    }

    /// The serialised index.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut buf = vec![0u8; self.index.serialized_length()];
        self.index
            .save_to_buffer(&mut buf)
            .map_err(err("saving the approximate index"))?;
        Ok(buf)
    }

    /// The i8 quantisation scale, to record beside the bytes.
    pub fn scale(&self) -> Option<f32> {
        self.scale
    }

    /// Sets the candidate list size of searches (ef): higher is slower and
    /// finds more of the true neighbours.
    pub fn set_expansion(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// Top-`k` rows among those that pass `keep`, by inner product with `q`:
    /// `(row, score)`, best first (ties by row). The graph proposes
    /// [`ANN_RERANK`]` * k` candidates; their scores are the exact ones,
    /// computed from `block`, the vectors the index was built from.
    pub fn search(
        &self,
        block: Block<'_>,
        q: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        let e = err("approximate search");
        let want = k.saturating_mul(ANN_RERANK);
        // A graph that names rows the block lacks (a damaged file whose
        // checksum still matched) must not reach `keep` or the re-scoring.
        let rows = block.rows(q.len()) as u64;
        let filter = |key: u64| key < rows && keep(key as u32);
        let m = match self.scale {
            Some(scale) => {
                let mut qi = vec![0i8; q.len()];
                quantise(q, scale, &mut qi);
                self.index.filtered_search(&qi, want, filter)
            }
            None => self.index.filtered_search(q, want, filter),
        }
        .map_err(e)?;
        let hits = m
            .keys
            .iter()
            .filter(|&&key| key < rows)
            .map(|&key| (key as u32, block.dot(key as usize, q)))
            .collect();
        Ok(crate::scan::top_k(hits, k))
    }
}

/// The graphs of one category: its rows dealt round-robin into shards of at
/// most a given size, each an [`AnnIndex`]; a search asks every shard in
/// parallel and merges their (exactly scored) results.
pub struct AnnShards {
    shards: Vec<AnnIndex>,
}

impl AnnShards {
    /// Builds the graphs of `rows`, at most `shard_rows` rows each (the
    /// library's setting is [`ANN_SHARD_ROWS`]), with connectivity (M) and
    /// efConstruction. Shards are built one after the other, each on all
    /// rayon threads.
    pub fn build_with(
        block: Block<'_>,
        dim: usize,
        rows: &[u32],
        shard_rows: usize,
        connectivity: usize,
        expansion_add: usize,
    ) -> Result<Self, IndexError> {
        let n = rows.len().div_ceil(shard_rows.max(1)).max(1);
        let shards = (0..n)
            .map(|s| {
                let part: Vec<u32> = rows.iter().skip(s).step_by(n).copied().collect();
                AnnIndex::build_with(block, dim, &part, connectivity, expansion_add)
            })
            .collect::<Result<_, _>>()?;
        Ok(AnnShards { shards })
    }

    /// Shards viewed from a library file (at least one).
    pub fn from_shards(shards: Vec<AnnIndex>) -> Self {
        assert!(!shards.is_empty(), "a category has at least one graph");
        AnnShards { shards }
    }

    /// The graphs.
    pub fn shards(&self) -> &[AnnIndex] {
        &self.shards
    }

    /// Sets the candidate list size (ef) of every shard's searches.
    pub fn set_expansion(&self, ef: usize) {
        for s in &self.shards {
            s.set_expansion(ef);
        }
    }

    /// Top-`k` rows that pass `keep`, as [`AnnIndex::search`], from all
    /// shards at once.
    pub fn search(
        &self,
        block: Block<'_>,
        q: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool + Sync,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        if let [one] = self.shards.as_slice() {
            return one.search(block, q, k, keep);
        }
        let parts = self
            .shards
            .par_iter()
            .map(|s| s.search(block, q, k, &keep))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::scan::top_k(parts.concat(), k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` unit vectors of size `d` (xorshift; row i depends on the seed).
    fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.max(1);
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let v: Vec<f32> = (0..d)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 10_000) as f32 / 10_000.0 - 0.5
                })
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            out.extend(v.iter().map(|a| a / norm));
        }
        out
    }

    /// recall@10 of `index` against the exact scan over 20 queries; checks
    /// that every score is the exact one.
    fn recall(index: &AnnIndex, block: Block<'_>, d: usize, rows: &[u32]) -> f64 {
        let queries = unit_rows(20, d, 99);
        let mut found = 0;
        for q in queries.chunks_exact(d) {
            let got = index.search(block, q, 10, |_| true).unwrap();
            let want = crate::scan::search_one(block, rows, q, 10);
            assert_eq!(got.len(), 10);
            for (row, score) in &got {
                assert_eq!(*score, block.dot(*row as usize, q), "re-ranked score");
            }
            found += got
                .iter()
                .filter(|h| want.iter().any(|w| w.0 == h.0))
                .count();
        }
        found as f64 / 200.0
    }

    #[test]
    fn quantisation_rounds_and_saturates() {
        let mut out = [9i8; 5];
        quantise(&[1.0, -2.0, f32::NAN, 0.004, -0.003], 127.0, &mut out);
        assert_eq!(out, [127, -127, 0, 1, 0]);
        let emb = [0.5f32, -0.25, 0.0, 0.1];
        assert_eq!(choose_scale(Block::F32(&emb), 2, &[0, 1]), 254.0);
        assert_eq!(choose_scale(Block::F32(&[0.0; 4]), 2, &[0, 1]), 1.0);
    }

    #[test]
    fn i8_graph_round_trips_and_re_ranks_to_exact_scores() {
        let (n, d) = (2000, 48);
        let emb = unit_rows(n, d, 7);
        let rows: Vec<u32> = (0..n as u32).collect();
        let block = Block::F32(&emb);
        let built = AnnIndex::build_with(block, d, &rows, 16, 64).unwrap();
        let scale = built.scale().expect("new graphs are i8");
        let bytes = built.to_bytes().unwrap();
        drop(built);
        // SAFETY: `bytes` outlives the index and is not changed.
        let index = unsafe { AnnIndex::view(&bytes, d, 16, Some(scale)) }.unwrap();
        index.set_expansion(64);
        let r = recall(&index, block, d, &rows);
        assert!(r >= 0.9, "recall@10 {r}");
        // A graph whose header disagrees with what the library recorded is
        // refused before any distance is computed.
        // SAFETY: as above.
        let wrong_kind = unsafe { AnnIndex::view(&bytes, d, 16, None) };
        assert!(wrong_kind.is_err_and(|e| e.contains("expected 48")));
        // SAFETY: as above.
        assert!(unsafe { AnnIndex::view(&bytes, d + 1, 16, Some(scale)) }.is_err());
    }

    #[test]
    fn f16_graphs_of_older_libraries_are_still_searched() {
        let (n, d) = (1500, 40);
        let emb = unit_rows(n, d, 11);
        let rows: Vec<u32> = (0..n as u32).collect();
        let old = usearch::Index::new(&options(d, 16, 64, usearch::ScalarKind::F16)).unwrap();
        old.reserve(n).unwrap();
        for (i, v) in emb.chunks_exact(d).enumerate() {
            old.add(i as u64, v).unwrap();
        }
        let mut bytes = vec![0u8; old.serialized_length()];
        old.save_to_buffer(&mut bytes).unwrap();
        // SAFETY: `bytes` outlives the index and is not changed.
        let index = unsafe { AnnIndex::view(&bytes, d, 16, None) }.unwrap();
        index.set_expansion(64);
        let r = recall(&index, Block::F32(&emb), d, &rows);
        assert!(r >= 0.9, "recall@10 {r}");
    }

    #[test]
    fn shards_split_the_rows_and_merge_to_exact_results() {
        let (n, d) = (2500, 32);
        let emb = unit_rows(n, d, 5);
        let block = Block::F32(&emb);
        // Every other row, as a category's rows would be.
        let rows: Vec<u32> = (0..n as u32).step_by(2).collect();
        let sharded = AnnShards::build_with(block, d, &rows, 400, 16, 64).unwrap();
        assert_eq!(sharded.shards().len(), 4, "1,250 rows, at most 400 a shard");
        let sizes: Vec<usize> = sharded.shards().iter().map(|s| s.index.size()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), rows.len());
        assert!(sizes.iter().all(|&s| s == 312 || s == 313), "{sizes:?}");
        sharded.set_expansion(64);
        let queries = unit_rows(20, d, 99);
        let mut found = 0;
        for q in queries.chunks_exact(d) {
            let want = crate::scan::search_one(block, &rows, q, 10);
            let got = sharded.search(block, q, 10, |_| true).unwrap();
            assert_eq!(got.len(), 10);
            assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            for (row, score) in &got {
                assert!(row % 2 == 0, "row {row} is not one of the category's");
                assert_eq!(*score, block.dot(*row as usize, q), "exact score");
            }
            found += got.iter().filter(|h| want.contains(h)).count();
            // The filter reaches every shard.
            let tens = sharded.search(block, q, 5, |r| r % 10 == 0).unwrap();
            assert!(tens.iter().all(|h| h.0 % 10 == 0) && tens.len() == 5);
        }
        assert!(found >= 190, "recall@10 {}", found as f64 / 200.0);
        // One shard when the rows fit.
        let one = AnnShards::build_with(block, d, &rows, rows.len(), 16, 64).unwrap();
        assert_eq!(one.shards().len(), 1);
    }
}
