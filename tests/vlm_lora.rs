//! LoRA adapters in PEFT's format: an adapter made and saved by PEFT 0.21.2
//! (`tests/fixtures/vlm/peft-adapter`, from `scripts/check_peft_adapter.py make`) gives
//! PEFT's logits here; ours round-trip through the files; merging changes nothing; and,
//! with `DREAMPLAN_PYTHON_HF` pointing at the HF venv's python, PEFT loads an adapter
//! written here and reproduces our logits.

use std::path::{Path, PathBuf};

mod common;

use candle_core::{DType, Device, Tensor};
use dreamplan::vlm::io::read_batch;
use dreamplan::vlm::lora::{self, InitLoraWeights, LoraConfig, TargetModules};
use dreamplan::vlm::{Batch, Mode, Qwen3Vl, VlmError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm")
}

fn model() -> Qwen3Vl {
    Qwen3Vl::load(&fixtures().join("tiny"), DType::F32, &Device::Cpu).expect("load model")
}

fn batch(case: &str) -> Batch {
    read_batch(
        &fixtures().join(format!("cases/{case}.in.safetensors")),
        1536,
        &Device::Cpu,
    )
    .expect("inputs")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// r 4, alpha 8, random B so that the adapter changes the logits.
fn test_config() -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.05,
        init_lora_weights: InitLoraWeights::Bool(false),
        ..LoraConfig::default()
    }
}

#[test]
fn peft_made_adapter_reproduces_peft_logits() {
    let mut m = model();
    let base = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;
    let cfg = lora::load(m.text_mut(), &fixtures().join("peft-adapter")).expect("load adapter");
    assert_eq!((cfg.r, cfg.lora_alpha, cfg.scale()), (4, 8.0, 2.0));
    assert_eq!(lora::vars(m.text()).len(), 2 * 7 * 3);
    let expected = candle_core::safetensors::load(
        fixtures().join("peft-adapter-logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for case in ["text", "one_image"] {
        for mode in [Mode::Infer, Mode::Train] {
            let ours = m.forward(&batch(case), mode).unwrap().logits;
            let err = max_abs(&ours, &expected[case]);
            eprintln!("PEFT adapter, {case}, {mode:?}: max abs logit error vs peft {err:.3e}");
            // Quoted as "within 2e-5" (README, docs/vlm.md): measured 9.8e-6 to 1.7e-5.
            assert!(err <= 2e-5, "{case} {mode:?}: {err}");
        }
    }
    // The adapter matters: the base model's logits are far from PEFT's.
    let moved = max_abs(&base, &expected["one_image"]);
    assert!(moved > 0.1, "adapter moved the logits by only {moved}");
}

#[test]
fn config_round_trips_and_writes_peft_keys() {
    let dir = tempfile::tempdir().unwrap();
    let peft = LoraConfig::load(&fixtures().join("peft-adapter")).unwrap();
    peft.save(dir.path()).unwrap();
    assert_eq!(LoraConfig::load(dir.path()).unwrap(), peft);

    // A config made here has the key set PEFT 0.21.2 writes (bar `peft_version`).
    let ours = dir.path().join("ours");
    LoraConfig::default().save(&ours).unwrap();
    let keys = |p: &Path| -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
                .unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.retain(|k| k != "peft_version");
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&fixtures().join("peft-adapter")));
    let text = std::fs::read_to_string(ours.join("adapter_config.json")).unwrap();
    assert!(text.contains("\"lora_alpha\": 8,"), "{text}");
    assert!(text.contains("\"peft_type\": \"LORA\""));
}

#[test]
fn default_adapters_target_every_text_projection_and_start_as_identity() {
    let mut m = model();
    let before = m.forward(&batch("text"), Mode::Infer).unwrap().logits;
    let n = lora::attach(m.text_mut(), &LoraConfig::default(), 1).unwrap();
    assert_eq!(n, 7 * 3);
    let paths: Vec<String> = m
        .text()
        .linears()
        .filter(|l| l.lora().is_some())
        .map(|l| l.path().to_string())
        .collect();
    assert!(paths.contains(&"model.language_model.layers.2.mlp.down_proj".to_string()));
    let after = m.forward(&batch("text"), Mode::Infer).unwrap().logits;
    assert_eq!(
        max_abs(&before, &after),
        0.0,
        "B = 0: a fresh adapter is a no-op"
    );
    // A: kaiming-uniform with bound 1/sqrt(in).
    let a = m
        .text()
        .linears()
        .next()
        .unwrap()
        .lora()
        .unwrap()
        .a()
        .as_tensor()
        .clone();
    let amax = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let amax = amax.to_scalar::<f32>().unwrap();
    assert!(amax <= 1.0 / 8.0 && amax > 0.1, "max |A| = {amax}");

    let only_q = LoraConfig {
        target_modules: TargetModules::Pattern(r".*layers\.[01]\.self_attn\.q_proj".into()),
        ..LoraConfig::default()
    };
    let mut m = model();
    assert_eq!(lora::attach(m.text_mut(), &only_q, 1).unwrap(), 2);
    // ms-swift's pattern has a look-ahead, which the `regex` crate refuses: it is read as
    // PEFT's `re.fullmatch` reads it (the language model's layers, not the vision tower's).
    let swift = LoraConfig {
        target_modules: TargetModules::Pattern(
            r"^(model\.language_model(?=\.).*\.(q_proj|v_proj))$".into(),
        ),
        ..LoraConfig::default()
    };
    swift
        .check(std::path::Path::new("adapter_config.json"))
        .unwrap();
    let listed = LoraConfig {
        target_modules: TargetModules::List(vec!["q_proj".into(), "v_proj".into()]),
        ..LoraConfig::default()
    };
    let (mut a, mut b) = (model(), model());
    let n = lora::attach(a.text_mut(), &swift, 1).unwrap();
    assert!(n > 0);
    assert_eq!(n, lora::attach(b.text_mut(), &listed, 1).unwrap());
}

#[test]
fn rust_saved_adapter_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model();
    lora::attach(m.text_mut(), &test_config(), 7).unwrap();
    let ours = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;
    lora::save(m.text(), &test_config(), dir.path()).unwrap();

    let mut fresh = model();
    let cfg = lora::load(fresh.text_mut(), dir.path()).unwrap();
    assert_eq!(cfg, test_config());
    let back = fresh
        .forward(&batch("one_image"), Mode::Infer)
        .unwrap()
        .logits;
    assert_eq!(max_abs(&ours, &back), 0.0);
}

#[test]
fn merged_weights_equal_adapter_forward() {
    // f64: the fold itself is exact to rounding; f32: rounding of W + scale·BA in f32.
    for dtype in [DType::F64, DType::F32] {
        let mut m = Qwen3Vl::load(&fixtures().join("tiny"), dtype, &Device::Cpu).unwrap();
        lora::attach(m.text_mut(), &test_config(), 7).unwrap();
        let with_adapter = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;
        assert_eq!(lora::merge(m.text_mut()).unwrap(), 21);
        assert!(lora::vars(m.text()).is_empty());
        let merged = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;
        let err = max_abs(&with_adapter, &merged);
        let scale = max_abs(&merged, &merged.zeros_like().unwrap());
        eprintln!(
            "merged vs adapter forward ({dtype:?}): max abs logit error {err:.3e} \
             (max |logit| {scale:.1})"
        );
        let tol = if dtype == DType::F64 {
            1e-5
        } else {
            1e-6 * scale
        };
        assert!(err <= tol, "{dtype:?}: {err}");
    }
    let mut m = model();
    lora::attach(m.text_mut(), &test_config(), 7).unwrap();
    lora::merge(m.text_mut()).unwrap();
    let merged = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;

    // A merged checkpoint is a plain HF folder.
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixtures().join("tiny").join(f), dir.path().join(f)).unwrap();
    }
    let store = dreamplan::vlm::weights::WeightStore::open(
        &fixtures().join("tiny"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    lora::save_merged(m.text(), &store, &dir.path().join("model.safetensors")).unwrap();
    let reloaded = Qwen3Vl::load(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let again = reloaded
        .forward(&batch("one_image"), Mode::Infer)
        .unwrap()
        .logits;
    assert_eq!(max_abs(&merged, &again), 0.0);
}

#[test]
fn unsupported_or_damaged_adapters_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dora = LoraConfig {
        use_dora: true,
        ..LoraConfig::default()
    };
    dora.save(dir.path()).unwrap();
    let err = LoraConfig::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("use_dora"), "{err}");

    // Right config, tensors of the wrong rank.
    let mut m = model();
    lora::attach(m.text_mut(), &test_config(), 7).unwrap();
    lora::save(m.text(), &test_config(), dir.path()).unwrap();
    let wrong_rank = LoraConfig {
        r: 2,
        ..test_config()
    };
    wrong_rank.save(dir.path()).unwrap();
    let err = lora::load(model().text_mut(), dir.path()).unwrap_err();
    assert!(matches!(err, VlmError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("lora_A.weight"), "{err}");

    // A tensor for a layer the config does not target.
    let only_q = LoraConfig {
        target_modules: TargetModules::List(vec!["q_proj".into()]),
        ..test_config()
    };
    only_q.save(dir.path()).unwrap();
    let err = lora::load(model().text_mut(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches no targeted"), "{err}");
}

/// PEFT (python, `DREAMPLAN_PYTHON_HF`) loads an adapter written here and reproduces our
/// logits. Skipped, with a message, when the variable is unset (a failure under
/// `DREAMPLAN_REQUIRE_INTEROP`).
#[test]
fn peft_loads_rust_saved_adapter() {
    let Some(python) = common::hf_python("the PEFT check of a saved adapter") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut m = model();
    lora::attach(m.text_mut(), &test_config(), 11).unwrap();
    lora::save(m.text(), &test_config(), dir.path()).unwrap();
    let case = fixtures().join("cases/one_image.in.safetensors");
    let logits = m.forward(&batch("one_image"), Mode::Infer).unwrap().logits;
    let logits_path = dir.path().join("ours.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("logits".to_string(), logits)]),
        &logits_path,
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_peft_adapter.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg("check")
        .arg(dir.path())
        .arg(case)
        .arg(&logits_path)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "PEFT check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `merge-adapter` on a bf16 sharded base writes bf16 (the unchanged tensors as stored, the
/// merged ones cast back, as PEFT's `merge_and_unload` keeps the dtype) and no shard index
/// naming files the folder does not have. Before session 52 it wrote every tensor f32 and
/// copied the index.
#[test]
fn a_merged_folder_keeps_the_base_dtype_and_leaves_no_stale_shard_index() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let base = fixtures().join("tiny-bf16-sharded");
    dreamplan::train::orpo::merge_adapter(&base, &fixtures().join("peft-adapter"), &out).unwrap();
    assert!(base.join("model.safetensors.index.json").exists());
    assert!(!out.join("model.safetensors.index.json").exists());
    let written =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(!written.is_empty());
    for (name, t) in &written {
        assert_eq!(t.dtype(), DType::BF16, "{name}");
    }
    Qwen3Vl::load(&out, DType::F32, &Device::Cpu).unwrap();
}
