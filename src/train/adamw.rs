//! AdamW (Loshchilov & Hutter) with its moments in the open, so a checkpoint can hold them
//! and a resumed run continues exactly where it stopped. (candle_nn's `AdamW` keeps its
//! moments private, so a resume from it would restart the moments at zero.)

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The optimiser over named variables.
pub struct AdamW {
    /// `(name, variable, first moment, second moment)`.
    pub slots: Vec<(String, Var, Tensor, Tensor)>,
    /// Steps taken (bias correction).
    pub t: usize,
    /// Hyper-parameters (the caller sets `lr` per step for a schedule).
    pub params: AdamWParams,
}

impl AdamW {
    /// Zero moments for every variable.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(n, v)| {
                let z = v.as_tensor().zeros_like()?;
                Ok((n, v, z.clone(), z))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            t: 0,
            params,
        })
    }

    /// Weights and moments as named tensors for a checkpoint: `w/NAME`, `m/NAME`, `v/NAME`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = Vec::with_capacity(3 * self.slots.len());
        for (name, var, m, v) in &self.slots {
            tensors.push((format!("w/{name}"), var.as_tensor().detach()));
            tensors.push((format!("m/{name}"), m.clone()));
            tensors.push((format!("v/{name}"), v.clone()));
        }
        tensors
    }

    /// Restores weights and moments written by [`Self::state_tensors`] and the step count
    /// `t`. A missing tensor is an error naming its key.
    pub fn restore(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        t: usize,
    ) -> std::result::Result<(), String> {
        let get = |key: String| {
            tensors
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("tensor {key} missing"))
        };
        for (name, var, m, v) in &mut self.slots {
            // A checkpoint reads onto the CPU; the run may be on a GPU.
            let dev = var.device().clone();
            let on = |t: Tensor| t.to_device(&dev).map_err(|e| format!("{name}: {e}"));
            var.set(&on(get(format!("w/{name}"))?)?)
                .map_err(|e| format!("w/{name}: {e}"))?;
            *m = on(get(format!("m/{name}"))?)?;
            *v = on(get(format!("v/{name}"))?)?;
        }
        self.t = t;
        Ok(())
    }

    /// One update from `grads` (variables without a gradient are left alone).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let c1 = 1.0 - p.beta1.powi(self.t as i32);
        let c2 = 1.0 - p.beta2.powi(self.t as i32);
        for (_, var, m, v) in &mut self.slots {
            // Detached: a variable's gradient can still reference the forward graph it was
            // computed from (candle detaches only the gradients it propagates further), and
            // the moments built from it would keep every step's graph alive (session 38:
            // 1.5 GB a step with the world model's refiner).
            let Some(g) = grads.get(var.as_tensor()).map(Tensor::detach) else {
                continue;
            };
            let g = &g;
            *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + p.eps)?)?;
            let theta = var.as_tensor();
            let next = ((theta * (1.0 - p.lr * p.weight_decay))? - (update * p.lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }

    /// Whether every gradient in `grads` for these variables is finite.
    pub fn grads_finite(&self, grads: &GradStore) -> Result<bool> {
        for (_, var, _, _) in &self.slots {
            if let Some(g) = grads.get(var.as_tensor()) {
                let s = g.abs()?.sum_all()?.to_dtype(candle_core::DType::F64)?;
                if !s.to_scalar::<f64>()?.is_finite() {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_moments_keep_no_graph_of_the_step_that_made_them() {
        // A weight's gradient through a product with another variable references that
        // variable's graph; moments built from it would chain every step's graph together.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap()).unwrap();
        let x = Var::from_tensor(&Tensor::new(&[[0.5f32], [-1.0]], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone()), ("x".into(), x.clone())],
            AdamWParams::default(),
        )
        .unwrap();
        for _ in 0..2 {
            let loss = w.as_tensor().matmul(x.as_tensor()).unwrap().sqr().unwrap();
            let grads = loss.sum_all().unwrap().backward().unwrap();
            assert!(
                grads.get(w.as_tensor()).unwrap().track_op(),
                "the case the guard is for"
            );
            opt.step(&grads).unwrap();
        }
        for (name, t) in opt.state_tensors() {
            assert!(!t.track_op(), "{name} still references a graph");
        }
    }
}
