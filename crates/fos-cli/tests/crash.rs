//! Crash safety: `kill -9` at random moments during `fos index add` and
//! `fos dataset build`, repeated. Afterwards the library opens and holds the
//! old or the new content, never a mix; the data set is never half-published
//! and the resumed build equals a clean one.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fixture, fos, s, shared, skip};
use rand::{Rng, SeedableRng};

#[test]
fn kill_9_during_index_add_never_corrupts_the_library() {
    let Some(f) = fixture() else {
        return skip("../shared/data absent");
    };
    let src = std::fs::read_dir(f.ds.join("fg"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dir = f.dir.join("adds/person");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut count = fos_index::Library::open(&f.lib).unwrap().len();
    let (mut old, mut new) = (0, 0);
    for round in 0..50 {
        let files: Vec<String> = (0..4)
            .map(|i| {
                let p = dir.join(format!("r{round}-{i}.png"));
                std::fs::copy(&src, &p).unwrap();
                p.to_string_lossy().into_owned()
            })
            .collect();
        let mut args = vec!["index".to_owned(), "add".to_owned(), s(&f.lib).to_owned()];
        args.extend(files);
        let mut child = common::fos_command(f.home.path())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..900)));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let lib = fos_index::Library::open(&f.lib).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let n = lib.len();
        assert!(
            n == count || n == count + 4,
            "round {round}: {count} -> {n}"
        );
        if n == count {
            old += 1;
        } else {
            new += 1;
            assert!(lib.row_of(&format!("person-r{round}-3")).is_some());
        }
        count = n;
        let _ = status;
    }
    // The lock died with the killed writers: a normal write works.
    let o = fos(f.home.path(), &["index", "stats", s(&f.lib)]);
    assert!(o.status.success());
    eprintln!("50 kills: {old} left the old library, {new} the new one");
    assert!(
        old > 0,
        "no kill landed before the rename; the test did not test anything"
    );
}

#[test]
fn kill_9_during_dataset_build_then_resume_equals_a_clean_build() {
    let Some(sh) = shared() else {
        return skip("../shared/data absent");
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = sh.join("data/coco-sample");
    let ann = d.join("annotations/instances_val2017.json");
    let imgs = d.join("images/val2017");
    let args = |out: &std::path::Path| {
        vec![
            "dataset".to_owned(),
            "build".into(),
            "--coco".into(),
            s(&ann).into(),
            "--images".into(),
            s(&imgs).into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let out = tmp.path().join("ds");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for round in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fos"))
            .args(args(&out))
            .env("FOS_THREADS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..1500)));
        let _ = child.kill();
        child.wait().unwrap();
        if out.exists() {
            // It finished before the kill: complete and readable.
            fos_data::manifest::Dataset::open(&out)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            break;
        }
    }
    let o = fos(
        tmp.path(),
        &args(&out).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(o.status.success() || out.exists(), "{}", common::stderr(&o));
    let clean = tmp.path().join("clean");
    assert!(fos(
        tmp.path(),
        &args(&clean).iter().map(String::as_str).collect::<Vec<_>>()
    )
    .status
    .success());
    assert_eq!(
        std::fs::read(out.join("manifest.jsonl")).unwrap(),
        std::fs::read(clean.join("manifest.jsonl")).unwrap()
    );
    // Every file the manifest names exists and decodes.
    let ds = fos_data::manifest::Dataset::open(&out).unwrap();
    for r in &ds.records {
        for p in [
            &r.foreground,
            &r.mask,
            r.background.as_ref().unwrap(),
            r.hole.as_ref().unwrap(),
        ] {
            image::open(ds.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }
}
