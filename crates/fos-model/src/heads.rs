//! The trainable heads of both published methods, on top of a frozen backbone
//! (method.md): the foreground encoder's head (method A's teacher), the query
//! encoder (method A's student, late fusion), the early-fusion baseline, and
//! DiscoFOS's composite discriminator (teacher) and fusion head (student).
//!
//! Heads are written as functions of named parameter tensors, so one forward
//! serves inference (plain tensors) and training (tensors that track
//! gradients, see [`Binder`]). Parameters live in a [`Weights`] map under the
//! names below; linear weights are stored `[in, out]`, convolutions
//! `[out, in, k, k]`.

use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, BackboneKind};
use crate::weights::{Weights, WeightsError};

/// Sizes of every head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadDims {
    /// Pooled backbone feature width (1280 for EfficientNet-Lite).
    pub feature: usize,
    /// Channels of the backbone's compact map (320 for Lite0).
    pub map_channels: usize,
    /// Embedding width shared by the foreground and query encoders.
    pub embed: usize,
    /// Hidden width of the query encoders (the paper's 2048).
    pub hidden: usize,
    /// Number of patterns the foreground encoder classifies.
    pub patterns: usize,
    /// Channels each map is reduced to before DiscoFOS fusion.
    pub reduce: usize,
    /// Width of DiscoFOS's teacher and student features (distilled by L1).
    pub fusion: usize,
}

/// Side of the RoIAlign grid and of the foreground map in DiscoFOS fusion.
pub const ROI: usize = 7;

/// Which head a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    /// Foreground encoder head + pattern classifier (method A's teacher).
    Teacher,
    /// Late-fusion query encoder (method A's student).
    Student,
    /// The early-fusion baseline (Zhao et al. 2018).
    EarlyFusion,
    /// DiscoFOS's composite discriminator (its teacher).
    DiscoTeacher,
    /// DiscoFOS's fusion head (its student), used to re-rank.
    DiscoStudent,
}

impl Head {
    /// All heads in training order.
    pub const ALL: [Head; 5] = [
        Head::Teacher,
        Head::Student,
        Head::EarlyFusion,
        Head::DiscoTeacher,
        Head::DiscoStudent,
    ];

    /// Prefix of this head's parameter names.
    pub fn prefix(self) -> &'static str {
        match self {
            Head::Teacher => "teacher",
            Head::Student => "student",
            Head::EarlyFusion => "early",
            Head::DiscoTeacher => "disco_teacher",
            Head::DiscoStudent => "disco_student",
        }
    }

    /// Every parameter of this head with its shape.
    pub fn shapes(self, d: &HeadDims) -> Vec<(String, Vec<usize>)> {
        let p = self.prefix();
        let lin = |n: &str, i: usize, o: usize| {
            vec![
                (format!("{p}.{n}.weight"), vec![i, o]),
                (format!("{p}.{n}.bias"), vec![o]),
            ]
        };
        let conv = |n: &str, i: usize, o: usize, k: usize| {
            vec![
                (format!("{p}.{n}.weight"), vec![o, i, k, k]),
                (format!("{p}.{n}.bias"), vec![o]),
            ]
        };
        match self {
            Head::Teacher => [
                lin("embed", d.feature, d.embed),
                lin("classify", d.embed, d.patterns),
            ]
            .concat(),
            Head::Student => [
                lin("fc1", d.feature * 4, d.hidden),
                lin("fc2", d.hidden, d.embed),
            ]
            .concat(),
            Head::EarlyFusion => [
                lin("fc1", d.feature, d.hidden),
                lin("fc2", d.hidden, d.embed),
            ]
            .concat(),
            Head::DiscoTeacher => {
                [lin("fc1", d.feature, d.fusion), lin("out", d.fusion, 1)].concat()
            }
            Head::DiscoStudent => [
                conv("reduce_bg", d.map_channels, d.reduce, 1),
                conv("reduce_fg", d.map_channels, d.reduce, 1),
                conv("conv1", 2 * d.reduce, d.fusion, 3),
                conv("conv2", d.fusion, d.fusion, 3),
                lin("out", d.fusion, 1),
            ]
            .concat(),
        }
    }

    /// Fresh parameters: uniform in +-sqrt(6 / fan_in) for weights (He),
    /// zero biases; deterministic in `seed`.
    pub fn init(self, d: &HeadDims, seed: u64, into: &mut Weights) {
        for (name, shape) in self.shapes(d) {
            let n: usize = shape.iter().product();
            let data = if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                let fan_in = if shape.len() == 2 {
                    shape[0]
                } else {
                    shape[1..].iter().product()
                };
                let s = (6.0 / fan_in as f32).sqrt();
                let mut rng = crate::layers::Rng::new(seed ^ fnv(&name));
                (0..n).map(|_| rng.uniform() * s).collect()
            };
            into.insert(name, shape, data);
        }
    }

    /// Checks that `w` holds this head with the shapes `d` implies, naming the
    /// first mismatch.
    pub fn check(self, d: &HeadDims, w: &Weights) -> Result<(), WeightsError> {
        for (name, shape) in self.shapes(d) {
            w.get(&name, &shape)?;
        }
        Ok(())
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A tensor handed to a forward pass, of any rank.
#[derive(Clone, Debug)]
enum Leaf {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R4(Tensor<4>),
}

/// Turns named parameters into tensors on a device; with `track`, the
/// tensors require gradients and [`Binder::grads`] reads them back.
pub struct Binder<'a> {
    weights: &'a Weights,
    device: Device,
    track: bool,
    leaves: Vec<(String, Leaf)>,
}

impl<'a> Binder<'a> {
    /// Binds `weights` on `device` (an autodiff device when `track`).
    pub fn new(weights: &'a Weights, device: &Device, track: bool) -> Self {
        Binder {
            weights,
            device: device.clone(),
            track,
            leaves: Vec::new(),
        }
    }

    fn data(&self, name: &str) -> Result<(Vec<usize>, TensorData), WeightsError> {
        let t = self
            .weights
            .tensor(name)
            .ok_or_else(|| WeightsError::Missing {
                name: name.to_owned(),
            })?;
        Ok((
            t.shape.clone(),
            TensorData::new(t.data.clone(), t.shape.clone()),
        ))
    }

    fn fresh<const D: usize>(&mut self, name: &str) -> Result<Tensor<D>, WeightsError> {
        let (shape, data) = self.data(name)?;
        if shape.len() != D {
            return Err(WeightsError::Format(format!(
                "{name}: expected rank {D}, found shape {shape:?}"
            )));
        }
        let t: Tensor<D> = Tensor::from_data(data, &self.device);
        Ok(if self.track { t.require_grad() } else { t })
    }

    fn cached(&self, name: &str) -> Option<&Leaf> {
        self.leaves.iter().find(|(n, _)| n == name).map(|(_, l)| l)
    }

    fn get1(&mut self, name: &str) -> Result<Tensor<1>, WeightsError> {
        if let Some(Leaf::R1(t)) = self.cached(name) {
            return Ok(t.clone());
        }
        let t = self.fresh::<1>(name)?;
        self.leaves.push((name.to_owned(), Leaf::R1(t.clone())));
        Ok(t)
    }

    fn get2(&mut self, name: &str) -> Result<Tensor<2>, WeightsError> {
        if let Some(Leaf::R2(t)) = self.cached(name) {
            return Ok(t.clone());
        }
        let t = self.fresh::<2>(name)?;
        self.leaves.push((name.to_owned(), Leaf::R2(t.clone())));
        Ok(t)
    }

    fn get4(&mut self, name: &str) -> Result<Tensor<4>, WeightsError> {
        if let Some(Leaf::R4(t)) = self.cached(name) {
            return Ok(t.clone());
        }
        let t = self.fresh::<4>(name)?;
        self.leaves.push((name.to_owned(), Leaf::R4(t.clone())));
        Ok(t)
    }

    /// A fine-tunable backbone from folded parameters named `PREFIX` + conv
    /// name + `.weight` / `.bias` ([`Backbone::fold`]); with `track`, their
    /// gradients come back through [`Binder::grads`].
    pub fn backbone(
        &mut self,
        kind: BackboneKind,
        prefix: &str,
    ) -> Result<Backbone, crate::ModelError> {
        Backbone::from_folded(kind, &mut |conv, shape| {
            let k = self.get4(&format!("{prefix}{conv}.weight"))?;
            let b = self.get1(&format!("{prefix}{conv}.bias"))?;
            if k.dims()[..] != *shape || b.dims()[0] != shape[0] {
                return Err(WeightsError::Shape {
                    name: format!("{prefix}{conv}.weight"),
                    expected: shape.to_vec(),
                    found: k.dims().to_vec(),
                });
            }
            Ok((k, b))
        })
    }

    /// Gradients of every bound parameter, by name (zero where none flowed).
    pub fn grads(&self, g: &burn::tensor::Gradients) -> Result<Weights, crate::ModelError> {
        let mut out = Weights::new();
        for (name, leaf) in &self.leaves {
            let (shape, grad) = match leaf {
                Leaf::R1(t) => (t.dims().to_vec(), t.grad(g).map(crate::to_vec)),
                Leaf::R2(t) => (t.dims().to_vec(), t.grad(g).map(crate::to_vec)),
                Leaf::R4(t) => (t.dims().to_vec(), t.grad(g).map(crate::to_vec)),
            };
            let n = shape.iter().product();
            let data = match grad {
                Some(v) => v?,
                None => vec![0.0; n],
            };
            out.insert(name.clone(), shape, data);
        }
        Ok(out)
    }

    fn linear(&mut self, name: &str, x: Tensor<2>) -> Result<Tensor<2>, WeightsError> {
        let w = self.get2(&format!("{name}.weight"))?;
        let b = self.get1(&format!("{name}.bias"))?;
        Ok(x.matmul(w) + b.unsqueeze_dim(0))
    }

    fn conv(&mut self, name: &str, x: Tensor<4>, pad: usize) -> Result<Tensor<4>, WeightsError> {
        let w = self.get4(&format!("{name}.weight"))?;
        let b = self.get1(&format!("{name}.bias"))?;
        Ok(conv2d(
            x,
            w,
            Some(b),
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        ))
    }

    /// Foreground encoder: `relu(embed(pooled))`, `[N, embed]`.
    pub fn teacher_embed(&mut self, pooled: Tensor<2>) -> Result<Tensor<2>, WeightsError> {
        Ok(relu(self.linear("teacher.embed", pooled)?))
    }

    /// Pattern logits of foreground embeddings, `[N, patterns]`.
    pub fn teacher_logits(&mut self, embed: Tensor<2>) -> Result<Tensor<2>, WeightsError> {
        self.linear("teacher.classify", embed)
    }

    /// Late-fusion query encoder: the outer product of the background feature
    /// `[N, F]` and the layout `[N, 4]`, flattened, then FC+ReLU, FC+ReLU.
    pub fn student_embed(
        &mut self,
        pooled: Tensor<2>,
        layout: Tensor<2>,
    ) -> Result<Tensor<2>, WeightsError> {
        let [n, f] = pooled.dims();
        let outer = pooled.unsqueeze_dim::<3>(2) * layout.unsqueeze_dim::<3>(1);
        let x = outer.reshape([n, f * 4]);
        let h = relu(self.linear("student.fc1", x)?);
        Ok(relu(self.linear("student.fc2", h)?))
    }

    /// Early-fusion query encoder: FC+ReLU, FC+ReLU over the feature of the
    /// crop whose rectangle is filled with the photo's mean colour.
    pub fn early_embed(&mut self, pooled: Tensor<2>) -> Result<Tensor<2>, WeightsError> {
        let h = relu(self.linear("early.fc1", pooled)?);
        Ok(relu(self.linear("early.fc2", h)?))
    }

    /// DiscoFOS teacher on composite features: (feature `[N, fusion]`,
    /// compatibility logit `[N]`).
    pub fn disco_teacher(
        &mut self,
        pooled: Tensor<2>,
    ) -> Result<(Tensor<2>, Tensor<1>), WeightsError> {
        let f = relu(self.linear("disco_teacher.fc1", pooled)?);
        let n = f.dims()[0];
        let logit = self.linear("disco_teacher.out", f.clone())?.reshape([n]);
        Ok((f, logit))
    }

    /// DiscoFOS student fusion: RoI features of the background `[N, C, 7, 7]`
    /// and the cut-out's map `[N, C, 7, 7]`, each reduced by a 1x1 conv,
    /// concatenated, two 3x3 convs, average pool: (feature `[N, fusion]`,
    /// compatibility logit `[N]`).
    pub fn disco_student(
        &mut self,
        roi: Tensor<4>,
        fg: Tensor<4>,
    ) -> Result<(Tensor<2>, Tensor<1>), WeightsError> {
        let b = relu(self.conv("disco_student.reduce_bg", roi, 0)?);
        let f = relu(self.conv("disco_student.reduce_fg", fg, 0)?);
        let x = Tensor::cat(vec![b, f], 1);
        let x = relu(self.conv("disco_student.conv1", x, 1)?);
        let x = relu(self.conv("disco_student.conv2", x, 1)?);
        let [n, c, _, _] = x.dims();
        let feat = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        let logit = self.linear("disco_student.out", feat.clone())?.reshape([n]);
        Ok((feat, logit))
    }
}

/// RoIAlign (aligned, 2x2 bilinear samples per bin) of one map `[C, H, W]`
/// over the box `[x0, y0, x1, y1]` given as fractions of the map's side:
/// `[C, 7, 7]`, row-major.
pub fn roi_align(map: &[f32], c: usize, h: usize, w: usize, b: [f32; 4]) -> Vec<f32> {
    let mut out = vec![0f32; c * ROI * ROI];
    let (x0, y0) = (b[0] * w as f32 - 0.5, b[1] * h as f32 - 0.5);
    let (bw, bh) = (
        (b[2] - b[0]).max(1e-6) * w as f32 / ROI as f32,
        (b[3] - b[1]).max(1e-6) * h as f32 / ROI as f32,
    );
    let sample = |ch: usize, y: f32, x: f32| -> f32 {
        if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
            return 0.0;
        }
        let (y, x) = (y.clamp(0.0, (h - 1) as f32), x.clamp(0.0, (w - 1) as f32));
        let (ya, xa) = (y.floor() as usize, x.floor() as usize);
        let (yb, xb) = ((ya + 1).min(h - 1), (xa + 1).min(w - 1));
        let (ly, lx) = (y - ya as f32, x - xa as f32);
        let m = &map[ch * h * w..];
        m[ya * w + xa] * (1.0 - ly) * (1.0 - lx)
            + m[ya * w + xb] * (1.0 - ly) * lx
            + m[yb * w + xa] * ly * (1.0 - lx)
            + m[yb * w + xb] * ly * lx
    };
    for ch in 0..c {
        for i in 0..ROI {
            for j in 0..ROI {
                let mut acc = 0.0;
                for (sy, sx) in [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)] {
                    acc += sample(ch, y0 + (i as f32 + sy) * bh, x0 + (j as f32 + sx) * bw);
                }
                out[(ch * ROI + i) * ROI + j] = acc / 4.0;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_backbone_returns_gradients_for_its_parameters() {
        let kind = BackboneKind::EfficientNetLite0;
        let folded = Backbone::fold(kind, &Backbone::synthetic_weights(kind, 5)).unwrap();
        let ad = crate::device().autodiff();
        let mut b = Binder::new(&folded, &ad, true);
        let net = b.backbone(kind, "").unwrap();
        let x: Vec<f32> = (0..3 * 32 * 32)
            .map(|i| ((i % 13) as f32 - 6.0) / 6.0)
            .collect();
        let f = net.forward(Tensor::from_data(TensorData::new(x, [1, 3, 32, 32]), &ad));
        let g = b.grads(&f.pooled.sum().backward()).unwrap();
        // Every folded parameter is bound once, and gradients reach the stem.
        assert_eq!(g.names().count(), folded.names().count());
        for n in [
            "_conv_stem.weight",
            "_conv_head.bias",
            "_blocks.15._project_conv.weight",
        ] {
            let v = &g.tensor(n).unwrap().data;
            assert!(v.iter().any(|x| *x != 0.0), "{n}: no gradient");
        }
    }

    fn dims() -> HeadDims {
        HeadDims {
            feature: 6,
            map_channels: 3,
            embed: 4,
            hidden: 5,
            patterns: 3,
            reduce: 2,
            fusion: 4,
        }
    }

    #[test]
    fn heads_have_the_documented_shapes_and_run() {
        let d = dims();
        let mut w = Weights::new();
        for h in Head::ALL {
            h.init(&d, 1, &mut w);
            h.check(&d, &w).unwrap();
        }
        let dev = crate::device();
        let mut b = Binder::new(&w, &dev, false);
        let x = Tensor::<2>::ones([2, 6], &dev);
        let e = b.teacher_embed(x.clone()).unwrap();
        assert_eq!(e.dims(), [2, 4]);
        assert_eq!(b.teacher_logits(e).unwrap().dims(), [2, 3]);
        let l = Tensor::<2>::ones([2, 4], &dev);
        assert_eq!(b.student_embed(x.clone(), l).unwrap().dims(), [2, 4]);
        assert_eq!(b.early_embed(x.clone()).unwrap().dims(), [2, 4]);
        let (f, s) = b.disco_teacher(x).unwrap();
        assert_eq!((f.dims(), s.dims()), ([2, 4], [2]));
        let m = Tensor::<4>::ones([2, 3, 7, 7], &dev);
        let (f, s) = b.disco_student(m.clone(), m).unwrap();
        assert_eq!((f.dims(), s.dims()), ([2, 4], [2]));
        // A wrong shape is named.
        let mut d2 = d;
        d2.embed = 8;
        let e = Head::Teacher.check(&d2, &w).unwrap_err().to_string();
        assert!(e.contains("teacher.embed.weight"), "{e}");
    }

    #[test]
    fn student_uses_the_outer_product() {
        // With fc1 = identity-like selection, the first hidden unit sees
        // pooled[0] * layout[0], and so on.
        let d = HeadDims {
            feature: 2,
            map_channels: 1,
            embed: 8,
            hidden: 8,
            patterns: 1,
            reduce: 1,
            fusion: 1,
        };
        let mut w = Weights::new();
        let mut eye = vec![0f32; 64];
        (0..8).for_each(|i| eye[i * 8 + i] = 1.0);
        w.insert("student.fc1.weight", vec![8, 8], eye.clone());
        w.insert("student.fc1.bias", vec![8], vec![0.0; 8]);
        w.insert("student.fc2.weight", vec![8, 8], eye);
        w.insert("student.fc2.bias", vec![8], vec![0.0; 8]);
        Head::Student.check(&d, &w).unwrap();
        let dev = crate::device();
        let mut b = Binder::new(&w, &dev, false);
        let p = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 3.0], [1, 2]), &dev);
        let l = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 0.25, 1.0, 2.0], [1, 4]), &dev);
        let y = crate::to_vec(b.student_embed(p, l).unwrap()).unwrap();
        assert_eq!(y, vec![1.0, 0.5, 2.0, 4.0, 1.5, 0.75, 3.0, 6.0]);
    }

    #[test]
    fn roi_align_of_the_whole_map_of_a_constant_is_that_constant() {
        let map = vec![3.0f32; 2 * 7 * 7];
        let r = roi_align(&map, 2, 7, 7, [0.0, 0.0, 1.0, 1.0]);
        assert!(r.iter().all(|v| (v - 3.0).abs() < 1e-6));
        // A ramp along x: the RoI of the left half averages the left values.
        let ramp: Vec<f32> = (0..49).map(|i| (i % 7) as f32).collect();
        let r = roi_align(&ramp, 1, 7, 7, [0.0, 0.0, 0.5, 1.0]);
        assert!(r[0] < r[6], "{r:?}");
        assert!(r.iter().all(|v| *v <= 3.5), "{r:?}");
    }
}
