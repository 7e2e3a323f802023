//! Which model makes the embeddings, decided in one place for every front
//! end: a model directory, else `$FOS_MODEL`, else the committed
//! `models/default`; `pretrained` is the stand-in (plain pretrained backbone
//! features).
//!
//! ```no_run
//! use fos_search::model::ModelChoice;
//! let choice = ModelChoice::parse(None, fos_model::backbone::BackboneKind::EfficientNetLite0);
//! let encoder = choice.encoder()?; // what `fos search` and `fos index` use
//! # Ok::<(), fos_search::SearchError>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use fos_model::backbone::BackboneKind;
use fos_model::embed::{Encoder, PretrainedEncoder};
use fos_model::trained::{default_model_dir, QueryHead, TrainedModel};

use crate::SearchError;

/// A model directory, the default one, or the pretrained stand-in.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelChoice {
    /// A model directory made by `fos train`.
    Dir(PathBuf),
    /// The committed `models/default` (or nothing found: the stand-in).
    Default,
    /// Plain pretrained features of this backbone.
    Pretrained(BackboneKind),
}

impl ModelChoice {
    /// From a `--model` value (`None`: `$FOS_MODEL` is read by the caller's
    /// flag parser, else the default; `"pretrained"`: the stand-in of
    /// `backbone`).
    pub fn parse(model: Option<&str>, backbone: BackboneKind) -> Self {
        match model {
            Some("pretrained") => ModelChoice::Pretrained(backbone),
            Some(d) => ModelChoice::Dir(PathBuf::from(d)),
            None => ModelChoice::Default,
        }
    }

    /// The trained model, or `None` for the stand-in (also when no default
    /// model is found, with a warning).
    pub fn trained(&self) -> Result<Option<Arc<TrainedModel>>, SearchError> {
        let dir = match self {
            ModelChoice::Pretrained(_) => return Ok(None),
            ModelChoice::Dir(d) => d.clone(),
            ModelChoice::Default => match default_model_dir() {
                Some(d) => d,
                None => {
                    tracing::warn!(
                        "no trained model found (models/default, $FOS_MODEL): using plain pretrained features"
                    );
                    return Ok(None);
                }
            },
        };
        let m = TrainedModel::load(&dir, fos_model::device()).map_err(|e| {
            SearchError::Input(format!("loading the model in {}: {e}", dir.display()))
        })?;
        Ok(Some(Arc::new(m)))
    }

    /// The backbone of the stand-in encoder.
    pub fn backbone(&self) -> BackboneKind {
        match self {
            ModelChoice::Pretrained(b) => *b,
            _ => BackboneKind::EfficientNetLite0,
        }
    }

    /// The pretrained stand-in encoder.
    pub fn pretrained(&self) -> Result<PretrainedEncoder, SearchError> {
        Ok(PretrainedEncoder::load(
            self.backbone(),
            fos_model::device(),
        )?)
    }

    /// The encoder search and indexing use: the trained model's teacher and
    /// student, or the stand-in.
    pub fn encoder(&self) -> Result<Box<dyn Encoder>, SearchError> {
        self.encoder_with(self.trained()?.as_ref())
    }

    /// [`encoder`](Self::encoder) for a model already loaded by
    /// [`trained`](Self::trained) (`None`: the stand-in).
    pub fn encoder_with(
        &self,
        trained: Option<&Arc<TrainedModel>>,
    ) -> Result<Box<dyn Encoder>, SearchError> {
        Ok(match trained {
            Some(m) => Box::new(m.encoder(QueryHead::Student)?),
            None => Box::new(self.pretrained()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_model_flag() {
        let b = BackboneKind::EfficientNetLite0;
        assert_eq!(ModelChoice::parse(None, b), ModelChoice::Default);
        assert_eq!(
            ModelChoice::parse(Some("pretrained"), b),
            ModelChoice::Pretrained(b)
        );
        assert_eq!(
            ModelChoice::parse(Some("models/x"), b),
            ModelChoice::Dir("models/x".into())
        );
        assert!(ModelChoice::parse(Some("pretrained"), b)
            .trained()
            .unwrap()
            .is_none());
        let Err(e) = ModelChoice::Dir("/nonexistent/model".into()).trained() else {
            panic!("a missing model directory loaded");
        };
        assert!(e.to_string().contains("/nonexistent/model"), "{e}");
    }
}
