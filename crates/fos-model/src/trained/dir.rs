//! The model directory: `model.json` ([`ModelInfo`]) and
//! `weights.safetensors`, written atomically and checked on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::backbone::{Backbone, BackboneKind};
use crate::heads::{Head, HeadDims};
use crate::weights::Weights;
use crate::ModelError;

/// The model format this build reads and writes.
pub const MODEL_VERSION: u32 = 1;
/// File name of the description.
pub const MODEL_JSON: &str = "model.json";
/// File name of the weights.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Name prefix of the fine-tuned teacher backbone's folded parameters in
/// the weights ([`ModelInfo::fine_tuned_backbone`]).
pub const FG_BACKBONE: &str = "fg_backbone.";

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Always `fos-model`.
    pub format: String,
    /// [`MODEL_VERSION`].
    pub version: u32,
    /// Backbone name (`efficientnet-lite0`, ...).
    pub backbone: String,
    /// Digest of the backbone weights the heads were trained on
    /// ([`Weights::content_digest`]).
    pub backbone_sha256: String,
    /// Backbone input side in pixels.
    pub input_size: u32,
    /// How inputs are prepared (for people reading the file).
    pub preprocess: BTreeMap<String, String>,
    /// Head sizes.
    pub dims: HeadDims,
    /// Heads present in the weights.
    pub heads: Vec<Head>,
    /// Pattern names, in classifier order.
    pub patterns: Vec<String>,
    /// How the model was trained: data set and its fingerprint, seed, config,
    /// time taken.
    pub training: serde_json::Value,
    /// Validation metrics per head.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Weight of the explicit aspect-ratio channel in every embedding (see
    /// [`with_geometry`]); tuned on the validation split after the student.
    #[serde(default)]
    pub geometry_weight: f32,
    /// Whether the teacher's backbone was fine-tuned (`fos train teacher
    /// --fine-tune`): its folded parameters are then in the weights under
    /// [`FG_BACKBONE`], and cut-outs are encoded with it; queries and
    /// DiscoFOS keep the frozen backbone.
    #[serde(default)]
    pub fine_tuned_backbone: bool,
    /// SHA-256 (hex) of `weights.safetensors`.
    pub weights_sha256: String,
}

/// Hex SHA-256 of a file.
pub fn file_sha256(path: &Path) -> Result<String, ModelError> {
    let bytes =
        std::fs::read(path).map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    Ok(hex(&sha2::Sha256::digest(&bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `kind` from the weights cache with the digest of its tensors
/// ([`Weights::content_digest`]), which a model records and checks.
pub fn load_backbone(
    kind: BackboneKind,
    device: &Device,
) -> Result<(Backbone, String), ModelError> {
    let w = crate::weights::Cache::default().load(kind.name(), &kind.install_hint())?;
    let digest = w.content_digest();
    Ok((Backbone::from_weights(kind, &w, device)?, digest))
}

/// Writes a model directory: the weights (f16) first, then `model.json`, each
/// atomically; `model.json` names the weights' digest, so a torn write is
/// detected on load.
pub fn save_model(dir: &Path, info: &mut ModelInfo, weights: &Weights) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ModelError::Input(format!("{}: {e}", dir.display())))?;
    let wpath = dir.join(WEIGHTS_FILE);
    weights.save_safetensors_f16(&wpath)?;
    info.weights_sha256 = file_sha256(&wpath)?;
    let json = serde_json::to_vec_pretty(info)
        .map_err(|e| ModelError::Input(format!("model.json: {e}")))?;
    fos_image::atomic::write_atomic(&dir.join(MODEL_JSON), &json)
        .map_err(|e| ModelError::Input(format!("{}: {e}", dir.display())))
}

/// Reads and checks `model.json` and the weights of a model directory.
pub fn read_model(dir: &Path) -> Result<(ModelInfo, Weights), ModelError> {
    let bad = |m: String| ModelError::Model(format!("{}: {m}", dir.display()));
    let jpath = dir.join(MODEL_JSON);
    let text = std::fs::read(&jpath).map_err(|e| bad(format!("cannot read {MODEL_JSON}: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("{MODEL_JSON} is not JSON: {e}")))?;
    if v.get("format").and_then(|f| f.as_str()) != Some("fos-model") {
        return Err(bad(format!("{MODEL_JSON} is not a fos model description")));
    }
    match v.get("version").and_then(|f| f.as_u64()) {
        Some(n) if n == MODEL_VERSION as u64 => {}
        other => {
            return Err(bad(format!(
                "model format version {other:?}; this fos reads version {MODEL_VERSION} (retrain, or use the fos that made it)"
            )))
        }
    }
    let info: ModelInfo =
        serde_json::from_value(v).map_err(|e| bad(format!("{MODEL_JSON}: {e}")))?;
    let wpath = dir.join(WEIGHTS_FILE);
    let digest = file_sha256(&wpath).map_err(|e| bad(e.to_string()))?;
    if digest != info.weights_sha256 {
        return Err(bad(format!(
            "{WEIGHTS_FILE} does not match {MODEL_JSON} (sha256 {} vs {}): damaged or from another model",
            &digest[..16],
            &info.weights_sha256.get(..16).unwrap_or("?")
        )));
    }
    let weights = Weights::load_safetensors(&wpath).map_err(|e| bad(e.to_string()))?;
    if info.dims.patterns != info.patterns.len() {
        return Err(bad(format!(
            "dims.patterns is {} but {} pattern names are listed",
            info.dims.patterns,
            info.patterns.len()
        )));
    }
    for h in &info.heads {
        h.check(&info.dims, &weights).map_err(|e| {
            bad(format!(
                "the weights do not fit the sizes in {MODEL_JSON} ({e})"
            ))
        })?;
    }
    Ok((info, weights))
}

/// Where the default model is: `$FOS_MODEL` when set, else `models/default`
/// beside the executable's checkout (walking up from the executable), else
/// the source tree this binary was built from. `None` when there is none.
pub fn default_model_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FOS_MODEL") {
        return Some(PathBuf::from(p));
    }
    let has = |d: &Path| d.join(MODEL_JSON).is_file();
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(5) {
            let d = up.join("models/default");
            if has(&d) {
                return Some(d);
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default");
    has(&built).then_some(built)
}
