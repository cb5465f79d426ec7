//! The training forward and backward of the text model with LoRA adapters: gradients of a
//! scalar loss of the logits with respect to every adapter's `A` and `B`.
//!
//! Only differentiable ops run here (`Mode::Train`: no fused softmax, norm or rope kernel,
//! whose gradients candle silently drops). The vision tower and the embeddings are frozen
//! and run once without a graph ([`Qwen3Vl::decoder_inputs`]).
//!
//! **Activation recomputation** (gradient checkpointing, [`Recompute::PerLayer`]). candle
//! builds the autograd graph eagerly and has no checkpointing, so it is done by hand:
//! 1. forward: each decoder layer runs and its output is detached at once, which frees
//!    that layer's graph; only the `L + 1` layer inputs `[B, T, hidden]` are kept;
//! 2. the head (final norm, LM head, loss) runs on the last layer's output made a `Var`;
//!    one `backward` gives the loss and `∂loss/∂x_L`;
//! 3. for `i = L−1 … 0`: layer `i` is recomputed from its saved input (made a `Var`),
//!    `sum(out_i ⊙ g_{i+1})` is back-propagated — its gradient with respect to anything
//!    in the layer equals the chain rule's `g_{i+1}ᵀ ∂out_i/∂·` — which yields this
//!    layer's adapter gradients and `g_i = ∂loss/∂x_i` for the next step down.
//!
//! Peak memory is then the saved layer inputs plus one layer's activations plus the
//! head's (logits), instead of every layer's activations. Dropout masks are a function of
//! the step's seed and the layer path (`super::lora`), so the recomputed layer is the
//! same function as the first pass. `tests/vlm_grad.rs` checks that both modes give the
//! same gradients and that the gradients match finite differences.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, TensorId, Var};

use super::error::{Result, VlmError};
use super::lora;
use super::model::{Batch, DecoderInputs, Qwen3Vl};
use super::ops::{self, Mode};

/// How activations are kept for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recompute {
    /// One graph over the whole forward (fastest, most memory).
    Off,
    /// Keep only each decoder layer's input; recompute the layer in the backward pass.
    #[default]
    PerLayer,
}

/// The loss of one forward and its gradients with respect to the adapters.
pub struct LossAndGrads {
    /// The loss value.
    pub loss: f64,
    /// Gradients keyed by the adapters' `Var`s (what `candle_nn::Optimizer::step` takes).
    pub grads: GradStore,
}

impl LossAndGrads {
    /// The gradient of `var`, if it received one.
    pub fn grad(&self, var: &Var) -> Option<&Tensor> {
        self.grads.get(var.as_tensor())
    }
}

/// Sums per-var gradients over several backward passes, keeping only adapter gradients
/// (a backward's own store holds a gradient for every node of its graph).
struct Accumulator<'a> {
    vars: &'a [Var],
    sums: HashMap<TensorId, Tensor>,
}

impl<'a> Accumulator<'a> {
    fn new(vars: &'a [Var]) -> Self {
        Self {
            vars,
            sums: HashMap::new(),
        }
    }

    fn add(&mut self, store: &GradStore) -> Result<()> {
        for v in self.vars {
            if let Some(g) = store.get(v.as_tensor()) {
                let id = v.as_tensor().id();
                let sum = match self.sums.remove(&id) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                self.sums.insert(id, sum);
            }
        }
        Ok(())
    }

    fn into_store(self) -> Result<GradStore> {
        // candle has no public GradStore constructor: start from a trivial backward's.
        let seed = Var::zeros(1, DType::F32, &Device::Cpu)?;
        let mut store = seed.as_tensor().sum_all()?.backward()?;
        store.remove(seed.as_tensor());
        for v in self.vars {
            if let Some(g) = self.sums.get(&v.as_tensor().id()) {
                store.insert(v.as_tensor(), g.clone());
            }
        }
        Ok(store)
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Runs the training forward of `batch`, applies `loss_fn` to the logits (`[B, L, vocab]`,
/// f32, or f64 for an f64 model) and back-propagates to every LoRA adapter of `model`.
/// `loss_fn` must return a scalar.
pub fn loss_and_grads<F>(
    model: &Qwen3Vl,
    batch: &Batch,
    recompute: Recompute,
    loss_fn: F,
) -> Result<LossAndGrads>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let inputs = model.decoder_inputs(batch)?;
    decoder_loss_and_grads(model, &inputs, recompute, loss_fn)
}

/// [`loss_and_grads`] from already computed decoder inputs (several losses of one batch,
/// or inputs prepared once per epoch).
pub fn decoder_loss_and_grads<F>(
    model: &Qwen3Vl,
    inputs: &DecoderInputs,
    recompute: Recompute,
    loss_fn: F,
) -> Result<LossAndGrads>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let text = model.text();
    let vars = lora::vars(text);
    if vars.is_empty() {
        return Err(VlmError::Input(
            "the model has no LoRA adapter to train (attach or load one)".into(),
        ));
    }
    let mode = Mode::Train;
    let DecoderInputs {
        embeds,
        cos,
        sin,
        mask,
        deepstack,
    } = inputs;
    let layer = |i: usize, x: &Tensor| {
        text.layer_forward(i, x, cos, sin, Some(mask), deepstack.as_ref(), mode)
    };
    let head = |x: &Tensor| -> Result<Tensor> {
        let h = text.final_norm(x, mode)?;
        let logits = text.lm_head(&h)?;
        let logits = logits.to_dtype(ops::stat_dtype(logits.dtype()))?;
        let loss = loss_fn(&logits)?;
        if loss.elem_count() != 1 {
            return Err(VlmError::Input(format!(
                "the loss must be a scalar, found shape {:?}",
                loss.dims()
            )));
        }
        Ok(loss.flatten_all()?.sum_all()?)
    };
    let mut acc = Accumulator::new(&vars);
    let loss = match recompute {
        Recompute::Off => {
            let mut x = embeds.clone();
            for i in 0..text.num_layers() {
                x = layer(i, &x)?;
            }
            let loss = head(&x)?;
            acc.add(&loss.backward()?)?;
            scalar(&loss)?
        }
        Recompute::PerLayer => {
            let n = text.num_layers();
            let mut saved = Vec::with_capacity(n + 1);
            saved.push(embeds.clone());
            for i in 0..n {
                let out = layer(i, &saved[i])?.detach();
                saved.push(out);
            }
            let last = Var::from_tensor(&saved[n])?;
            let loss = head(last.as_tensor())?;
            let store = loss.backward()?;
            acc.add(&store)?;
            let mut grad_out = store
                .get(last.as_tensor())
                .ok_or_else(|| VlmError::Input("the loss does not depend on the model".into()))?
                .detach();
            drop(store);
            for i in (0..n).rev() {
                // The embeddings are frozen: layer 0's input needs no gradient.
                let input = if i > 0 {
                    Some(Var::from_tensor(&saved[i])?)
                } else {
                    None
                };
                let x = input.as_ref().map_or(&saved[0], |v| v.as_tensor());
                let out = layer(i, x)?;
                let surrogate = (out * &grad_out)?.sum_all()?;
                let store = surrogate.backward()?;
                acc.add(&store)?;
                if let Some(v) = &input {
                    grad_out = match store.get(v.as_tensor()) {
                        Some(g) => g.detach(),
                        None => v.as_tensor().zeros_like()?,
                    };
                }
            }
            scalar(&loss)?
        }
    };
    Ok(LossAndGrads {
        loss,
        grads: acc.into_store()?,
    })
}
