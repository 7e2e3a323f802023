//! `fos dataset build` and `fos dataset patterns` on real COCO photos
//! (../shared/data): cut-outs, masks, inpainted backgrounds, splits, resume,
//! bad input. Skipped with a message when ../shared is absent, unless
//! `FOS_REQUIRE_REAL=1`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_clean_error, fos, real_home, shared, skip, stdout};

fn val_args(s: &Path) -> Vec<String> {
    let d = s.join("data/coco-sample");
    vec![
        "--coco".into(),
        d.join("annotations/instances_val2017.json")
            .to_string_lossy()
            .into(),
        "--images".into(),
        d.join("images/val2017").to_string_lossy().into(),
    ]
}

fn build(home: &Path, extra: &[&str], sources: &[String]) -> std::process::Output {
    let mut args: Vec<&str> = vec!["dataset", "build"];
    args.extend(sources.iter().map(String::as_str));
    args.extend(extra);
    fos(home, &args)
}

fn manifest(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[test]
fn builds_cutouts_masks_and_inpainted_backgrounds_from_real_photos() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let o = build(
        tmp.path(),
        &[
            "--out",
            out.to_str().unwrap(),
            "--background-format",
            "png",
            "--json",
        ],
        &val_args(&sh),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let kept = report["counts"]["kept"].as_u64().unwrap();
    assert!(kept > 100, "kept {kept}");
    assert!(report["counts"]["too_small"].as_u64().unwrap() > 0);
    assert!(out.join("summary.md").is_file() && !tmp.path().join("ds.partial").exists());
    let recs = manifest(&out);
    assert_eq!(recs.len() as u64, kept);
    let mut split_of_photo: HashMap<String, String> = HashMap::new();
    let mut photos: HashMap<String, image::RgbImage> = HashMap::new();
    for r in &recs {
        // No photo in two splits.
        let src = s(r, "source_image");
        let prev = split_of_photo.insert(src.clone(), s(r, "split"));
        assert!(
            prev.is_none_or(|p| p == s(r, "split")),
            "{src} in two splits"
        );
        // Alpha equals the mask.
        let fg = image::open(out.join(s(r, "foreground")))
            .unwrap()
            .to_rgba8();
        let mask = image::open(out.join(s(r, "mask"))).unwrap().to_luma8();
        assert_eq!(fg.dimensions(), mask.dimensions());
        assert!(
            fg.pixels()
                .zip(mask.pixels())
                .all(|(a, m)| a.0[3] == m.0[0]),
            "{}",
            s(r, "id")
        );
        let bbox: Vec<u32> = r["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!((bbox[2], bbox[3]), fg.dimensions());
        // The background differs from the photo only inside the (dilated)
        // hole, the hole covers the mask, and inside the mask it has changed.
        let photo = photos
            .entry(src.clone())
            .or_insert_with(|| image::open(&src).unwrap().to_rgb8());
        let bg = image::open(out.join(s(r, "background"))).unwrap().to_rgb8();
        let hole = image::open(out.join(s(r, "hole"))).unwrap().to_luma8();
        assert_eq!(bg.dimensions(), photo.dimensions());
        for ((p, b), h) in photo.pixels().zip(bg.pixels()).zip(hole.pixels()) {
            if h.0[0] == 0 {
                assert_eq!(p, b, "{}: pixel outside the hole changed", s(r, "id"));
            }
        }
        let mut changed = 0u64;
        let mut inside = 0u64;
        for (x, y, m) in mask.enumerate_pixels() {
            if m.0[0] > 0 {
                let (px, py) = (bbox[0] + x, bbox[1] + y);
                assert!(hole.get_pixel(px, py).0[0] > 0, "hole misses the mask");
                inside += 1;
                let d: i32 = (0..3)
                    .map(|c| {
                        (photo.get_pixel(px, py).0[c] as i32 - bg.get_pixel(px, py).0[c] as i32)
                            .abs()
                    })
                    .sum();
                changed += (d > 6) as u64;
            }
        }
        assert!(
            changed * 10 >= inside,
            "{}: only {changed}/{inside} object pixels changed",
            s(r, "id")
        );
    }
    // Deterministic: the same command gives the same manifest; another seed
    // other splits.
    let again = tmp.path().join("again");
    let o = build(
        tmp.path(),
        &[
            "--out",
            again.to_str().unwrap(),
            "--background-format",
            "png",
        ],
        &val_args(&sh),
    );
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(out.join("manifest.jsonl")).unwrap(),
        std::fs::read(again.join("manifest.jsonl")).unwrap()
    );
    let o = build(
        tmp.path(),
        &["--out", again.to_str().unwrap(), "--seed", "9", "--force"],
        &val_args(&sh),
    );
    assert!(o.status.success());
    let other: Vec<String> = manifest(&again).iter().map(|r| s(r, "split")).collect();
    assert_ne!(
        other,
        recs.iter().map(|r| s(r, "split")).collect::<Vec<_>>()
    );
    // An existing data set is not overwritten without --force.
    let o = build(
        tmp.path(),
        &["--out", again.to_str().unwrap()],
        &val_args(&sh),
    );
    assert_clean_error(&o, "already exists");
}

#[test]
fn polygon_masks_match_coco_areas() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let path = sh.join("data/coco-extra/annotations/instances.json");
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let file = fos_data::coco::CocoFile::load(&path).unwrap();
    assert!(
        file.problems.is_empty(),
        "{:?}",
        &file.problems[..3.min(file.problems.len())]
    );
    let sizes: HashMap<u64, (u32, u32)> = file
        .images
        .iter()
        .map(|i| (i.id, (i.width, i.height)))
        .collect();
    let areas: HashMap<u64, f64> = raw["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_u64().unwrap(), a["area"].as_f64().unwrap()))
        .collect();
    let (mut n, mut rel_err) = (0usize, 0f64);
    for a in file
        .annotations
        .iter()
        .filter(|a| a.area_hint_large(&areas))
    {
        if let fos_data::coco::Segmentation::Polygons(_) = a.segmentation {
            let (w, h) = sizes[&a.image_id];
            let m = a.segmentation.to_mask(w, h).unwrap();
            rel_err += (m.area() as f64 - areas[&a.id]).abs() / areas[&a.id];
            n += 1;
        }
    }
    assert!(n > 1000, "{n} polygon instances");
    let mean = rel_err / n as f64;
    assert!(mean < 0.05, "mean relative area error {mean}");
}

trait AreaHint {
    fn area_hint_large(&self, areas: &HashMap<u64, f64>) -> bool;
}

impl AreaHint for fos_data::coco::CocoAnnotation {
    /// Instances of at least 1,000 pixels (tiny ones are dominated by the
    /// rasteriser's boundary convention).
    fn area_hint_large(&self, areas: &HashMap<u64, f64>) -> bool {
        areas.get(&self.id).is_some_and(|&a| a >= 1000.0)
    }
}

#[test]
fn an_interrupted_build_resumes_and_ends_identical() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let mut args: Vec<String> = vec!["dataset".into(), "build".into()];
    args.extend(val_args(&sh));
    args.extend([
        "--out".into(),
        out.to_string_lossy().into(),
        "--json".into(),
    ]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fos"))
        .args(&args)
        .env("FOS_THREADS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let fg = tmp.path().join("ds.partial/fg");
    let t0 = std::time::Instant::now();
    // Finished cut-outs only: an atomic write in progress is a `.fos-tmp-*` file.
    let done = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    while done(&fg) < 20 {
        assert!(t0.elapsed().as_secs() < 120, "build made no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed build must not publish");
    let o = fos(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rep: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(rep["resumed"].as_u64().unwrap() >= 20, "{rep}");
    let clean = tmp.path().join("clean");
    let mut args2 = args.clone();
    let n = args2.len();
    args2[n - 2] = clean.to_string_lossy().into();
    assert!(fos(
        tmp.path(),
        &args2.iter().map(String::as_str).collect::<Vec<_>>()
    )
    .status
    .success());
    assert_eq!(
        std::fs::read(out.join("manifest.jsonl")).unwrap(),
        std::fs::read(clean.join("manifest.jsonl")).unwrap()
    );
}

#[test]
fn bad_sources_are_counted_or_refused_cleanly() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs = sh.join("data/coco-sample/images/val2017");
    let ann = tmp.path().join("bad.json");
    std::fs::write(
        &ann,
        r#"{"images": [{"id": 285, "file_name": "000000000285.jpg", "width": 586, "height": 640},
                       {"id": 7, "file_name": "missing.jpg", "width": 640, "height": 480}],
            "categories": [{"id": 23, "name": "bear"}],
            "annotations": [
              {"id": 1, "image_id": 285, "category_id": 23, "iscrowd": 0,
               "segmentation": [[100, 100, 400, 100, 400, 400, 100, 400]]},
              {"id": 2, "image_id": 285, "category_id": 23, "segmentation": {"size": [640, 586], "counts": "zz!"}},
              {"id": 3, "image_id": 999, "category_id": 23, "segmentation": [[1, 1, 5, 1, 5, 5]]},
              {"id": 4, "image_id": 7, "category_id": 23, "segmentation": [[100, 100, 400, 100, 400, 400]]},
              {"id": 5, "image_id": 285, "category_id": 23, "segmentation": "oops"},
              {"id": 6, "image_id": 285, "category_id": 99, "segmentation": [[1, 1, 5, 1, 5, 5]]}
            ]}"#,
    )
    .unwrap();
    let out = tmp.path().join("ds");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            ann.to_str().unwrap(),
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
            "--max-overlap",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rep: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let c = &rep["counts"];
    assert_eq!(
        (
            c["kept"].as_u64(),
            c["bad_mask"].as_u64(),
            c["unknown_image"].as_u64(),
            c["missing_image"].as_u64(),
            c["bad_annotation"].as_u64(),
            c["unknown_category"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1), Some(1)),
        "{rep}"
    );
    // Refusals: not JSON, no images folder, unknown category, mismatched flags.
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, b"\x00\x01 not json").unwrap();
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            junk.to_str().unwrap(),
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_clean_error(&o, "not valid JSON");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            ann.to_str().unwrap(),
            "--images",
            "/nonexistent",
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_clean_error(&o, "/nonexistent");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            ann.to_str().unwrap(),
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
            "--categories",
            "unicorn",
        ],
    );
    assert_clean_error(&o, "unknown category \"unicorn\"");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            ann.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert_clean_error(&o, "--images");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            ann.to_str().unwrap(),
            "--images",
            imgs.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
            "--splits",
            "train=0.5",
        ],
    );
    assert_clean_error(&o, "sum to");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "patterns",
            tmp.path().to_str().unwrap(),
            "--cluster",
            "auto",
        ],
    );
    assert_clean_error(&o, "not a fos data set");
}

#[test]
fn patterns_from_labels_and_from_clusters_and_a_folder_of_cutouts() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let o = build(
        tmp.path(),
        &["--out", out.to_str().unwrap(), "--categories", "person,dog"],
        &val_args(&sh),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let recs = manifest(&out);
    // Labels: attribute tuples.
    let mut csv = String::from("id,orientation,truncation\n");
    for (i, r) in recs.iter().enumerate() {
        csv.push_str(&format!(
            "{},{},none\n",
            s(r, "id"),
            if i % 2 == 0 { "front" } else { "side" }
        ));
    }
    let labels = tmp.path().join("attrs.csv");
    std::fs::write(&labels, csv).unwrap();
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "patterns",
            out.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let with = manifest(&out);
    assert_eq!(
        with[0]["pattern"],
        format!("{}|front|none", s(&with[0], "category"))
    );
    std::fs::write(&labels, "id,orientation\nnot-an-id,front\n").unwrap();
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "patterns",
            out.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
        ],
    );
    assert_clean_error(&o, "not in the data set");
    assert_eq!(
        manifest(&out),
        with,
        "a refused labelling must not touch the manifest"
    );
    // Clusters on real backbone features.
    if let Some(home) = real_home() {
        let o = fos(
            &home,
            &[
                "dataset",
                "patterns",
                out.to_str().unwrap(),
                "--cluster",
                "auto",
            ],
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        let recs = manifest(&out);
        let persons: Vec<&serde_json::Value> =
            recs.iter().filter(|r| r["category"] == "person").collect();
        let k: std::collections::HashSet<String> =
            persons.iter().map(|r| s(r, "pattern")).collect();
        let expect = ((persons.len() as f64 / 2.0).sqrt().round() as usize).max(1);
        assert_eq!(k.len(), expect);
        assert!(k.iter().all(|p| p.starts_with("person/p")));
    } else {
        skip("real efficientnet-lite0 weights absent (fos weights fetch efficientnet-lite0)");
    }
    // A folder of cut-outs: PNG with alpha, and JPEG + mask.
    let lib = tmp.path().join("lib");
    std::fs::create_dir_all(lib.join("person")).unwrap();
    let r0 = &recs[0];
    std::fs::copy(out.join(s(r0, "foreground")), lib.join("person/a.png")).unwrap();
    let rgb = image::open(out.join(s(r0, "foreground")))
        .unwrap()
        .to_rgb8();
    rgb.save(lib.join("person/b.jpg")).unwrap();
    std::fs::copy(out.join(s(r0, "mask")), lib.join("person/b.mask.png")).unwrap();
    rgb.save(lib.join("person/c.jpg")).unwrap(); // no mask: skipped
    let fout = tmp.path().join("fds");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--foregrounds",
            lib.to_str().unwrap(),
            "--out",
            fout.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rep: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            rep["counts"]["kept"].as_u64(),
            rep["counts"]["bad_mask"].as_u64()
        ),
        (Some(2), Some(1)),
        "{rep}"
    );
    let f = manifest(&fout);
    let a = image::open(fout.join(s(&f[0], "foreground")))
        .unwrap()
        .to_rgba8();
    let b = image::open(fout.join(s(&f[1], "foreground")))
        .unwrap()
        .to_rgba8();
    assert_eq!(a.dimensions(), b.dimensions());
    assert!(a.pixels().zip(b.pixels()).all(|(p, q)| p.0[3] == q.0[3]));
    let _: PathBuf = fout;
}
