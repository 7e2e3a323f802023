//! `fos`: foreground object search. This binary is thin: it parses flags and wires
//! the library crates together; every error is printed on one line and exits 2.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Foreground object search: find the cut-outs that fit a rectangle in a photo.
#[derive(Parser, Debug)]
#[command(name = "fos", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Worker threads for model inference (default: all cores).
    #[arg(long, global = true, env = "FOS_THREADS")]
    threads: Option<usize>,
    /// Refuse images with more pixels than this, before decoding them.
    #[arg(long, global = true, default_value_t = fos_image::decode::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  fos demo
  fos search --background park.jpg --box 100,80,60,150 --category person --json
  fos index build --dataset data/coco --split test --out lib.fos
  fos serve --addr 127.0.0.1:8080
  fos weights fetch efficientnet-lite0
  fos classify photo.jpg --json
  fos bench backbone --batches 1,8,32 --threads 2";

#[derive(Subcommand, Debug)]
enum Command {
    /// Install, import and list pretrained backbone weights.
    Weights(cmd::weights::Args),
    /// ImageNet top-5 classes of photos (checks that a backbone works).
    Classify(cmd::classify::Args),
    /// The main job on the sample photos: build (once) a library, run a real query, write composites.
    Demo(cmd::demo::Args),
    /// Find the cut-outs that fit a rectangle in a background photo.
    Search(cmd::search::Args),
    /// Serve the search API and the web page over HTTP.
    Serve(cmd::serve::Args),
    /// Build, extend, shrink and inspect cut-out libraries.
    Index(cmd::index::Args),
    /// Evaluate search with the published protocols (S-FOSD, patterns) against baselines.
    Eval(cmd::eval::Args),
    /// Build foreground-search data sets from instance masks; assign patterns.
    Dataset(cmd::dataset::Args),
    /// Train the teacher, student, early-fusion baseline and DiscoFOS on a data set.
    Train(cmd::train::Args),
    /// Measure throughput.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    tune_allocator();
    restore_sigpipe();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
        {
            tracing::warn!("could not size the thread pool: {e}");
        }
    }
    let ctx = cmd::Context {
        decode: fos_image::decode::DecodeOptions {
            max_pixels: cli.max_pixels,
        },
    };
    let result = match cli.command {
        Command::Weights(a) => cmd::weights::run(a, &ctx),
        Command::Classify(a) => cmd::classify::run(a, &ctx),
        Command::Bench(a) => cmd::bench::run(a, &ctx),
        Command::Dataset(a) => cmd::dataset::run(a, &ctx),
        Command::Demo(a) => cmd::demo::run(a, &ctx),
        Command::Eval(a) => cmd::eval::run(a, &ctx),
        Command::Search(a) => cmd::search::run(a, &ctx),
        Command::Index(a) => cmd::index::run(a, &ctx),
        Command::Serve(a) => cmd::serve::run(a, &ctx),
        Command::Train(a) => cmd::train::run(a, &ctx),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, without repeating a cause that the
/// message already contains.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out.replace('\n', " ")
}

/// Keeps freed memory in the process instead of returning it to the kernel.
///
/// With glibc's defaults every activation tensor above the mmap threshold is a
/// fresh `mmap` and the heap is trimmed after large frees, so memory is faulted in
/// again on every layer: perf showed page faults at a third of a batch-32 forward
/// pass. Serving all sizes from the heap and never trimming it keeps the pages
/// (interleaved A/B, EfficientNet-Lite0 batch 32, 2 threads: 23 -> 37 images/s;
/// a 32 MiB threshold or trimming settings alone measured no better than default).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Dies quietly on a closed pipe (`fos ... | head`) like other command-line
/// tools, instead of panicking on the failed write.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal disposition to its default before threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
