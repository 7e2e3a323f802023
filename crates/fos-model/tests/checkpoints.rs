//! The torch checkpoint reader on small fixtures in both torch.save layouts
//! (written by `fixtures/make_fixtures.py`, cross-checked with the reference
//! reader `shared/tools/reference/torch_pickle.py`), and its behaviour on damage.

use std::path::Path;

use fos_model::weights::{read_pth, Weights};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn check_values(w: &Weights) {
    assert_eq!(
        w.get("w", &[2, 3]).unwrap(),
        &[0., 2., 4., 1., 3., 5.],
        "strided view"
    );
    assert_eq!(w.get("b", &[2]).unwrap(), &[0.5, -2.0], "float16");
    assert_eq!(w.get("x", &[2]).unwrap(), &[1., 2.], "storage offset");
    assert!(!w.contains("n"), "integer tensors are skipped");
    assert_eq!(w.len(), 3);
}

#[test]
fn zip_layout() {
    check_values(&read_pth(&fixture("tiny_zip.pth")).unwrap());
}

#[test]
fn legacy_layout() {
    check_values(&read_pth(&fixture("tiny_legacy.pth")).unwrap());
}

#[test]
fn via_load_any_and_safetensors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.pth");
    std::fs::write(&p, fixture("tiny_legacy.pth")).unwrap();
    let w = Weights::load_any(&p).unwrap();
    let st = dir.path().join("c.safetensors");
    w.save_safetensors(&st, None).unwrap();
    check_values(&Weights::load_any(&st).unwrap());
}

/// Every truncation and every single-byte corruption gives Ok or a clean error,
/// never a panic.
#[test]
fn damaged_checkpoints_never_panic() {
    for name in ["tiny_zip.pth", "tiny_legacy.pth"] {
        let good = fixture(name);
        for cut in 0..good.len() {
            let r = std::panic::catch_unwind(|| read_pth(&good[..cut]).map(|_| ()));
            assert!(r.is_ok(), "{name} truncated at {cut} panicked");
        }
        let mut rejected = 0;
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut b = good.clone();
                b[i] ^= flip;
                match std::panic::catch_unwind(|| read_pth(&b).map(|_| ())) {
                    Err(_) => panic!("{name}: byte {i} ^ {flip:#x} panicked"),
                    Ok(Err(_)) => rejected += 1,
                    Ok(Ok(())) => {}
                }
            }
        }
        assert!(
            rejected > good.len() / 2,
            "{name}: only {rejected} corruptions detected"
        );
    }
}
