//! Helpers shared by the integration tests that drive the `fos` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::weights::Cache;

/// Runs `fos ARGS` with `$FOS_HOME` = `home` and 2 threads.
pub fn fos(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fos"))
        .args(args)
        .env("FOS_HOME", home)
        .env("FOS_THREADS", "2")
        .output()
        .expect("run fos")
}

/// A `$FOS_HOME` with random Lite0 weights installed.
pub fn synthetic_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let w = Backbone::synthetic_weights(BackboneKind::EfficientNetLite0, 1);
    Cache::at(home.path().join("weights"))
        .store("efficientnet-lite0", &w, "test")
        .unwrap();
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
