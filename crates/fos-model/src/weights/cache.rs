//! Where fos keeps downloaded and imported weights.

use std::path::{Path, PathBuf};

use super::{Weights, WeightsError};

/// The fos data folder: `$FOS_HOME`, else the platform cache folder + `fos`
/// (`~/.cache/fos` on Linux), else `./.fos`.
pub fn fos_home() -> PathBuf {
    if let Some(h) = std::env::var_os("FOS_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    dirs::cache_dir()
        .map(|d| d.join("fos"))
        .unwrap_or_else(|| PathBuf::from(".fos"))
}

/// `fos_home()/weights`.
pub fn weights_dir() -> PathBuf {
    fos_home().join("weights")
}

/// The cached safetensors file of model `name` (e.g. `efficientnet-lite0`).
pub fn weights_path(name: &str) -> PathBuf {
    weights_dir().join(format!("{name}.safetensors"))
}

/// A weights folder; [`Cache::default`] is [`weights_dir`].
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Default for Cache {
    fn default() -> Self {
        Self { dir: weights_dir() }
    }
}

impl Cache {
    /// A cache in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for model `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.safetensors"))
    }

    /// Loads model `name`'s weights, or says which command installs them.
    pub fn load(&self, name: &str, install_hint: &str) -> Result<Weights, WeightsError> {
        let path = self.path(name);
        if !path.exists() {
            return Err(WeightsError::NotInstalled {
                name: name.to_owned(),
                path,
                hint: install_hint.to_owned(),
            });
        }
        Weights::load_safetensors(&path)
    }

    /// Stores `weights` as model `name` (atomically), returning the path.
    pub fn store(
        &self,
        name: &str,
        weights: &Weights,
        source: &str,
    ) -> Result<PathBuf, WeightsError> {
        let path = self.path(name);
        let meta = [
            ("fos.model".to_owned(), name.to_owned()),
            ("fos.source".to_owned(), source.to_owned()),
        ]
        .into_iter()
        .collect();
        weights.save_safetensors(&path, Some(meta))?;
        Ok(path)
    }

    /// Names of the models in the cache.
    pub fn installed(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().into_string().ok()?;
                n.strip_suffix(".safetensors").map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path());
        let e = c.load("m", "fos weights fetch m").unwrap_err().to_string();
        assert!(e.contains("fos weights fetch m"), "{e}");
        let mut w = Weights::new();
        w.insert("x", vec![2], vec![1.0, 2.0]);
        c.store("m", &w, "test").unwrap();
        assert_eq!(c.load("m", "").unwrap(), w);
        assert_eq!(c.installed(), vec!["m".to_string()]);
    }
}
