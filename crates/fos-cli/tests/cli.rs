//! Drives the real `fos` binary: bad input, weights import, classify, bench.
//!
//! Most tests use a private `$FOS_HOME` holding deterministic random weights, so
//! they need no download. `classify_recognises_real_photos` needs the real
//! EfficientNet-Lite0 weights (installed by `fos weights fetch efficientnet-lite0`,
//! which `.ci/run` does) and ../shared; it is skipped without them unless
//! `FOS_REQUIRE_REAL=1`.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{fos, shared, skip, synthetic_home};
use fos_model::backbone::{Backbone, BackboneKind};

fn a_jpeg() -> Vec<u8> {
    if let Some(s) = shared() {
        return std::fs::read(s.join("data/coco-sample/images/val2017/000000001818.jpg")).unwrap();
    }
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 77]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A PNG signature + IHDR chunk claiming `w x h` (valid CRC), then IEND.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut c = 0xFFFF_FFFFu32;
        for &b in &out[start..] {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        out.extend_from_slice(&(!c).to_be_bytes());
    }
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut b, b"IHDR", &ihdr);
    chunk(&mut b, b"IEND", &[]);
    b
}

/// stdout as one JSON value per line.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].to_lowercase().contains(needle),
        "`{needle}` not in: {err}"
    );
}

#[test]
fn bad_images_give_one_line_errors_and_exit_2() {
    let home = synthetic_home();
    let dir = tempfile::tempdir().unwrap();
    let jpeg = a_jpeg();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.jpg",
            jpeg[..jpeg.len() / 2].to_vec(),
            "truncated",
        ),
        ("bomb.png", png_claiming(100_000, 100_000), "100000x100000"),
        (
            "text.jpg",
            b"this is not a picture\n".to_vec(),
            "not a supported image",
        ),
        ("empty.jpg", Vec::new(), "not a supported image"),
    ];
    for (name, bytes, needle) in &cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let out = fos(home.path(), &["classify", p.to_str().unwrap()]);
        assert_clean_failure(&out, needle);
    }
    let missing = dir.path().join("missing.jpg");
    assert_clean_failure(
        &fos(home.path(), &["classify", missing.to_str().unwrap()]),
        "no such file",
    );
}

#[test]
fn good_images_are_still_classified_beside_a_bad_one() {
    let home = synthetic_home();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jpg");
    std::fs::write(&good, a_jpeg()).unwrap();
    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, b"nope").unwrap();
    let out = fos(
        home.path(),
        &[
            "classify",
            "--json",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["image"], good.to_str().unwrap());
    assert_eq!(lines[0]["top5"].as_array().unwrap().len(), 5);
}

#[test]
fn missing_weights_name_the_command_to_run() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.jpg");
    std::fs::write(&p, a_jpeg()).unwrap();
    let out = fos(home.path(), &["classify", p.to_str().unwrap()]);
    assert_clean_failure(&out, "fos weights fetch efficientnet-lite0");
}

#[test]
fn weights_import_checks_architecture() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Lite1 weights in a file named for Lite1: accepted as lite1.
    let w1 = Backbone::synthetic_weights(BackboneKind::EfficientNetLite1, 2);
    let f1 = dir.path().join("my-efficientnet-lite1.safetensors");
    w1.save_safetensors(&f1, None).unwrap();
    let out = fos(home.path(), &["weights", "import", f1.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same weights forced onto Lite0: refused with the reason, nothing installed.
    let out = fos(
        home.path(),
        &[
            "weights",
            "import",
            f1.to_str().unwrap(),
            "--name",
            "efficientnet-lite0",
        ],
    );
    assert_clean_failure(&out, "do not fit efficientnet-lite0");
    // A ResNet50 file from the user (torchvision names).
    let r = Backbone::synthetic_weights(BackboneKind::ResNet50, 3);
    let fr = dir.path().join("weights.safetensors");
    r.save_safetensors(&fr, None).unwrap();
    let out = fos(home.path(), &["weights", "import", fr.to_str().unwrap()]);
    assert_clean_failure(&out, "--name");
    let out = fos(
        home.path(),
        &[
            "weights",
            "import",
            fr.to_str().unwrap(),
            "--name",
            "resnet50",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A corrupt file.
    let bad = dir.path().join("efficientnet-lite2.pth");
    std::fs::write(&bad, b"\x80\x02garbage").unwrap();
    assert_clean_failure(
        &fos(home.path(), &["weights", "import", bad.to_str().unwrap()]),
        "checkpoint",
    );

    let out = fos(home.path(), &["weights", "list", "--json"]);
    let rows: Vec<serde_json::Value> = json_lines(&out);
    let installed: Vec<&str> = rows
        .iter()
        .filter(|r| r["installed"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(installed, ["efficientnet-lite1", "resnet50"]);
}

#[test]
fn bench_reports_throughput_as_json() {
    let home = tempfile::tempdir().unwrap();
    let out = fos(
        home.path(),
        &[
            "bench",
            "backbone",
            "--synthetic",
            "--batches",
            "1,2",
            "--images",
            "2",
            "--size",
            "96",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r["images_per_s"].as_f64().unwrap() > 0.0));
}

/// The vector side of the benchmark harness (bench/run.py) on a small
/// library: the files it writes open, batch and single-query scans agree,
/// and the approximate index reaches its recall target.
#[test]
fn bench_vectors_exact_ann_and_memory_report_json() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("v");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = fos(home.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_default()
    };
    let d = dir.to_str().unwrap();
    run(&[
        "bench",
        "vectors",
        "--n",
        "3000",
        "--dim",
        "64",
        "--queries",
        "100",
        "--out",
        d,
    ]);
    let (base, queries) = (dir.join("base-3000-64.fos"), dir.join("queries-64.fos"));
    let lq = [
        "--library",
        base.to_str().unwrap(),
        "--queries",
        queries.to_str().unwrap(),
    ];
    let exact = run(&[
        &["bench", "exact"][..],
        &lq,
        &["--seconds", "0.05", "--json"],
    ]
    .concat());
    assert_eq!(exact["n"], 3000);
    assert_eq!(exact["query0_top"].as_array().unwrap().len(), 10);
    let batches: Vec<u64> = exact["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, [1, 64]);
    let ann = run(&[&["bench", "ann"][..], &lq, &["--n-queries", "50", "--json"]].concat());
    let chosen = &ann["chosen"];
    assert!(chosen["recall@10"].as_f64().unwrap() >= 0.95, "{ann}");
    assert!(chosen["parallel_queries_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(ann["shards"], 1, "3,000 rows fit one graph");
    let sharded = ["--n-queries", "50", "--shard-rows", "1000", "--json"];
    let ann = run(&[&["bench", "ann"][..], &lq, &sharded].concat());
    assert_eq!(ann["shards"], 3);
    assert!(
        ann["chosen"]["recall@10"].as_f64().unwrap() >= 0.95,
        "{ann}"
    );
    let mem = run(&["bench", "memory", "--mib", "32", "--json"]);
    assert!(mem["read_gb_per_s"].as_f64().unwrap() > 0.1);
    // A query library of another dimension is refused, not a panic.
    run(&[
        "bench",
        "vectors",
        "--n",
        "10",
        "--dim",
        "32",
        "--queries",
        "5",
        "--out",
        d,
    ]);
    let out = fos(
        home.path(),
        &[
            "bench",
            "exact",
            "--library",
            base.to_str().unwrap(),
            "--queries",
            dir.join("queries-32.fos").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 values"));
}

#[test]
fn help_shows_examples() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["classify", "--help"],
        &["weights", "--help"],
        &["bench", "--help"],
    ] {
        let out = fos(home.path(), args);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Examples:"),
            "{args:?}"
        );
    }
}

/// The real weights on real photos: the obvious ImageNet classes come out on top.
#[test]
fn classify_recognises_real_photos() {
    let Some(shared) = shared() else {
        return skip("../shared is absent");
    };
    let home = std::env::var_os("FOS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(fos_model::weights::fos_home);
    if !home.join("weights/efficientnet-lite0.safetensors").exists() {
        return skip("real weights not installed: run `fos weights fetch efficientnet-lite0`");
    }
    let dir = shared.join("data/coco-sample/images/val2017");
    let expect = [
        ("000000000285.jpg", "brown bear"),
        ("000000001818.jpg", "zebra"),
        ("000000005477.jpg", "airliner"),
        ("000000007108.jpg", "African elephant"),
    ];
    let paths: Vec<String> = expect
        .iter()
        .map(|(f, _)| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["classify", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let out = fos(&home, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = json_lines(&out);
    assert_eq!(rows.len(), expect.len());
    for (row, (file, name)) in rows.iter().zip(expect) {
        assert!(row["image"].as_str().unwrap().ends_with(file));
        let top = &row["top5"][0];
        assert_eq!(top["name"], name, "{file}: {row}");
        assert!(top["prob"].as_f64().unwrap() > 0.5, "{file}: {row}");
        assert!(top["index"].is_u64());
    }
}
