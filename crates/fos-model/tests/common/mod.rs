//! Helpers shared by the integration tests of fos-model.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared` beside the checkout, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    p.join("data").is_dir().then(|| p.canonicalize().unwrap())
}

/// Skips a test with a message; fails instead when `FOS_REQUIRE_REAL=1` (CI).
pub fn skip(why: &str) {
    if std::env::var("FOS_REQUIRE_REAL").is_ok_and(|v| v == "1") {
        panic!("FOS_REQUIRE_REAL=1 but a prerequisite is missing: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Reads a little-endian float32 `.npy` file (C order) into a flat vector.
pub fn read_npy_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "not an npy file");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
