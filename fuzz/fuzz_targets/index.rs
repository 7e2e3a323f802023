//! The library reader: any bytes give a verified library or an error, never a
//! panic. A second pass repairs the header checksum, so that mutations reach
//! the header's JSON and the block checks behind it; a library that opens is
//! then read through (entries, embeddings, scores, search).
#![no_main]

use std::path::PathBuf;

use fos_index::format::decode_header;
use fos_index::Library;
use libfuzzer_sys::fuzz_target;

/// Magic (8), header length (8), header CRC (4).
const PREFIX: usize = 20;

fn scratch() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("fos-fuzz-index-{}.fos", std::process::id()))
}

fn exercise(bytes: &[u8]) {
    let path = scratch();
    if decode_header(&path, bytes).is_err() {
        return;
    }
    std::fs::write(&path, bytes).expect("scratch file");
    if let Ok(lib) = Library::open(&path) {
        let dim = lib.dim();
        let q = vec![1.0 / (dim as f32).sqrt(); dim];
        for (cat, _) in lib.categories() {
            let rows = lib.rows(&cat).to_vec();
            for &r in rows.iter().take(4) {
                assert_eq!(lib.embedding(r).len(), dim);
                let _ = lib.entry(r);
            }
            assert_eq!(lib.scores(&q, &rows).len(), rows.len());
            let _ = lib.search(&cat, &q, 5, |_| true);
            let _ = lib.search_with(&cat, &q, 5, |_| true, true);
        }
        for p in 0..lib.patterns().len() {
            let _ = lib.pattern_members(p);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= PREFIX {
        let hlen = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        if let Some(end) = (PREFIX as u64).checked_add(hlen).filter(|&e| e <= data.len() as u64) {
            let mut fixed = data.to_vec();
            let crc = crc32fast::hash(&fixed[PREFIX..end as usize]);
            fixed[16..20].copy_from_slice(&crc.to_le_bytes());
            exercise(&fixed);
        }
    }
});
