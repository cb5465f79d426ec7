//! Sequence log-probabilities and the ORPO objective (odds ratio preference optimisation),
//! built from differentiable ops only, on the logits of a training forward.
//!
//! ORPO, as DreamPlan uses it: for a preferred response `y_w` and a worse one `y_l` to the
//! same prompt, with `P(y) = exp(mean token log-prob of y)` and `odds(y) = P / (1 − P)`,
//! `L = NLL(y_w) − λ · log σ(log odds(y_w) − log odds(y_l))`, averaged over pairs.
//! `NLL(y_w)` is the negative *mean* token log-prob of the chosen response (per sequence,
//! then averaged over pairs).

use candle_core::{DType, Tensor, D};

use super::error::{Result, VlmError};

/// Which positions of a batch row count as response tokens: `mask[b][t] = 1` when token
/// `t` of row `b` belongs to the response (prompt and padding are 0).
pub type ResponseMask = Vec<Vec<u8>>;

/// Mean log-probability of the response tokens of each row, `[B]` in the logits' dtype.
/// Token `t` is scored by the logits at position `t − 1`; a row without response tokens
/// is an error.
pub fn mean_response_logprob(
    logits: &Tensor,
    input_ids: &[Vec<u32>],
    response: &[Vec<u8>],
) -> Result<Tensor> {
    let (b, l, _v) = logits.dims3()?;
    if input_ids.len() != b || response.len() != b {
        return Err(VlmError::Input(format!(
            "{b} rows of logits, {} of input_ids, {} of response masks",
            input_ids.len(),
            response.len()
        )));
    }
    if l < 2 {
        return Err(VlmError::Input("sequences need at least two tokens".into()));
    }
    let mut targets = Vec::with_capacity(b * (l - 1));
    let mut weights = Vec::with_capacity(b * (l - 1));
    for (row, (ids, mask)) in input_ids.iter().zip(response).enumerate() {
        if ids.len() != l || mask.len() != l {
            return Err(VlmError::Input(format!(
                "row {row}: input_ids and response mask must have {l} entries"
            )));
        }
        let count = mask[1..].iter().filter(|&&m| m != 0).count();
        if count == 0 {
            return Err(VlmError::Input(format!("row {row} has no response token")));
        }
        for t in 1..l {
            targets.push(ids[t]);
            weights.push(if mask[t] != 0 {
                1.0 / count as f64
            } else {
                0.0
            });
        }
    }
    let device = logits.device();
    let targets = Tensor::from_vec(targets, (b, l - 1, 1), device)?;
    let weights = Tensor::from_vec(weights, (b, l - 1), device)?.to_dtype(logits.dtype())?;
    let logp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, l - 1)?, D::Minus1)?;
    let token_logp = logp.gather(&targets, D::Minus1)?.squeeze(D::Minus1)?;
    Ok((token_logp * weights)?.sum(D::Minus1)?)
}

/// `log σ(z) = min(z, 0) − log(1 + exp(−|z|))`, stable for large `|z|`.
fn log_sigmoid(z: &Tensor) -> Result<Tensor> {
    let neg_part = z.neg()?.relu()?.neg()?;
    let abs = (z.relu()? + z.neg()?.relu()?)?;
    Ok((neg_part - (abs.neg()?.exp()? + 1.0)?.log()?)?)
}

/// `log(1 − eˣ)` for `x < 0`, stable at both ends, from differentiable ops only: with
/// `t = tanh(x/2)`, `1 − eˣ = −2t / (1 − t)` exactly, so `log(1 − eˣ) = log(−2t) − log(1 − t)`.
/// Near 0, `tanh` keeps the small difference that `1 − exp(x)` would cancel away (what
/// `log(−expm1(x))` does in TRL's and the ORPO authors' code); for very negative `x`, `t → −1`
/// and the value goes to 0 as it should. `x` is clamped to at most −1e-6 first (a
/// probability of 1 has infinite odds), as the references clamp.
pub fn log1m_exp(x: &Tensor) -> Result<Tensor> {
    let x = x.minimum(-1e-6)?;
    let t = (x * 0.5)?.tanh()?;
    let num = (&t * -2.0)?.log()?;
    let den = (t.neg()? + 1.0)?.log()?;
    Ok((num - den)?)
}

/// The parts of an ORPO loss, for logging.
#[derive(Debug, Clone)]
pub struct OrpoLoss {
    /// The scalar loss to minimise.
    pub loss: Tensor,
    /// Mean NLL of the chosen responses.
    pub nll: Tensor,
    /// Mean `log σ(log odds ratio)`.
    pub log_sigmoid_ratio: Tensor,
    /// The log odds ratio of each pair, `[N]`.
    pub log_odds_ratio: Tensor,
}

/// ORPO over pairs: `chosen` and `rejected` are the mean response log-probs (`[N]`, from
/// [`mean_response_logprob`]), `lambda` weighs the odds-ratio term.
pub fn orpo(chosen: &Tensor, rejected: &Tensor, lambda: f64) -> Result<OrpoLoss> {
    if chosen.dims() != rejected.dims() || chosen.rank() != 1 {
        return Err(VlmError::Input(format!(
            "chosen {:?} and rejected {:?} log-probs must both be [N]",
            chosen.dims(),
            rejected.dims()
        )));
    }
    let ratio = (log_odds(chosen)? - log_odds(rejected)?)?;
    let ls = log_sigmoid(&ratio)?.mean_all()?;
    orpo_parts(chosen, ls, ratio, lambda)
}

/// `log odds = log P − log(1 − P)` with `P = exp(logp) < 1`.
fn log_odds(logp: &Tensor) -> Result<Tensor> {
    Ok((logp - log1m_exp(logp)?)?)
}

/// The loss from the chosen log-probs (their mean NLL) and the odds-ratio term `ls`.
fn orpo_parts(chosen: &Tensor, ls: Tensor, ratio: Tensor, lambda: f64) -> Result<OrpoLoss> {
    let nll = chosen.neg()?.mean_all()?;
    let loss = (&nll - (&ls * lambda)?)?;
    Ok(OrpoLoss {
        loss,
        nll,
        log_sigmoid_ratio: ls,
        log_odds_ratio: ratio,
    })
}

/// ORPO over groups that share a chosen answer: `chosen` `[G]` holds each group's chosen
/// log-prob, `rejected` `[P]` every rejected one, and `group[p]` names the group of rejected
/// answer `p`. The NLL is the mean over groups; the odds-ratio term is the mean over groups
/// of the mean over the group's rejected answers, so a state with many rejected answers
/// weighs as much as one with few. With one rejected answer per group this is [`orpo`].
pub fn orpo_grouped(
    chosen: &Tensor,
    rejected: &Tensor,
    group: &[usize],
    lambda: f64,
) -> Result<OrpoLoss> {
    let g = chosen.dim(0)?;
    if chosen.rank() != 1 || rejected.rank() != 1 || rejected.dim(0)? != group.len() {
        return Err(VlmError::Input(format!(
            "grouped ORPO needs chosen [G] and rejected [P] with P group indices; found {:?}, {:?} and {}",
            chosen.dims(),
            rejected.dims(),
            group.len()
        )));
    }
    let mut sizes = vec![0usize; g];
    for &i in group {
        if i >= g {
            return Err(VlmError::Input(format!(
                "rejected answer of group {i}, but there are {g} groups"
            )));
        }
        sizes[i] += 1;
    }
    if let Some(empty) = sizes.iter().position(|&n| n == 0) {
        return Err(VlmError::Input(format!(
            "group {empty} has no rejected answer"
        )));
    }
    let device = chosen.device();
    let idx = Tensor::from_vec(
        group.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        group.len(),
        device,
    )?;
    let ratio = (log_odds(&chosen.index_select(&idx, 0)?)? - log_odds(rejected)?)?;
    let w: Vec<f64> = group
        .iter()
        .map(|&i| 1.0 / (g as f64 * sizes[i] as f64))
        .collect();
    let w = Tensor::new(w, device)?.to_dtype(ratio.dtype())?;
    let ls = (log_sigmoid(&ratio)? * w)?.sum_all()?;
    orpo_parts(chosen, ls, ratio, lambda)
}

/// The ORPO loss of a batch laid out as `[chosen rows…, rejected rows…]` (pair `i` is rows
/// `i` and `N + i`): the usual way to run both responses of a pair in one forward.
pub fn orpo_from_logits(
    logits: &Tensor,
    input_ids: &[Vec<u32>],
    response: &[Vec<u8>],
    lambda: f64,
) -> Result<OrpoLoss> {
    let b = logits.dim(0)?;
    if b % 2 != 0 {
        return Err(VlmError::Input(format!(
            "an ORPO batch holds chosen then rejected rows, found an odd {b} rows"
        )));
    }
    let logits = if logits.dtype() == DType::F64 {
        logits.clone()
    } else {
        logits.to_dtype(DType::F32)?
    };
    let logp = mean_response_logprob(&logits, input_ids, response)?;
    let n = b / 2;
    orpo(&logp.narrow(0, 0, n)?, &logp.narrow(0, n, n)?, lambda)
}
