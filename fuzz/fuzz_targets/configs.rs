//! Fuzzes the configuration readers a user feeds files to: the node graph YAML, the
//! Qwen3-VL `config.json`, the world model's `config.json`, and a bag's `metadata.yaml`
//! with the QoS profiles stored in it. Any text must parse or fail
//! with an error, never panic.
//!
//! `cargo fuzz run configs fuzz/corpus/configs` (seeds: `fuzz/seed.sh`).
#![no_main]

use dreamplan::config::GraphConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = GraphConfig::from_yaml(text, "fuzz");
    if let Ok(yaml) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        let _ = dreamplan::bag::parse_qos_profiles(&yaml);
        if let Some(info) = yaml.get("rosbag2_bagfile_information") {
            if let Ok(meta) = serde_yaml::from_value::<dreamplan::bag::BagMetadata>(info.clone()) {
                for t in &meta.topics_with_message_count {
                    let _ =
                        dreamplan::bag::parse_qos_profiles(&t.topic_metadata.offered_qos_profiles);
                }
            }
        }
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        let _ =
            dreamplan::vlm::config::Config::from_value(std::path::Path::new("config.json"), &value);
        if let Ok(cfg) = serde_json::from_value::<dreamplan::world_model::Config>(value) {
            let _ = cfg.validate();
        }
    }
});
