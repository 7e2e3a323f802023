//! A data set in the FOSD layout (S-FOSD / R-FOSD) made from real COCO photos,
//! read by `fos dataset build --fosd` and evaluated with `--protocol rfosd`.

mod common;

use common::{assert_clean_error, fos, s, shared, skip, stdout};

#[test]
fn reads_the_fosd_layout_and_evaluates_rfosd() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = sh.join("data/coco-sample");
    let src = tmp.path().join("src");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--coco",
            s(&d.join("annotations/instances_val2017.json")),
            "--images",
            s(&d.join("images/val2017")),
            "--out",
            s(&src),
            "--categories",
            "person,dog",
            "--splits",
            "train=0.5,test=0.5",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    // Write the FOSD tree: cut-outs as RGB on white + masks apart, boxes in 0..1.
    let fosd = tmp.path().join("FOSD");
    for dir in [
        "train/bg",
        "train/fg",
        "train/labels/masks",
        "test/bg_set1",
        "test/bg_set2",
        "test/fg",
        "test/labels/masks",
    ] {
        std::fs::create_dir_all(fosd.join(dir)).unwrap();
    }
    let mut train = serde_json::Map::new();
    let mut set1: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    let mut test_names: Vec<(String, String)> = Vec::new();
    for l in std::fs::read_to_string(src.join("manifest.jsonl"))
        .unwrap()
        .lines()
    {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = r["id"].as_str().unwrap();
        let name = format!("{id}.jpg");
        let split = if r["split"] == "train" {
            "train"
        } else {
            "test"
        };
        let fg = image::open(src.join(r["foreground"].as_str().unwrap()))
            .unwrap()
            .to_rgba8();
        let white = image::RgbImage::from_fn(fg.width(), fg.height(), |x, y| {
            let p = fg.get_pixel(x, y).0;
            if p[3] > 0 {
                image::Rgb([p[0], p[1], p[2]])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        white.save(fosd.join(split).join("fg").join(&name)).unwrap();
        std::fs::copy(
            src.join(r["mask"].as_str().unwrap()),
            fosd.join(split)
                .join("labels/masks")
                .join(format!("{id}.png")),
        )
        .unwrap();
        let bg_dir = if split == "train" {
            "train/bg"
        } else {
            "test/bg_set1"
        };
        let bg = image::open(src.join(r["background"].as_str().unwrap())).unwrap();
        bg.save(fosd.join(bg_dir).join(&name)).unwrap();
        let [w, h] = [bg.width() as f64, bg.height() as f64];
        let b: Vec<f64> = r["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let b01 = serde_json::json!([b[0] / w, b[1] / h, (b[0] + b[2]) / w, (b[1] + b[3]) / h]);
        let cat = r["category"].as_str().unwrap().to_owned();
        if split == "train" {
            train.insert(
                name.clone(),
                serde_json::json!({"bbox": b01, "class": cat, "similars": [], "dissimilars": []}),
            );
        } else {
            let e = set1
                .entry(cat.clone())
                .or_insert_with(|| serde_json::json!({"bg": [], "fg": []}));
            e["bg"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!([name, b01]));
            e["fg"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!(name));
            test_names.push((cat, name.clone()));
            if test_names.len() <= 4 {
                // R-FOSD query: a background with a box; people said its own
                // cut-out and every other one of its category fit.
                std::fs::copy(
                    fosd.join("test/bg_set1").join(&name),
                    fosd.join("test/bg_set2").join(&name),
                )
                .unwrap();
            }
        }
    }
    let mut set2 = serde_json::Map::new();
    for (cat, name) in test_names.iter().take(4) {
        let e = set1[cat]["bg"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == name.as_str())
            .unwrap()[1]
            .clone();
        let labels: serde_json::Map<String, serde_json::Value> = test_names
            .iter()
            .filter(|(c, _)| c == cat)
            .map(|(_, n)| {
                (
                    n.clone(),
                    serde_json::json!(if n == name { 1 } else { (n.len() % 2) as u8 }),
                )
            })
            .collect();
        set2.entry(cat.clone())
            .or_insert_with(|| serde_json::json!({}))[name.as_str()] =
            serde_json::json!([e, labels]);
    }
    let w = |p: &str, v: serde_json::Value| std::fs::write(fosd.join(p), v.to_string()).unwrap();
    w(
        "train/labels/train_sfosd.json",
        serde_json::Value::Object(train.clone()),
    );
    w(
        "test/labels/test_set1.json",
        serde_json::Value::Object(set1),
    );
    w(
        "test/labels/test_set2.json",
        serde_json::Value::Object(set2),
    );

    let out = tmp.path().join("ds");
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--fosd",
            s(&fosd),
            "--out",
            s(&out),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let rep: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        rep["counts"]["kept"].as_u64().unwrap() as usize,
        train.len() + test_names.len(),
        "{rep}"
    );
    assert_eq!(rep["counts"]["rfosd_queries"], 4);
    // The cut-outs came back with alpha = mask, and the boxes in pixels.
    let recs: Vec<serde_json::Value> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let srcs: Vec<serde_json::Value> = std::fs::read_to_string(src.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &recs {
        let orig = srcs
            .iter()
            .find(|o| {
                r["id"]
                    .as_str()
                    .unwrap()
                    .ends_with(o["id"].as_str().unwrap())
            })
            .unwrap();
        let a = image::open(out.join(r["mask"].as_str().unwrap()))
            .unwrap()
            .to_luma8();
        let b = image::open(src.join(orig["mask"].as_str().unwrap()))
            .unwrap()
            .to_luma8();
        assert_eq!(a, b);
        let (rb, ob) = (
            r["bbox"].as_array().unwrap(),
            orig["bbox"].as_array().unwrap(),
        );
        for i in 0..4 {
            assert!(
                (rb[i].as_i64().unwrap() - ob[i].as_i64().unwrap()).abs() <= 1,
                "{r} vs {orig}"
            );
        }
    }
    let rep_dir = tmp.path().join("rep");
    let o = fos(
        tmp.path(),
        &[
            "eval",
            "--dataset",
            s(&out),
            "--protocol",
            "rfosd",
            "--baselines",
            "random,aspect",
            "--out",
            s(&rep_dir),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["protocol"], "rfosd");
    for k in [
        "map",
        "map@20",
        "precision@1",
        "precision@5",
        "precision@10",
        "precision@20",
    ] {
        let v = m["methods"]["aspect"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} {v}");
    }
    // S-FOSD on the same data set; R-FOSD on one without labels is refused.
    let o = fos(
        tmp.path(),
        &[
            "eval",
            "--dataset",
            s(&out),
            "--baselines",
            "random",
            "--out",
            s(&rep_dir),
            "--min-pool",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = fos(
        tmp.path(),
        &[
            "eval",
            "--dataset",
            s(&src),
            "--protocol",
            "rfosd",
            "--baselines",
            "random",
            "--out",
            s(&rep_dir),
        ],
    );
    assert_clean_error(&o, "no human labels");
    // A folder without FOSD labels.
    let o = fos(
        tmp.path(),
        &[
            "dataset",
            "build",
            "--fosd",
            s(tmp.path()),
            "--out",
            s(&tmp.path().join("x")),
        ],
    );
    assert_clean_error(&o, "no FOSD labels");
}
