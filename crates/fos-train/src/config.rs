//! Training settings: every number of method.md as a default, overridable by
//! a JSON file (`fos train --config FILE`; missing keys keep their default).

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::optim::OptimConfig;
use crate::TrainError;

/// One optimisation stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageConfig {
    /// Passes over the training samples.
    pub epochs: usize,
    /// Samples per step.
    pub batch: usize,
    /// Learning rate.
    pub lr: f32,
    /// The learning rate halves every this many epochs (0: never).
    pub lr_halve_every: usize,
    /// Update rule.
    pub optimizer: OptimConfig,
}

const ADAM: OptimConfig = OptimConfig::Adam {
    beta1: 0.5,
    beta2: 0.99,
    eps: 1e-9,
};

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            epochs: 20,
            batch: 16,
            lr: 1e-4,
            lr_halve_every: 0,
            optimizer: ADAM,
        }
    }
}

/// Everything `fos train` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seed of every random choice (sampling, augmentation, initialisation).
    pub seed: u64,
    /// Backbone (frozen).
    pub backbone: String,
    /// Offline variants per cut-out (the first is the plain cut-out).
    pub fg_variants: usize,
    /// Offline variants per query (the first is the exact rectangle).
    pub query_variants: usize,
    /// Negatives per query for DiscoFOS (each one composite).
    pub negatives: usize,
    /// Embedding width (teacher and query encoders).
    pub embed: usize,
    /// Hidden width of the query encoders (the paper's 2048).
    pub hidden: usize,
    /// DiscoFOS: channels each map is reduced to.
    pub reduce: usize,
    /// DiscoFOS: feature width of teacher and student.
    pub fusion: usize,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Foreground encoder (teacher): SGD momentum 0.9, weight decay 1e-4, lr
    /// 0.02 halved every 10 epochs, batch 32.
    pub teacher: StageConfig,
    /// The teacher with its backbone fine-tuned (`fos train teacher
    /// --fine-tune`), warm-started from the head trained on the frozen
    /// backbone: each step runs the backbone on freshly augmented cut-outs
    /// (white padding and colour jitter drawn online). SGD momentum 0.9,
    /// weight decay 1e-4, lr 0.005 (where the frozen stage ends) halved every
    /// 2 epochs, batch 16, 6 epochs (a CPU epoch over the default data set
    /// takes minutes).
    pub teacher_fine_tune: StageConfig,
    /// The backbone's learning rate as a fraction of the head's when
    /// fine-tuning (batch norm statistics stay frozen, folded in).
    pub backbone_lr_scale: f32,
    /// Center loss weight (lambda).
    pub center_weight: f32,
    /// Learning rate of the centres.
    pub center_lr: f32,
    /// Query encoder (student): Adam lr 1e-4, betas (0.5, 0.99), eps 1e-9, batch 16.
    pub student: StageConfig,
    /// The early-fusion baseline (same loss and optimiser as the student).
    pub early_fusion: StageConfig,
    /// Triplet margin (cosine for the encoders, score for DiscoFOS).
    pub margin: f32,
    /// Probability that a student's positive is the query's own cut-out rather
    /// than another member of its pattern.
    pub own_positive: f32,
    /// DiscoFOS teacher discriminator (BCE).
    pub disco_teacher: StageConfig,
    /// DiscoFOS fusion student (triplet + BCE + L1 distillation).
    pub disco_student: StageConfig,
    /// Weight of the L1 distillation term.
    pub distill_weight: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            backbone: "efficientnet-lite0".into(),
            fg_variants: 4,
            query_variants: 4,
            negatives: 3,
            embed: 512,
            hidden: 1024,
            reduce: 64,
            fusion: 128,
            augment: AugmentConfig::default(),
            teacher: StageConfig {
                epochs: 30,
                batch: 32,
                lr: 0.02,
                lr_halve_every: 10,
                optimizer: OptimConfig::Sgd {
                    momentum: 0.9,
                    weight_decay: 1e-4,
                },
            },
            teacher_fine_tune: StageConfig {
                epochs: 6,
                batch: 16,
                lr: 0.005,
                lr_halve_every: 2,
                optimizer: OptimConfig::Sgd {
                    momentum: 0.9,
                    weight_decay: 1e-4,
                },
            },
            backbone_lr_scale: 0.1,
            center_weight: 0.005,
            center_lr: 0.5,
            student: StageConfig {
                epochs: 15,
                ..Default::default()
            },
            early_fusion: StageConfig {
                epochs: 15,
                ..Default::default()
            },
            margin: 0.1,
            own_positive: 0.5,
            disco_teacher: StageConfig {
                epochs: 30,
                batch: 32,
                lr: 1e-4,
                ..Default::default()
            },
            disco_student: StageConfig {
                epochs: 30,
                ..Default::default()
            },
            distill_weight: 1.0,
        }
    }
}

impl TrainConfig {
    /// Reads a JSON file over the defaults; unknown keys are refused (a typo
    /// must not silently train with a default).
    pub fn from_json(text: &str) -> Result<Self, TrainError> {
        let user: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| TrainError::Config(format!("config is not JSON: {e}")))?;
        let mut base = serde_json::to_value(TrainConfig::default()).expect("serialisable");
        merge(&mut base, &user, "")?;
        let c: TrainConfig =
            serde_json::from_value(base).map_err(|e| TrainError::Config(format!("config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    /// Refuses settings that cannot train.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(format!("config: {m}")));
        if self.fg_variants == 0 || self.query_variants == 0 {
            return bad("fg_variants and query_variants must be at least 1");
        }
        if self.negatives == 0 {
            return bad("negatives must be at least 1");
        }
        if [self.embed, self.hidden, self.reduce, self.fusion].contains(&0) {
            return bad("embed, hidden, reduce and fusion must be positive");
        }
        for (n, s) in [
            ("teacher", self.teacher),
            ("teacher_fine_tune", self.teacher_fine_tune),
            ("student", self.student),
            ("early_fusion", self.early_fusion),
            ("disco_teacher", self.disco_teacher),
            ("disco_student", self.disco_student),
        ] {
            if s.batch == 0 || !(s.lr.is_finite() && s.lr > 0.0) {
                return Err(TrainError::Config(format!(
                    "config: {n}: batch must be at least 1 and lr positive"
                )));
            }
        }
        if !(self.backbone_lr_scale.is_finite() && self.backbone_lr_scale >= 0.0) {
            return bad("backbone_lr_scale must be a number >= 0");
        }
        Ok(())
    }
}

fn merge(
    base: &mut serde_json::Value,
    user: &serde_json::Value,
    at: &str,
) -> Result<(), TrainError> {
    match (base, user) {
        (serde_json::Value::Object(b), serde_json::Value::Object(u)) => {
            for (k, v) in u {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() && v.get("kind").is_none() => {
                        merge(slot, v, &path)?
                    }
                    Some(slot) => *slot = v.clone(),
                    None => {
                        return Err(TrainError::Config(format!(
                            "config: unknown setting `{path}`"
                        )))
                    }
                }
            }
            Ok(())
        }
        (b, u) => {
            *b = u.clone();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_overrides_merge() {
        let c = TrainConfig::default();
        assert_eq!(c.teacher.lr, 0.02);
        assert_eq!(c.teacher.lr_halve_every, 10);
        assert_eq!(c.center_weight, 0.005);
        assert_eq!(c.center_lr, 0.5);
        assert_eq!(c.margin, 0.1);
        assert_eq!(c.student.optimizer, ADAM);
        let c = TrainConfig::from_json(r#"{"seed": 7, "teacher": {"epochs": 2}}"#).unwrap();
        assert_eq!((c.seed, c.teacher.epochs, c.teacher.lr), (7, 2, 0.02));
        let e = TrainConfig::from_json(r#"{"teacher": {"epoch": 2}}"#).unwrap_err();
        assert!(e.to_string().contains("teacher.epoch"), "{e}");
        assert!(TrainConfig::from_json(r#"{"student": {"batch": 0}}"#).is_err());
        assert!(TrainConfig::from_json("nope").is_err());
    }
}
