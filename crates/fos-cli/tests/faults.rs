//! Faults not covered by the per-command suites: an empty library, a failed
//! write that must leave the library byte for byte as it was, COCO files with
//! wrong types and huge numbers, and damaged model descriptions. Each: a
//! clear one-line error and exit 2 (or a counted skip), never a panic.

mod common;

use common::{assert_clean_error, fos, s, stderr, stdout, synthetic_home};

/// A cut-out PNG with alpha.
fn cutout(path: &std::path::Path, w: u32, h: u32) {
    let mut img = image::RgbaImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let inside = (x as f32 - w as f32 / 2.0).powi(2) / (w * w) as f32 * 4.0
            + (y as f32 - h as f32 / 2.0).powi(2) / (h * h) as f32 * 4.0
            < 1.0;
        *p = image::Rgba([40, 120, 200, if inside { 255 } else { 0 }]);
    }
    img.save(path).unwrap();
}

#[test]
fn failed_writes_leave_the_library_untouched_and_an_empty_library_is_refused() {
    let home = synthetic_home();
    let h = home.path();
    let dir = tempfile::tempdir().unwrap();
    let fg = dir.path().join("fg/person");
    std::fs::create_dir_all(&fg).unwrap();
    cutout(&fg.join("a.png"), 30, 60);
    cutout(&fg.join("b.png"), 40, 50);
    let lib = dir.path().join("lib.fos");
    let o = fos(
        h,
        &[
            "index",
            "build",
            "--foregrounds",
            s(&dir.path().join("fg")),
            "--out",
            s(&lib),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(&lib).unwrap();

    // An add with one bad file among good ones: refused, nothing written.
    let good = dir.path().join("c.png");
    cutout(&good, 20, 20);
    let bad = dir.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not the rest of a PNG").unwrap();
    let o = fos(h, &["index", "add", s(&lib), s(&good), s(&bad)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
    assert_eq!(
        std::fs::read(&lib).unwrap(),
        before,
        "a failed add changed the library"
    );
    // Removing an id that is not there: refused, nothing written.
    let o = fos(h, &["index", "remove", s(&lib), "person-nope"]);
    assert_clean_error(&o, "person-nope");
    assert_eq!(std::fs::read(&lib).unwrap(), before);

    // Remove everything: an empty library opens, and a search says why it
    // cannot answer.
    let o = fos(h, &["index", "remove", s(&lib), "person-a", "person-b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fos(h, &["index", "stats", s(&lib), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["cutouts"], 0, "{stats}");
    let bg = dir.path().join("bg.png");
    image::RgbImage::from_pixel(80, 60, image::Rgb([10, 200, 30]))
        .save(&bg)
        .unwrap();
    let o = fos(
        h,
        &[
            "search",
            "--index",
            s(&lib),
            "--background",
            s(&bg),
            "--box",
            "10,10,20,30",
            "--category",
            "person",
        ],
    );
    assert_clean_error(&o, "empty");
}

#[test]
fn coco_files_with_wrong_types_and_huge_numbers_are_counted_or_refused() {
    let home = synthetic_home();
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]))
        .save(imgs.join("a.png"))
        .unwrap();
    let build = |json: &str| {
        let ann = dir.path().join("ann.json");
        std::fs::write(&ann, json).unwrap();
        let out = dir.path().join("ds");
        let _ = std::fs::remove_dir_all(&out);
        fos(
            home.path(),
            &[
                "dataset",
                "build",
                "--coco",
                s(&ann),
                "--images",
                s(&imgs),
                "--out",
                s(&out),
                "--json",
            ],
        )
    };
    // Records of the wrong shape are skipped and counted.
    let o = build(
        r#"{"images": [{"id": "x", "file_name": 3, "width": -1, "height": 1e40},
                       {"id": 1, "file_name": "a.png", "width": 4294967295, "height": 4294967295},
                       {"id": 2, "file_name": "a.png", "width": 8, "height": 6}],
            "categories": [{"id": 1.5, "name": null}, {"id": 1, "name": "person"}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1,
               "segmentation": {"size": [4294967295, 4294967295], "counts": [18446744073709551615]}},
              {"id": 2, "image_id": 2, "category_id": 1, "segmentation": {"size": [6, 8], "counts": "zz!"}},
              {"id": 3, "image_id": 2, "category_id": 1, "segmentation": {"size": [6, 8], "counts": [1e300]}},
              {"id": 4, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 1e308, 0, 1e308, 1e308]]},
              {"id": 5, "image_id": 2, "segmentation": [[1, 1, 5, 1, 5, 5]]}
            ]}"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(rep["counts"]["kept"], 0, "{rep}");
    // Not a COCO file at all: a clear error.
    for (json, needle) in [
        (
            r#"{"images": 5, "categories": [], "annotations": []}"#,
            "images",
        ),
        ("[1, 2, 3]", "object"),
        ("{\"images\": [", "JSON"),
    ] {
        assert_clean_error(&build(json), needle);
    }
}

#[test]
fn damaged_model_descriptions_are_refused() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default");
    let home = synthetic_home();
    let dir = tempfile::tempdir().unwrap();
    let json = std::fs::read(model.join("model.json")).unwrap();
    let lib = dir.path().join("none.fos");
    for (name, bytes, needle) in [
        ("truncated", json[..json.len() / 2].to_vec(), "not JSON"),
        ("empty", Vec::new(), "not JSON"),
        (
            "future",
            String::from_utf8(json.clone())
                .unwrap()
                .replacen("\"version\": 1", "\"version\": 99", 1)
                .into_bytes(),
            "version",
        ),
    ] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.json"), bytes).unwrap();
        std::fs::copy(
            model.join("weights.safetensors"),
            d.join("weights.safetensors"),
        )
        .unwrap();
        let o = fos(
            home.path(),
            &[
                "index",
                "build",
                "--foregrounds",
                s(dir.path()),
                "--model",
                s(&d),
                "--out",
                s(&lib),
            ],
        );
        assert_clean_error(&o, needle);
        assert!(!lib.exists());
    }
}
