//! `fos search`: the cut-outs of a library that fit a rectangle in a photo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args as ClapArgs;
use fos_search::{Query, Response, Searcher};

use super::index::EncoderArgs;

/// Arguments of `fos search`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos search --background beach.jpg --box 320,140,90,230 --category person
  fos search --index lib.fos --background street.jpg --box 40,200,180,120 --category car -k 5 --json
  fos search --background park.jpg --box 100,80,60,150 --category person --patterns 3x2 --composite out/

The box is [x, y, w, h] in background pixels (COCO order). Results whose aspect
ratio differs from the box's by a factor of 1.2 or more are dropped; this is
fos's rule (a factor treats tall and wide boxes alike), not the FOSD
evaluator's absolute difference |w/h - w'/h'| < 1.2, which keeps almost any
shape for a tall box. --aspect-factor changes it, --no-aspect-filter turns it off.
--json prints {\"query\", \"results\": [{\"rank\", \"id\", \"path\", \"category\",
\"score\", \"pattern\"}], \"patterns\": [{\"pattern\", \"score\", \"members\"}], \"timing_ms\"}.")]
pub struct Args {
    /// The library (default: the one `fos demo` builds).
    #[arg(long)]
    index: Option<PathBuf>,
    /// The background photo.
    #[arg(long)]
    background: PathBuf,
    /// The rectangle X,Y,W,H in background pixels.
    #[arg(long = "box", value_name = "X,Y,W,H")]
    rect: String,
    /// Category of the object to place.
    #[arg(long)]
    category: String,
    /// Number of results.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Pattern level: PxM = top-P patterns x top-M members.
    #[arg(long, value_name = "PxM")]
    patterns: Option<String>,
    /// Aspect-ratio filter factor.
    #[arg(long, default_value_t = fos_search::DEFAULT_ASPECT_FACTOR, conflicts_with = "no_aspect_filter")]
    aspect_factor: f64,
    /// Keep every aspect ratio.
    #[arg(long)]
    no_aspect_filter: bool,
    /// Re-rank the top candidates with the DiscoFOS fusion head (needs a trained model).
    #[arg(long)]
    rerank: bool,
    /// Exact scan even where the category has an approximate (HNSW) index.
    #[arg(long)]
    exact: bool,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write each result pasted into the rectangle, and a contact sheet, here.
    #[arg(long, value_name = "OUT_DIR")]
    composite: Option<PathBuf>,
    #[command(flatten)]
    enc: EncoderArgs,
}

/// Parses `X,Y,W,H`.
pub fn parse_box(s: &str) -> anyhow::Result<[f64; 4]> {
    let v: Vec<&str> = s.split(',').map(str::trim).collect();
    if v.len() != 4 {
        bail!("--box {s:?} must be four numbers X,Y,W,H");
    }
    let mut out = [0f64; 4];
    for (o, t) in out.iter_mut().zip(&v) {
        *o = t
            .parse()
            .map_err(|_| anyhow::anyhow!("--box {s:?}: {t:?} is not a number"))?;
    }
    Ok(out)
}

/// Parses `PxM`.
pub fn parse_patterns(s: &str) -> anyhow::Result<[usize; 2]> {
    let (p, m) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow::anyhow!("--patterns {s:?} must look like 3x2"))?;
    let n = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| anyhow::anyhow!("--patterns {s:?}: {t:?} is not a count"))
    };
    Ok([n(p)?, n(m)?])
}

/// The library `fos demo` builds, the default of `--index`.
pub fn default_index() -> PathBuf {
    fos_model::weights::fos_home().join("demo/library.fos")
}

pub fn run(a: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let index = a.index.clone().unwrap_or_else(default_index);
    if !index.exists() {
        bail!(
            "no library at {}; build one with `fos index build` or run `fos demo`",
            index.display()
        );
    }
    let q = Query {
        rect: parse_box(&a.rect)?,
        category: a.category.clone(),
        k: a.k,
        patterns: a.patterns.as_deref().map(parse_patterns).transpose()?,
        aspect_factor: (!a.no_aspect_filter).then_some(a.aspect_factor),
        rerank: a.rerank,
        exact: a.exact,
    };
    let t0 = std::time::Instant::now();
    let bg = fos_image::decode::load_rgb(&a.background, &ctx.decode)?;
    let decode_ms = t0.elapsed().as_secs_f64() * 1000.0;
    q.validate(bg.width(), bg.height())
        .with_context(|| a.background.display().to_string())?;
    let lib = fos_index::Library::open(&index)?;
    let searcher = Searcher::new(lib, a.enc.load()?)?;
    let mut resp = searcher.search(&bg, &q)?;
    resp.timing_ms.insert("decode".into(), decode_ms);
    if let Some(dir) = &a.composite {
        let [x, y, w, h] = q.rect;
        let rect = fos_image::compose::Rect { x, y, w, h };
        let written =
            fos_search::composite::write_composites(&bg, rect, &resp.results, dir, &ctx.decode)?;
        if !a.json {
            eprintln!(
                "wrote {} composites and {}",
                written.len().saturating_sub(1),
                written
                    .last()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
    }
    print_response(&resp, a.json);
    Ok(ExitCode::SUCCESS)
}

/// Prints a response as JSON or as a table.
pub fn print_response(r: &Response, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("serialises"));
        return;
    }
    if r.results.is_empty() {
        println!("no cut-out passes the filters (try --no-aspect-filter)");
    }
    println!(
        "{:>4}  {:>6}  {:<28} {:<14} path",
        "rank", "score", "id", "pattern"
    );
    for h in &r.results {
        println!(
            "{:>4}  {:>6.3}  {:<28} {:<14} {}",
            h.rank,
            h.score,
            h.id,
            h.pattern.as_deref().unwrap_or("-"),
            h.path
        );
    }
    for p in &r.patterns {
        let m: Vec<String> = p
            .members
            .iter()
            .map(|h| format!("{} ({:.3})", h.id, h.score))
            .collect();
        println!("pattern {:<14} {:.3}: {}", p.pattern, p.score, m.join(", "));
    }
    let t: Vec<String> = r
        .timing_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.1} ms"))
        .collect();
    println!("timing: {}", t.join(", "));
}
