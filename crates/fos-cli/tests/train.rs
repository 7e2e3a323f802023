//! `fos train` on real photos: every stage overfits a handful of examples,
//! runs are deterministic under a seed, a killed run resumes to the same
//! model, and the trained model drives eval, index and search (--rerank).

mod common;

use std::path::Path;

use common::{assert_clean_error, fixture, fos, fos_command, real_home, s, skip, stderr, stdout};

/// Small settings: few views, short stages, real learning rates.
const SMALL: &str = r#"{
  "fg_variants": 2, "query_variants": 2, "negatives": 2,
  "embed": 64, "hidden": 128, "reduce": 16, "fusion": 32,
  "teacher": {"epochs": 25},
  "student": {"epochs": 25, "lr": 0.001},
  "early_fusion": {"epochs": 25, "lr": 0.001},
  "disco_teacher": {"epochs": 25, "lr": 0.001},
  "disco_student": {"epochs": 25, "lr": 0.001}
}"#;

fn losses(model: &Path, stage: &str) -> Vec<f64> {
    let csv = std::fs::read_to_string(model.join(format!("log/{stage}.csv"))).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn training_overfits_resumes_and_serves_search() {
    let Some(home) = real_home() else {
        return skip(
            "real EfficientNet-Lite0 weights not installed (fos weights fetch efficientnet-lite0)",
        );
    };
    let Some(f) = fixture() else {
        return skip("../shared/data/coco-sample not found");
    };
    let cfg = f.dir.join("small.json");
    std::fs::write(&cfg, SMALL).unwrap();
    let m = f.dir.join("model");
    let o = fos(
        &home,
        &[
            "train",
            "all",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&m),
            "--config",
            s(&cfg),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(summary["cache_seconds"].as_f64().unwrap() > 0.0);

    // Every stage's training loss falls by an asserted margin.
    for (stage, keep) in [
        ("teacher", 0.5),
        ("student", 0.8),
        ("early-fusion", 0.8),
        ("discofos-teacher", 0.8),
        ("discofos-student", 0.8),
    ] {
        let l = losses(&m, stage);
        assert_eq!(l.len(), 25, "{stage}");
        let (first, last) = (l[0], *l.last().unwrap());
        assert!(last < first * keep, "{stage}: loss {first} -> {last}");
        assert!(m.join(format!("log/{stage}.png")).is_file());
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["heads"].as_array().unwrap().len(), 5, "{info}");
    assert_eq!(info["dims"]["embed"], 64);

    // Deterministic under a seed: the teacher again, into another folder.
    let m2 = f.dir.join("model2");
    let o = fos(
        &home,
        &[
            "train",
            "teacher",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&m2),
            "--config",
            s(&cfg),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let teacher_ck = |d: &Path| sha(&d.join("checkpoints/teacher.safetensors"));
    assert_eq!(
        teacher_ck(&m),
        teacher_ck(&m2),
        "same seed, different teacher"
    );

    // Killed after a checkpoint, resumed: the same teacher as uninterrupted.
    let m3 = f.dir.join("model3");
    let mut child = fos_command(&home)
        .args([
            "train",
            "teacher",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&m3),
            "--config",
            s(&cfg),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ck = m3.join("checkpoints/teacher.json");
    let t = std::time::Instant::now();
    while !ck.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let o = fos(
        &home,
        &[
            "train",
            "teacher",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&m3),
            "--config",
            s(&cfg),
            "--resume",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(teacher_ck(&m), teacher_ck(&m3), "resumed teacher differs");

    // The model drives eval (all methods), index and search with re-ranking.
    let out = f.dir.join("eval");
    let o = fos(
        &home,
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--model",
            s(&m),
            "--out",
            s(&out),
            "--json",
            "--min-pool",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for method in [
        "random",
        "aspect",
        "pretrained",
        "early-fusion",
        "student",
        "discofos",
        "served",
    ] {
        assert!(
            r["methods"][method]["mrr"].as_f64().is_some(),
            "{method}: {r}"
        );
    }
    let o = fos(
        &home,
        &[
            "eval",
            "--dataset",
            s(&f.ds),
            "--model",
            s(&m),
            "--out",
            s(&out),
            "--json",
            "--protocol",
            "patterns",
            "--baselines",
            "student",
            "--min-pool",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(r["teacher"]["top5"].as_f64().unwrap() >= r["teacher"]["top1"].as_f64().unwrap());

    let lib = f.dir.join("trained.fos");
    let o = fos(
        &home,
        &[
            "index",
            "build",
            "--dataset",
            s(&f.ds),
            "--split",
            "test",
            "--model",
            s(&m),
            "--out",
            s(&lib),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (bg, bbox, _) = common::a_query(&f.ds);
    let search = |extra: &[&str]| {
        let mut args = vec![
            "search",
            "--index",
            s(&lib),
            "--model",
            s(&m),
            "--background",
            s(&bg),
            "--box",
            &bbox,
            "--category",
            "person",
            "--json",
            "-k",
            "5",
        ];
        args.extend_from_slice(extra);
        fos(&home, &args)
    };
    let o = search(&["--rerank"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let scores: Vec<f64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(
        !scores.is_empty() && scores.iter().all(|s| (-1.0..=1.0).contains(s)),
        "{v}"
    );
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(v["timing_ms"]["rerank"].as_f64().unwrap() > 0.0);
    // Another model (the pretrained stand-in) is refused on this library.
    let o = search(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fos(
        &home,
        &[
            "search",
            "--index",
            s(&lib),
            "--model",
            "pretrained",
            "--background",
            s(&bg),
            "--box",
            &bbox,
            "--category",
            "person",
        ],
    );
    assert_clean_error(&o, "model");
    // A damaged model is refused with a clear message.
    let bad = f.dir.join("bad-model");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(m.join("model.json"), bad.join("model.json")).unwrap();
    let mut w = sha(&m.join("weights.safetensors"));
    let n = w.len();
    w[n - 3] ^= 0xff;
    std::fs::write(bad.join("weights.safetensors"), w).unwrap();
    let o = fos(
        &home,
        &[
            "search",
            "--index",
            s(&lib),
            "--model",
            s(&bad),
            "--background",
            s(&bg),
            "--box",
            &bbox,
            "--category",
            "person",
        ],
    );
    assert_clean_error(&o, "does not match");
}

#[test]
fn train_refuses_bad_settings_and_data() {
    let Some(f) = fixture() else {
        return skip("../shared/data/coco-sample not found");
    };
    let home = f.home.path();
    let cfg = f.dir.join("typo.json");
    std::fs::write(&cfg, r#"{"teacher": {"epoch": 3}}"#).unwrap();
    let o = fos(
        home,
        &[
            "train",
            "teacher",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&f.dir.join("m")),
            "--config",
            s(&cfg),
        ],
    );
    assert_clean_error(&o, "teacher.epoch");
    let o = fos(
        home,
        &[
            "train",
            "student",
            "--dataset",
            s(&f.ds),
            "--out",
            s(&f.dir.join("m")),
        ],
    );
    assert_clean_error(&o, "teacher");
    let o = fos(
        home,
        &[
            "train",
            "all",
            "--dataset",
            s(&f.dir.join("nope")),
            "--out",
            s(&f.dir.join("m")),
        ],
    );
    assert_clean_error(&o, "nope");
    let o = fos(home, &["train", "all", "--print-config"]);
    assert!(o.status.success());
    let c: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(c["teacher"]["lr"], 0.02);
}

#[test]
fn fine_tuning_trains_the_backbone_and_the_model_encodes_with_it() {
    let Some(home) = real_home() else {
        return skip(
            "real EfficientNet-Lite0 weights not installed (fos weights fetch efficientnet-lite0)",
        );
    };
    let Some(f) = fixture() else {
        return skip("../shared/data/coco-sample not found");
    };
    let cfg = f.dir.join("ft.json");
    std::fs::write(
        &cfg,
        r#"{
  "fg_variants": 2, "query_variants": 2, "negatives": 2,
  "embed": 64, "hidden": 128, "reduce": 16, "fusion": 32,
  "teacher": {"epochs": 2},
  "teacher_fine_tune": {"epochs": 3, "batch": 8, "lr": 0.02, "lr_halve_every": 0},
  "student": {"epochs": 5, "lr": 0.001}
}"#,
    )
    .unwrap();
    let m = f.dir.join("tuned");
    let train = |what: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            what,
            "--dataset",
            s(&f.ds),
            "--out",
            s(&m),
            "--config",
            s(&cfg),
        ];
        args.extend_from_slice(extra);
        fos(&home, &args)
    };
    // --fine-tune is for the teacher.
    assert_clean_error(&train("student", &["--fine-tune"]), "--fine-tune");
    let o = train("teacher", &["--fine-tune"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A head on the frozen backbone first, then the whole teacher.
    assert_eq!(losses(&m, "teacher").len(), 2);
    let l = losses(&m, "teacher-fine-tune");
    assert_eq!(l.len(), 3);
    assert!(l[2] < l[0] * 0.9, "fine-tuning loss {l:?}");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["fine_tuned_backbone"], true, "{info}");

    // The stored backbone moved away from the pretrained one, a little.
    let kind = fos_model::backbone::BackboneKind::EfficientNetLite0;
    let pre = fos_model::weights::Cache::at(home.join("weights"))
        .load(kind.name(), "")
        .unwrap();
    let pre = fos_model::backbone::Backbone::fold(kind, &pre).unwrap();
    let tuned =
        fos_model::weights::Weights::load_safetensors(&m.join("weights.safetensors")).unwrap();
    let name = "_blocks.15._project_conv.weight";
    let (a, b) = (
        &pre.tensor(name).unwrap().data,
        &tuned.tensor(&format!("fg_backbone.{name}")).unwrap().data,
    );
    let change: f32 = a.iter().zip(b.iter()).map(|(a, b)| (a - b).abs()).sum();
    let size: f32 = a.iter().map(|a| a.abs()).sum();
    assert!(
        change > 1e-3 * size && change < 0.5 * size,
        "change {change} of {size}"
    );

    // The student learns against the fine-tuned teacher; the model indexes
    // and searches.
    let o = train("student", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lib = f.dir.join("tuned.fos");
    let o = fos(
        &home,
        &[
            "index",
            "build",
            "--dataset",
            s(&f.ds),
            "--split",
            "test",
            "--model",
            s(&m),
            "--out",
            s(&lib),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (bg, bbox, _) = common::a_query(&f.ds);
    let o = fos(
        &home,
        &[
            "search",
            "--index",
            s(&lib),
            "--model",
            s(&m),
            "--background",
            s(&bg),
            "--box",
            &bbox,
            "--category",
            "person",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!v["results"].as_array().unwrap().is_empty(), "{v}");
    // Retraining the teacher frozen drops the fine-tuned backbone.
    let o = train("teacher", &["--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["fine_tuned_backbone"], false);
    let w = fos_model::weights::Weights::load_safetensors(&m.join("weights.safetensors")).unwrap();
    assert!(w.names().all(|n| !n.starts_with("fg_backbone.")));
}
