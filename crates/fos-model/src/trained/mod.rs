//! Trained models: the model directory format and the encoders and re-ranker
//! search uses.
//!
//! A model directory holds `model.json` ([`ModelInfo`]: architecture, sizes,
//! backbone and its weights' digest, preprocessing, patterns, training data
//! fingerprint, validation metrics) and `weights.safetensors` (the heads, f16).
//! The frozen backbone is not stored: its weights come from the weights
//! cache and must be the ones the model was trained on (checked by digest).
//! A teacher trained with `--fine-tune` stores its own backbone (batch norm
//! folded) in the weights under [`FG_BACKBONE`].

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use fos_image::compose::{on_white_square, Rect};
use fos_image::preprocess::Preprocess;
use image::{RgbImage, RgbaImage};

use crate::backbone::{batch, Backbone, BackboneKind};
use crate::embed::{l2_normalize, Encoder, Reranker};
use crate::geometry::{alpha_aspect, geometry_channel, with_geometry};
use crate::heads::{roi_align, Binder, Head, ROI};
use crate::query::{crop_square_filled, layout, mean_colour, square_around, Square, GREY};
use crate::weights::Weights;
use crate::ModelError;

mod dir;

pub use dir::{
    default_model_dir, file_sha256, load_backbone, read_model, save_model, ModelInfo, FG_BACKBONE,
    MODEL_JSON, MODEL_VERSION, WEIGHTS_FILE,
};

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
    /// The teacher's fine-tuned backbone, when it was trained so.
    fg_backbone: Option<Backbone>,
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
        let fg_backbone = match info.fine_tuned_backbone {
            true => Some(
                Backbone::from_folded_weights(kind, &weights, FG_BACKBONE, &device).map_err(
                    |e| {
                        ModelError::Model(format!(
                            "{}: the fine-tuned backbone in {WEIGHTS_FILE} is unusable: {e}",
                            dir.display()
                        ))
                    },
                )?,
            ),
            false => None,
        };
        let fingerprint = String::new();
        let mut m = TrainedModel {
            info,
            backbone,
            fg_backbone,
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

    /// Pooled features of cut-outs on white squares from the teacher's
    /// backbone (the fine-tuned one when the model has it).
    fn teacher_pooled(&self, cutouts: &[RgbaImage]) -> Result<Rows, ModelError> {
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        let net = self.fg_backbone.as_ref().unwrap_or(&self.backbone);
        Ok(features(net, &squares, &self.device)?.0)
    }

    fn embed_pooled(&self, pooled: &Rows, cutouts: &[RgbaImage]) -> Result<Rows, ModelError> {
        let g = self.info.geometry_weight;
        Ok(self
            .head_rows(pooled, |b, x| b.teacher_embed(x))?
            .into_iter()
            .zip(cutouts)
            .map(|(e, c)| with_geometry(e, alpha_aspect(c), g))
            .collect())
    }

    fn roi_maps(&self, maps: &Rows, [h, w]: [usize; 2]) -> Rows {
        let c = self.info.dims.map_channels;
        maps.iter()
            .map(|m| roi_align(m, c, h, w, [0.0, 0.0, 1.0, 1.0]))
            .collect()
    }

    /// Teacher embeddings of cut-outs (L2-normalised, with the aspect channel).
    pub fn foreground_embeddings(&self, cutouts: &[RgbaImage]) -> Result<Rows, ModelError> {
        self.need(Head::Teacher)?;
        let pooled = self.teacher_pooled(cutouts)?;
        self.embed_pooled(&pooled, cutouts)
    }

    /// The 7x7 maps of cut-outs that DiscoFOS's fusion head reads (from the
    /// frozen backbone).
    pub fn foreground_maps(&self, cutouts: &[RgbaImage]) -> Result<Rows, ModelError> {
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        let (_, maps, hw) = self.backbone_features(&squares)?;
        Ok(self.roi_maps(&maps, hw))
    }

    /// Teacher embeddings ([`foreground_embeddings`](Self::foreground_embeddings))
    /// and 7x7 maps ([`foreground_maps`](Self::foreground_maps)) of cut-outs:
    /// one backbone pass, two when the teacher's backbone is fine-tuned.
    pub fn foreground_features(&self, cutouts: &[RgbaImage]) -> Result<(Rows, Rows), ModelError> {
        self.need(Head::Teacher)?;
        if self.fg_backbone.is_some() {
            return Ok((
                self.foreground_embeddings(cutouts)?,
                self.foreground_maps(cutouts)?,
            ));
        }
        let squares: Vec<RgbImage> = cutouts.iter().map(on_white_square).collect();
        let (pooled, maps, hw) = self.backbone_features(&squares)?;
        Ok((
            self.embed_pooled(&pooled, cutouts)?,
            self.roi_maps(&maps, hw),
        ))
    }

    /// Pattern logits of cut-outs (the teacher as a classifier over
    /// [`ModelInfo::patterns`]).
    pub fn pattern_logits(&self, cutouts: &[RgbaImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.need(Head::Teacher)?;
        let pooled = self.teacher_pooled(cutouts)?;
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
        self.model.foreground_embeddings(cutouts)
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
        let maps = self.model.foreground_maps(cutouts)?;
        let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let aspects: Vec<f64> = cutouts.iter().map(alpha_aspect).collect();
        self.model.rerank_scores(&q, &refs, &aspects)
    }
}
