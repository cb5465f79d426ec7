//! Sampling continuations of one prompt: the prompt is computed once, its KV cache copied
//! to K rows, and the K samples decoded together, optionally steered by a grammar
//! ([`Guide`]) that writes the tokens it determines. Greedy, temperature, top-k and top-p
//! (applied in HF's order: temperature, top-k, top-p), stop tokens, and per token the
//! log-probability under the model's own distribution (temperature 1, no truncation),
//! which is what preference training needs. Randomness comes from a seeded generator, so
//! the same seed gives the same samples.

use super::error::{Result, VlmError};
use super::model::{Batch, Qwen3Vl};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches this (1 = off).
    pub top_p: f32,
    /// Keep only the tokens whose logit reaches the k-th largest (this many, more when
    /// tokens tie with the k-th, as transformers cuts; 0 = off).
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
    /// Whether a stop token (or the guide, see [`generate_guided`]) ended the sample (else
    /// `max_new_tokens` did).
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

/// Token ids in descending logit order (ties: lower id first), sorted only as far as asked:
/// top-k, the nucleus and the sampling walk all read a head of the order, and sorting the
/// whole vocabulary for every token of every candidate was a fifth of a decoding step.
struct Descending<'a> {
    logits: &'a [f32],
    order: Vec<usize>,
    /// `order[..sorted]` are the `sorted` largest, in order.
    sorted: usize,
}

impl<'a> Descending<'a> {
    fn new(logits: &'a [f32]) -> Self {
        Self {
            logits,
            order: (0..logits.len()).collect(),
            sorted: 0,
        }
    }

    /// The `i`-th id in descending order.
    fn get(&mut self, i: usize) -> usize {
        if i >= self.sorted {
            let want = (i + 1).max(64).max(2 * self.sorted).min(self.order.len());
            let logits = self.logits;
            let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
            let rest = &mut self.order[self.sorted..];
            let take = want - self.sorted;
            if take < rest.len() {
                rest.select_nth_unstable_by(take - 1, desc);
            }
            rest[..take].sort_unstable_by(desc);
            self.sorted = want;
        }
        self.order[i]
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
    if params.top_k == 0 && params.top_p >= 1.0 {
        return draw_whole(logits, t, rng.uniform()) as u32;
    }
    let mut order = Descending::new(logits);
    // Top-k as transformers' `TopKLogitsWarper` cuts: every token whose logit is not below
    // the k-th's, so ties with the k-th are kept (before session 53 exactly k were, ties
    // broken by id; bf16 logits tie often).
    let kept = if params.top_k > 0 {
        let mut kept = params.top_k.min(logits.len());
        let kth = logits[order.get(kept - 1)];
        while kept < logits.len() && logits[order.get(kept)] == kth {
            kept += 1;
        }
        kept
    } else {
        logits.len()
    };
    let max = logits[order.get(0)] as f64 / t;
    let weight = |id: usize| (logits[id] as f64 / t - max).exp();
    // Normaliser over the kept tokens: all of them, or the top k.
    let total: f64 = if kept == logits.len() {
        (0..logits.len()).map(weight).sum()
    } else {
        (0..kept).map(|i| weight(order.get(i))).sum()
    };
    // Nucleus: the shortest head whose probability reaches top_p.
    let (keep, norm) = if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = kept;
        for i in 0..kept {
            cum += weight(order.get(i)) / total;
            if cum >= params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        let norm: f64 = (0..keep).map(|i| weight(order.get(i)) / total).sum();
        (keep, Some(norm))
    } else {
        (kept, None)
    };
    let prob = |w: f64| match norm {
        Some(n) => w / total / n,
        None => w / total,
    };
    let u = rng.uniform();
    let mut cum = 0.0;
    for i in 0..keep {
        let id = order.get(i);
        cum += prob(weight(id));
        if u < cum {
            return id as u32;
        }
    }
    order.get(keep - 1) as u32
}

/// The token that the walk of the whole vocabulary in descending order (ties: lower id
/// first) reaches at cumulative probability `u`, as [`pick`]'s walk finds it, without
/// sorting. The walk sorts as far as it goes, and with a flat distribution (a fresh model,
/// a high temperature) it goes through most of the 151,936 tokens: ~9 ms a row, more than
/// a whole decoding step of the 8B on an H200. Here the logits fall into [`BINS`] bins by
/// value (bin 0 the highest), one parallel pass sums each bin's probability, the walk
/// steps over whole bins to the one where the cumulative probability crosses `u`, and only
/// that bin's tokens are sorted. The sums run in another order than the walk's, so a `u`
/// within rounding (~1e-16) of a boundary may land on the neighbouring token.
fn draw_whole(logits: &[f32], t: f64, u: f64) -> usize {
    use rayon::prelude::*;
    const BINS: usize = 4096;
    const CHUNK: usize = 8192;
    let (lo, hi) = logits
        .par_chunks(CHUNK)
        .map(|c| {
            c.iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    // The lowest finite logit: a masked (−∞) one must not stretch the bins.
                    (if v.is_finite() { a.min(v) } else { a }, b.max(v))
                })
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |(a, b), (c, d)| (a.min(c), b.max(d)),
        );
    let max = hi as f64 / t;
    let weight = |l: f32| (l as f64 / t - max).exp();
    // A masked (−∞) logit has weight 0 and goes to the last bin.
    let span = (hi - if lo.is_finite() { lo } else { hi }) as f64;
    let bin = |l: f32| -> usize {
        if span <= 0.0 || !l.is_finite() {
            return if l == hi { 0 } else { BINS - 1 };
        }
        (((hi - l) as f64 / span * (BINS - 1) as f64) as usize).min(BINS - 1)
    };
    let mass = logits
        .par_chunks(CHUNK)
        .map(|c| {
            let mut m = vec![0f64; BINS];
            for &l in c {
                m[bin(l)] += weight(l);
            }
            m
        })
        .reduce(
            || vec![0f64; BINS],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let total: f64 = mass.iter().sum();
    let mut above = 0.0;
    // The bin where the cumulative probability crosses `u`; past the last bin by rounding,
    // the last bin with any probability (the largest logit has weight 1, so one has).
    let mut chosen = 0;
    for (b, &m) in mass.iter().enumerate() {
        if m > 0.0 {
            chosen = b;
        }
        if u < above + m / total {
            break;
        }
        above += m / total;
    }
    let mut ids: Vec<usize> = (0..logits.len())
        .into_par_iter()
        .filter(|&i| bin(logits[i]) == chosen)
        .collect();
    ids.sort_unstable_by(|&x, &y| logits[y].total_cmp(&logits[x]).then(x.cmp(&y)));
    for &id in &ids {
        above += weight(logits[id]) / total;
        if u < above {
            return id;
        }
    }
    ids[ids.len() - 1]
}

/// `log softmax(row)[token]`, the normaliser summed in f64 (plain Rust: the rows are on the
/// host for sampling anyway, and five tensor operations per step cost more than the sum).
fn log_prob(row: &[f32], token: u32) -> f32 {
    use rayon::prelude::*;
    // A vocabulary's row is split over threads (one pass of 151,936 exps is ~1 ms, a tenth
    // of a GPU decoding step); the tests' tiny rows stay on this one.
    const CHUNK: usize = 16_384;
    let max = row
        .par_chunks(CHUNK)
        .map(|c| c.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .reduce(|| f32::NEG_INFINITY, f32::max);
    let lse = row
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>())
        .sum::<f64>()
        .ln();
    (((row[token as usize] - max) as f64) - lse) as f32
}

/// What a grammar says about an answer so far (its tokens, forced ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuideStep {
    /// The model chooses the next token.
    Free,
    /// These tokens must come next: they are appended without sampling and fed to the
    /// model in the same step as the token before them.
    Force(Vec<u32>),
    /// The answer is complete: it ends here, without a stop token.
    Done,
}

/// A grammar that steers decoding by writing the tokens it fully determines and ending an
/// answer once it is complete. By default it forbids nothing: what the model samples is
/// kept, and an answer that leaves the grammar is left to the parser (and, in the planner,
/// to resampling); a guide that implements [`Guide::allowed`] restricts the sampled tokens
/// (constrained sampling).
pub trait Guide {
    /// The step after `tokens`, the answer so far (empty at the start).
    fn step(&self, tokens: &[u32]) -> GuideStep;

    /// The tokens the next sampled token is drawn from, after `tokens` (`None`: all).
    /// The default allows all; a constrained guide removes the probability of the others
    /// and renormalises (the sampled token's log-probability stays the model's own).
    fn allowed(&self, _tokens: &[u32]) -> Option<Vec<u32>> {
        None
    }

    /// Whether the caller wants generation to stop now: checked before the prompt is
    /// computed, after it, and before every model step; generation then ends with
    /// [`VlmError::Halted`]. A real model's decision on a CPU takes seconds to minutes, and a
    /// node that is asked to stop should not wait for it (before session 44 Ctrl-C waited
    /// for the whole decision).
    fn halted(&self) -> bool {
        false
    }
}

/// No grammar: every token is sampled, an answer ends with a stop token or at
/// `max_new_tokens`.
pub struct Unguided;

impl Guide for Unguided {
    fn step(&self, _tokens: &[u32]) -> GuideStep {
        GuideStep::Free
    }
}

/// Generates `k` samples continuing the single prompt in `prompt` (batch of one row).
pub fn generate(
    model: &Qwen3Vl,
    prompt: &Batch,
    k: usize,
    params: &SamplingParams,
) -> Result<Vec<Sample>> {
    generate_guided(model, prompt, k, params, &Unguided)
}

/// [`generate`] steered by `guide`. Tokens the guide forces at the start are computed with
/// the prompt; tokens it forces later ride along with the sampled token before them (one
/// model step for both), rows with fewer new tokens padded with masked ones. Forced tokens
/// get their log-probability under the model like sampled ones. An answer the guide calls
/// complete ends there (`stopped`), so its end token is neither computed nor scored.
pub fn generate_guided(
    model: &Qwen3Vl,
    prompt: &Batch,
    k: usize,
    params: &SamplingParams,
    guide: &dyn Guide,
) -> Result<Vec<Sample>> {
    if prompt.input_ids.len() != 1 {
        return Err(VlmError::Input(format!(
            "generate takes one prompt row, found {}",
            prompt.input_ids.len()
        )));
    }
    let empty = |stopped| Sample {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        stopped,
    };
    if k == 0 || params.max_new_tokens == 0 {
        return Ok(vec![empty(false); k]);
    }
    let mut prefix = match guide.step(&[]) {
        GuideStep::Done => return Ok(vec![empty(true); k]),
        GuideStep::Free => Vec::new(),
        GuideStep::Force(t) => t,
    };
    prefix.truncate(params.max_new_tokens);
    let halt = || {
        if guide.halted() {
            Err(VlmError::Halted)
        } else {
            Ok(())
        }
    };
    halt()?;
    let mut full = prompt.clone();
    full.input_ids[0].extend(&prefix);
    if let Some(m) = full.attention_mask.as_mut() {
        m[0].extend(std::iter::repeat_n(1u8, prefix.len()));
    }
    let prompt_len = full.input_ids[0].len();
    let mut cache = model.new_cache(prompt_len + params.max_new_tokens);
    let out = model.prefill_tail(&full, &mut cache, prefix.len() + 1)?;
    halt()?;
    let tail = out.logits.squeeze(0)?.to_vec2::<f32>()?;
    let (scored, next) = tail.split_at(tail.len() - 1);
    // The forced prefix, scored by the prompt's last logits (all rows share it).
    let prefix_logprobs: Vec<f32> = prefix
        .iter()
        .zip(scored)
        .map(|(&t, row)| log_prob(row, t))
        .collect();
    // Which cached keys are real, per row: needed only once a row pads a step (the prompt
    // of one row has no padding unless its mask says so).
    let mut valid: Vec<Vec<bool>> = {
        let row: Vec<bool> = match &full.attention_mask {
            Some(m) => m[0].iter().map(|&v| v != 0).collect(),
            None => vec![true; prompt_len],
        };
        vec![row; k]
    };
    let mut masked = valid[0].iter().any(|v| !v);
    let mut cache = cache.repeat_row0(k)?;
    let mut logits: Vec<Vec<f32>> = vec![next[0].clone(); k];
    let mut next_pos = vec![out.rope.next_position[0]; k];
    let mut rngs: Vec<Rng> = (0..k)
        .map(|i| Rng::new(params.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)))
        .collect();
    let mut samples = vec![
        Sample {
            tokens: prefix.clone(),
            logprobs: prefix_logprobs,
            stopped: false
        };
        k
    ];
    // A row is finished when stopped or full.
    let finished = |s: &Sample| s.stopped || s.tokens.len() >= params.max_new_tokens;
    loop {
        let mut feeds: Vec<Vec<u32>> = Vec::with_capacity(k);
        for i in 0..k {
            let s = &mut samples[i];
            if finished(s) {
                feeds.push(Vec::new());
                continue;
            }
            // Broken scores are an error, not an answer: sampling from NaN picked the least
            // likely token (before session 45), and the planner played it.
            if logits[i].iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
                return Err(VlmError::NonFinite {
                    dtype: format!("{:?}", model.dtype()),
                });
            }
            // Greedy (temperature 0) is the first maximum, as torch.argmax.
            let tok = match guide.allowed(&s.tokens) {
                Some(mut set) => {
                    set.retain(|&t| (t as usize) < logits[i].len());
                    if set.is_empty() {
                        pick(&logits[i], params, &mut rngs[i])
                    } else {
                        let only: Vec<f32> = set.iter().map(|&t| logits[i][t as usize]).collect();
                        set[pick(&only, params, &mut rngs[i]) as usize]
                    }
                }
                _ => pick(&logits[i], params, &mut rngs[i]),
            };
            s.tokens.push(tok);
            s.logprobs.push(log_prob(&logits[i], tok));
            let mut feed = vec![tok];
            if params.stop_tokens.contains(&tok) {
                s.stopped = true;
            } else {
                match guide.step(&s.tokens) {
                    GuideStep::Free => {}
                    GuideStep::Done => s.stopped = true,
                    GuideStep::Force(mut f) => {
                        f.truncate(params.max_new_tokens.saturating_sub(s.tokens.len()));
                        s.tokens.extend(&f);
                        feed.extend(f);
                    }
                }
            }
            feeds.push(feed);
        }
        // Forced tokens are scored by the decode below, so a row that ended on a forced run
        // still takes it (before session 53 every row finishing together left the forced
        // tokens without log-probs, one per token being the promise).
        if samples.iter().all(finished) && feeds.iter().all(|f| f.len() <= 1) {
            break;
        }
        halt()?;
        let n = feeds.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut tokens = Vec::with_capacity(k);
        let mut positions = Vec::with_capacity(k);
        for (i, feed) in feeds.iter().enumerate() {
            let real = feed.len();
            let pad = feed.last().copied().unwrap_or(0);
            tokens.push(
                (0..n)
                    .map(|j| feed.get(j).copied().unwrap_or(pad))
                    .collect(),
            );
            positions.push(
                (0..n)
                    .map(|j| next_pos[i] + j.min(real.saturating_sub(1)) as i64)
                    .collect(),
            );
            valid[i].extend((0..n).map(|j| j < real));
            masked |= real < n;
        }
        let out = model.decode(
            &tokens,
            &positions,
            &mut cache,
            masked.then_some(&valid[..]),
        )?;
        let out = out.to_vec3::<f32>()?;
        for (i, (feed, rows)) in feeds.iter().zip(out).enumerate() {
            if feed.is_empty() {
                continue;
            }
            // Forced tokens are scored by the logits before them.
            for j in 1..feed.len() {
                samples[i].logprobs.push(log_prob(&rows[j - 1], feed[j]));
            }
            next_pos[i] += feed.len() as i64;
            if !finished(&samples[i]) {
                logits[i] = rows[feed.len() - 1].clone();
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook sampler: sort the whole vocabulary, cut to top-k, then to the nucleus,
    /// renormalise, walk the order.
    fn pick_full_sort(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
        let t = params.temperature as f64;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if params.top_k > 0 {
            let kth = logits[order[params.top_k.min(order.len()) - 1]];
            order.retain(|&i| logits[i] >= kth);
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

    /// Tokens tied with the k-th are kept, as transformers' top-k keeps them (before
    /// session 53 exactly k were: here token 2 never came, against about 21% there).
    #[test]
    fn top_k_keeps_the_tokens_tied_with_the_kth() {
        let logits = [2.0f32, 1.0, 1.0, 0.0];
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            ..SamplingParams::default()
        };
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[pick(&logits, &params, &mut rng) as usize] += 1;
        }
        // e / (e² + 2e) = 0.212 each for tokens 1 and 2; token 3 is cut.
        assert_eq!(counts[3], 0, "{counts:?}");
        for id in [1, 2] {
            assert!((330..520).contains(&counts[id]), "{counts:?}");
        }
    }

    #[test]
    fn partial_sort_sampler_draws_what_a_full_sort_draws() {
        let mut gen = Rng::new(7);
        let mut checked = 0;
        for case in 0..3000u64 {
            // Vocabularies from tiny to real, flat to peaked, with ties (rounded logits).
            let n = [3, 50, 300, 2306][case as usize % 4];
            let scale = [0.1, 2.0, 12.0][(case / 4) as usize % 3];
            let logits: Vec<f32> = (0..n)
                .map(|_| ((gen.uniform() * 2.0 - 1.0) * scale * 4.0).round() as f32 / 4.0)
                .collect();
            let params = SamplingParams {
                temperature: [0.3, 1.0, 1.7][case as usize % 3] as f32,
                top_p: [1.0, 0.95, 0.5, 0.999][(case / 3) as usize % 4],
                top_k: [0, 0, 5, 200][(case / 12) as usize % 4],
                ..SamplingParams::default()
            };
            let (mut a, mut b) = (Rng::new(case), Rng::new(case));
            for _ in 0..4 {
                assert_eq!(
                    pick(&logits, &params, &mut a),
                    pick_full_sort(&logits, &params, &mut b),
                    "case {case}: n {n}, {params:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 12000);
    }

    #[test]
    fn whole_vocabulary_draws_skip_masked_logits_as_the_full_sort_does() {
        let mut gen = Rng::new(12);
        let mut logits: Vec<f32> = (0..5000).map(|_| gen.uniform() as f32 * 3.0).collect();
        for l in logits.iter_mut().step_by(3) {
            *l = f32::NEG_INFINITY;
        }
        let params = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        for _ in 0..200 {
            let t = pick(&logits, &params, &mut a);
            assert!(logits[t as usize].is_finite());
            assert_eq!(t, pick_full_sort(&logits, &params, &mut b));
        }
    }

    #[test]
    fn whole_vocabulary_draws_match_the_full_sort_at_the_real_vocabulary_size() {
        // Flat (a fresh model's) and peaked rows of 151,936 logits, with ties.
        let mut gen = Rng::new(11);
        for case in 0..24u64 {
            let scale = [0.02, 1.0, 8.0][case as usize % 3];
            let logits: Vec<f32> = (0..151_936)
                .map(|_| ((gen.uniform() * 2.0 - 1.0) * scale * 64.0).round() as f32 / 64.0)
                .collect();
            let params = SamplingParams {
                temperature: [1.0, 0.7][(case / 3) as usize % 2],
                top_p: 1.0,
                top_k: 0,
                ..SamplingParams::default()
            };
            let (mut a, mut b) = (Rng::new(case), Rng::new(case));
            for _ in 0..3 {
                assert_eq!(
                    pick(&logits, &params, &mut a),
                    pick_full_sort(&logits, &params, &mut b),
                    "case {case}"
                );
            }
        }
    }
}
