//! `metadata.yaml` of a rosbag2 directory, and the QoS profiles stored with each topic.
//!
//! We write version 5 (what Humble writes; Jazzy reads it too) with `offered_qos_profiles`
//! as a YAML string holding a list, the form every rosbag2 release understands. We read
//! versions 4–9, with QoS profiles either as that string or as a YAML list (newer
//! rosbag2), and enum values as numbers or names.

use serde::{Deserialize, Serialize};

use crate::bus::{Durability, Qos, Reliability};

/// The file's top-level key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataFile {
    /// Everything rosbag2 records about the bag.
    pub rosbag2_bagfile_information: BagMetadata,
}

/// Nanoseconds, as rosbag2 spells durations.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Nanoseconds {
    /// The span in nanoseconds.
    pub nanoseconds: u64,
}

/// A point in time, nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Since {
    /// Nanoseconds since the Unix epoch.
    pub nanoseconds_since_epoch: u64,
}

/// Topic description as stored in metadata.yaml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// ROS type name (`pkg/msg/Name`).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Always `cdr` for ROS 2.
    pub serialization_format: String,
    /// QoS of the publishers that were recorded: a YAML string (v4–8) or list (v9+).
    #[serde(default)]
    pub offered_qos_profiles: serde_yaml::Value,
    /// RIHS01 type hash (Iron and later); empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub type_description_hash: String,
}

/// A topic and how many messages it has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicWithCount {
    /// The topic.
    pub topic_metadata: TopicMetadata,
    /// Messages recorded on it.
    pub message_count: u64,
}

/// One storage file of the bag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileInfo {
    /// Path relative to the bag directory.
    pub path: String,
    /// First message's log time.
    pub starting_time: Since,
    /// Last minus first log time.
    pub duration: Nanoseconds,
    /// Messages in the file.
    pub message_count: u64,
}

/// The bag description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BagMetadata {
    /// Format version (we write 5).
    pub version: u32,
    /// `mcap` or `sqlite3`.
    pub storage_identifier: String,
    /// Storage files relative to the bag directory.
    #[serde(default)]
    pub relative_file_paths: Vec<String>,
    /// Last minus first log time.
    pub duration: Nanoseconds,
    /// First message's log time.
    pub starting_time: Since,
    /// Messages in the bag.
    pub message_count: u64,
    /// Topics with their counts.
    #[serde(default)]
    pub topics_with_message_count: Vec<TopicWithCount>,
    /// `""` or e.g. `zstd` (file-level compression; MCAP chunk compression is not listed here).
    #[serde(default)]
    pub compression_format: String,
    /// `""`, `FILE` or `MESSAGE`.
    #[serde(default)]
    pub compression_mode: String,
    /// Per-file details (v5+).
    #[serde(default)]
    pub files: Vec<FileInfo>,
    /// User key/values (v6+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_data: Option<std::collections::BTreeMap<String, String>>,
    /// ROS distribution that wrote the bag (v8+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ros_distro: Option<String>,
}

/// rmw's "infinite" duration as rosbag2 writes it.
const INFINITE_SEC: u64 = 2147483647;
const INFINITE_NSEC: u64 = 4294967295;

/// The `offered_qos_profiles` YAML (a list) for publishers with these profiles, using the
/// numeric rmw enum values Humble writes.
pub fn qos_profiles_yaml(profiles: &[Qos]) -> String {
    let mut out = String::new();
    for q in profiles {
        let reliability = match q.reliability {
            Reliability::Reliable => 1,
            Reliability::BestEffort => 2,
        };
        let durability = match q.durability {
            Durability::TransientLocal => 1,
            Durability::Volatile => 2,
        };
        out.push_str(&format!(
            "- history: 1\n  depth: {}\n  reliability: {reliability}\n  durability: {durability}\n  \
             deadline:\n    sec: {INFINITE_SEC}\n    nsec: {INFINITE_NSEC}\n  \
             lifespan:\n    sec: {INFINITE_SEC}\n    nsec: {INFINITE_NSEC}\n  \
             liveliness: 1\n  liveliness_lease_duration:\n    sec: {INFINITE_SEC}\n    nsec: {INFINITE_NSEC}\n  \
             avoid_ros_namespace_conventions: false\n",
            q.depth
        ));
    }
    if out.is_empty() {
        out.push_str("[]\n");
    }
    out
}

/// Parses `offered_qos_profiles` in any rosbag2 form into our QoS (history depth,
/// reliability, durability). Unknown or system-default values map to ROS defaults.
pub fn parse_qos_profiles(value: &serde_yaml::Value) -> Result<Vec<Qos>, String> {
    use serde_yaml::Value;
    let list = match value {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) if s.trim().is_empty() => return Ok(Vec::new()),
        Value::String(s) => {
            serde_yaml::from_str::<Value>(s).map_err(|e| format!("offered_qos_profiles: {e}"))?
        }
        v => v.clone(),
    };
    let Value::Sequence(items) = list else {
        return Err("offered_qos_profiles is not a list".into());
    };
    let name_or_number = |v: Option<&Value>| -> (Option<u64>, String) {
        match v {
            Some(Value::Number(n)) => (n.as_u64(), String::new()),
            Some(Value::String(s)) => (None, s.to_ascii_lowercase()),
            _ => (None, String::new()),
        }
    };
    let mut out = Vec::new();
    for item in &items {
        let depth = item.get("depth").and_then(Value::as_u64).unwrap_or(0) as usize;
        let reliability = match name_or_number(item.get("reliability")) {
            (Some(2), _) => Reliability::BestEffort,
            (_, s) if s == "best_effort" => Reliability::BestEffort,
            _ => Reliability::Reliable,
        };
        let durability = match name_or_number(item.get("durability")) {
            (Some(1), _) => Durability::TransientLocal,
            (_, s) if s == "transient_local" => Durability::TransientLocal,
            _ => Durability::Volatile,
        };
        out.push(Qos {
            depth: if depth == 0 { 10 } else { depth },
            reliability,
            durability,
        });
    }
    Ok(out)
}
