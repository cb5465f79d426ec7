//! Every linear layer of the text model goes through [`Linear`], which keeps the layer's
//! HF module path (`model.language_model.layers.3.self_attn.q_proj`): that path is how
//! PEFT names LoRA adapters, so the training half attaches them here without touching the
//! model code.

use candle_core::{Module, Tensor};

use super::error::Result;
use super::weights::WeightStore;

/// `y = x Wᵀ + b` with `W` of shape `[out, in]` as stored by PyTorch.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    path: String,
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
        })
    }

    /// A layer from tensors already loaded (e.g. tied embeddings).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, path: &str) -> Self {
        Self {
            weight,
            bias,
            path: path.to_string(),
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

    /// Applies the layer to `x` of shape `[..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Module::forward(self, x)?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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
