//! `fos classify`: ImageNet top-k of photos, the first check that a backbone works.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::imagenet::Prediction;

/// Arguments of `fos classify`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos classify bear.jpg zebra.jpg
  fos classify photos/*.jpg --json > top5.jsonl
  fos classify bus.jpg --backbone efficientnet-lite2 --size 300

With --json, one line per image:
  {\"image\": PATH, \"top5\": [{\"index\": 294, \"name\": \"brown bear\", \"prob\": 0.96}, ...]}
An image that cannot be read is reported on stderr; the others are still
classified, and the exit code is 2.")]
pub struct Args {
    /// JPEG, PNG or WebP photos.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Backbone to use.
    #[arg(long, default_value = "efficientnet-lite0")]
    backbone: BackboneKind,
    /// Input resolution (default: the backbone's own, e.g. 224 for Lite0).
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=1024))]
    size: Option<u32>,
    /// How many classes to report.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    top: u16,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let device = fos_model::device();
    let net = Backbone::load(args.backbone, &device)?;
    let pb = super::progress(args.images.len() as u64, "classify");
    if args.images.len() < 8 {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut failed = 0usize;
    for chunk in args.images.chunks(usize::from(args.batch)) {
        let mut ok = Vec::new();
        let mut imgs = Vec::new();
        for p in chunk {
            match fos_image::decode::load_rgb(p, &ctx.decode) {
                Ok(i) => {
                    ok.push(p);
                    imgs.push(i);
                }
                Err(e) => {
                    failed += 1;
                    pb.suspend(|| eprintln!("error: {e}"));
                }
            }
        }
        let preds = net.classify_at(&imgs, usize::from(args.top), args.size, &device)?;
        for (p, top) in ok.iter().zip(preds) {
            pb.suspend(|| print_one(p, &top, args.json));
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_one(path: &std::path::Path, top: &[Prediction], json: bool) {
    if json {
        let v = serde_json::json!({ "image": path, "top5": top });
        println!("{v}");
    } else {
        println!("{}", path.display());
        for (i, p) in top.iter().enumerate() {
            println!(
                "  {}. {:<28} {:>6.2}%  (class {})",
                i + 1,
                p.name,
                p.prob * 100.0,
                p.index
            );
        }
    }
}
