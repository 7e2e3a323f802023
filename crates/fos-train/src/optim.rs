//! Optimisers over named parameters ([`Weights`]), with PyTorch's update
//! rules. Their state is plain named tensors too, so a checkpoint is one
//! safetensors file and a resumed run continues exactly.

use fos_model::weights::Weights;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Which rule and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimConfig {
    /// SGD with momentum and L2 weight decay (`torch.optim.SGD`).
    Sgd {
        /// Momentum.
        momentum: f32,
        /// Weight decay (added to the gradient).
        weight_decay: f32,
    },
    /// Adam (`torch.optim.Adam`, bias-corrected).
    Adam {
        /// beta1.
        beta1: f32,
        /// beta2.
        beta2: f32,
        /// epsilon.
        eps: f32,
    },
}

/// An optimiser and its state.
pub struct Optimizer {
    config: OptimConfig,
    step: u64,
    /// `m.NAME` / `v.NAME` (Adam) or `buf.NAME` (SGD).
    state: Weights,
}

impl Optimizer {
    /// A fresh optimiser.
    pub fn new(config: OptimConfig) -> Self {
        Optimizer {
            config,
            step: 0,
            state: Weights::new(),
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Applies one update with learning rate `lr` to the parameters that
    /// `grads` names.
    pub fn step(
        &mut self,
        lr: f32,
        params: &mut Weights,
        grads: &Weights,
    ) -> Result<(), TrainError> {
        self.step_scaled(lr, params, grads, &|_| 1.0)
    }

    /// As [`step`](Self::step), with the learning rate of parameter `name`
    /// multiplied by `scale(name)` (a fine-tuned backbone's smaller rate).
    pub fn step_scaled(
        &mut self,
        lr: f32,
        params: &mut Weights,
        grads: &Weights,
        scale: &dyn Fn(&str) -> f32,
    ) -> Result<(), TrainError> {
        self.step += 1;
        let t = self.step as i32;
        let base = lr;
        for name in grads.names().map(str::to_owned).collect::<Vec<_>>() {
            let lr = base * scale(&name);
            let g = grads.tensor(&name).expect("named by grads");
            let p = params
                .tensor_mut(&name)
                .ok_or_else(|| TrainError::Config(format!("no parameter {name}")))?;
            if p.data.len() != g.data.len() {
                return Err(TrainError::Config(format!(
                    "gradient of {name} has the wrong size"
                )));
            }
            match self.config {
                OptimConfig::Sgd {
                    momentum,
                    weight_decay,
                } => {
                    let key = format!("buf.{name}");
                    let first = !self.state.contains(&key);
                    if first {
                        self.state
                            .insert(key.clone(), g.shape.clone(), vec![0.0; g.data.len()]);
                    }
                    let buf = self.state.tensor_mut(&key).expect("just inserted");
                    for i in 0..g.data.len() {
                        let d = g.data[i] + weight_decay * p.data[i];
                        buf.data[i] = if first { d } else { momentum * buf.data[i] + d };
                        p.data[i] -= lr * buf.data[i];
                    }
                }
                OptimConfig::Adam { beta1, beta2, eps } => {
                    let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
                    for k in [&mk, &vk] {
                        if !self.state.contains(k) {
                            self.state
                                .insert(k.clone(), g.shape.clone(), vec![0.0; g.data.len()]);
                        }
                    }
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let mut m = self.state.take(&mk).expect("inserted");
                    let v = self.state.tensor_mut(&vk).expect("inserted");
                    for i in 0..g.data.len() {
                        let gi = g.data[i];
                        m.data[i] = beta1 * m.data[i] + (1.0 - beta1) * gi;
                        v.data[i] = beta2 * v.data[i] + (1.0 - beta2) * gi * gi;
                        let mh = m.data[i] / bc1;
                        let vh = v.data[i] / bc2;
                        p.data[i] -= lr * mh / (vh.sqrt() + eps);
                    }
                    self.state.insert(mk, m.shape, m.data);
                }
            }
        }
        Ok(())
    }

    /// The state, for a checkpoint.
    pub fn state(&self) -> (&Weights, u64) {
        (&self.state, self.step)
    }

    /// Restores a checkpointed state.
    pub fn restore(&mut self, state: Weights, step: u64) {
        self.state = state;
        self.step = step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: f32) -> Weights {
        let mut w = Weights::new();
        w.insert("p", vec![1], vec![v]);
        w
    }

    #[test]
    fn sgd_momentum_matches_torch() {
        // torch: p=1, g=0.5, lr 0.1, momentum 0.9, wd 0.1:
        // step 1: d = 0.5 + 0.1 = 0.6, buf = 0.6, p = 0.94
        // step 2: d = 0.5 + 0.094 = 0.594, buf = 0.54 + 0.594 = 1.134, p = 0.8266
        let mut o = Optimizer::new(OptimConfig::Sgd {
            momentum: 0.9,
            weight_decay: 0.1,
        });
        let mut p = one(1.0);
        o.step(0.1, &mut p, &one(0.5)).unwrap();
        assert!((p.tensor("p").unwrap().data[0] - 0.94).abs() < 1e-6);
        o.step(0.1, &mut p, &one(0.5)).unwrap();
        assert!((p.tensor("p").unwrap().data[0] - 0.8266).abs() < 1e-6);
    }

    #[test]
    fn scaled_rates_apply_per_parameter() {
        let mut o = Optimizer::new(OptimConfig::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        });
        let mut p = one(1.0);
        p.insert("bb.q", vec![1], vec![1.0]);
        let mut g = one(0.5);
        g.insert("bb.q", vec![1], vec![0.5]);
        let scale = |n: &str| if n.starts_with("bb.") { 0.1 } else { 1.0 };
        o.step_scaled(0.1, &mut p, &g, &scale).unwrap();
        assert!((p.tensor("p").unwrap().data[0] - 0.95).abs() < 1e-6);
        assert!((p.tensor("bb.q").unwrap().data[0] - 0.995).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // Bias correction makes the first Adam step lr * sign(g).
        let mut o = Optimizer::new(OptimConfig::Adam {
            beta1: 0.5,
            beta2: 0.99,
            eps: 1e-9,
        });
        let mut p = one(1.0);
        o.step(0.01, &mut p, &one(-3.0)).unwrap();
        assert!((p.tensor("p").unwrap().data[0] - 1.01).abs() < 1e-6);
        // A restored state continues identically.
        let (s, n) = o.state();
        let mut o2 = Optimizer::new(OptimConfig::Adam {
            beta1: 0.5,
            beta2: 0.99,
            eps: 1e-9,
        });
        o2.restore(s.clone(), n);
        let mut p2 = p.clone();
        o.step(0.01, &mut p, &one(1.0)).unwrap();
        o2.step(0.01, &mut p2, &one(1.0)).unwrap();
        assert_eq!(p.tensor("p").unwrap().data, p2.tensor("p").unwrap().data);
    }
}
