//! ResNet50 (He et al. 2016) with torchvision's parameter names (`conv1`, `bn1`,
//! `layer1.0.conv1`, ..., `fc`), the stride on the 3x3 convolution ("v1.5"), batch
//! norm eps 1e-5 (folded at load). No pretrained ResNet50 can be fetched by fos;
//! users bring a safetensors (or .pth) file with `fos weights import FILE --name resnet50`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor};

use crate::efficientnet::Features;
use crate::layers::{
    conv_bn, global_avg_pool, linear, relu, synth_conv_bn, synth_linear, ConvSpec, Rng,
};
use crate::weights::{Weights, WeightsError};

/// Batch-norm epsilon of torchvision models.
pub const BN_EPS: f32 = 1e-5;
/// Width of the pooled feature.
pub const FEATURE_DIM: usize = 2048;
/// Blocks per stage.
const LAYERS: [usize; 4] = [3, 4, 6, 3];

fn spec(cin: usize, cout: usize, kernel: usize, stride: usize) -> ConvSpec {
    let p = kernel / 2;
    ConvSpec {
        cin,
        cout,
        kernel,
        stride,
        groups: 1,
        padding: PaddingConfig2d::Explicit(p, p, p, p),
    }
}

/// The convolutions of one bottleneck: (name, spec), plus the downsample if any.
fn bottleneck_specs(
    cin: usize,
    width: usize,
    stride: usize,
) -> Vec<(&'static str, &'static str, ConvSpec)> {
    let mut v = vec![
        ("conv1", "bn1", spec(cin, width, 1, 1)),
        ("conv2", "bn2", spec(width, width, 3, stride)),
        ("conv3", "bn3", spec(width, width * 4, 1, 1)),
    ];
    if stride != 1 || cin != width * 4 {
        v.push((
            "downsample.0",
            "downsample.1",
            spec(cin, width * 4, 1, stride),
        ));
    }
    v
}

/// (prefix, cin, width, stride) of every bottleneck.
fn all_blocks() -> Vec<(String, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut cin = 64;
    for (l, &n) in LAYERS.iter().enumerate() {
        let width = 64 << l;
        for b in 0..n {
            let stride = if b == 0 && l > 0 { 2 } else { 1 };
            out.push((format!("layer{}.{b}.", l + 1), cin, width, stride));
            cin = width * 4;
        }
    }
    out
}

/// A bottleneck block: 1x1, 3x3 (strided), 1x1 expanding by 4, residual.
#[derive(Module, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = relu(self.conv1.forward(x.clone()));
        let h = relu(self.conv2.forward(h));
        let h = self.conv3.forward(h);
        let identity = match &self.downsample {
            Some(d) => d.forward(x),
            None => x,
        };
        relu(h + identity)
    }
}

/// ResNet50.
#[derive(Module, Debug)]
pub struct ResNet50 {
    conv1: Conv2d,
    blocks: Vec<Bottleneck>,
    fc: Option<Linear>,
}

impl ResNet50 {
    /// Builds the network from torchvision-named weights; `fc` is optional.
    pub fn from_weights(w: &Weights, device: &Device) -> Result<Self, WeightsError> {
        let conv1 = conv_bn(w, "conv1", "bn1", &spec(3, 64, 7, 2), BN_EPS, device)?;
        let mut blocks = Vec::new();
        for (p, cin, width, stride) in all_blocks() {
            let mut convs = bottleneck_specs(cin, width, stride)
                .into_iter()
                .map(|(c, b, s)| {
                    conv_bn(
                        w,
                        &format!("{p}{c}"),
                        &format!("{p}{b}"),
                        &s,
                        BN_EPS,
                        device,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            blocks.push(Bottleneck {
                conv1: convs.next().expect("three convs"),
                conv2: convs.next().expect("three convs"),
                conv3: convs.next().expect("three convs"),
                downsample: convs.next(),
            });
        }
        let fc = if w.contains("fc.weight") {
            Some(linear(w, "fc", FEATURE_DIM, 1000, device)?)
        } else {
            None
        };
        Ok(Self { conv1, blocks, fc })
    }

    /// Deterministic random weights with torchvision names and shapes.
    pub fn synthetic_weights(seed: u64) -> Weights {
        let mut w = Weights::new();
        let mut rng = Rng::new(seed);
        synth_conv_bn(&mut w, "conv1", "bn1", &spec(3, 64, 7, 2), &mut rng);
        for (p, cin, width, stride) in all_blocks() {
            for (c, b, s) in bottleneck_specs(cin, width, stride) {
                synth_conv_bn(&mut w, &format!("{p}{c}"), &format!("{p}{b}"), &s, &mut rng);
            }
        }
        synth_linear(&mut w, "fc", FEATURE_DIM, 1000, &mut rng);
        w
    }

    /// Feature map `[N, 2048, H/32, W/32]` and pooled feature of a batch.
    pub fn forward(&self, x: Tensor<4>) -> Features {
        let x = relu(self.conv1.forward(x));
        let mut x = max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        );
        for b in &self.blocks {
            x = b.forward(x);
        }
        let pooled = global_avg_pool(x.clone());
        Features {
            map: x.clone(),
            pooled,
            last_block: x,
        }
    }

    /// ImageNet logits, if the classifier is loaded.
    pub fn logits(&self, pooled: Tensor<2>) -> Option<Tensor<2>> {
        self.fc.as_ref().map(|fc| fc.forward(pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn torchvision_names_and_forward_shapes() {
        let w = ResNet50::synthetic_weights(3);
        // 53 conv+bn pairs (5 tensors each) + fc (2) = 267 tensors, 25.56M params.
        assert_eq!(w.len(), 53 * 5 + 2);
        assert!(w.contains("layer3.0.downsample.1.running_var"));
        assert_eq!(w.num_params(), 25_557_032 + 53_120);
        let device = crate::device();
        let net = ResNet50::from_weights(&w, &device).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32; 3 * 64 * 64], [1, 3, 64, 64]),
            &device,
        );
        let f = net.forward(x);
        assert_eq!(f.map.dims(), [1, FEATURE_DIM, 2, 2]);
        assert_eq!(net.logits(f.pooled).unwrap().dims(), [1, 1000]);
    }

    #[test]
    fn missing_tensor_is_named() {
        let mut w = ResNet50::synthetic_weights(3);
        let mut w2 = crate::weights::Weights::new();
        for n in w
            .names()
            .filter(|n| *n != "layer2.1.conv2.weight")
            .map(str::to_owned)
            .collect::<Vec<_>>()
        {
            let t = w.tensor(&n).unwrap().clone();
            w2.insert(n, t.shape, t.data);
        }
        w = w2;
        let e = ResNet50::from_weights(&w, &crate::device())
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer2.1.conv2.weight"), "{e}");
    }
}
