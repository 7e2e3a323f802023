//! Exact-scan kernels over the embedding block.
//!
//! - One query: a dot product per row straight from the stored f16 (or f32)
//!   values, with AVX2 + F16C + FMA when the CPU has them (detected at run
//!   time, so the binary stays portable) and a scalar fallback. Memory-bound:
//!   the rows are read once, in order, by all threads.
//! - A batch of queries: rows are widened to f32 a tile at a time and scored
//!   against all queries with one matrix product per tile (the `gemm` crate),
//!   so each stored byte is read once per batch instead of once per query.
//!
//! Both keep a running top-`k` per query and never materialise all scores.

use half::f16;
use rayon::prelude::*;

/// The embedding block, borrowed as stored.
#[derive(Clone, Copy)]
pub enum Block<'a> {
    /// Half-precision rows.
    F16(&'a [f16]),
    /// Single-precision rows.
    F32(&'a [f32]),
}

/// Rows per parallel task of a single-query scan.
const CHUNK_ROWS: usize = 4096;
/// Rows widened to f32 and scored together by a batch scan.
const TILE_ROWS: usize = 256;

impl Block<'_> {
    /// Rows of `dim` values.
    pub fn rows(&self, dim: usize) -> usize {
        let n = match self {
            Block::F16(v) => v.len(),
            Block::F32(v) => v.len(),
        };
        n / dim.max(1)
    }

    /// The dot product of row `r` (of `dim` values) with `q`.
    #[inline]
    pub fn dot(&self, r: usize, q: &[f32]) -> f32 {
        let d = q.len();
        match self {
            Block::F16(v) => dot_f16(&v[r * d..(r + 1) * d], q),
            Block::F32(v) => dot(&v[r * d..(r + 1) * d], q),
        }
    }

    /// Row `r` widened to f32 into `out` (of `dim` values).
    pub fn widen(&self, r: usize, out: &mut [f32]) {
        let d = out.len();
        match self {
            Block::F16(v) => {
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(&v[r * d..(r + 1) * d], out)
            }
            Block::F32(v) => out.copy_from_slice(&v[r * d..(r + 1) * d]),
        }
    }
}

/// Dot product of two f32 slices (the compiler vectorises the 8-wide
/// accumulation).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_widened(a, b, |x| x, |x| x)
}

/// Dot product with the values of `a` and `b` widened by `wa` and `wb`, in 8
/// lanes.
#[inline]
fn dot_widened<A: Copy, B: Copy>(
    a: &[A],
    b: &[B],
    wa: impl Fn(A) -> f32,
    wb: impl Fn(B) -> f32,
) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| wa(x) * wb(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += wa(x[i]) * wb(y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Whether this CPU has the AVX2 + FMA + F16C kernels.
fn has_f16_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c");
    #[allow(unreachable_code)]
    false
}

/// Dot product of f16 values with f32 values, in f32.
#[inline]
pub fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        // SAFETY: the features are present; the lengths are equal.
        return unsafe { x86::dot_f16(a, b) };
    }
    dot_f16_scalar(a, b)
}

/// The portable version of [`dot_f16`].
pub fn dot_f16_scalar(a: &[f16], b: &[f32]) -> f32 {
    dot_widened(a, b, f16::to_f32, |x| x)
}

/// A dot product of two f16 slices, in f32: the best kernel for this CPU,
/// chosen once (for hot loops that cannot afford the feature check per call).
pub fn dot_f16_pair_kernel() -> fn(&[f16], &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_f16_simd() {
        return |a, b| {
            assert_eq!(a.len(), b.len(), "dot_f16_pair: lengths differ");
            // SAFETY: the features were detected; the lengths are equal.
            unsafe { x86::dot_f16_pair(a, b) }
        };
    }
    dot_f16_pair_scalar
}

/// The portable version of [`dot_f16_pair_kernel`]'s kernel.
pub fn dot_f16_pair_scalar(a: &[f16], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f16_pair: lengths differ");
    dot_widened(a, b, f16::to_f32, f16::to_f32)
}

/// A dot product of two i8 slices, exact in i32 (the quantised HNSW graph's
/// distance): the best kernel for this CPU, chosen once.
pub fn dot_i8_kernel() -> fn(&[i8], &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return |a, b| {
            assert_eq!(a.len(), b.len(), "dot_i8: lengths differ");
            // SAFETY: the feature was detected; the lengths are equal.
            unsafe { x86::dot_i8(a, b) }
        };
    }
    dot_i8_scalar
}

/// The portable version of [`dot_i8_kernel`]'s kernel.
pub fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_i8: lengths differ");
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// 32 values per step in four independent accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(a: &[f16], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr() as *const u16, b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * j;
                let h = _mm_loadu_si128(pa.add(o) as *const __m128i);
                *acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(pb.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let h = _mm_loadu_si128(pa.add(i) as *const __m128i);
            acc[0] = _mm256_fmadd_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
        let mut sum = hsum(acc);
        while i < n {
            sum += a[i].to_f32() * *pb.add(i);
            i += 1;
        }
        sum
    }

    /// Both sides f16 (the HNSW graph's distance): 32 values per step in
    /// four independent accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16_pair(a: &[f16], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr() as *const u16, b.as_ptr() as *const u16);
        let load =
            |p: *const u16, o: usize| _mm256_cvtph_ps(_mm_loadu_si128(p.add(o) as *const __m128i));
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * j;
                *acc = _mm256_fmadd_ps(load(pa, o), load(pb, o), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load(pa, i), load(pb, i), acc[0]);
            i += 8;
        }
        let mut sum = hsum(acc);
        while i < n {
            sum += a[i].to_f32() * b[i].to_f32();
            i += 1;
        }
        sum
    }

    /// i8 · i8 in i32: 64 values per step (sign-extended to i16, pairwise
    /// multiply-add to i32) in four accumulators. Cannot overflow below
    /// 2^31 / 127^2 = 133k dimensions.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let madd = |o: usize| {
            let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(o) as *const __m128i));
            let y = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(o) as *const __m128i));
            _mm256_madd_epi16(x, y)
        };
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_add_epi32(*acc, madd(i + 16 * j));
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm256_add_epi32(acc[0], madd(i));
            i += 16;
        }
        let s = _mm256_add_epi32(
            _mm256_add_epi32(acc[0], acc[1]),
            _mm256_add_epi32(acc[2], acc[3]),
        );
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        let mut sum = _mm_cvtsi128_si32(s);
        while i < n {
            sum += a[i] as i32 * b[i] as i32;
            i += 1;
        }
        sum
    }

    /// The sum of the lanes of four accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(acc: [__m256; 4]) -> f32 {
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// A running top-`k` of `(row, score)`: candidates above the current
/// threshold are buffered and the buffer is cut back to `k` when it fills.
#[derive(Clone)]
pub struct TopK {
    k: usize,
    buf: Vec<(u32, f32)>,
    floor: f32,
}

impl TopK {
    /// An empty top-`k`.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            buf: Vec::with_capacity(4 * k.max(1)),
            floor: f32::NEG_INFINITY,
        }
    }

    /// Offers one candidate.
    #[inline]
    pub fn push(&mut self, row: u32, score: f32) {
        if self.k == 0 || score < self.floor {
            return;
        }
        self.buf.push((row, score));
        if self.buf.len() >= 4 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        self.buf = top_k(std::mem::take(&mut self.buf), self.k);
        if self.buf.len() == self.k {
            self.floor = self.buf[self.k - 1].1;
        }
    }

    /// Merges another top-`k` into this one.
    pub fn merge(mut self, other: TopK) -> TopK {
        for (r, s) in other.buf {
            self.push(r, s);
        }
        self
    }

    /// The best `k`, best first, ties by row.
    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        top_k(self.buf, self.k)
    }
}

/// The `k` best `(id, score)` pairs, best first, ties by id.
pub fn top_k(mut v: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k < v.len() {
        v.select_nth_unstable_by(k, cmp);
        v.truncate(k);
    }
    v.sort_by(cmp);
    v
}

/// Top-`k` of `rows` by dot product with `q` (one query).
pub fn search_one(block: Block<'_>, rows: &[u32], q: &[f32], k: usize) -> Vec<(u32, f32)> {
    let one = |chunk: &[u32]| {
        let mut top = TopK::new(k);
        for &r in chunk {
            top.push(r, block.dot(r as usize, q));
        }
        top
    };
    if rows.len() < 2 * CHUNK_ROWS {
        return one(rows).into_sorted();
    }
    rows.par_chunks(CHUNK_ROWS)
        .map(one)
        .reduce(|| TopK::new(k), TopK::merge)
        .into_sorted()
}

/// Per-thread state of a batch scan.
struct BatchState {
    tops: Vec<TopK>,
    tile: Vec<f32>,
    out: Vec<f32>,
}

/// Top-`k` of `rows` for each of the queries (`queries` holds them
/// row-major, `dim` values each): one result per query, as [`search_one`]
/// would give it (scores may differ in the last bits: the sums are ordered
/// differently).
pub fn search_batch(
    block: Block<'_>,
    dim: usize,
    rows: &[u32],
    queries: &[f32],
    k: usize,
) -> Vec<Vec<(u32, f32)>> {
    let m = queries.len() / dim.max(1);
    if m == 0 || dim == 0 {
        return vec![Vec::new(); m];
    }
    if m == 1 {
        // Memory-bound: straight from the stored values.
        return vec![search_one(block, rows, queries, k)];
    }
    let fresh = || BatchState {
        tops: vec![TopK::new(k); m],
        tile: vec![0f32; TILE_ROWS * dim],
        out: vec![0f32; m * TILE_ROWS],
    };
    let merge = |mut a: BatchState, b: BatchState| {
        a.tops = a
            .tops
            .into_iter()
            .zip(b.tops)
            .map(|(x, y)| x.merge(y))
            .collect();
        a
    };
    rows.par_chunks(TILE_ROWS)
        .fold(fresh, |mut st, chunk| {
            let t = chunk.len();
            for (i, &r) in chunk.iter().enumerate() {
                block.widen(r as usize, &mut st.tile[i * dim..(i + 1) * dim]);
            }
            // out (m x t, row-major) = queries (m x dim) . tile^T (dim x t).
            // SAFETY: every pointer covers the extent its strides describe:
            // queries m*dim, tile t*dim (of TILE_ROWS*dim), out m*t (of
            // m*TILE_ROWS).
            unsafe {
                gemm::gemm(
                    m,
                    t,
                    dim,
                    st.out.as_mut_ptr(),
                    1,
                    t as isize,
                    false,
                    queries.as_ptr(),
                    1,
                    dim as isize,
                    st.tile.as_ptr(),
                    dim as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (qi, top) in st.tops.iter_mut().enumerate() {
                for (&r, &s) in chunk.iter().zip(&st.out[qi * t..(qi + 1) * t]) {
                    top.push(r, s);
                }
            }
            st
        })
        .reduce(fresh, merge)
        .tops
        .into_iter()
        .map(TopK::into_sorted)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, d: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n * d)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn simd_f16_dot_matches_the_scalar_one_at_every_length() {
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 100, 1280, 2048] {
            let a: Vec<f16> = data(1, n, 3).into_iter().map(f16::from_f32).collect();
            let b = data(1, n, 4);
            let (x, y) = (dot_f16(&a, &b), dot_f16_scalar(&a, &b));
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "n={n}: {x} vs {y}");
            let bh: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
            let widened: Vec<f32> = bh.iter().map(|v| v.to_f32()).collect();
            let exact = dot_f16_scalar(&a, &widened);
            let (p, q) = (dot_f16_pair_kernel()(&a, &bh), dot_f16_pair_scalar(&a, &bh));
            for got in [p, q] {
                assert!(
                    (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                    "n={n}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn simd_i8_dot_is_exact_at_every_length() {
        for n in [0, 1, 15, 16, 17, 63, 64, 65, 100, 1280, 2048] {
            let q = |seed| -> Vec<i8> {
                data(1, n, seed)
                    .into_iter()
                    .map(|v| (v * 127.0).round() as i8)
                    .collect()
            };
            let (a, b) = (q(5), q(6));
            let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
            assert_eq!(dot_i8_kernel()(&a, &b) as i64, want, "n={n}");
            assert_eq!(dot_i8_scalar(&a, &b) as i64, want, "n={n}");
        }
        // The extremes: -128 * -128 in every lane of a long vector.
        let m = vec![-128i8; 4096];
        assert_eq!(dot_i8_kernel()(&m, &m), 4096 * 16384);
    }

    #[test]
    fn batch_scan_gives_the_single_query_results() {
        let (n, d, m, k) = (9_000, 40, 5, 7);
        let emb: Vec<f16> = data(n, d, 1).into_iter().map(f16::from_f32).collect();
        let queries = data(m, d, 2);
        // Every other row, to check that row ids (not positions) come back.
        let rows: Vec<u32> = (0..n as u32).step_by(2).collect();
        let batch = search_batch(Block::F16(&emb), d, &rows, &queries, k);
        assert_eq!(batch.len(), m);
        for (qi, got) in batch.iter().enumerate() {
            let q = &queries[qi * d..(qi + 1) * d];
            let want = search_one(Block::F16(&emb), &rows, q, k);
            let naive = top_k(
                rows.iter()
                    .map(|&r| (r, dot_f16_scalar(&emb[r as usize * d..][..d], q)))
                    .collect(),
                k,
            );
            let ids = |v: &[(u32, f32)]| v.iter().map(|h| h.0).collect::<Vec<_>>();
            assert_eq!(ids(got), ids(&want), "query {qi}");
            assert_eq!(ids(&want), ids(&naive), "query {qi}");
            for (a, b) in got.iter().zip(&naive) {
                assert!((a.1 - b.1).abs() < 1e-4, "{a:?} vs {b:?}");
            }
        }
        let f32s: Vec<f32> = emb.iter().map(|v| v.to_f32()).collect();
        assert_eq!(
            search_batch(Block::F32(&f32s), d, &rows, &queries, k)[0]
                .iter()
                .map(|h| h.0)
                .collect::<Vec<_>>(),
            batch[0].iter().map(|h| h.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn top_k_keeps_the_best_across_cuts_and_merges() {
        let mut a = TopK::new(3);
        let mut b = TopK::new(3);
        for r in 0..50u32 {
            a.push(r, (r % 17) as f32);
            b.push(100 + r, (r % 13) as f32);
        }
        let got = a.merge(b).into_sorted();
        assert_eq!(got, vec![(16, 16.0), (33, 16.0), (15, 15.0)]);
        assert!(TopK::new(0).into_sorted().is_empty());
    }
}
