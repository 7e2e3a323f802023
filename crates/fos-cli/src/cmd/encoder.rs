//! The flags that choose the model (`--model DIR`, else `$FOS_MODEL`, else
//! the committed `models/default`; `--model pretrained`); the choice itself
//! is `fos_search::model`.

use std::sync::Arc;

use clap::Args as ClapArgs;
use fos_model::backbone::BackboneKind;
use fos_model::embed::{Encoder, PretrainedEncoder};
use fos_model::trained::TrainedModel;
use fos_search::model::ModelChoice;

/// Which encoder makes the embeddings.
#[derive(ClapArgs, Debug, Clone)]
pub struct EncoderArgs {
    /// Model directory (`fos train`); default: $FOS_MODEL, else the
    /// committed models/default; `pretrained` for plain backbone features.
    #[arg(long, env = "FOS_MODEL")]
    pub model: Option<String>,
    /// Backbone of the pretrained stand-in encoder (with --model pretrained).
    #[arg(long, default_value = "efficientnet-lite0")]
    pub backbone: BackboneKind,
    /// Cut-outs per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: u16,
}

impl EncoderArgs {
    /// The model these flags choose.
    pub fn choice(&self) -> ModelChoice {
        ModelChoice::parse(self.model.as_deref(), self.backbone)
    }

    /// The trained model in use, or `None` for the pretrained stand-in.
    pub fn trained(&self) -> anyhow::Result<Option<Arc<TrainedModel>>> {
        Ok(self.choice().trained()?)
    }

    /// The pretrained stand-in encoder.
    pub fn pretrained(&self) -> anyhow::Result<PretrainedEncoder> {
        Ok(ModelChoice::Pretrained(self.backbone).pretrained()?)
    }

    /// The encoder search uses: the trained model's teacher and student, or
    /// the stand-in.
    pub fn load(&self) -> anyhow::Result<Box<dyn Encoder>> {
        Ok(self.choice().encoder()?)
    }
}
