//! The `LIB.fos` file layout, version 2 (version 1, still read and still
//! written where it suffices, is the same with at most one approximate index
//! per category):
//!
//! ```text
//! 0   8  magic  "FOSLIB\0\x01"
//! 8   8  header length H (u64 LE)
//! 16  4  CRC-32 of the header bytes (u32 LE)
//! 20  4  reserved (0)
//! 24  H  header: JSON (version, model fingerprint, dim, dtype, entries,
//!        patterns, block offsets/lengths/CRC-32s)
//! ..     embeddings block at a 64-byte aligned offset: count x dim, f16 or f32 LE
//! ..     centroid block at a 64-byte aligned offset: patterns x dim, f32 LE
//! ..     approximate (HNSW) indexes, one or more (shards) per large
//!        category, each aligned (usearch serialisation; i8 vectors, the
//!        scale in the header)
//! ```
//!
//! Every block is checksummed; a file with a wrong magic, version, length or
//! checksum is refused with the reason.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::IndexError;

/// File magic.
pub const MAGIC: &[u8; 8] = b"FOSLIB\0\x01";
/// Format version of a library whose categories have one approximate index
/// at most: what older fos binaries read.
pub const VERSION_ONE_GRAPH: u32 = 1;
/// Format version of a library where a category's approximate index is split
/// into shards (several [`AnnInfo`] of one category). Older binaries, which
/// would search only one shard, refuse it.
pub const VERSION: u32 = 2;
const PREFIX: usize = 24;
const ALIGN: usize = 64;

/// How embeddings are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE half precision: half the bytes; cosine scores differ from f32 by
    /// about 1e-3.
    F16,
    /// Single precision.
    F32,
}

impl Dtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
}

/// One cut-out of the library.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique id (`[A-Za-z0-9._-]`).
    pub id: String,
    /// Category name.
    pub category: String,
    /// The cut-out image (RGBA PNG), absolute.
    pub path: String,
    /// Width / height of the cut-out.
    pub aspect: f32,
    /// Pattern id, when known.
    pub pattern: Option<String>,
}

/// A pattern and its centroid's row in the centroid block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatternInfo {
    /// Category.
    pub category: String,
    /// Pattern id.
    pub pattern: String,
    /// Members.
    pub members: u32,
}

/// Where a block lies and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Offset from the start of the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 of the bytes.
    pub crc32: u32,
}

/// The JSON header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// [`VERSION`], or [`VERSION_ONE_GRAPH`] where that suffices.
    pub version: u32,
    /// Fingerprint of the model that made the embeddings.
    pub model: String,
    /// Embedding size.
    pub dim: usize,
    /// Embedding storage.
    pub dtype: Dtype,
    /// The cut-outs, in row order.
    pub entries: Vec<Entry>,
    /// Pattern centroids, in row order.
    pub patterns: Vec<PatternInfo>,
    /// Embedding block.
    pub embeddings: Block,
    /// Centroid block.
    pub centroids: Block,
    /// Approximate (HNSW) indexes of the categories with at least
    /// `ann_threshold` cut-outs, in file order after the centroids; a
    /// category with several is searched in all of them (shards).
    #[serde(default)]
    pub ann: Vec<AnnInfo>,
    /// Categories this large or larger get an approximate index.
    #[serde(default = "default_ann_threshold")]
    pub ann_threshold: usize,
    /// Most cut-outs of one graph: a larger category's index is sharded.
    #[serde(default = "default_ann_shard_rows")]
    pub ann_shard_rows: usize,
}

/// How a library's approximate indexes are made; recorded in the header so
/// that `add` and `remove` rebuild them the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnSettings {
    /// Categories this large or larger get an approximate index.
    pub threshold: usize,
    /// Most cut-outs of one graph (shard).
    pub shard_rows: usize,
}

impl Default for AnnSettings {
    fn default() -> Self {
        AnnSettings {
            threshold: DEFAULT_ANN_THRESHOLD,
            shard_rows: crate::ann::ANN_SHARD_ROWS,
        }
    }
}

impl Header {
    /// The approximate-index settings the library was written with.
    pub fn ann_settings(&self) -> AnnSettings {
        AnnSettings {
            threshold: self.ann_threshold,
            shard_rows: self.ann_shard_rows,
        }
    }
}

fn default_ann_shard_rows() -> usize {
    crate::ann::ANN_SHARD_ROWS
}

/// Default of [`Header::ann_threshold`]: off. Approximate indexes are opt-in
/// (`fos index build --ann-threshold N`): on this machine HNSW construction
/// over 1280-d vectors runs at a few hundred vectors/s, and its recall depends
/// on how clustered the embeddings are (see docs/search.md).
pub const DEFAULT_ANN_THRESHOLD: usize = usize::MAX;

fn default_ann_threshold() -> usize {
    DEFAULT_ANN_THRESHOLD
}

/// A serialised usearch HNSW index over one category's rows, or over one
/// shard of them (keys = rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnInfo {
    /// Category.
    pub category: String,
    /// Graph connectivity (M) it was built with.
    pub connectivity: usize,
    /// The graph holds its vectors as i8, `round(x * scale)`. Absent in
    /// libraries written before fos quantised its graphs: their graphs hold
    /// the vectors as f16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    /// Where it lies.
    pub block: Block,
}

/// One approximate index to write: what [`AnnInfo`] records, and the
/// serialised graph.
#[derive(Clone, Debug)]
pub struct AnnBlob {
    /// Category.
    pub category: String,
    /// Graph connectivity (M).
    pub connectivity: usize,
    /// i8 quantisation scale, as in [`AnnInfo::scale`].
    pub scale: Option<f32>,
    /// The serialised graph.
    pub bytes: Vec<u8>,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

#[allow(clippy::too_many_arguments)] // one argument per part of the file
/// Serialises a library: `embeddings` (row-major, `entries.len() x dim`) and
/// `centroids` (`patterns.len() x dim`) as f32, stored as `dtype`.
pub fn encode(
    model: &str,
    dim: usize,
    dtype: Dtype,
    entries: Vec<Entry>,
    embeddings: &[f32],
    patterns: Vec<PatternInfo>,
    centroids: &[f32],
    ann: Vec<AnnBlob>,
    ann_settings: AnnSettings,
) -> Vec<u8> {
    assert_eq!(
        embeddings.len(),
        entries.len() * dim,
        "embedding rows match entries"
    );
    assert_eq!(
        centroids.len(),
        patterns.len() * dim,
        "centroid rows match patterns"
    );
    let emb: Vec<u8> = match dtype {
        Dtype::F32 => embeddings.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => embeddings
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
    };
    let cen: Vec<u8> = centroids.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut cats = std::collections::HashSet::new();
    let sharded = !ann.iter().all(|a| cats.insert(a.category.as_str()));
    let mut header = Header {
        version: if sharded { VERSION } else { VERSION_ONE_GRAPH },
        model: model.to_owned(),
        dim,
        dtype,
        entries,
        patterns,
        embeddings: Block {
            offset: 0,
            len: emb.len() as u64,
            crc32: crc32fast::hash(&emb),
        },
        centroids: Block {
            offset: 0,
            len: cen.len() as u64,
            crc32: crc32fast::hash(&cen),
        },
        ann: ann
            .iter()
            .map(|a| AnnInfo {
                category: a.category.clone(),
                connectivity: a.connectivity,
                scale: a.scale,
                block: Block {
                    offset: 0,
                    len: a.bytes.len() as u64,
                    crc32: crc32fast::hash(&a.bytes),
                },
            })
            .collect(),
        ann_threshold: ann_settings.threshold,
        ann_shard_rows: ann_settings.shard_rows.max(1),
    };
    // Offsets depend on the header's length, which depends on the offsets'
    // digits: iterate until stable (twice at most in practice).
    let mut json = Vec::new();
    for _ in 0..6 {
        json = serde_json::to_vec(&header).expect("header serialises");
        let e = align(PREFIX + json.len()) as u64;
        let mut next = align(e as usize + emb.len()) as u64;
        let mut changed = header.embeddings.offset != e || header.centroids.offset != next;
        header.embeddings.offset = e;
        header.centroids.offset = next;
        next = align((next + header.centroids.len) as usize) as u64;
        for a in &mut header.ann {
            changed |= a.block.offset != next;
            a.block.offset = next;
            next = align((next + a.block.len) as usize) as u64;
        }
        if !changed {
            break;
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&json);
    out.resize(header.embeddings.offset as usize, 0);
    out.extend_from_slice(&emb);
    out.resize(header.centroids.offset as usize, 0);
    out.extend_from_slice(&cen);
    for (a, blob) in header.ann.iter().zip(&ann) {
        out.resize(a.block.offset as usize, 0);
        out.extend_from_slice(&blob.bytes);
    }
    out
}

/// Parses and verifies a library file's bytes: magic, version, header CRC,
/// block bounds, block CRCs, entry sanity. Returns the header.
pub fn decode_header(path: &Path, bytes: &[u8]) -> Result<Header, IndexError> {
    if bytes.len() < PREFIX || &bytes[..8] != MAGIC {
        if bytes.len() >= 7 && &bytes[..7] == b"FOSLIB\0" {
            return Err(corrupt(path, format!("library format {} is not supported by this fos (reads 1); rebuild it with `fos index build`", bytes.get(7).copied().unwrap_or(0))));
        }
        return Err(corrupt(
            path,
            "not a fos library (bad magic); make one with `fos index build`",
        ));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let hcrc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let end = (PREFIX as u64)
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len() as u64);
    let Some(end) = end else {
        return Err(corrupt(
            path,
            "truncated: the header runs past the end of the file",
        ));
    };
    let json = &bytes[PREFIX..end as usize];
    if crc32fast::hash(json) != hcrc {
        return Err(corrupt(
            path,
            "header checksum mismatch: the file is corrupt",
        ));
    }
    let h: Header =
        serde_json::from_slice(json).map_err(|e| corrupt(path, format!("bad header: {e}")))?;
    if !(VERSION_ONE_GRAPH..=VERSION).contains(&h.version) {
        return Err(corrupt(
            path,
            format!(
                "library version {} is not supported (reads {VERSION_ONE_GRAPH} to {VERSION})",
                h.version
            ),
        ));
    }
    let mut cats = std::collections::HashSet::new();
    if h.version == VERSION_ONE_GRAPH && !h.ann.iter().all(|a| cats.insert(&a.category)) {
        return Err(corrupt(
            path,
            "a version 1 library holds one approximate index per category",
        ));
    }
    if h.dim == 0 || h.dim > 65536 {
        return Err(corrupt(
            path,
            format!("implausible embedding size {}", h.dim),
        ));
    }
    for (name, b, rows, size) in [
        ("embedding", h.embeddings, h.entries.len(), h.dtype.size()),
        ("centroid", h.centroids, h.patterns.len(), 4),
    ] {
        let want = (rows as u64)
            .checked_mul(h.dim as u64)
            .and_then(|n| n.checked_mul(size as u64));
        if want != Some(b.len) {
            return Err(corrupt(
                path,
                format!(
                    "{name} block holds {} bytes, {rows} rows need {want:?}",
                    b.len
                ),
            ));
        }
        let end = b
            .offset
            .checked_add(b.len)
            .filter(|&e| e <= bytes.len() as u64);
        let Some(end) = end else {
            return Err(corrupt(
                path,
                format!("truncated: the {name} block runs past the end of the file"),
            ));
        };
        if b.offset % ALIGN as u64 != 0 {
            return Err(corrupt(path, format!("{name} block is not aligned")));
        }
        if crc32fast::hash(&bytes[b.offset as usize..end as usize]) != b.crc32 {
            return Err(corrupt(
                path,
                format!("{name} checksum mismatch: the file is corrupt"),
            ));
        }
    }
    // Approximate indexes: bounds, alignment, checksums, in file order.
    let mut last_end = h.centroids.offset + h.centroids.len;
    let mut padding = vec![
        (20usize, PREFIX),
        (end as usize, h.embeddings.offset as usize),
        (
            (h.embeddings.offset + h.embeddings.len) as usize,
            h.centroids.offset as usize,
        ),
    ];
    for a in &h.ann {
        if a.scale.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(corrupt(
                path,
                format!("approximate index of {:?}: bad scale", a.category),
            ));
        }
        let b = a.block;
        let e = b
            .offset
            .checked_add(b.len)
            .filter(|&e| e <= bytes.len() as u64 && b.offset >= last_end);
        let Some(e) = e else {
            return Err(corrupt(
                path,
                format!(
                    "truncated or misplaced approximate index of {:?}",
                    a.category
                ),
            ));
        };
        if b.offset % ALIGN as u64 != 0
            || crc32fast::hash(&bytes[b.offset as usize..e as usize]) != b.crc32
        {
            return Err(corrupt(
                path,
                format!("approximate index of {:?}: checksum mismatch", a.category),
            ));
        }
        padding.push((last_end as usize, b.offset as usize));
        last_end = e;
    }
    // Every other byte is padding and must be zero; nothing may follow.
    for (a, b) in padding {
        if a > b || bytes[a..b].iter().any(|&v| v != 0) {
            return Err(corrupt(path, "corrupt padding between blocks"));
        }
    }
    if last_end as usize != bytes.len() {
        return Err(corrupt(
            path,
            "the file has extra bytes after the last block",
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for e in &h.entries {
        if !ids.insert(e.id.as_str()) {
            return Err(corrupt(path, format!("id {:?} appears twice", e.id)));
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: id.into(),
            category: "person".into(),
            path: format!("/x/{id}.png"),
            aspect: 0.5,
            pattern: None,
        }
    }

    #[test]
    fn round_trips_and_detects_every_flipped_byte_region() {
        let emb: Vec<f32> = (0..6).map(|i| i as f32 / 8.0).collect();
        let bytes = encode(
            "m",
            3,
            Dtype::F16,
            vec![entry("a"), entry("b")],
            &emb,
            vec![],
            &[],
            vec![AnnBlob {
                category: "person".into(),
                connectivity: 16,
                scale: Some(700.0),
                bytes: vec![1, 2, 3],
            }],
            AnnSettings {
                threshold: 10,
                shard_rows: 7,
            },
        );
        let h = decode_header(Path::new("t"), &bytes).unwrap();
        assert_eq!(h.entries.len(), 2);
        assert_eq!((h.ann_threshold, h.ann_shard_rows), (10, 7));
        assert_eq!(h.ann[0].scale, Some(700.0));
        // A checksummed header with an impossible scale is refused too.
        let bad = encode(
            "m",
            3,
            Dtype::F16,
            vec![entry("a"), entry("b")],
            &emb,
            vec![],
            &[],
            vec![AnnBlob {
                category: "person".into(),
                connectivity: 16,
                scale: Some(-1.0),
                bytes: vec![1, 2, 3],
            }],
            AnnSettings {
                threshold: 10,
                shard_rows: 7,
            },
        );
        let e = decode_header(Path::new("t"), &bad).unwrap_err();
        assert!(e.to_string().contains("bad scale"), "{e}");
        assert_eq!(h.embeddings.offset % 64, 0);
        // Flip one byte anywhere: refused.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(
                decode_header(Path::new("t"), &b).is_err(),
                "flip at {i} not detected"
            );
        }
        // Truncated anywhere: refused.
        for n in [0, 5, 23, 40, bytes.len() - 1] {
            assert!(
                decode_header(Path::new("t"), &bytes[..n]).is_err(),
                "truncated to {n}"
            );
        }
    }

    #[test]
    fn shards_need_version_2_and_older_versions_are_read() {
        let emb: Vec<f32> = (0..6).map(|i| i as f32 / 8.0).collect();
        let blob = |bytes: Vec<u8>| AnnBlob {
            category: "person".into(),
            connectivity: 16,
            scale: Some(100.0),
            bytes,
        };
        let file = |ann| {
            let entries = vec![entry("a"), entry("b")];
            let settings = AnnSettings::default();
            encode(
                "m",
                3,
                Dtype::F16,
                entries,
                &emb,
                vec![],
                &[],
                ann,
                settings,
            )
        };
        let one = file(vec![blob(vec![1, 2])]);
        assert_eq!(decode_header(Path::new("t"), &one).unwrap().version, 1);
        let two = file(vec![blob(vec![1, 2]), blob(vec![3, 4, 5])]);
        let h = decode_header(Path::new("t"), &two).unwrap();
        assert_eq!((h.version, h.ann.len()), (VERSION, 2));
        // The same shards under a version 1 header (checksum made to match):
        // an older writer never made it, and reading it as one graph a
        // category would lose rows.
        let len = u64::from_le_bytes(two[8..16].try_into().unwrap()) as usize;
        let json = String::from_utf8(two[PREFIX..PREFIX + len].to_vec()).unwrap();
        let patched = json.replace("\"version\":2", "\"version\":1");
        assert_eq!(patched.len(), json.len());
        let mut v1 = two.clone();
        v1[PREFIX..PREFIX + len].copy_from_slice(patched.as_bytes());
        v1[16..20].copy_from_slice(&crc32fast::hash(patched.as_bytes()).to_le_bytes());
        let e = decode_header(Path::new("t"), &v1).unwrap_err();
        assert!(e.to_string().contains("one approximate index per"), "{e}");
        // A future version is refused with the versions this fos reads.
        let v3 = json.replace("\"version\":2", "\"version\":3");
        let mut b = two.clone();
        b[PREFIX..PREFIX + len].copy_from_slice(v3.as_bytes());
        b[16..20].copy_from_slice(&crc32fast::hash(v3.as_bytes()).to_le_bytes());
        let e = decode_header(Path::new("t"), &b).unwrap_err();
        assert!(e.to_string().contains("reads 1 to 2"), "{e}");
    }
}
