//! Which model makes the embeddings: `--model DIR`, else `$FOS_MODEL`, else
//! the committed `models/default`; `--model pretrained` is the stand-in
//! (plain pretrained backbone features).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use fos_model::backbone::BackboneKind;
use fos_model::embed::{Encoder, PretrainedEncoder};
use fos_model::trained::{default_model_dir, QueryHead, TrainedModel};

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
    /// The trained model in use, or `None` for the pretrained stand-in.
    pub fn trained(&self) -> anyhow::Result<Option<Arc<TrainedModel>>> {
        let dir = match self.model.as_deref() {
            Some("pretrained") => return Ok(None),
            Some(d) => PathBuf::from(d),
            None => match default_model_dir() {
                Some(d) => d,
                None => {
                    tracing::warn!(
                        "no trained model found (models/default, $FOS_MODEL): using plain pretrained features"
                    );
                    return Ok(None);
                }
            },
        };
        let m = TrainedModel::load(&dir, fos_model::device())
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        Ok(Some(Arc::new(m)))
    }

    /// The pretrained stand-in encoder.
    pub fn pretrained(&self) -> anyhow::Result<PretrainedEncoder> {
        Ok(PretrainedEncoder::load(self.backbone, fos_model::device())?)
    }

    /// The encoder search uses: the trained model's teacher and student, or
    /// the stand-in.
    pub fn load(&self) -> anyhow::Result<Box<dyn Encoder>> {
        Ok(match self.trained()? {
            Some(m) => Box::new(m.encoder(QueryHead::Student)?),
            None => Box::new(self.pretrained()?),
        })
    }
}
