//! Fuzzes the weight loaders a user hands files to: any bytes as `model.safetensors` must
//! load or fail with an error, never panic, in a world-model folder (tiny config), in a
//! Qwen3-VL folder (the tiny test config) and as a training checkpoint.
//!
//! `cargo fuzz run weights fuzz/corpus/weights` (seeds: `fuzz/seed.sh`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

const VLM_CONFIG: &str = include_str!("../../tests/fixtures/vlm/tiny/config.json");

/// This process's scratch folders: `wm/` and `vlm/`, each with its config.json.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("dreamplan-fuzz-weights-{}", std::process::id()));
        for sub in ["wm", "vlm"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let wm = serde_json::to_string(&dreamplan::world_model::Config::tiny()).unwrap();
        std::fs::write(dir.join("wm/config.json"), wm).unwrap();
        std::fs::write(dir.join("vlm/config.json"), VLM_CONFIG).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    for sub in ["wm", "vlm"] {
        std::fs::write(dir.join(sub).join("model.safetensors"), data).unwrap();
    }
    let _ = dreamplan::world_model::Predictor::load(&dir.join("wm"));
    let _ = dreamplan::vlm::model::Qwen3Vl::load(&dir.join("vlm"), DType::F32, &Device::Cpu);
    let _ = dreamplan::train::checkpoint::load(&dir.join("wm/model.safetensors"));
});
