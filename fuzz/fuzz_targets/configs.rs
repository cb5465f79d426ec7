//! Fuzzes the configuration readers a user feeds files to: the node graph YAML, the
//! Qwen3-VL `config.json` and the world model's `config.json`. Any text must parse or fail
//! with an error, never panic.
//!
//! `cargo fuzz run configs fuzz/corpus/configs` (seeds: `fuzz/seed.sh`).
#![no_main]

use dreamplan::config::GraphConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = GraphConfig::from_yaml(text, "fuzz");
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = dreamplan::vlm::config::Config::from_value(std::path::Path::new("config.json"), &value);
        if let Ok(cfg) = serde_json::from_value::<dreamplan::world_model::Config>(value) {
            let _ = cfg.validate();
        }
    }
});
