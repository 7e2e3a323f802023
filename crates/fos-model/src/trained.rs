//! Trained models: the model directory format and the encoders and re-ranker
//! search uses.
//!
//! A model directory holds `model.json` ([`ModelInfo`]: architecture, sizes,
//! backbone and its weights' digest, preprocessing, patterns, training data
//! fingerprint, validation metrics) and `weights.safetensors` (the heads, f16).
//! The backbone is frozen and not stored: its weights come from the weights
//! cache and must be the ones the model was trained on (checked by digest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use fos_image::compose::{on_white_square, Rect};
use fos_image::preprocess::Preprocess;
use image::{RgbImage, RgbaImage};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::backbone::{batch, Backbone, BackboneKind};
use crate::embed::{l2_normalize, Encoder, Reranker};
use crate::geometry::{alpha_aspect, geometry_channel, with_geometry};
use crate::heads::{roi_align, Binder, Head, HeadDims, ROI};
use crate::query::{crop_square_filled, layout, mean_colour, square_around, Square, GREY};
use crate::weights::Weights;
use crate::ModelError;

/// The model format this build reads and writes.
pub const MODEL_VERSION: u32 = 1;
/// File name of the description.
pub const MODEL_JSON: &str = "model.json";
/// File name of the weights.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

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

/// One vector per image.
pub type Rows = Vec<Vec<f32>>;

/// Pooled features, flattened compact maps and the maps' `[h, w]`.
pub type BackboneOutput = (Rows, Rows, [usize; 2]);

/// One backbone pass over squares (resized to the backbone's input side, no
/// crop): pooled features, compact maps (`last_block`, flattened `[C, h, w]`)
/// and the maps' `[h, w]`.
pub fn features(
    backbone: &Backbone,
    squares: &[RgbImage],
    device: &Device,
) -> Result<BackboneOutput, ModelError> {
    if squares.is_empty() {
        return Ok((vec![], vec![], [0, 0]));
    }
    let size = backbone.kind().input_size();
    let pre = Preprocess::fit(size);
    let chw = squares
        .iter()
        .map(|i| pre.apply(i))
        .collect::<Result<Vec<_>, _>>()?;
    let f = backbone.forward(batch(&chw, size, device)?);
    let [_, c, h, w] = f.last_block.dims();
    let d = f.pooled.dims()[1];
    let pooled = crate::to_vec(f.pooled)?;
    let maps = crate::to_vec(f.last_block)?;
    Ok((
        pooled.chunks(d).map(<[f32]>::to_vec).collect(),
        maps.chunks(c * h * w).map(<[f32]>::to_vec).collect(),
        [h, w],
    ))
}

/// Backbone features of one query: the pooled feature and layout of the grey
/// context square, its compact map, and where the rectangle is in it.
pub struct QueryFeatures {
    /// Pooled backbone feature.
    pub pooled: Vec<f32>,
    /// (cx, cy, w, h) / side, rounded to 2 decimals.
    pub layout: [f32; 4],
    /// RoIAlign of the compact map at the rectangle, `[C, 7, 7]`.
    pub roi: Vec<f32>,
    /// The rectangle's width / height.
    pub aspect: f64,
}

/// A loaded model: the frozen backbone and the trained heads.
pub struct TrainedModel {
    info: ModelInfo,
    backbone: Backbone,
    weights: Weights,
    device: Device,
    fingerprint: String,
}

impl TrainedModel {
    /// Loads a model directory and its backbone (from the weights cache),
    /// checking versions, shapes and the backbone's digest.
    pub fn load(dir: &Path, device: Device) -> Result<Self, ModelError> {
        let (info, weights) = read_model(dir)?;
        let kind: BackboneKind = info.backbone.parse()?;
        let (backbone, have) = load_backbone(kind, &device)?;
        if have != info.backbone_sha256 {
            return Err(ModelError::Model(format!(
                "{}: trained on {} weights with digest {}…, but the installed ones are {}… ({}); \
                 install the weights it was trained on or retrain",
                dir.display(),
                kind.name(),
                &info.backbone_sha256.get(..12).unwrap_or("?"),
                &have[..12],
                crate::weights::weights_path(kind.name()).display()
            )));
        }
        if info.dims.feature != kind.feature_dim() || info.dims.map_channels != kind.map_channels()
        {
            return Err(ModelError::Model(format!(
                "{}: dims {:?} do not fit {}",
                dir.display(),
                info.dims,
                kind.name()
            )));
        }
        let fingerprint = String::new();
        let mut m = TrainedModel {
            info,
            backbone,
            weights,
            device,
            fingerprint,
        };
        m.set_geometry_weight(m.info.geometry_weight);
        Ok(m)
    }

    /// Overrides the aspect channel's weight (evaluation of the learned part
    /// alone: 0). It is part of the fingerprint: a library indexed with
    /// another weight is refused.
    pub fn set_geometry_weight(&mut self, w: f32) {
        self.info.geometry_weight = w.clamp(0.0, 1.0);
        self.fingerprint = format!(
            "trained:{}:sha256={}:g={:.3}",
            self.info.backbone,
            &self.info.weights_sha256[..16.min(self.info.weights_sha256.len())],
            self.info.geometry_weight
        );
    }

    /// The description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Whether the photo named `file_name` was among the model's training or
    /// validation photos (`training.source_images` of `model.json`).
    pub fn trained_on(&self, file_name: &str) -> bool {
        self.info.training["source_images"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n.as_str() == Some(file_name)))
    }

    /// Whether `head` was trained into this model.
    pub fn has(&self, head: Head) -> bool {
        self.info.heads.contains(&head)
    }

    fn need(&self, head: Head) -> Result<(), ModelError> {
        if self.has(head) {
            Ok(())
        } else {
            Err(ModelError::Model(format!(
                "this model has no {head:?} head (trained: {:?}); train it with `fos train`",
                self.info.heads
            )))
        }
    }

    /// Backbone pooled features and compact maps of squares.
    pub fn backbone_features(&self, squares: &[RgbImage]) -> Result<BackboneOutput, ModelError> {
        features(&self.backbone, squares, &self.device)
    }

    /// Teacher embeddings (L2-normalised, with the aspect channel) and 7x7
    /// maps of cut-outs.
    pub fn foreground_features(&self, cutouts: &[RgbaImage]) -> Result<(Rows, Rows), ModelError> {
        self.need(Head::Teacher)?;
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        let (pooled, maps, [h, w]) = self.backbone_features(&squares)?;
        let g = self.info.geometry_weight;
        let emb = self
            .head_rows(&pooled, |b, x| b.teacher_embed(x))?
            .into_iter()
            .zip(cutouts)
            .map(|(e, c)| with_geometry(e, alpha_aspect(c), g))
            .collect();
        let c = self.info.dims.map_channels;
        let maps = maps
            .iter()
            .map(|m| roi_align(m, c, h, w, [0.0, 0.0, 1.0, 1.0]))
            .collect();
        Ok((emb, maps))
    }

    /// Pattern logits of cut-outs (the teacher as a classifier over
    /// [`ModelInfo::patterns`]).
    pub fn pattern_logits(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.need(Head::Teacher)?;
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        let (pooled, _, _) = self.backbone_features(&squares)?;
        if pooled.is_empty() {
            return Ok(vec![]);
        }
        let d = pooled[0].len();
        let x = Tensor::from_data(
            TensorData::new(pooled.concat(), [pooled.len(), d]),
            &self.device,
        );
        let mut b = Binder::new(&self.weights, &self.device, false);
        let e = b.teacher_embed(x)?;
        let l = crate::to_vec(b.teacher_logits(e)?)?;
        Ok(l.chunks(self.info.dims.patterns)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The query's backbone features (grey rectangle, as DiscoFOS and the
    /// student see it).
    pub fn query_features(&self, bg: &RgbImage, rect: Rect) -> Result<QueryFeatures, ModelError> {
        let s = square_around(bg.width(), bg.height(), rect);
        let sq = crop_square_filled(bg, s, Some((rect, GREY)), self.info.input_size)?;
        let (pooled, maps, [h, w]) = self.backbone_features(&[sq])?;
        Ok(QueryFeatures {
            pooled: pooled.into_iter().next().unwrap_or_default(),
            layout: layout(s, rect),
            roi: roi_align(
                &maps[0],
                self.info.dims.map_channels,
                h,
                w,
                roi_box(s, rect),
            ),
            aspect: rect.w / rect.h,
        })
    }

    fn head_rows(
        &self,
        rows: &[Vec<f32>],
        f: impl Fn(&mut Binder, Tensor<2>) -> Result<Tensor<2>, crate::weights::WeightsError>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let d = rows[0].len();
        let x = Tensor::from_data(
            TensorData::new(rows.concat(), [rows.len(), d]),
            &self.device,
        );
        let mut b = Binder::new(&self.weights, &self.device, false);
        let y = f(&mut b, x)?;
        let e = y.dims()[1];
        Ok(crate::to_vec(y)?
            .chunks(e)
            .map(|c| {
                let mut c = c.to_vec();
                l2_normalize(&mut c);
                c
            })
            .collect())
    }

    /// The student's query embedding from query features.
    pub fn student_embed(&self, q: &QueryFeatures) -> Result<Vec<f32>, ModelError> {
        self.need(Head::Student)?;
        let l = Tensor::from_data(TensorData::new(q.layout.to_vec(), [1, 4]), &self.device);
        let e = self
            .head_rows(std::slice::from_ref(&q.pooled), |b, x| {
                b.student_embed(x, l.clone())
            })?
            .remove(0);
        Ok(with_geometry(e, q.aspect, self.info.geometry_weight))
    }

    /// The early-fusion baseline's query embedding.
    pub fn early_embed(&self, bg: &RgbImage, rect: Rect) -> Result<Vec<f32>, ModelError> {
        self.need(Head::EarlyFusion)?;
        let s = square_around(bg.width(), bg.height(), rect);
        let sq = crop_square_filled(bg, s, Some((rect, mean_colour(bg))), self.info.input_size)?;
        let (pooled, _, _) = self.backbone_features(&[sq])?;
        let e = self.head_rows(&pooled, |b, x| b.early_embed(x))?.remove(0);
        Ok(with_geometry(e, rect.w / rect.h, self.info.geometry_weight))
    }

    /// DiscoFOS fusion scores (probabilities) of one query against cut-out
    /// maps from [`foreground_features`](Self::foreground_features).
    pub fn fusion_scores(
        &self,
        q: &QueryFeatures,
        maps: &[&[f32]],
    ) -> Result<Vec<f32>, ModelError> {
        self.need(Head::DiscoStudent)?;
        if maps.is_empty() {
            return Ok(vec![]);
        }
        let c = self.info.dims.map_channels;
        let n = maps.len();
        let per = c * ROI * ROI;
        if let Some(m) = maps.iter().find(|m| m.len() != per) {
            return Err(ModelError::Input(format!(
                "cut-out map has {} values, expected {per}",
                m.len()
            )));
        }
        let roi: Vec<f32> = (0..n).flat_map(|_| q.roi.iter().copied()).collect();
        let fg: Vec<f32> = maps.iter().flat_map(|m| m.iter().copied()).collect();
        let t = |v: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v, [n, c, ROI, ROI]), &self.device)
        };
        let mut b = Binder::new(&self.weights, &self.device, false);
        let (_, logit) = b.disco_student(t(roi), t(fg))?;
        crate::to_vec(burn::tensor::activation::sigmoid(logit))
    }

    /// The re-ranking score of cut-outs (maps and visible aspect ratios):
    /// the fusion probability `p` mixed with the aspect channel as the
    /// embeddings are, `(1 - w)(2p - 1) + w cos(angle difference)`, in [-1, 1].
    pub fn rerank_scores(
        &self,
        q: &QueryFeatures,
        maps: &[&[f32]],
        aspects: &[f64],
    ) -> Result<Vec<f32>, ModelError> {
        let p = self.fusion_scores(q, maps)?;
        let w = self.info.geometry_weight;
        let g = geometry_channel(q.aspect);
        Ok(p.iter()
            .zip(aspects)
            .map(|(p, a)| {
                let h = geometry_channel(*a);
                (1.0 - w) * (2.0 * p - 1.0) + w * (g[0] * h[0] + g[1] * h[1])
            })
            .collect())
    }

    /// An [`Encoder`] over this model: foregrounds by the teacher, queries by
    /// the student or the early-fusion baseline.
    pub fn encoder(self: &Arc<Self>, query: QueryHead) -> Result<TrainedEncoder, ModelError> {
        self.need(Head::Teacher)?;
        self.need(match query {
            QueryHead::Student => Head::Student,
            QueryHead::EarlyFusion => Head::EarlyFusion,
        })?;
        Ok(TrainedEncoder {
            model: self.clone(),
            query,
        })
    }
}

/// The rectangle as fractions of the square: `[x0, y0, x1, y1]`.
pub fn roi_box(s: Square, r: Rect) -> [f32; 4] {
    let f = |v: f64, o: f64| ((v - o) / s.side) as f32;
    [
        f(r.x, s.x),
        f(r.y, s.y),
        f(r.x + r.w, s.x),
        f(r.y + r.h, s.y),
    ]
}

/// Which head encodes queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryHead {
    /// Method A's late-fusion student.
    Student,
    /// The early-fusion baseline.
    EarlyFusion,
}

/// A trained model as an [`Encoder`] (and DiscoFOS [`Reranker`] when it has
/// the fusion head).
pub struct TrainedEncoder {
    model: Arc<TrainedModel>,
    query: QueryHead,
}

impl TrainedEncoder {
    /// The model.
    pub fn model(&self) -> &Arc<TrainedModel> {
        &self.model
    }
}

impl Encoder for TrainedEncoder {
    fn fingerprint(&self) -> String {
        self.model.fingerprint.clone()
    }
    fn dim(&self) -> usize {
        self.model.info.dims.embed + 2
    }
    fn foregrounds(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(self.model.foreground_features(cutouts)?.0)
    }
    fn query(&self, background: &RgbImage, rect: Rect) -> Result<Vec<f32>, ModelError> {
        match self.query {
            QueryHead::Student => self
                .model
                .student_embed(&self.model.query_features(background, rect)?),
            QueryHead::EarlyFusion => self.model.early_embed(background, rect),
        }
    }
    fn reranker(&self) -> Option<&dyn Reranker> {
        self.model
            .has(Head::DiscoStudent)
            .then_some(self as &dyn Reranker)
    }
}

impl Reranker for TrainedEncoder {
    fn rerank(
        &self,
        background: &RgbImage,
        rect: Rect,
        cutouts: &[RgbaImage],
    ) -> Result<Vec<f32>, ModelError> {
        let q = self.model.query_features(background, rect)?;
        let (_, maps) = self.model.foreground_features(cutouts)?;
        let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let aspects: Vec<f64> = cutouts.iter().map(alpha_aspect).collect();
        self.model.rerank_scores(&q, &refs, &aspects)
    }
}
