//! Helpers shared by the integration tests that drive the `fos` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::weights::Cache;

/// Runs `fos ARGS` with `$FOS_HOME` = `home` and 2 threads (with the
/// pretrained stand-in encoder in a [`synthetic_home`], whose random backbone
/// the committed model was not trained on).
pub fn fos(home: &Path, args: &[&str]) -> Output {
    fos_command(home).args(args).output().expect("run fos")
}

/// The `fos` command with the environment of [`fos`].
pub fn fos_command(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fos"));
    c.env("FOS_HOME", home).env("FOS_THREADS", "2");
    if home.join(SYNTHETIC).exists() {
        c.env("FOS_MODEL", "pretrained");
    } else {
        c.env_remove("FOS_MODEL");
    }
    c
}

const SYNTHETIC: &str = "SYNTHETIC-WEIGHTS";

/// Marks `home` as holding random weights (see [`fos`]).
pub fn mark_synthetic(home: &Path) {
    std::fs::write(home.join(SYNTHETIC), "random Lite0 weights\n").unwrap();
}

/// A `$FOS_HOME` with random Lite0 weights installed.
pub fn synthetic_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let w = Backbone::synthetic_weights(BackboneKind::EfficientNetLite0, 1);
    Cache::at(home.path().join("weights"))
        .store("efficientnet-lite0", &w, "test")
        .unwrap();
    mark_synthetic(home.path());
    home
}

/// `../shared` when it holds the sample data.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    p.join("data/coco-sample").is_dir().then_some(p)
}

/// The user's `$FOS_HOME` (or the default) when it holds the real Lite0 weights.
pub fn real_home() -> Option<PathBuf> {
    let home = fos_model::weights::fos_home();
    home.join("weights/efficientnet-lite0.safetensors")
        .is_file()
        .then_some(home)
}

/// Skips a test with a message, or fails it under `FOS_REQUIRE_REAL=1`.
pub fn skip(why: &str) {
    if std::env::var("FOS_REQUIRE_REAL").is_ok_and(|v| v == "1") {
        panic!("FOS_REQUIRE_REAL=1 but a prerequisite is missing: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: exit code 2, one `error:` line, no panic.
pub fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// A small real data set and library (see [`fixture`]).
pub struct Fixture {
    /// Keeps the folder alive.
    pub _tmp: tempfile::TempDir,
    /// `$FOS_HOME` with random Lite0 weights.
    pub home: tempfile::TempDir,
    /// The data set.
    pub ds: PathBuf,
    /// The library.
    pub lib: PathBuf,
    /// A scratch folder.
    pub dir: PathBuf,
}

/// A path as `&str`.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// person + dog from coco-sample val2017, patterns from a labels CSV, the test
/// split indexed with random Lite0 weights.
pub fn fixture() -> Option<Fixture> {
    let sh = shared()?;
    let tmp = tempfile::tempdir().unwrap();
    let home = synthetic_home();
    let d = sh.join("data/coco-sample");
    let ds = tmp.path().join("ds");
    let o = fos(
        home.path(),
        &[
            "dataset",
            "build",
            "--coco",
            s(&d.join("annotations/instances_val2017.json")),
            "--images",
            s(&d.join("images/val2017")),
            "--out",
            s(&ds),
            "--categories",
            "person,dog",
            "--splits",
            "train=0.5,test=0.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(ds.join("manifest.jsonl")).unwrap();
    let mut csv = String::from("id,orientation\n");
    for (i, l) in manifest.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        csv.push_str(&format!("{},o{}\n", v["id"].as_str().unwrap(), i % 3));
    }
    std::fs::write(tmp.path().join("attrs.csv"), csv).unwrap();
    let o = fos(
        home.path(),
        &[
            "dataset",
            "patterns",
            s(&ds),
            "--labels",
            s(&tmp.path().join("attrs.csv")),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let lib = tmp.path().join("lib.fos");
    let o = fos(
        home.path(),
        &[
            "index",
            "build",
            "--dataset",
            s(&ds),
            "--split",
            "test",
            "--out",
            s(&lib),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tmp.path().to_owned();
    Some(Fixture {
        _tmp: tmp,
        home,
        ds,
        lib,
        dir,
    })
}

/// A test-split person: its background, its box as `X,Y,W,H`, its id.
pub fn a_query(ds: &Path) -> (PathBuf, String, String) {
    let manifest = std::fs::read_to_string(ds.join("manifest.jsonl")).unwrap();
    for l in manifest.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["split"] == "test" && v["category"] == "person" {
            let b: Vec<String> = v["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect();
            return (
                ds.join(v["background"].as_str().unwrap()),
                b.join(","),
                v["id"].as_str().unwrap().to_owned(),
            );
        }
    }
    panic!("no test person");
}
