//! Autograd against central finite differences, in f64, for every layer type of the
//! training path: RMSNorm, attention (q/k norm, interleaved MRoPE with distinct T/H/W
//! positions, GQA, causal + padding mask), the SwiGLU MLP, a LoRA linear with dropout, and
//! the whole model's loss (one image, DeepStack) with respect to LoRA A and B entries.
//! A fused candle kernel without backward anywhere on these paths makes autograd disagree
//! with the differences (its gradient is silently zero), so these tests catch one.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use dreamplan::vlm::generate::Rng;
use dreamplan::vlm::io::read_batch;
use dreamplan::vlm::linear::Linear;
use dreamplan::vlm::lora::{self, InitLoraWeights, LoraAdapter, LoraConfig};
use dreamplan::vlm::loss::mean_response_logprob;
use dreamplan::vlm::text::attention_mask;
use dreamplan::vlm::train::{loss_and_grads, Recompute};
use dreamplan::vlm::{ops, Batch, Mode, Qwen3Vl};

const H: f64 = 1e-5;
/// Max |autograd − central difference| / max |central difference| over sampled entries.
const TOL: f64 = 1e-8;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm")
}

fn random(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| (2.0 * rng.uniform() - 1.0) * scale)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// A tiny model in f64 with random-B adapters on every projection.
fn model_f64() -> Qwen3Vl {
    let mut m = Qwen3Vl::load(&fixtures().join("tiny"), DType::F64, &Device::Cpu).unwrap();
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        init_lora_weights: InitLoraWeights::Bool(false),
        ..LoraConfig::default()
    };
    lora::attach(m.text_mut(), &cfg, 3).unwrap();
    m
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

/// Central differences of `f` at `samples` entries of `var` (spread over the tensor),
/// compared with `grad`. Returns the relative error; panics if the gradient is trivially
/// small (a test on a zero gradient proves nothing).
fn check_fd(what: &str, var: &Var, grad: &Tensor, samples: usize, f: &dyn Fn() -> f64) -> f64 {
    let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let grad: Vec<f64> = grad.flatten_all().unwrap().to_vec1().unwrap();
    let shape = var.as_tensor().shape().clone();
    let n = base.len();
    let (mut worst, mut scale) = (0f64, 0f64);
    for k in 0..samples {
        let idx = (k * 7919 + 13) % n;
        let eval = |delta: f64| {
            let mut v = base.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                .unwrap();
            f()
        };
        let fd = (eval(H) - eval(-H)) / (2.0 * H);
        worst = worst.max((fd - grad[idx]).abs());
        scale = scale.max(fd.abs());
    }
    var.set(&Tensor::from_vec(base, shape, &Device::Cpu).unwrap())
        .unwrap();
    assert!(
        scale > 1e-4,
        "{what}: gradient too small to test ({scale:e})"
    );
    let rel = worst / scale;
    eprintln!("{what}: max |autograd − FD| / max |FD| = {rel:.2e} (max |FD| {scale:.2e})");
    assert!(rel <= TOL, "{what}: relative error {rel:e}");
    rel
}

#[test]
fn rms_norm_gradient_matches_finite_differences() {
    let x = Var::from_tensor(&random(&[2, 5, 64], 2.0, 1)).unwrap();
    let w = Var::from_tensor(&random(&[64], 1.0, 2)).unwrap();
    let r = random(&[2, 5, 64], 1.0, 3);
    let f = || {
        let y = ops::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6, Mode::Train).unwrap();
        (y * &r).unwrap().sum_all().unwrap()
    };
    let grads = f().backward().unwrap();
    let eval = || scalar(&f());
    check_fd("rms_norm ∂/∂x", &x, grads.get(&x).unwrap(), 24, &eval);
    check_fd("rms_norm ∂/∂w", &w, grads.get(&w).unwrap(), 24, &eval);
}

/// Positions whose T, H and W differ, so every MRoPE section is exercised.
fn mrope(m: &Qwen3Vl, b: usize, l: usize) -> (Tensor, Tensor) {
    let mut pos = Vec::new();
    for axis in 0..3i64 {
        for _ in 0..b {
            for t in 0..l as i64 {
                pos.push(match axis {
                    0 => t,
                    1 => t / 2 + 3,
                    _ => (t * 7) % 5,
                });
            }
        }
    }
    m.text()
        .rotary(&pos, b, l, DType::F64, &Device::Cpu)
        .unwrap()
}

/// Row 0 full, row 1 with two left-padding keys.
fn padded_causal_mask(l: usize) -> Tensor {
    let valid = vec![vec![true; l], (0..l).map(|j| j >= 2).collect()];
    attention_mask(&valid, 0, l, &Device::Cpu).unwrap()
}

fn lora_var(m: &Qwen3Vl, path: &str, b: bool) -> Var {
    let lin = m.text().linears().find(|l| l.path() == path).unwrap();
    let a = lin.lora().unwrap();
    if b {
        a.b().clone()
    } else {
        a.a().clone()
    }
}

#[test]
fn attention_gradient_matches_finite_differences() {
    let m = model_f64();
    let (b, l) = (2, 6);
    let (cos, sin) = mrope(&m, b, l);
    let mask = padded_causal_mask(l);
    let x = Var::from_tensor(&random(&[b, l, 64], 1.0, 4)).unwrap();
    // Queries 0 and 1 of row 1 see no valid key: their (never used) outputs average all
    // values with weights that f32::MIN flattens to exactly uniform, so finite
    // differences see no dependence on the scores there while autograd does. Padding
    // outputs never reach a loss; leave them out.
    let keep = Tensor::from_vec(
        (0..b * l)
            .map(|i| if i / l == 1 && i % l < 2 { 0.0 } else { 1.0 })
            .collect::<Vec<f64>>(),
        (b, l, 1),
        &Device::Cpu,
    )
    .unwrap();
    let r = random(&[b, l, 64], 1.0, 5).broadcast_mul(&keep).unwrap();
    let f = || {
        let y = m
            .text()
            .attention_forward(1, x.as_tensor(), &cos, &sin, Some(&mask), Mode::Train)
            .unwrap();
        (y * &r).unwrap().sum_all().unwrap()
    };
    let grads = f().backward().unwrap();
    let eval = || scalar(&f());
    check_fd("attention ∂/∂x", &x, grads.get(&x).unwrap(), 24, &eval);
    for (path, is_b) in [
        ("model.language_model.layers.1.self_attn.q_proj", false),
        ("model.language_model.layers.1.self_attn.k_proj", true),
        ("model.language_model.layers.1.self_attn.v_proj", false),
        ("model.language_model.layers.1.self_attn.o_proj", true),
    ] {
        let v = lora_var(&m, path, is_b);
        let what = format!("attention ∂/∂{path}.lora_{}", if is_b { "B" } else { "A" });
        check_fd(&what, &v, grads.get(&v).unwrap(), 12, &eval);
    }
}

#[test]
fn mlp_gradient_matches_finite_differences() {
    let m = model_f64();
    let x = Var::from_tensor(&random(&[2, 5, 64], 1.0, 6)).unwrap();
    let r = random(&[2, 5, 64], 1.0, 7);
    let f = || {
        let y = m.text().mlp_forward(0, x.as_tensor(), Mode::Train).unwrap();
        (y * &r).unwrap().sum_all().unwrap()
    };
    let grads = f().backward().unwrap();
    let eval = || scalar(&f());
    check_fd("mlp ∂/∂x", &x, grads.get(&x).unwrap(), 24, &eval);
    for (path, is_b) in [
        ("model.language_model.layers.0.mlp.gate_proj", false),
        ("model.language_model.layers.0.mlp.up_proj", true),
        ("model.language_model.layers.0.mlp.down_proj", false),
    ] {
        let v = lora_var(&m, path, is_b);
        let what = format!("mlp ∂/∂{path}.lora_{}", if is_b { "B" } else { "A" });
        check_fd(&what, &v, grads.get(&v).unwrap(), 12, &eval);
    }
}

#[test]
fn lora_linear_with_dropout_gradient_matches_finite_differences() {
    let w = random(&[24, 16], 0.5, 8);
    let mut lin = Linear::from_parts(w, Some(random(&[24], 0.5, 9)), "test.q_proj");
    let a = Var::from_tensor(&random(&[4, 16], 0.25, 10)).unwrap();
    let b = Var::from_tensor(&random(&[24, 4], 0.5, 11)).unwrap();
    let mut adapter = LoraAdapter::new(a.clone(), b.clone(), 2.0, 0.3);
    adapter.set_dropout_seed(Some(42));
    lin.set_lora(Some(adapter));
    let x = Var::from_tensor(&random(&[3, 5, 16], 1.0, 12)).unwrap();
    let r = random(&[3, 5, 24], 1.0, 13);
    let f = || {
        let y = lin.forward_t(x.as_tensor(), Mode::Train).unwrap();
        (y * &r).unwrap().sum_all().unwrap()
    };
    // Dropout is active in training (the output differs from inference) yet fixed by the
    // seed, so the function is deterministic and differentiable.
    let train = lin.forward_t(x.as_tensor(), Mode::Train).unwrap();
    let infer = lin.forward_t(x.as_tensor(), Mode::Infer).unwrap();
    let diff = scalar(&(train - infer).unwrap().abs().unwrap().sum_all().unwrap());
    assert!(diff > 1e-3, "dropout had no effect");
    let grads = f().backward().unwrap();
    let eval = || scalar(&f());
    check_fd("lora linear ∂/∂x", &x, grads.get(&x).unwrap(), 24, &eval);
    check_fd("lora linear ∂/∂A", &a, grads.get(&a).unwrap(), 24, &eval);
    check_fd("lora linear ∂/∂B", &b, grads.get(&b).unwrap(), 24, &eval);
}

fn batch(case: &str) -> Batch {
    read_batch(
        &fixtures().join(format!("cases/{case}.in.safetensors")),
        1536,
        &Device::Cpu,
    )
    .unwrap()
}

/// Mean NLL of every token after the first.
fn nll(batch: &Batch) -> impl Fn(&Tensor) -> dreamplan::vlm::error::Result<Tensor> + '_ {
    move |logits: &Tensor| {
        let resp: Vec<Vec<u8>> = batch
            .input_ids
            .iter()
            .map(|r| (0..r.len()).map(|t| u8::from(t > 0)).collect())
            .collect();
        Ok(mean_response_logprob(logits, &batch.input_ids, &resp)?
            .mean_all()?
            .neg()?)
    }
}

#[test]
fn model_loss_gradient_matches_finite_differences() {
    let m = model_f64();
    let batch = batch("one_image");
    for recompute in [Recompute::PerLayer, Recompute::Off] {
        let out = loss_and_grads(&m, &batch, recompute, nll(&batch)).unwrap();
        let eval = || {
            loss_and_grads(&m, &batch, Recompute::Off, nll(&batch))
                .unwrap()
                .loss
        };
        for (path, is_b) in [
            ("model.language_model.layers.0.self_attn.q_proj", false),
            ("model.language_model.layers.0.mlp.down_proj", true),
            ("model.language_model.layers.1.self_attn.v_proj", true),
            ("model.language_model.layers.2.mlp.gate_proj", false),
        ] {
            let v = lora_var(&m, path, is_b);
            let what = format!(
                "model loss ({recompute:?}) ∂/∂{path}.lora_{}",
                if is_b { "B" } else { "A" }
            );
            check_fd(&what, &v, out.grad(&v).unwrap(), 6, &eval);
        }
    }
}
