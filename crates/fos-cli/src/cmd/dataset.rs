//! `fos dataset`: build foreground-search data sets and assign patterns.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use fos_data::build::{BackgroundFormat, BuildOptions, BuildReport, CocoSource};
use fos_data::filter::FilterConfig;
use fos_data::split::SplitSpec;
use fos_model::embed::Encoder as _;
use fos_search::indexer::{cluster_patterns, Indexer};

/// Arguments of `fos dataset`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a data set from COCO annotations, a FOSD folder or a folder of cut-outs.
    Build(BuildArgs),
    /// Assign patterns (groups of interchangeable foregrounds) from labels or by clustering.
    Patterns(PatternArgs),
}

/// Arguments of `fos dataset patterns`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos dataset patterns data/coco --cluster auto
  fos dataset patterns data/coco --cluster 12
  fos dataset patterns data/people --labels attributes.csv

--labels: a CSV with a header `id,ATTRIBUTE,...` and one row per cut-out; the
pattern is the tuple of its attribute values (as in Li et al. 2020).
--cluster: k-means per category on pretrained backbone features of the
cut-out (on a white square) joined with its geometry (log aspect ratio, photo
sides it touches). `auto` picks round(sqrt(n/2)) patterns for n cut-outs.
The pattern ids are written into manifest.jsonl (atomically).")]
pub struct PatternArgs {
    /// The data set folder.
    dir: PathBuf,
    /// Attribute labels CSV.
    #[arg(long, conflicts_with = "cluster", required_unless_present = "cluster")]
    labels: Option<PathBuf>,
    /// Patterns per category: a number or `auto`.
    #[arg(long)]
    cluster: Option<String>,
    /// Backbone for the appearance features.
    #[arg(long, default_value = "efficientnet-lite0")]
    backbone: fos_model::backbone::BackboneKind,
    /// Weight of the geometry features against the unit-length appearance feature.
    #[arg(long, default_value_t = 0.5)]
    geometry_weight: f32,
    /// Seed of the clustering.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Cut-outs per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum BgFormat {
    Jpg,
    Png,
}

/// Arguments of `fos dataset build`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos dataset build \\
    --coco ../shared/data/coco-sample/annotations/instances_train2017.json \\
    --images ../shared/data/coco-sample/images/train2017 \\
    --coco ../shared/data/coco-sample/annotations/instances_val2017.json \\
    --images ../shared/data/coco-sample/images/val2017 \\
    --out data/coco-sample
  fos dataset build --coco instances.json --images imgs --out data/people --categories person
  fos dataset build --coco foreign.json --images imgs --out data/foreign --splits test=1
  fos dataset build --fosd ~/FOSD --out data/fosd

Each --coco goes with the --images folder given in the same position.
The data set is written to OUT.partial and renamed to OUT when complete; if
the build is interrupted, run the same command again to resume it.")]
pub struct BuildArgs {
    /// A folder of cut-outs, DIR/CATEGORY/NAME.png (alpha) or NAME.jpg + NAME.mask.png.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["coco", "images"])]
    foregrounds: Option<PathBuf>,
    /// A data set in the FOSD layout (train/, test/ with labels/ inside).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["coco", "images", "foregrounds"])]
    fosd: Option<PathBuf>,
    /// COCO instance annotation file (repeatable).
    #[arg(long, value_name = "ANNOTATIONS.json")]
    coco: Vec<PathBuf>,
    /// Images folder of the --coco in the same position (repeatable).
    #[arg(long, value_name = "DIR")]
    images: Vec<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Keep only these categories (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    categories: Option<Vec<String>>,
    /// Smallest mask area as a fraction of the photo.
    #[arg(long, default_value_t = FilterConfig::default().min_area)]
    min_area: f64,
    /// Largest fraction of an instance's box covered by other instances.
    #[arg(long, default_value_t = FilterConfig::default().max_overlap)]
    max_overlap: f64,
    /// Largest box elongation, max(w/h, h/w).
    #[arg(long, default_value_t = FilterConfig::default().max_aspect)]
    max_aspect: f64,
    /// Keep instances that touch the photo border.
    #[arg(long)]
    keep_truncated: bool,
    /// Keep crowd regions.
    #[arg(long)]
    keep_crowd: bool,
    /// Split fractions by source photo.
    #[arg(long, default_value = "train=0.7,val=0.15,test=0.15")]
    splits: String,
    /// Seed of the split shuffle.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pixels the mask is grown by before inpainting.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=64))]
    dilate: u32,
    /// Inpainting neighbourhood radius.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=32))]
    inpaint_radius: u32,
    /// Background file format (png is lossless and about 3x larger).
    #[arg(long, value_enum, default_value = "jpg")]
    background_format: BgFormat,
    /// JPEG quality of backgrounds.
    #[arg(long, default_value_t = 92, value_parser = clap::value_parser!(u8).range(50..=100))]
    jpeg_quality: u8,
    /// Replace an existing OUT (only once the new data set is complete).
    #[arg(long)]
    force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Build(a) => build(a, ctx),
        Command::Patterns(a) => patterns(a, ctx),
    }
}

fn build(a: BuildArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.fosd {
        let bar = super::Bar::new("cut-outs");
        let report = fos_data::fosd::build_fosd(dir, &a.out, &ctx.decode, a.force, &bar)
            .with_context(|| format!("building {}", a.out.display()))?;
        print_report(&report, &a.out, a.json);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &a.foregrounds {
        let splits: SplitSpec = a.splits.parse()?;
        let bar = super::Bar::new("cut-outs");
        let report = fos_data::folder::build_folder(
            dir,
            &a.out,
            &splits,
            a.seed,
            &ctx.decode,
            a.force,
            &bar,
        )
        .with_context(|| format!("building {}", a.out.display()))?;
        print_report(&report, &a.out, a.json);
        return Ok(ExitCode::SUCCESS);
    }
    if a.coco.is_empty() {
        bail!(
            "give at least one --coco ANNOTATIONS.json with its --images DIR, or --foregrounds DIR"
        );
    }
    if a.coco.len() != a.images.len() {
        bail!(
            "{} --coco file(s) but {} --images folder(s); give one --images per --coco, in the same order",
            a.coco.len(),
            a.images.len()
        );
    }
    for (name, v) in [("--min-area", a.min_area), ("--max-overlap", a.max_overlap)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} {v} must be between 0 and 1");
        }
    }
    if a.max_aspect.is_nan() || a.max_aspect < 1.0 {
        bail!("--max-aspect {} must be >= 1", a.max_aspect);
    }
    let splits: SplitSpec = a.splits.parse()?;
    let opts = BuildOptions {
        categories: a.categories.clone(),
        filters: FilterConfig {
            drop_crowd: !a.keep_crowd,
            min_area: a.min_area,
            drop_truncated: !a.keep_truncated,
            max_overlap: a.max_overlap,
            max_aspect: a.max_aspect,
            ..FilterConfig::default()
        },
        splits,
        seed: a.seed,
        dilate: a.dilate,
        inpaint_radius: a.inpaint_radius,
        background: match a.background_format {
            BgFormat::Jpg => BackgroundFormat::Jpeg(a.jpeg_quality),
            BgFormat::Png => BackgroundFormat::Png,
        },
    };
    let sources: Vec<CocoSource> = a
        .coco
        .iter()
        .zip(&a.images)
        .map(|(c, i)| CocoSource {
            annotations: c.clone(),
            images: i.clone(),
        })
        .collect();
    let bar = super::Bar::new("instances");
    let report = fos_data::build::build_coco(&sources, &a.out, &opts, &ctx.decode, a.force, &bar)
        .with_context(|| format!("building {}", a.out.display()))?;
    print_report(&report, &a.out, a.json);
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &BuildReport, out: &std::path::Path, json: bool) {
    let kept = r.info.counts.get("kept").copied().unwrap_or(0);
    if json {
        let v = serde_json::json!({
            "out": out,
            "counts": r.info.counts,
            "categories": r.info.categories,
            "written": r.written,
            "resumed": r.resumed,
            "seconds": r.seconds,
            "instances_per_second": r.written as f64 / r.seconds.max(1e-9),
        });
        println!("{v}");
        return;
    }
    for (kind, detail) in &r.examples {
        eprintln!("skipped ({kind}): {detail}");
    }
    print!("{}", fos_data::build::summary_table(&r.info));
    println!(
        "\n{kept} foregrounds in {} ({} written, {} resumed) in {:.1} s, {:.1} instances/s",
        out.display(),
        r.written,
        r.resumed,
        r.seconds,
        r.written as f64 / r.seconds.max(1e-9)
    );
}

fn patterns(a: PatternArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    use fos_data::patterns;
    let mut ds = fos_data::manifest::Dataset::open(&a.dir)?;
    if ds.records.is_empty() {
        bail!("{} holds no foregrounds", a.dir.display());
    }
    if let Some(csv) = &a.labels {
        let map = patterns::read_labels(csv, &ds.records)?;
        patterns::write_patterns(
            &mut ds,
            &map,
            serde_json::json!({"method": "labels", "file": csv}),
        )?;
    } else {
        let spec = a.cluster.as_deref().unwrap_or("auto");
        let k = match spec {
            "auto" => None,
            n => Some(n.parse::<usize>().ok().filter(|&k| k >= 1).ok_or_else(|| {
                anyhow::anyhow!("--cluster {n:?} must be a positive number or `auto`")
            })?),
        };
        let enc = fos_model::embed::PretrainedEncoder::load(a.backbone, fos_model::device())?;
        let paths: Vec<PathBuf> = ds.records.iter().map(|r| ds.path(&r.foreground)).collect();
        let emb = Indexer::new(&enc, ctx.decode)
            .batch(usize::from(a.batch))
            .embed(&paths, &super::Bar::new("features"))?;
        let features = format!("{} pooled on white square", a.backbone.name());
        cluster_patterns(
            &mut ds,
            &emb,
            enc.dim(),
            a.geometry_weight,
            k,
            a.seed,
            &features,
        )?;
    }
    let mut per_cat: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> =
        Default::default();
    for r in &ds.records {
        if let Some(p) = &r.pattern {
            per_cat
                .entry(r.category.as_str())
                .or_default()
                .insert(p.as_str());
        }
    }
    println!("| category | foregrounds | patterns |\n|---|---:|---:|");
    for (c, ps) in &per_cat {
        let n = ds.records.iter().filter(|r| r.category == *c).count();
        println!("| {c} | {n} | {} |", ps.len());
    }
    let assigned = ds.records.iter().filter(|r| r.pattern.is_some()).count();
    println!(
        "\n{assigned} of {} foregrounds have a pattern; written to {}",
        ds.records.len(),
        a.dir.join("manifest.jsonl").display()
    );
    Ok(ExitCode::SUCCESS)
}
