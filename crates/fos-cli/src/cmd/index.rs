//! `fos index`: build, extend, shrink and inspect a cut-out library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use fos_data::manifest::Dataset;
use fos_index::{Dtype, Entry, Library, LibraryWriter};
use fos_search::indexer::{BuildSettings, Indexer};

pub use super::encoder::EncoderArgs;

/// Arguments of `fos index`.
#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Embed the cut-outs of a data set (or a folder) into a new library.
    Build(BuildArgs),
    /// Add cut-out PNGs (with alpha) to a library.
    Add(AddArgs),
    /// Remove cut-outs from a library by id.
    Remove(RemoveArgs),
    /// What a library holds.
    Stats(StatsArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DtypeArg {
    F16,
    F32,
}

/// Arguments of `fos index build`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos index build --dataset data/coco --split test --out test.fos
  fos index build --foregrounds my-cutouts/ --out mine.fos

The encoder is the trained model (--model DIR, $FOS_MODEL, else the committed
models/default; `--model pretrained` for plain backbone features); its
fingerprint is stored, and a search with another model is refused.
The library is written to a temporary file and renamed: an interrupted build
leaves any previous library intact.")]
pub struct BuildArgs {
    /// A data set made by `fos dataset build`.
    #[arg(
        long,
        conflicts_with = "foregrounds",
        required_unless_present = "foregrounds"
    )]
    dataset: Option<PathBuf>,
    /// Only this split of the data set.
    #[arg(long, requires = "dataset")]
    split: Option<String>,
    /// A folder DIR/CATEGORY/NAME.png of cut-outs with alpha.
    #[arg(long)]
    foregrounds: Option<PathBuf>,
    /// Output library.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    enc: EncoderArgs,
    /// Embedding storage.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DtypeArg,
    /// Categories with at least this many cut-outs also get an approximate
    /// (HNSW, usearch) index, used by search unless --exact. Off by default.
    #[arg(long)]
    ann_threshold: Option<usize>,
    /// Most cut-outs of one approximate graph: a larger category's index is
    /// split into shards that one query searches in parallel (more cores,
    /// more shards pay).
    #[arg(long, default_value_t = fos_index::ann::ANN_SHARD_ROWS)]
    ann_shard_rows: usize,
}

/// Arguments of `fos index add`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos index add lib.fos cutouts/person/*.png
  fos index add lib.fos new.png --category dog")]
pub struct AddArgs {
    /// The library.
    library: PathBuf,
    /// Cut-out PNGs with alpha.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Category (default: each file's folder name).
    #[arg(long)]
    category: Option<String>,
    #[command(flatten)]
    enc: EncoderArgs,
}

/// Arguments of `fos index remove`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "Example:\n  fos index remove lib.fos person-a person-b")]
pub struct RemoveArgs {
    /// The library.
    library: PathBuf,
    /// Ids to remove.
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Arguments of `fos index stats`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "Example:\n  fos index stats lib.fos --json")]
pub struct StatsArgs {
    /// The library.
    library: PathBuf,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Build(a) => build(a, ctx),
        Command::Add(a) => add(a, ctx),
        Command::Remove(a) => remove(a),
        Command::Stats(a) => stats(a),
    }
}

fn build(a: BuildArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let enc = a.enc.load()?;
    let entries = match (&a.dataset, &a.foregrounds) {
        (Some(dir), _) => Indexer::dataset_entries(&Dataset::open(dir)?, a.split.as_deref())?,
        (None, Some(dir)) => Indexer::folder_entries(dir)?,
        (None, None) => bail!("give --dataset or --foregrounds"),
    };
    let settings = BuildSettings {
        dtype: match a.dtype {
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::F32 => Dtype::F32,
        },
        ann_threshold: a
            .ann_threshold
            .unwrap_or(fos_index::format::DEFAULT_ANN_THRESHOLD),
        ann_shard_rows: a.ann_shard_rows,
    };
    let n = entries.len();
    let lib = Indexer::new(enc.as_ref(), ctx.decode)
        .batch(usize::from(a.enc.batch))
        .build(&a.out, entries, &settings, &super::Bar::new("embed"))?;
    println!(
        "indexed {n} cut-outs ({} categories, {} patterns) into {} with {}",
        lib.categories().len(),
        lib.patterns().len(),
        a.out.display(),
        lib.model()
    );
    Ok(ExitCode::SUCCESS)
}

fn add(a: AddArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let enc = a.enc.load()?;
    let entries: Vec<Entry> = a
        .paths
        .iter()
        .map(|p| Indexer::png_entry(p, a.category.as_deref()))
        .collect::<Result<_, _>>()?;
    let k = entries.len();
    let n = Indexer::new(enc.as_ref(), ctx.decode)
        .batch(usize::from(a.enc.batch))
        .add(&a.library, entries, &super::Bar::new("embed"))?;
    println!("added {k} cut-outs; {} now holds {n}", a.library.display());
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let w = LibraryWriter::lock(&a.library)?;
    let n = w.remove(&a.ids)?;
    println!(
        "removed {} cut-outs; {} now holds {n}",
        a.ids.len(),
        a.library.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let lib = Library::open(&a.library)?;
    let bytes = std::fs::metadata(&a.library)?.len();
    let cats = lib.categories();
    if a.json {
        let v = serde_json::json!({
            "library": a.library, "model": lib.model(), "dim": lib.dim(), "dtype": lib.dtype(),
            "cutouts": lib.len(), "patterns": lib.patterns().len(), "bytes": bytes,
            "categories": cats.iter().map(|(c, n)| serde_json::json!({
                "name": c, "cutouts": n, "approximate_graphs": lib.ann_graphs(c),
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("library   {}", a.library.display());
        println!("model     {}", lib.model());
        println!("embedding {} x {:?}", lib.dim(), lib.dtype());
        println!(
            "cut-outs  {} in {} categories, {} patterns, {:.1} MB",
            lib.len(),
            cats.len(),
            lib.patterns().len(),
            bytes as f64 / 1e6
        );
        for (c, n) in cats {
            match lib.ann_graphs(&c) {
                0 => println!("  {c:<16} {n}"),
                g => println!("  {c:<16} {n} (approximate index: {g} graph(s))"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
