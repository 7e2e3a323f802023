//! `fos index`, `fos search`, `fos eval` and `fos demo` driven as a user would,
//! on a data set built from real COCO photos (../shared). Mechanics run with
//! deterministic random backbone weights; `fos demo` needs the real weights.

mod common;

use std::path::{Path, PathBuf};

use common::{a_query, assert_clean_error, fixture, fos, real_home, s, shared, skip, stdout};

#[test]
fn index_search_patterns_composites_add_remove() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let h = f.home.path();
    let o = fos(h, &["index", "stats", s(&f.lib), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let n = st["cutouts"].as_u64().unwrap();
    assert!(n > 10, "{st}");
    assert_eq!(st["dim"], 1280);
    assert!(st["model"]
        .as_str()
        .unwrap()
        .starts_with("pretrained:efficientnet-lite0:sha256="));
    assert!(st["patterns"].as_u64().unwrap() >= 3);

    let (bg, bx, _) = a_query(&f.ds);
    let comp = f.dir.join("comp");
    let o = fos(
        h,
        &[
            "search",
            "--index",
            s(&f.lib),
            "--background",
            s(&bg),
            "--box",
            &bx,
            "--category",
            "person",
            "-k",
            "4",
            "--patterns",
            "2x2",
            "--no-aspect-filter",
            "--json",
            "--composite",
            s(&comp),
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 4);
    let scores: Vec<f64> = res.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for (i, hit) in res.iter().enumerate() {
        assert_eq!(hit["rank"], i + 1);
        assert_eq!(hit["category"], "person");
        assert!(Path::new(hit["path"].as_str().unwrap()).is_file());
    }
    let pats = r["patterns"].as_array().unwrap();
    assert_eq!(pats.len(), 2);
    assert!(pats
        .iter()
        .all(|p| p["members"].as_array().unwrap().len() <= 2
            && p["pattern"].as_str().unwrap().starts_with("person|")));
    for key in ["encode", "search", "decode", "total"] {
        assert!(r["timing_ms"][key].as_f64().is_some(), "{key}");
    }
    // Composites have the background's size; a contact sheet is written.
    let (bw, bh) = image::image_dimensions(&bg).unwrap();
    let pngs: Vec<PathBuf> = std::fs::read_dir(&comp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(pngs.len(), 5);
    for p in &pngs {
        if !p.ends_with("contact-sheet.png") {
            assert_eq!(image::image_dimensions(p).unwrap(), (bw, bh));
        }
    }
    assert!(comp.join("contact-sheet.png").is_file());
    // The aspect filter (default 1.2) keeps only cut-outs of a similar shape.
    let o = fos(
        h,
        &[
            "search",
            "--index",
            s(&f.lib),
            "--background",
            s(&bg),
            "--box",
            &bx,
            "--category",
            "person",
            "-k",
            "100",
            "--json",
        ],
    );
    let r2: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r2["results"].as_array().unwrap().len() < n as usize);

    // add / remove, and refusals that leave the library byte-identical.
    let before = std::fs::read(&f.lib).unwrap();
    let extra = f.dir.join("extra/person");
    std::fs::create_dir_all(&extra).unwrap();
    let any_fg = std::fs::read_dir(f.ds.join("fg"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&any_fg, extra.join("new-one.png")).unwrap();
    let o = fos(
        h,
        &["index", "add", s(&f.lib), s(&extra.join("new-one.png"))],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = fos(h, &["index", "stats", s(&f.lib), "--json"]);
    let st2: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st2["cutouts"].as_u64().unwrap(), n + 1);
    let after_add = std::fs::read(&f.lib).unwrap();
    let o = fos(
        h,
        &["index", "add", s(&f.lib), s(&extra.join("new-one.png"))],
    );
    assert_clean_error(&o, "already in the library");
    let o = fos(h, &["index", "remove", s(&f.lib), "no-such-id"]);
    assert_clean_error(&o, "no cut-out with id");
    assert_eq!(std::fs::read(&f.lib).unwrap(), after_add);
    let o = fos(h, &["index", "remove", s(&f.lib), "person-new-one"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = fos(h, &["index", "stats", s(&f.lib), "--json"]);
    let st3: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(st3["cutouts"].as_u64().unwrap(), n);
    assert_eq!(before.len(), std::fs::read(&f.lib).unwrap().len());
    // An approximate (HNSW) index, opt-in by threshold; --exact bypasses it.
    let ann_lib = f.dir.join("ann.fos");
    let o = fos(
        h,
        &[
            "index",
            "build",
            "--dataset",
            s(&f.ds),
            "--split",
            "test",
            "--out",
            s(&ann_lib),
            "--ann-threshold",
            "5",
            // At most 4 cut-outs a graph: the people's index is sharded.
            "--ann-shard-rows",
            "4",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    for (flag, approximate) in [(None, true), (Some("--exact"), false)] {
        let mut args = vec![
            "search",
            "--index",
            s(&ann_lib),
            "--background",
            s(&bg),
            "--box",
            &bx,
            "--category",
            "person",
            "-k",
            "3",
            "--no-aspect-filter",
            "--json",
        ];
        args.extend(flag);
        let o = fos(h, &args);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(r["query"]["approximate"], approximate);
        assert_eq!(r["results"].as_array().unwrap().len(), 3);
    }
    let o = fos(h, &["index", "stats", s(&ann_lib), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cats = st["categories"].as_array().unwrap();
    let people = cats.iter().find(|c| c["name"] == "person").unwrap();
    let want = people["cutouts"].as_u64().unwrap().div_ceil(4);
    assert!(
        want >= 2 && people["approximate_graphs"].as_u64() == Some(want),
        "{st}"
    );
    // Adding keeps the library's shard size: one more person, graphs of 4.
    let o = fos(
        h,
        &["index", "add", s(&ann_lib), s(&extra.join("new-one.png"))],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = fos(h, &["index", "stats", s(&ann_lib), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cats = st["categories"].as_array().unwrap();
    let people = cats.iter().find(|c| c["name"] == "person").unwrap();
    let want = people["cutouts"].as_u64().unwrap().div_ceil(4);
    assert_eq!(people["approximate_graphs"].as_u64(), Some(want), "{st}");

    // A second writer is refused while the lock is held.
    let guard = fos_index::LibraryWriter::lock(&f.lib).unwrap();
    let o = fos(h, &["index", "remove", s(&f.lib), "person-new-one"]);
    assert_clean_error(&o, "being written by another");
    drop(guard);
}

#[test]
fn bad_queries_libraries_and_models_are_refused() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let h = f.home.path();
    let (bg, bx, _) = a_query(&f.ds);
    let search = |bx: &str, cat: &str, lib: &Path, home: &Path| {
        fos(
            home,
            &[
                "search",
                "--index",
                s(lib),
                "--background",
                s(&bg),
                "--box",
                bx,
                "--category",
                cat,
            ],
        )
    };
    assert_clean_error(&search("5000,10,20,20", "person", &f.lib, h), "not inside");
    assert_clean_error(
        &search("10,10,0,20", "person", &f.lib, h),
        "zero or negative",
    );
    assert_clean_error(
        &search("10,10,-5,20", "person", &f.lib, h),
        "zero or negative",
    );
    assert_clean_error(&search("nan,10,5,20", "person", &f.lib, h), "finite");
    assert_clean_error(&search("a,b,c,d", "person", &f.lib, h), "not a number");
    assert_clean_error(&search("1,2,3", "person", &f.lib, h), "four numbers");
    assert_clean_error(&search(&bx, "unicorn", &f.lib, h), "person");
    // Corrupt and truncated libraries.
    let bytes = std::fs::read(&f.lib).unwrap();
    for (name, b) in [
        ("flipped", {
            let mut b = bytes.clone();
            let i = b.len() - 100;
            b[i] ^= 1;
            b
        }),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("empty", vec![]),
    ] {
        let p = f.dir.join(format!("{name}.fos"));
        std::fs::write(&p, b).unwrap();
        let o = search(&bx, "person", &p, h);
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(!common::stderr(&o).contains("panicked"));
    }
    // A library made by another model.
    let other = tempfile::tempdir().unwrap();
    let w = fos_model::backbone::Backbone::synthetic_weights(
        fos_model::backbone::BackboneKind::EfficientNetLite0,
        2,
    );
    fos_model::weights::Cache::at(other.path().join("weights"))
        .store("efficientnet-lite0", &w, "test")
        .unwrap();
    common::mark_synthetic(other.path());
    assert_clean_error(
        &search(&bx, "person", &f.lib, other.path()),
        "indexed with model",
    );
    // An image with a box: fine; a corrupt background: clean error.
    let junk = f.dir.join("junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff\xe0 not really").unwrap();
    let o = fos(
        h,
        &[
            "search",
            "--index",
            s(&f.lib),
            "--background",
            s(&junk),
            "--box",
            &bx,
            "--category",
            "person",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn eval_reports_every_method_in_one_run() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let out = f.dir.join("report");
    let o = fos(
        f.home.path(),
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--baselines",
            "random,aspect,pretrained",
            "--out",
            s(&out),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["protocol"], "sfosd");
    assert!(r["queries"].as_u64().unwrap() > 5);
    for m in ["random", "aspect", "pretrained"] {
        for k in ["recall@1", "recall@5", "recall@10", "recall@20", "mrr"] {
            let v = r["methods"][m][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{m} {k} {v}");
        }
        assert!(r["methods"][m]["recall@20"].as_f64() >= r["methods"][m]["recall@1"].as_f64());
    }
    for file in ["report.md", "per_category.csv", "metrics.json", "chart.svg"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    // Every figure has its interval and query count; `mrr` is fos's own.
    let aspect = &r["methods"]["aspect"];
    assert_eq!(aspect["queries"], r["queries"]);
    for k in ["recall@1", "recall@10", "mrr"] {
        let v = aspect[k].as_f64().unwrap();
        let ci = aspect["ci95"][k].as_array().unwrap();
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= v && v <= hi, "{k} {v} [{lo}, {hi}]");
    }
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("aspect"),
        "{svg:.200}"
    );
    let o = fos(
        f.home.path(),
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--protocol",
            "patterns",
            "--baselines",
            "random,aspect",
            "--out",
            s(&out),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["protocol"], "patterns");
    let o = fos(
        f.home.path(),
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--baselines",
            "student",
            "--out",
            s(&out),
        ],
    );
    assert_clean_error(&o, "needs a trained model");
    let o = fos(
        f.home.path(),
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--split",
            "nope",
            "--baselines",
            "random",
            "--out",
            s(&out),
        ],
    );
    assert_clean_error(&o, "no cut-outs in split");
}

#[test]
fn eval_served_is_what_search_returns_and_scores_round_trip() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let h = f.home.path();
    let out = f.dir.join("served");
    let dump = f.dir.join("scores.csv");
    let o = fos(
        h,
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--baselines",
            "aspect,served",
            "--box-jitter",
            "0",
            "--dump-scores",
            s(&dump),
            "--out",
            s(&out),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let from_ds: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    // `served` against the library of the same split, through `fos search`.
    let (bg, bx, id) = a_query(&f.ds);
    let o = fos(
        h,
        &[
            "search",
            "--index",
            s(&f.lib),
            "--background",
            s(&bg),
            "--box",
            &bx,
            "--category",
            "person",
            "-k",
            "10",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let searched: Vec<(String, f64)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(!searched.is_empty());
    let text = std::fs::read_to_string(&dump).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("category,query,candidate,score,label,valid,method")
    );
    let mut served: Vec<(String, f64)> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| c[1] == id && c[6] == "served")
        .map(|c| (c[2].to_owned(), c[3].parse::<f64>().unwrap()))
        .filter(|(_, sc)| sc.is_finite())
        .collect();
    served.sort_by(|a, b| b.1.total_cmp(&a.1));
    served.truncate(10);
    assert_eq!(served.len(), searched.len());
    for ((a, sa), (b, sb)) in served.iter().zip(&searched) {
        assert_eq!(a, b);
        assert!((sa - sb).abs() < 1e-6, "{a} {sa} {sb}");
    }
    // The dumped scores give back the same figures without the data set.
    let o = fos(
        h,
        &[
            "eval",
            "--scores",
            s(&dump),
            "--out",
            s(&f.dir.join("again")),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let again: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for m in ["aspect", "served"] {
        for k in ["recall@1", "recall@5", "recall@10", "recall@20", "mrr"] {
            assert_eq!(again["methods"][m][k], from_ds["methods"][m][k], "{m} {k}");
            assert_eq!(
                again["methods"][m]["ci95"][k],
                from_ds["methods"][m]["ci95"][k]
            );
        }
    }
    assert_eq!(again["comparisons"][0]["reference"], "served");
    // A malformed file: one line naming the line and the column, exit 2.
    let bad = f.dir.join("bad.csv");
    std::fs::write(
        &bad,
        "category,query,candidate,score,label\nperson,q1,f1,0.5,1\nperson,q1,f2,high,0\n",
    )
    .unwrap();
    let o = fos(
        h,
        &["eval", "--scores", s(&bad), "--out", s(&f.dir.join("bad"))],
    );
    assert_clean_error(&o, "line 3: column 4 (score)");
    let o = fos(
        h,
        &[
            "eval",
            "--scores",
            s(&dump),
            "--reference",
            "nope",
            "--out",
            s(&f.dir.join("bad")),
        ],
    );
    assert_clean_error(&o, "--reference");
}

#[test]
fn demo_runs_a_real_query_and_writes_a_contact_sheet() {
    let tmp = tempfile::tempdir().unwrap();
    let o = fos(
        tmp.path(),
        &[
            "demo",
            "--data",
            s(&tmp.path().join("nothing")),
            "--out",
            s(&tmp.path().join("o")),
        ],
    );
    assert_clean_error(&o, "cocodataset.org");
    let (Some(_), Some(real)) = (shared(), real_home()) else {
        return skip("../shared/data or the real efficientnet-lite0 weights absent");
    };
    // A private FOS_HOME holding only the real weights, so the demo's cache
    // is built from scratch.
    std::fs::create_dir_all(tmp.path().join("weights")).unwrap();
    std::fs::copy(
        real.join("weights/efficientnet-lite0.safetensors"),
        tmp.path().join("weights/efficientnet-lite0.safetensors"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = fos(tmp.path(), &["demo", "--out", s(&out)]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("rank") && text.contains("pattern person/"),
        "{text}"
    );
    assert!(out.join("contact-sheet.png").is_file());
    // The cached library is the default of `fos search`.
    assert!(tmp.path().join("demo/library.fos").is_file());
    let o = fos(tmp.path(), &["demo", "--out", s(&out)]);
    assert!(o.status.success());
    assert!(
        !common::stderr(&o).contains("building the demo"),
        "the second run must use the cache"
    );
    // The committed default model re-ranks with DiscoFOS's fusion head.
    let o = fos(tmp.path(), &["demo", "--out", s(&out), "--rerank"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(stdout(&o).contains("rerank"), "{}", stdout(&o));
}
