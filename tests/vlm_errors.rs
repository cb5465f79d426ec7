//! Bad model folders and input files: every error names the field or tensor at fault with
//! the expected and found shapes, and nothing panics.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dreamplan::vlm::image::{PreprocessorConfig, Rgb8};
use dreamplan::vlm::io::read_batch;
use dreamplan::vlm::{Config, Qwen3Vl};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm")
}

/// A copy of the tiny model folder to break.
fn copy_tiny() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match Qwen3Vl::load(dir, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

#[test]
fn a_missing_config_field_is_named() {
    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        v["text_config"]
            .as_object_mut()
            .unwrap()
            .remove("hidden_size");
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("config.json") && e.contains("missing field `text_config.hidden_size`"),
        "{e}"
    );

    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        v.as_object_mut().unwrap().remove("vision_config");
    });
    assert!(load_err(dir.path()).contains("missing field `vision_config`"));
}

#[test]
fn a_bad_config_value_is_named() {
    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        v["text_config"]["rope_parameters"]["mrope_section"] = serde_json::json!([2, 2, 2]);
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("mrope_section") && e.contains("head_dim / 2 = 8"),
        "{e}"
    );

    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        v["text_config"]["num_hidden_layers"] = serde_json::json!("three")
    });
    let e = load_err(dir.path());
    assert!(
        e.contains("text_config.num_hidden_layers") && e.contains("integer"),
        "{e}"
    );

    // Absurd numbers are errors, not arithmetic overflows.
    let huge = u64::MAX;
    for (edit, field) in [
        (
            Box::new(|v: &mut serde_json::Value| {
                v["text_config"]["rope_parameters"]["mrope_section"] =
                    serde_json::json!([huge, huge, 2])
            }) as Box<dyn FnOnce(&mut serde_json::Value)>,
            "mrope_section",
        ),
        (
            Box::new(|v: &mut serde_json::Value| {
                v["vision_config"]["num_heads"] = serde_json::json!(huge / 2)
            }),
            "num_heads",
        ),
        (
            Box::new(|v: &mut serde_json::Value| {
                v["vision_config"]["num_position_embeddings"] = serde_json::json!(huge)
            }),
            "num_position_embeddings",
        ),
    ] {
        let dir = copy_tiny();
        edit_config(dir.path(), edit);
        let e = load_err(dir.path());
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn both_rope_config_formats_parse_to_the_same_config() {
    let new = Config::load(&fixtures().join("tiny")).unwrap();
    let old = Config::load(&fixtures().join("tiny-bf16-sharded")).unwrap();
    assert_eq!(new, old);
    assert_eq!(new.text.mrope_section, [2, 3, 3]);
    assert_eq!(new.text.rope_theta, 10_000.0);
}

/// Rotary settings read as transformers reads them: a theta missing from
/// `rope_parameters` is the text config's `rope_theta` (it was 500,000), and a
/// `rope_scaling` beside `rope_parameters` wins, so a YaRN added to a 5.x config is refused
/// instead of run as default rotary.
#[test]
fn rope_settings_follow_transformers_precedence() {
    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        let t = &mut v["text_config"];
        t["rope_parameters"]
            .as_object_mut()
            .unwrap()
            .remove("rope_theta");
        t["rope_theta"] = serde_json::json!(20_000.0);
    });
    assert_eq!(Config::load(dir.path()).unwrap().text.rope_theta, 20_000.0);
    let dir = copy_tiny();
    edit_config(dir.path(), |v| {
        v["text_config"]["rope_scaling"] =
            serde_json::json!({"rope_type": "yarn", "factor": 4.0, "mrope_section": [2, 3, 3]});
    });
    let e = load_err(dir.path());
    assert!(e.contains("rope_scaling") && e.contains("yarn"), "{e}");
}

#[test]
fn a_missing_or_misshaped_weight_is_named_with_shapes() {
    let dir = copy_tiny();
    let name = "model.language_model.layers.1.self_attn.q_proj.weight";
    edit_weights(dir.path(), |t| {
        t.remove(name);
    });
    let e = load_err(dir.path());
    assert!(e.contains(name) && e.contains("missing"), "{e}");

    let dir = copy_tiny();
    let name = "model.visual.merger.linear_fc1.weight";
    edit_weights(dir.path(), |t| {
        let w = t[name].narrow(0, 0, 100).unwrap();
        t.insert(name.into(), w);
    });
    let e = load_err(dir.path());
    assert!(
        e.contains(name) && e.contains("[128, 128]") && e.contains("[100, 128]"),
        "{e}"
    );
}

#[test]
fn missing_weights_and_garbage_files_are_errors_not_panics() {
    let dir = copy_tiny();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(load_err(dir.path()).contains("no model.safetensors"));

    let dir = copy_tiny();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    assert!(load_err(dir.path()).contains("model.safetensors"));

    let dir = copy_tiny();
    std::fs::write(dir.path().join("config.json"), b"{\"text_config\": [").unwrap();
    assert!(load_err(dir.path()).contains("invalid JSON"));

    let dir = copy_tiny();
    std::fs::write(dir.path().join("img.png"), b"\x89PNG\r\n\x1a\nshort").unwrap();
    assert!(Rgb8::open(&dir.path().join("img.png")).is_err());
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        b"{\"patch_size\": -1}",
    )
    .unwrap();
    assert!(PreprocessorConfig::load(dir.path())
        .unwrap_err()
        .to_string()
        .contains("patch_size"));
}

fn write_inputs(dir: &Path, tensors: Vec<(&str, Tensor)>) -> PathBuf {
    let path = dir.join("in.safetensors");
    let map: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn input_err(tensors: Vec<(&str, Tensor)>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_inputs(dir.path(), tensors);
    match read_batch(&path, 1536, &Device::Cpu) {
        Ok(batch) => {
            let m = Qwen3Vl::load(&fixtures().join("tiny"), DType::F32, &Device::Cpu).unwrap();
            match m.forward(&batch, dreamplan::vlm::Mode::Infer) {
                Ok(_) => panic!("these inputs should be rejected"),
                Err(e) => e.to_string(),
            }
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_or_misshaped_input_tensors_are_named_with_shapes() {
    let cpu = Device::Cpu;
    let ids = Tensor::new(&[[1i64, 2, 3]], &cpu).unwrap();
    let e = input_err(vec![("attention_mask", ids.clone())]);
    assert!(e.contains("missing tensor `input_ids`"), "{e}");

    let e = input_err(vec![(
        "input_ids",
        Tensor::new(&[1i64, 2, 3], &cpu).unwrap(),
    )]);
    assert!(
        e.contains("`input_ids`") && e.contains("[B, L]") && e.contains("[3]"),
        "{e}"
    );

    let e = input_err(vec![
        ("input_ids", ids.clone()),
        ("attention_mask", Tensor::new(&[[1i64, 1]], &cpu).unwrap()),
    ]);
    assert!(
        e.contains("`attention_mask`") && e.contains("[1, 3]") && e.contains("[1, 2]"),
        "{e}"
    );

    let grid = Tensor::new(&[[1i64, 4, 4]], &cpu).unwrap();
    let e = input_err(vec![
        ("input_ids", ids.clone()),
        ("image_grid_thw", grid.clone()),
    ]);
    assert!(e.contains("missing tensor `pixel_values`"), "{e}");

    let pv = Tensor::zeros((16, 1000), DType::F32, &cpu).unwrap();
    let e = input_err(vec![
        ("input_ids", ids.clone()),
        ("image_grid_thw", grid.clone()),
        ("pixel_values", pv),
    ]);
    assert!(
        e.contains("`pixel_values`") && e.contains("[16, 1536]") && e.contains("[16, 1000]"),
        "{e}"
    );

    let e = input_err(vec![(
        "input_ids",
        Tensor::new(&[[1f32, 2.0]], &cpu).unwrap(),
    )]);
    assert!(e.contains("`input_ids`") && e.contains("integer"), "{e}");
}

#[test]
fn inputs_inconsistent_with_the_model_are_rejected() {
    let cpu = Device::Cpu;
    // Image grid given but no image tokens in the prompt.
    let ids = Tensor::new(&[[1i64, 2, 3]], &cpu).unwrap();
    let grid = Tensor::new(&[[1i64, 4, 4]], &cpu).unwrap();
    let pv = Tensor::zeros((16, 1536), DType::F32, &cpu).unwrap();
    let e = input_err(vec![
        ("input_ids", ids),
        ("image_grid_thw", grid),
        ("pixel_values", pv),
    ]);
    assert!(e.contains("image tokens"), "{e}");
    // Token id beyond the vocabulary.
    let e = input_err(vec![(
        "input_ids",
        Tensor::new(&[[1i64, 5000]], &cpu).unwrap(),
    )]);
    assert!(e.contains("5000") && e.contains("vocabulary"), "{e}");
}

#[test]
fn the_forward_tool_reports_bad_inputs_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_inputs(
        dir.path(),
        vec![(
            "attention_mask",
            Tensor::new(&[[1i64]], &Device::Cpu).unwrap(),
        )],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["vlm", "forward", "--model"])
        .arg(fixtures().join("tiny"))
        .arg("--inputs")
        .arg(&path)
        .arg("--out")
        .arg(dir.path().join("out.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing tensor `input_ids`"), "{err}");
}

#[test]
fn the_forward_tool_writes_logits_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["vlm", "forward", "--model"])
        .arg(fixtures().join("tiny"))
        .arg("--inputs")
        .arg(fixtures().join("cases/one_image.in.safetensors"))
        .arg("--out")
        .arg(&out_path)
        .status()
        .unwrap();
    assert!(status.success());
    let got = candle_core::safetensors::load(&out_path, &Device::Cpu).unwrap();
    let exp = candle_core::safetensors::load(
        fixtures().join("cases/one_image.out.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        got["position_ids"].to_vec3::<i64>().unwrap(),
        exp["position_ids"].to_vec3::<i64>().unwrap()
    );
    let err = common::max_abs_diff(&got["logits"], &exp["logits"]);
    assert!(err <= 1e-4, "{err}");

    let pre = dir.path().join("pre.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dreamplan"))
        .args(["vlm", "preprocess", "--model"])
        .arg(fixtures().join("tiny"))
        .arg("--image")
        .arg(fixtures().join("images/c_190x130.png"))
        .arg("--out")
        .arg(&pre)
        .status()
        .unwrap();
    assert!(status.success());
    let got = candle_core::safetensors::load(&pre, &Device::Cpu).unwrap();
    let exp = candle_core::safetensors::load(
        fixtures().join("preprocess/c_190x130.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        got["image_grid_thw"].to_vec2::<i64>().unwrap(),
        exp["image_grid_thw"].to_vec2::<i64>().unwrap()
    );
    let err = (&got["pixel_values"] - &exp["pixel_values_pil"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(err <= 1e-6, "{err}");
}

/// A model whose scores are not finite (here a final norm of NaN, as a diverged adapter or
/// an f16 overflow gives) is an error naming the cause, not a confident answer sampled
/// from NaN (before session 45 the least likely token was picked and played).
#[test]
fn a_model_that_scores_nan_is_an_error_not_an_answer() {
    use dreamplan::planner::vlm_planner::{VlmPlanner, VlmPlannerConfig};
    use dreamplan::sim::tasks::Task;
    use dreamplan::vision::Keypoint;
    let dir = copy_tiny();
    edit_weights(dir.path(), |t| {
        let w = t
            .get_mut("model.language_model.norm.weight")
            .expect("the final norm");
        *w = (w.ones_like().unwrap() * f64::NAN).unwrap();
    });
    let img = Rgb8 {
        width: 64,
        height: 64,
        data: vec![128; 64 * 64 * 3],
    };
    let kps: Vec<Keypoint> = (1..=3)
        .map(|id| Keypoint {
            id,
            u: 10.0 * id as f32,
            v: 20.0,
        })
        .collect();
    for constrained in [false, true] {
        let config = VlmPlannerConfig {
            k: 2,
            constrained,
            ..Default::default()
        };
        let planner = VlmPlanner::load(dir.path(), config).unwrap();
        let batch = planner
            .prompt(Task::Rope, &img, &img, &kps, &kps, (64, 64))
            .unwrap();
        let e = planner
            .candidates(Task::Rope, &batch, 3, 3, 1)
            .expect_err("NaN scores refused")
            .to_string();
        assert!(e.contains("not finite"), "{e}");
    }
}
