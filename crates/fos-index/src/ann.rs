//! The approximate index: an HNSW graph per large category (usearch, inner
//! product over f16 vectors), built from the embedding block, serialised into
//! the library file and viewed in place when the file is opened.

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

fn options(dim: usize, connectivity: usize, expansion_add: usize) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::IP,
        quantization: usearch::ScalarKind::F16,
        connectivity,
        expansion_add,
        expansion_search: ANN_EXPANSION_SEARCH,
        multi: false,
    }
}

/// Replaces usearch's f16 inner-product kernel (numkong's Haswell one keeps
/// one accumulator, so each 1280-d distance waits on 160 chained FMAs; it was
/// 89% of build and search time) with fos's four-accumulator kernel. usearch's
/// IP distance is `1 - dot`.
fn install_metric(index: &mut usearch::Index, dim: usize) -> Result<(), cxx::Exception> {
    let kernel = crate::scan::dot_f16_pair_kernel();
    let metric = move |a: *const usearch::f16, b: *const usearch::f16| -> f32 {
        // SAFETY: usearch passes two vectors of the index's `dim` f16 values;
        // `usearch::f16` is a transparent 16-bit wrapper like `half::f16`.
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

fn err(what: &str) -> impl Fn(cxx::Exception) -> IndexError + '_ {
    move |e| IndexError::Invalid(format!("{what}: {e}"))
}

/// An HNSW index over some rows of an embedding block (keys = rows).
pub struct AnnIndex(usearch::Index);

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
        let mut index =
            usearch::Index::new(&options(dim, connectivity, expansion_add)).map_err(&e)?;
        install_metric(&mut index, dim).map_err(&e)?;
        index
            .reserve_capacity_and_threads(rows.len(), rayon::current_num_threads())
            .map_err(&e)?;
        rows.par_iter()
            .map_init(
                || vec![0f32; dim],
                |buf, &r| {
                    block.widen(r as usize, buf);
                    index.add(r as u64, buf)
                },
            )
            .collect::<Result<(), _>>()
            .map_err(&e)?;
        Ok(AnnIndex(index))
    }

    /// Views a serialised index in place.
    ///
    /// # Safety
    /// `bytes` must outlive the index and not change while it is in use.
    pub unsafe fn view(bytes: &[u8], dim: usize, connectivity: usize) -> Result<Self, String> {
        let mut index = usearch::Index::new(&options(dim, connectivity, ANN_EXPANSION_ADD))
            .map_err(|e| e.to_string())?;
        // SAFETY: upheld by the caller.
        unsafe { index.view_from_buffer(bytes) }.map_err(|e| e.to_string())?;
        // After the view, which resets the metric to the one in the header.
        install_metric(&mut index, dim).map_err(|e| e.to_string())?;
        Ok(AnnIndex(index))
    }

    /// The serialised index.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut buf = vec![0u8; self.0.serialized_length()];
        self.0
            .save_to_buffer(&mut buf)
            .map_err(err("saving the approximate index"))?;
        Ok(buf)
    }

    /// Sets the candidate list size of searches (ef): higher is slower and
    /// finds more of the true neighbours.
    pub fn set_expansion(&self, ef: usize) {
        self.0.change_expansion_search(ef);
    }

    /// Top-`k` rows among those that pass `keep`, by inner product with `q`:
    /// `(row, score)`, best first (ties by row).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        keep: impl Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>, IndexError> {
        let m = self
            .0
            .filtered_search(q, k, |key: u64| keep(key as u32))
            .map_err(err("approximate search"))?;
        // The IP distance is 1 - dot.
        let hits = m
            .keys
            .iter()
            .zip(&m.distances)
            .map(|(&key, &d)| (key as u32, 1.0 - d))
            .collect();
        Ok(crate::scan::top_k(hits, k))
    }
}
