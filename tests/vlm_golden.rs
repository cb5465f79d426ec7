//! Qwen3-VL on candle against HF transformers 5.23 on tiny random models
//! (`tests/fixtures/vlm`, made by `scripts/gen_vlm_fixtures.py`): logits, positions,
//! preprocessing, chat template + tokenizer and greedy generation.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamplan::vlm::chat::{expand_image_pads, ChatTemplate, Tokenizer};
use dreamplan::vlm::generate::{generate, generate_guided, Guide, GuideStep, SamplingParams};
use dreamplan::vlm::image::{preprocess, PreprocessorConfig, Rgb8};
use dreamplan::vlm::io::read_batch;
use dreamplan::vlm::{Batch, Images, Mode, Qwen3Vl};
use serde_json::Value;

mod common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm")
}

fn model(name: &str) -> Qwen3Vl {
    Qwen3Vl::load(&fixtures().join(name), DType::F32, &Device::Cpu).expect("load model")
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

fn batch(case: &str) -> Batch {
    read_batch(
        &fixtures().join(format!("cases/{case}.in.safetensors")),
        1536,
        &Device::Cpu,
    )
    .expect("inputs")
}

fn expected(case: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(format!("cases/{case}.out.safetensors")),
        &Device::Cpu,
    )
    .expect("expected outputs")
}

/// Max |a − b| over positions whose mask is 1 (all when no mask).
fn max_abs_logits(a: &Tensor, b: &Tensor, mask: Option<&Vec<Vec<u8>>>) -> f32 {
    let a = a.to_vec3::<f32>().unwrap();
    let b = b.to_vec3::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (bi, (ra, rb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(ra.len(), rb.len());
        for (li, (va, vb)) in ra.iter().zip(rb).enumerate() {
            if mask.is_some_and(|m| m[bi][li] == 0) {
                continue;
            }
            for (x, y) in va.iter().zip(vb) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    worst
}

fn check_forward(case: &str) -> f32 {
    check_forward_of(&model("tiny"), case)
}

fn check_forward_of(m: &Qwen3Vl, case: &str) -> f32 {
    let batch = batch(case);
    let out = m.forward(&batch, Mode::Infer).expect("forward");
    let exp = expected(case);
    let err = max_abs_logits(&out.logits, &exp["logits"], batch.attention_mask.as_ref());
    let pos = exp["position_ids"]
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap();
    assert_eq!(out.rope.position_ids, pos, "{case}: position ids");
    eprintln!("{case}: logits max abs error {err:.3e}");
    // README and docs/vlm.md quote "within 2e-5 of HF": measured 6.2e-6 to 1.8e-5 over
    // the cases (`cargo test --release --test vlm_golden -- --nocapture`).
    assert!(err <= 2e-5, "{case}: logits max abs error {err}");
    err
}

#[test]
fn text_only_logits_match_transformers() {
    check_forward("text");
}

#[test]
fn one_image_logits_match_transformers() {
    check_forward("one_image");
}

#[test]
fn two_images_logits_match_transformers() {
    check_forward("two_images");
}

#[test]
fn left_padded_batch_of_two_matches_transformers() {
    check_forward("padded_batch");
}

#[test]
fn bf16_sharded_checkpoint_in_transformers_4_57_format_loads_and_matches() {
    let m = model("tiny-bf16-sharded");
    for case in ["text", "one_image"] {
        let batch = batch(case);
        let out = m.forward(&batch, Mode::Infer).unwrap();
        let err = max_abs_logits(&out.logits, &expected(case)["logits_bf16"], None);
        eprintln!("{case} (bf16 weights, f32 compute): logits max abs error {err:.3e}");
        assert!(err <= 2e-5, "{case}: {err}");
    }
}

#[test]
fn vision_cache_reuses_an_image_seen_before_and_changes_nothing() {
    let plain = model("tiny");
    let mut cached = model("tiny");
    cached.set_vision_cache(4);
    let batch = batch("two_images");
    let reference = plain.forward(&batch, Mode::Infer).unwrap();
    // First sight: both images encoded; second: both from the cache.
    for (round, stats) in [(1, (0, 2)), (2, (2, 2))] {
        let out = cached.forward(&batch, Mode::Infer).unwrap();
        assert_eq!(cached.vision_cache_stats(), stats, "round {round}");
        let err = max_abs_logits(&out.logits, &reference.logits, None);
        assert!(err <= 1e-6, "round {round}: {err}");
    }
    // A new first image (the next current frame) with the same second one (the goal):
    // one miss, one hit, and the same logits as a model without a cache.
    let images = batch.images.as_ref().unwrap();
    let n0 = images.grid_thw[0].iter().product::<usize>();
    let px = &images.pixel_values;
    let first = (px.narrow(0, 0, n0).unwrap() * 0.5).unwrap();
    let rest = px.narrow(0, n0, px.dim(0).unwrap() - n0).unwrap();
    let next = Batch {
        images: Some(Images {
            pixel_values: Tensor::cat(&[first, rest], 0).unwrap(),
            grid_thw: images.grid_thw.clone(),
        }),
        ..batch.clone()
    };
    let out = cached.forward(&next, Mode::Infer).unwrap();
    assert_eq!(cached.vision_cache_stats(), (3, 3));
    let fresh = plain.forward(&next, Mode::Infer).unwrap();
    let err = max_abs_logits(&out.logits, &fresh.logits, None);
    assert!(err <= 1e-5, "new current image: {err}");
    assert!(
        max_abs_logits(&out.logits, &reference.logits, None) > 1e-3,
        "the changed image must change the logits (else this test checks nothing)"
    );
    // Training forwards never read or fill the cache; clearing forgets everything.
    cached.forward(&batch, Mode::Train).unwrap();
    assert_eq!(cached.vision_cache_stats(), (3, 3));
    cached.clear_vision_cache();
    cached.forward(&batch, Mode::Infer).unwrap();
    assert_eq!(cached.vision_cache_stats(), (3, 5));
}

#[test]
fn train_mode_forward_agrees_with_infer_mode() {
    let m = model("tiny");
    for case in ["two_images", "padded_batch"] {
        let batch = batch(case);
        let a = m.forward(&batch, Mode::Infer).unwrap();
        let b = m.forward(&batch, Mode::Train).unwrap();
        let err = max_abs_logits(&a.logits, &b.logits, batch.attention_mask.as_ref());
        eprintln!("{case}: train vs infer max abs {err:.3e}");
        assert!(err <= 1e-4, "{case}: {err}");
    }
}

#[test]
fn preprocessing_matches_the_hf_image_processor() {
    let cfg = PreprocessorConfig::load(&fixtures().join("tiny")).unwrap();
    for name in ["a_96x64", "b_77x45", "c_190x130"] {
        let img = Rgb8::open(&fixtures().join(format!("images/{name}.png"))).unwrap();
        let got = preprocess(&img, &cfg).unwrap();
        let exp = candle_core::safetensors::load(
            fixtures().join(format!("preprocess/{name}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let grid = exp["image_grid_thw"]
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        assert_eq!(
            got.grid_thw.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            grid,
            "{name}"
        );
        let diff = |key: &str| {
            let e = exp[key].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(e.len(), got.pixel_values.len(), "{name} {key}");
            e.iter()
                .zip(&got.pixel_values)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let pil = diff("pixel_values_pil");
        let tv = diff("pixel_values");
        eprintln!("{name}: max abs vs PIL backend {pil:.3e}, vs torchvision backend {tv:.3e}");
        assert!(pil <= 1e-6, "{name}: PIL backend differs by {pil}");
        // torchvision's uint8 bicubic rounds differently from Pillow by at most one level.
        assert!(
            tv <= 2.0 / 255.0 + 1e-6,
            "{name}: torchvision backend differs by {tv}"
        );
    }
}

#[test]
fn chat_template_and_tokenizer_reproduce_the_processor() {
    let cases = cases();
    for dir in ["tiny", "tiny-bf16-sharded"] {
        let template = ChatTemplate::load(&fixtures().join(dir))
            .unwrap()
            .expect("a chat template");
        let tok = Tokenizer::load(&fixtures().join(dir)).unwrap();
        let cfg = PreprocessorConfig::load(&fixtures().join(dir)).unwrap();
        for (case, c) in cases["cases"].as_object().unwrap() {
            for (row, messages) in c["messages"].as_array().unwrap().iter().enumerate() {
                let text = template.render(messages, true, &Value::Null).unwrap();
                assert_eq!(
                    text,
                    c["rendered"][row].as_str().unwrap(),
                    "{dir} {case} row {row}"
                );
                let counts: Vec<usize> = c["images"]
                    .get(row)
                    .and_then(Value::as_array)
                    .map(|names| {
                        names
                            .iter()
                            .map(|n| {
                                let img = Rgb8::open(
                                    &fixtures().join(format!("images/{}.png", n.as_str().unwrap())),
                                )
                                .unwrap();
                                let p = preprocess(&img, &cfg).unwrap();
                                p.grid_thw.iter().product::<usize>()
                                    / (cfg.merge_size * cfg.merge_size)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let ids = tok
                    .encode(&expand_image_pads(&text, &counts).unwrap())
                    .unwrap();
                let exp: Vec<u32> = c["input_ids"][row]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(c["attention_mask"][row].as_array().unwrap())
                    .filter(|(_, m)| m.as_i64() == Some(1))
                    .map(|(t, _)| t.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(ids, exp, "{dir} {case} row {row}");
            }
        }
    }
}

#[test]
fn greedy_generation_of_16_tokens_matches_transformers() {
    check_greedy(&model("tiny"), "plain");
}

/// 16 greedy tokens of each golden case equal transformers'.
fn check_greedy(m: &Qwen3Vl, label: &str) {
    let cases = cases();
    for case in ["text", "one_image", "two_images"] {
        let expected: Vec<u32> = cases["cases"][case]["greedy_16"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let params = SamplingParams {
            max_new_tokens: 16,
            ..SamplingParams::default()
        };
        let out = generate(m, &batch(case), 1, &params).unwrap();
        assert_eq!(out[0].tokens, expected, "{case}, {label}");
    }
}

#[test]
fn fused_inference_forward_matches_transformers_and_decodes_the_same_greedy_tokens() {
    // The GPU's inference path (residual adds fused into the norms after them, SiLU · mul
    // fused), forced on here on the CPU, where its operations run the kernels' arithmetic.
    let mut m = model("tiny");
    m.text_mut().set_fused(Some(true));
    for case in ["text", "one_image", "two_images", "padded_batch"] {
        check_forward_of(&m, case);
    }
    check_greedy(&m, "fused");
}

#[test]
fn fused_operations_equal_the_separate_ones_to_a_rounding() {
    use dreamplan::vlm::fused;
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (3, 5, 96), &dev).unwrap();
    let a = Tensor::randn(0f32, 1.0, (3, 5, 96), &dev).unwrap();
    let w = Tensor::randn(1f32, 0.2, 96, &dev).unwrap();
    for (dtype, tol) in [
        (DType::F32, 1e-5f32),
        (DType::BF16, 0.04),
        (DType::F16, 0.005),
    ] {
        let (x, a, w) = (
            x.to_dtype(dtype).unwrap(),
            a.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
        );
        let (sum, normed) = fused::add_rms_norm(&x, &a, &w, 1e-6).unwrap();
        let want_sum = (&x + &a).unwrap();
        let want_normed = candle_nn::ops::rms_norm(
            &want_sum.to_dtype(DType::F32).unwrap(),
            &w.to_dtype(DType::F32).unwrap(),
            1e-6,
        )
        .unwrap();
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        // The sum is rounded exactly as a separate add rounds it.
        assert_eq!(
            common::max_abs_diff(&f(&sum), &f(&want_sum)),
            0.0,
            "{dtype:?}"
        );
        let d = common::max_abs_diff(&f(&normed), &want_normed);
        assert!(d <= tol, "{dtype:?}: norm off by {d}");
        let s = fused::silu_mul(&x, &a).unwrap();
        let want = (x.to_dtype(DType::F32).unwrap().silu().unwrap() * f(&a)).unwrap();
        let d = common::max_abs_diff(&f(&s), &want);
        assert!(d <= tol, "{dtype:?}: silu·mul off by {d}");
    }
}

#[test]
fn sampling_is_seeded_top_k_1_is_greedy_and_logprobs_match_a_full_forward() {
    let m = model("tiny");
    let prompt = batch("one_image");
    let greedy = generate(
        &m,
        &prompt,
        1,
        &SamplingParams {
            max_new_tokens: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let top1 = SamplingParams {
        temperature: 1.3,
        top_k: 1,
        max_new_tokens: 8,
        seed: 7,
        ..Default::default()
    };
    let k1 = generate(&m, &prompt, 3, &top1).unwrap();
    for s in &k1 {
        assert_eq!(s.tokens, greedy[0].tokens);
    }
    let sampled = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        max_new_tokens: 8,
        seed: 42,
        ..Default::default()
    };
    let a = generate(&m, &prompt, 4, &sampled).unwrap();
    let b = generate(&m, &prompt, 4, &sampled).unwrap();
    assert_eq!(a, b, "same seed, same samples");
    assert!(
        a.iter().any(|s| s.tokens != a[0].tokens),
        "K samples differ from each other"
    );

    // Log-probs of each sample equal those of one forward over prompt + sample.
    for s in &a {
        assert_logprobs_of_one_forward(&m, &prompt, s);
    }
}

/// Every token's log-prob in `s` equals that of one forward over prompt + sample.
fn assert_logprobs_of_one_forward(
    m: &Qwen3Vl,
    prompt: &Batch,
    s: &dreamplan::vlm::generate::Sample,
) {
    let mut ids = prompt.input_ids[0].clone();
    ids.extend(&s.tokens);
    let full = Batch {
        input_ids: vec![ids],
        attention_mask: None,
        images: prompt.images.clone(),
    };
    let logits = m.forward(&full, Mode::Infer).unwrap().logits;
    let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1).unwrap();
    let logp = logp.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let p0 = prompt.input_ids[0].len();
    assert_eq!(s.logprobs.len(), s.tokens.len());
    for (i, (&t, &lp)) in s.tokens.iter().zip(&s.logprobs).enumerate() {
        let want = logp[p0 - 1 + i][t as usize];
        assert!((want - lp).abs() < 1e-4, "token {i}: {lp} vs {want}");
    }
}

/// A guide that forces a prefix, then two tokens after every even sampled token, and ends
/// answers at seven tokens: rows diverge, so steps mix rows of one and of three new tokens.
struct Parity;

impl Guide for Parity {
    fn step(&self, tokens: &[u32]) -> GuideStep {
        match tokens {
            [] => GuideStep::Force(vec![5, 9]),
            t if t.len() >= 7 => GuideStep::Done,
            [.., last] if last % 2 == 0 => GuideStep::Force(vec![(last + 1) % 300, 3]),
            _ => GuideStep::Free,
        }
    }
}

#[test]
fn guided_generation_forces_tokens_pads_rows_and_scores_like_a_full_forward() {
    let m = model("tiny");
    let prompt = batch("one_image");
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 12,
        seed: 11,
        ..Default::default()
    };
    let out = generate_guided(&m, &prompt, 6, &params, &Parity).unwrap();
    let mut forced_runs = Vec::new();
    for s in &out {
        assert!(s.stopped && s.tokens.len() >= 7, "{s:?}");
        assert_eq!(s.tokens[..2], [5, 9]);
        // Replay the guide: after each sampled token, what it forced follows.
        let (mut j, mut runs) = (2, 0);
        while j < s.tokens.len() {
            match Parity.step(&s.tokens[..=j]) {
                GuideStep::Force(f) => {
                    assert_eq!(s.tokens[j + 1..j + 1 + f.len()], f[..]);
                    j += 1 + f.len();
                    runs += 1;
                }
                GuideStep::Done => {
                    assert_eq!(j + 1, s.tokens.len());
                    j += 1;
                }
                GuideStep::Free => j += 1,
            }
        }
        forced_runs.push(runs);
        // Every token's log-prob (forced ones too) equals one forward over prompt + answer:
        // the padded multi-token steps computed the same thing.
        assert_logprobs_of_one_forward(&m, &prompt, s);
    }
    let (lo, hi) = (forced_runs.iter().min(), forced_runs.iter().max());
    assert!(
        lo < hi,
        "rows should force different numbers of runs: {forced_runs:?}"
    );

    // Forcing exactly what greedy decoding writes changes nothing.
    let greedy_params = SamplingParams {
        max_new_tokens: 12,
        ..Default::default()
    };
    let greedy = generate(&m, &prompt, 1, &greedy_params).unwrap().remove(0);
    struct Echo(Vec<u32>);
    impl Guide for Echo {
        fn step(&self, t: &[u32]) -> GuideStep {
            match t.len() {
                0 => GuideStep::Force(self.0[..2].to_vec()),
                3 => GuideStep::Force(self.0[3..5].to_vec()),
                n if n >= 6 => GuideStep::Done,
                _ => GuideStep::Free,
            }
        }
    }
    let guided =
        generate_guided(&m, &prompt, 2, &greedy_params, &Echo(greedy.tokens.clone())).unwrap();
    for g in guided {
        assert_eq!(g.tokens, greedy.tokens[..6]);
        for (a, b) in g.logprobs.iter().zip(&greedy.logprobs) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}

/// A forced run cut by `max_new_tokens` in every row at once still gets its log-probs:
/// before session 53 the rows all finished before the decode that scores forced tokens,
/// and the sample held fewer log-probs than tokens.
#[test]
fn forced_tokens_at_the_token_limit_are_scored() {
    struct ForceAfterOne;
    impl Guide for ForceAfterOne {
        fn step(&self, t: &[u32]) -> GuideStep {
            if t.len() == 1 {
                GuideStep::Force(vec![5, 9])
            } else {
                GuideStep::Free
            }
        }
    }
    let m = model("tiny");
    let prompt = batch("one_image");
    for max_new_tokens in [2, 3, 4] {
        for k in [1, 3] {
            let params = SamplingParams {
                temperature: 1.0,
                max_new_tokens,
                seed: 5,
                ..Default::default()
            };
            for s in generate_guided(&m, &prompt, k, &params, &ForceAfterOne).unwrap() {
                assert_eq!(s.tokens.len(), max_new_tokens);
                assert_logprobs_of_one_forward(&m, &prompt, &s);
            }
        }
    }
}

#[test]
fn stop_tokens_end_a_sample() {
    let m = model("tiny");
    let prompt = batch("one_image");
    let greedy = generate(
        &m,
        &prompt,
        1,
        &SamplingParams {
            max_new_tokens: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let stop = greedy[0].tokens[4];
    let first = greedy[0].tokens.iter().position(|&t| t == stop).unwrap();
    let params = SamplingParams {
        max_new_tokens: 16,
        stop_tokens: vec![stop],
        ..Default::default()
    };
    let out = generate(&m, &prompt, 2, &params).unwrap();
    for s in out {
        assert!(s.stopped);
        assert_eq!(s.tokens, greedy[0].tokens[..=first].to_vec());
    }
}

#[test]
fn batch_with_images_built_in_rust_equals_the_processor_inputs() {
    // End to end without Python inputs: image file → preprocess → Images; same logits.
    let m = model("tiny");
    let cfg = PreprocessorConfig::load(&fixtures().join("tiny")).unwrap();
    let img = Rgb8::open(&fixtures().join("images/a_96x64.png")).unwrap();
    let p = preprocess(&img, &cfg).unwrap();
    let rows = p.pixel_values.len() / cfg.patch_len();
    let from_file = batch("one_image");
    let built = Batch {
        input_ids: from_file.input_ids.clone(),
        attention_mask: None,
        images: Some(Images {
            pixel_values: Tensor::from_vec(p.pixel_values, (rows, cfg.patch_len()), &Device::Cpu)
                .unwrap(),
            grid_thw: vec![p.grid_thw],
        }),
    };
    let a = m.forward(&built, Mode::Infer).unwrap().logits;
    let err = max_abs_logits(&a, &expected("one_image")["logits"], None);
    assert!(err <= 2e-5, "{err}");
}
