//! Every linear layer of the text model goes through [`Linear`], which keeps the layer's
//! HF module path (`model.language_model.layers.3.self_attn.q_proj`): that path is how
//! PEFT names LoRA adapters, so the training half attaches them here without touching the
//! model code. A layer optionally carries a [`LoraAdapter`] (`super::lora`), which its
//! forward adds to the frozen product.

use candle_core::{Module, Tensor};

use super::error::Result;
use super::lora::LoraAdapter;
use super::ops::Mode;
use super::weights::WeightStore;

/// `y = x Wᵀ + b` with `W` of shape `[out, in]` as stored by PyTorch, plus the LoRA term
/// when an adapter is attached.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    path: String,
    lora: Option<LoraAdapter>,
}

impl Linear {
    /// Loads `{path}.weight` (and `{path}.bias` when `bias`), checking `[out, in]`.
    pub fn load(
        store: &WeightStore,
        path: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = store.get(&format!("{path}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(store.get(&format!("{path}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            path: path.to_string(),
            lora: None,
        })
    }

    /// A layer from tensors already loaded (e.g. tied embeddings).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, path: &str) -> Self {
        Self {
            weight,
            bias,
            path: path.to_string(),
            lora: None,
        }
    }

    /// HF module path of this layer.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `[out]`, when the layer has a bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// `(in, out)` features.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[1], d[0])
    }

    /// The attached adapter, if any.
    pub fn lora(&self) -> Option<&LoraAdapter> {
        self.lora.as_ref()
    }

    /// The attached adapter, mutably (dropout seed, loading tensors).
    pub fn lora_mut(&mut self) -> Option<&mut LoraAdapter> {
        self.lora.as_mut()
    }

    /// Attaches `adapter` (replacing any previous one).
    pub fn set_lora(&mut self, adapter: Option<LoraAdapter>) {
        self.lora = adapter;
    }

    /// Folds the adapter into the weight (`W += scale · B A`) and removes it. The new weight
    /// is a plain tensor: merged layers are frozen.
    pub fn merge_lora(&mut self) -> Result<()> {
        if let Some(adapter) = self.lora.take() {
            let delta = adapter.delta_weight()?.to_dtype(self.weight.dtype())?;
            self.weight = (&self.weight + delta)?.detach();
        }
        Ok(())
    }

    /// Applies the layer to `x` of shape `[..., in]` as at inference (no dropout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, Mode::Infer)
    }

    /// Applies the layer; in [`Mode::Train`] the adapter's dropout is active (when it has a
    /// dropout seed).
    pub fn forward_t(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.base_forward(x)?;
        match &self.lora {
            None => Ok(y),
            Some(adapter) => Ok((y + adapter.forward(x, &self.path, mode)?)?),
        }
    }

    fn base_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.base_forward(x)?;
        match &self.lora {
            None => Ok(y),
            Some(adapter) => {
                let delta = adapter
                    .forward(x, &self.path, Mode::Infer)
                    .map_err(candle_core::Error::wrap)?;
                y + delta
            }
        }
    }
}
