//! Sampling continuations of one prompt: the prompt is computed once, its KV cache copied
//! to K rows, and the K samples decoded together. Greedy, temperature, top-k and top-p
//! (applied in HF's order: temperature, top-k, top-p), stop tokens, and per token the
//! log-probability under the model's own distribution (temperature 1, no truncation),
//! which is what preference training needs. Randomness comes from a seeded generator, so
//! the same seed gives the same samples.

use candle_core::{DType, Tensor, D};

use super::error::{Result, VlmError};
use super::model::{Batch, Qwen3Vl};
use super::text::argmax_rows;

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches this (1 = off).
    pub top_p: f32,
    /// Keep only this many most likely tokens (0 = off).
    pub top_k: usize,
    /// Most tokens generated per sample.
    pub max_new_tokens: usize,
    /// A sample ends after emitting one of these (the stop token is included).
    pub stop_tokens: Vec<u32>,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// New tokens (ending with the stop token if one was hit).
    pub tokens: Vec<u32>,
    /// `log p(token | prefix)` under the model, one per token.
    pub logprobs: Vec<f32>,
    /// Whether a stop token ended the sample (else `max_new_tokens` did).
    pub stopped: bool,
}

/// SplitMix64: tiny, seedable, and the same on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks a token from one row of logits according to `params`.
pub fn pick(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    if params.temperature <= 0.0 {
        let mut best = 0;
        for (i, &v) in logits.iter().enumerate() {
            if v > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let t = params.temperature as f64;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Descending by logit; ties keep the lower id first.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if params.top_k > 0 {
        order.truncate(params.top_k.max(1));
    }
    let max = logits[order[0]] as f64 / t;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (logits[i] as f64 / t - max).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let u = rng.uniform();
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if u < cum {
            return order[i] as u32;
        }
    }
    order[probs.len() - 1] as u32
}

fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let l = logits.to_dtype(DType::F32)?;
    let max = l.max_keepdim(D::Minus1)?;
    let shifted = l.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?.to_vec2::<f32>()?)
}

/// Generates `k` samples continuing the single prompt in `prompt` (batch of one row).
pub fn generate(
    model: &Qwen3Vl,
    prompt: &Batch,
    k: usize,
    params: &SamplingParams,
) -> Result<Vec<Sample>> {
    if prompt.input_ids.len() != 1 {
        return Err(VlmError::Input(format!(
            "generate takes one prompt row, found {}",
            prompt.input_ids.len()
        )));
    }
    if k == 0 || params.max_new_tokens == 0 {
        return Ok(vec![
            Sample {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                stopped: false
            };
            k
        ]);
    }
    let prompt_len = prompt.input_ids[0].len();
    let mut cache = model.new_cache(prompt_len + params.max_new_tokens);
    let out = model.prefill(prompt, &mut cache)?;
    let last = out.logits.narrow(1, prompt_len - 1, 1)?.squeeze(1)?;
    // Prompt rows with padding keep their mask for the cached keys.
    let prompt_valid: Option<Vec<bool>> = prompt
        .attention_mask
        .as_ref()
        .map(|m| m[0].iter().map(|&v| v != 0).collect());
    let mut cache = cache.repeat_row0(k)?;
    let idx = Tensor::zeros(k, DType::U32, last.device())?;
    let mut logits = last.index_select(&idx, 0)?;
    let mut next_pos = vec![out.rope.next_position[0]; k];
    let mut rngs: Vec<Rng> = (0..k)
        .map(|i| Rng::new(params.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)))
        .collect();
    let mut samples = vec![
        Sample {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            stopped: false
        };
        k
    ];
    for step in 0..params.max_new_tokens {
        let rows = logits.to_vec2::<f32>()?;
        let logp = log_softmax_rows(&logits)?;
        let greedy = if params.temperature <= 0.0 {
            Some(argmax_rows(&logits)?)
        } else {
            None
        };
        let mut tokens = Vec::with_capacity(k);
        for i in 0..k {
            let tok = match &greedy {
                Some(g) => g[i],
                None => pick(&rows[i], params, &mut rngs[i]),
            };
            let s = &mut samples[i];
            if !s.stopped {
                s.tokens.push(tok);
                s.logprobs.push(logp[i][tok as usize]);
                s.stopped = params.stop_tokens.contains(&tok);
            }
            tokens.push(tok);
        }
        if step + 1 == params.max_new_tokens || samples.iter().all(|s| s.stopped) {
            break;
        }
        let valid: Option<Vec<Vec<bool>>> = prompt_valid.as_ref().map(|pv| {
            let mut v = pv.clone();
            v.resize(cache.len() + 1, true);
            vec![v; k]
        });
        logits = model.decode_step(&tokens, &next_pos, &mut cache, valid.as_deref())?;
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(samples)
}
