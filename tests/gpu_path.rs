//! The GPU path as far as a machine without a GPU can check it (docs/gpu.md): the released
//! 8B / 2B architectures as this crate builds them, made-up weights, bf16 compute, the
//! benches the GPU script runs, and the errors for a GPU this build cannot give.

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device};
use dreamplan::vlm::weights::WeightStore;
use dreamplan::vlm::{Batch, Config, Mode, Qwen3Vl};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> std::path::PathBuf {
    root().join("tests/fixtures/vlm/tiny")
}

/// Parameters of the model this crate builds from `config/qwen3_vl/<name>.json`, counted
/// from what its loader asks the weight store for (nothing is allocated).
fn parameters(name: &str) -> (usize, Vec<(String, Vec<usize>)>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join(format!("config/qwen3_vl/{name}.json")),
        dir.path().join("config.json"),
    )
    .unwrap();
    let store = WeightStore::shapes_only(DType::BF16);
    Qwen3Vl::from_store(Config::load(dir.path()).unwrap(), &store).unwrap();
    let asked = store.asked();
    (
        asked.iter().map(|(_, s)| s.iter().product::<usize>()).sum(),
        asked,
    )
}

#[test]
fn the_released_8b_and_2b_architectures_have_their_published_sizes() {
    let (n8, asked8) = parameters("8b");
    eprintln!(
        "Qwen3-VL-8B as built here: {n8} parameters, {} tensors",
        asked8.len()
    );
    // Hugging Face lists Qwen3-VL-8B-Instruct at 8.77 B parameters.
    assert!(
        (n8 as f64 - 8.77e9).abs() < 0.005e9,
        "{n8} parameters, published 8.77 B"
    );
    // Untied: an output head beside the embedding; 36 layers; DeepStack at 8, 16, 24.
    let shape = |name: &str| {
        asked8
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not read"))
            .1
            .clone()
    };
    assert_eq!(shape("lm_head.weight"), vec![151_936, 4096]);
    assert_eq!(
        shape("model.language_model.layers.35.self_attn.k_proj.weight"),
        vec![1024, 4096]
    );
    assert_eq!(
        shape("model.language_model.layers.35.mlp.gate_proj.weight"),
        vec![12_288, 4096]
    );
    assert_eq!(
        asked8
            .iter()
            .filter(
                |(n, _)| n.starts_with("model.visual.deepstack_merger_list.")
                    && n.ends_with("linear_fc2.weight")
            )
            .count(),
        3
    );
    let (n2, asked2) = parameters("2b");
    eprintln!("Qwen3-VL-2B as built here: {n2} parameters");
    // Tied embeddings: no separate output head.
    assert!(!asked2.iter().any(|(n, _)| n == "lm_head.weight"));
    assert!((2.0e9..2.3e9).contains(&(n2 as f64)), "{n2}");
}

/// A prompt of the tiny fixture's ids: one 32² image (4 merged tokens) and some text.
fn prompt(m: &Qwen3Vl) -> Batch {
    let cfg = m.config();
    let mut ids = vec![cfg.vision_start_token_id];
    ids.extend([cfg.image_token_id; 4]);
    ids.push(cfg.vision_end_token_id);
    ids.extend([5, 17, 42, 99, 7, 3]);
    let rows = 4 * 4;
    Batch {
        input_ids: vec![ids],
        attention_mask: None,
        images: Some(dreamplan::vlm::Images {
            pixel_values: candle_core::Tensor::randn(
                0f32,
                1.0,
                (rows, cfg.vision.patch_len()),
                &Device::Cpu,
            )
            .unwrap(),
            grid_thw: vec![[1, 4, 4]],
        }),
    }
}

#[test]
fn made_up_weights_compute_and_bf16_follows_f32() {
    // Made-up weights of the tiny architecture: finite logits of the right shape.
    let r = Qwen3Vl::random(&tiny(), DType::F32, &Device::Cpu).unwrap();
    let out = r.forward(&prompt(&r), Mode::Infer).unwrap();
    assert_eq!(out.logits.dims(), &[1, 12, 307]);
    let v: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // The real tiny weights computed in bf16 against f32: same logits within bf16's
    // precision, and the same greedy continuation.
    let f32m = Qwen3Vl::load(&tiny(), DType::F32, &Device::Cpu).unwrap();
    let bf16m = Qwen3Vl::load(&tiny(), DType::BF16, &Device::Cpu).unwrap();
    let batch = prompt(&f32m);
    let a: Vec<f32> = f32m
        .forward(&batch, Mode::Infer)
        .unwrap()
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = bf16m
        .forward(&batch, Mode::Infer)
        .unwrap()
        .logits
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("bf16 vs f32 logits: max abs error {err:.3e} (scale {scale:.3})");
    assert!(err <= 0.05 * scale.max(1.0), "{err} against {scale}");
    assert!(
        err > 0.0,
        "bf16 gave f32's exact logits: not computed in bf16"
    );
    let params = dreamplan::vlm::generate::SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 4,
        stop_tokens: Vec::new(),
        seed: 0,
    };
    let ga = dreamplan::vlm::generate::generate(&f32m, &batch, 1, &params).unwrap();
    let gb = dreamplan::vlm::generate::generate(&bf16m, &batch, 1, &params).unwrap();
    assert_eq!(ga[0].tokens.len(), 4);
    assert_eq!(gb[0].tokens.len(), 4);
}

fn dreamplan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(args)
        .current_dir(root())
        .env("DREAMPLAN_LOG", "warn")
        .output()
        .expect("the dreamplan binary runs")
}

#[test]
fn the_gpu_script_benches_run_on_the_cpu_and_write_their_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny();
    let model = model.to_str().unwrap();
    let decode = dir.path().join("decode.json");
    let out = dreamplan(&[
        "vlm",
        "decode-bench",
        "--model",
        model,
        "--random-weights",
        "--image-side",
        "64",
        "--text-tokens",
        "16",
        "--new-tokens",
        "5",
        "--batch",
        "1,3",
        "--iters",
        "1",
        "--json",
        decode.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&decode).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, k) in rows.iter().zip([1, 3]) {
        assert_eq!(row["k"], k);
        assert!(row["decode_tok_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["prefill_ms"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(doc["dtype"], "F32");
    let orpo = dir.path().join("orpo.json");
    let out = dreamplan(&[
        "vlm",
        "train-bench",
        "--model",
        model,
        "--random-weights",
        "--image-side",
        "64",
        "--text-tokens",
        "8",
        "--pairs",
        "1",
        "--iters",
        "1",
        "--json",
        orpo.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&orpo).unwrap()).unwrap();
    assert_eq!(doc["rows"], 2);
    // The tiny model's three layers × seven projections carry adapters.
    assert_eq!(doc["lora_layers"], 21);
    assert!(doc["step_ms"].as_f64().unwrap() > 0.0);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_asked_of_this_cpu_build_is_one_clear_line() {
    let tiny = tiny();
    let dir = tempfile::tempdir().unwrap();
    let bags = dir.path().join("bags");
    for args in [
        // collect's VLM planner: refused before any bag is made (before session 50 it
        // took no --device and ran on the CPU).
        vec![
            "collect",
            "--task",
            "rope",
            "--episodes",
            "1",
            "--out",
            bags.to_str().unwrap(),
            "--planner",
            "vlm",
            "--model",
            tiny.to_str().unwrap(),
            "--device",
            "cuda",
        ],
        vec![
            "vlm",
            "decode-bench",
            "--model",
            tiny.to_str().unwrap(),
            "--random-weights",
            "--device",
            "cuda",
        ],
        vec![
            "eval",
            "--planner",
            "vlm",
            "--model",
            tiny.to_str().unwrap(),
            "--episodes",
            "1",
            "--device",
            "cuda:1",
        ],
        vec!["wm-bench", "--preset", "cpu", "--device", "cuda"],
    ] {
        let out = dreamplan(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without CUDA"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(
        !bags.exists(),
        "collect made its bags before refusing the device"
    );
    let out = dreamplan(&["wm-bench", "--device", "tpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use cpu, cuda or cuda:N"), "{err}");
}
