//! YAML configuration: one config type per node, and the node graph `dreamplan run` starts.
//!
//! Parse, don't validate: a file becomes typed configs once, here. Unknown or misspelled
//! keys are errors that name the file, the node and the key (every config struct denies
//! unknown fields). The same per-node config is read from a ROS 2 params file
//! (`<node>: ros__parameters: ...`) by the node executables.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The built-in default graph (`config/default.yaml`), used when no `--config` is given.
pub const DEFAULT_GRAPH_YAML: &str = include_str!("../config/default.yaml");

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the expected structure.
    #[error("{origin}: {message}")]
    Invalid {
        /// File (and node) the problem is in.
        origin: String,
        /// What serde_yaml reported: the key and what was expected.
        message: String,
    },
}

fn invalid(origin: &str, err: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        message: err.to_string(),
    }
}

/// One node of a graph: a name, a kind (which node type) and its parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Instance name (unique in the graph), used in logs.
    pub name: String,
    /// Node type, e.g. `camera` or `monitor`.
    pub kind: String,
    /// Parameters, checked against the kind's config type when the graph starts.
    #[serde(default)]
    pub params: serde_yaml::Value,
    /// Set to false to keep a node in the file but not start it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// A node graph for `dreamplan run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Stop after this many seconds (0 or absent: run until Ctrl-C).
    #[serde(default)]
    pub duration_s: f64,
    /// The nodes to start.
    pub nodes: Vec<NodeSpec>,
    /// Where this config came from (for error messages); set by the loader.
    #[serde(skip)]
    pub origin: String,
}

impl GraphConfig {
    /// Parses a graph from YAML text; `origin` names the source in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut g: GraphConfig = serde_yaml::from_str(text).map_err(|e| invalid(origin, e))?;
        g.origin = origin.to_string();
        let mut seen = std::collections::BTreeSet::new();
        for n in &g.nodes {
            if !seen.insert(n.name.as_str()) {
                return Err(invalid(
                    origin,
                    format!("node name `{}` is used twice", n.name),
                ));
            }
        }
        if !(g.duration_s.is_finite() && g.duration_s >= 0.0) {
            return Err(invalid(origin, "duration_s must be a finite number ≥ 0"));
        }
        Ok(g)
    }

    /// Reads a graph file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// The built-in default graph.
    pub fn builtin() -> Self {
        Self::from_yaml(DEFAULT_GRAPH_YAML, "built-in config/default.yaml")
            .expect("the embedded default graph is valid (checked by tests)")
    }
}

/// Turns a node's parameter mapping into its typed config; a null/absent mapping gives
/// the defaults. Errors name `origin` and the offending key.
pub fn node_config<C: DeserializeOwned>(
    params: &serde_yaml::Value,
    origin: &str,
) -> Result<C, ConfigError> {
    let value = match params {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        v => v.clone(),
    };
    // serde_yaml names no key for a value it did not take from text; the path says where.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            invalid(origin, inner)
        } else {
            invalid(origin, format!("`{path}`: {inner}"))
        }
    })
}

/// Extracts `node`'s parameters from a ROS 2 params file: the wildcard sections (`/**`,
/// and `/*`, which rcl matches to a node of the root namespace) merged with the node's own
/// (`node`, `/node`, or `/**/node`), each under `ros__parameters`.
/// Dotted keys (`a.b: 1`, as `ros2 param dump` writes nested parameters) become nested
/// mappings.
pub fn ros_params(text: &str, node: &str, origin: &str) -> Result<serde_yaml::Value, ConfigError> {
    use serde_yaml::{Mapping, Value};
    let doc: Value = serde_yaml::from_str(text).map_err(|e| invalid(origin, e))?;
    let Value::Mapping(top) = doc else {
        return Err(invalid(
            origin,
            "a ROS 2 params file is a mapping of node names",
        ));
    };
    let mut merged = Mapping::new();
    let wanted = [
        "/**".to_string(),
        "/*".to_string(),
        node.to_string(),
        format!("/{node}"),
        format!("/**/{node}"),
    ];
    for key in &wanted {
        let Some(section) = top.get(key.as_str()) else {
            continue;
        };
        let params = section
            .get("ros__parameters")
            .ok_or_else(|| invalid(origin, format!("section `{key}` has no `ros__parameters`")))?;
        let Value::Mapping(params) = params else {
            return Err(invalid(
                origin,
                format!("`{key}.ros__parameters` is not a mapping"),
            ));
        };
        for (k, v) in params {
            // Standard ROS parameters that every node accepts and configs do not model.
            if k.as_str() == Some("use_sim_time") {
                continue;
            }
            insert_dotted(&mut merged, k, v.clone());
        }
    }
    Ok(Value::Mapping(merged))
}

/// One node's config from a file: a ROS 2 params file (the `node` section merged with
/// `/**`, dotted keys nested, as [`ros_params`] reads it for the node executables) or the
/// node's parameters as plain YAML. A params file with no section for `node` is an error
/// naming the sections it has: read as the defaults, it would pass without a word (a
/// hand-eye check of the built-in camera's pose instead of the cell's).
pub fn node_config_file<C: DeserializeOwned>(path: &Path, node: &str) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| invalid(&origin, e))?;
    let sections: Vec<&str> = doc
        .as_mapping()
        .filter(|m| m.values().any(|v| v.get("ros__parameters").is_some()))
        .map(|m| m.keys().filter_map(|k| k.as_str()).collect())
        .unwrap_or_default();
    if sections.is_empty() {
        return node_config(&doc, &origin);
    }
    if !sections.iter().any(|k| {
        *k == node
            || *k == format!("/{node}")
            || *k == format!("/**/{node}")
            || *k == "/**"
            || *k == "/*"
    }) {
        return Err(invalid(
            &origin,
            format!(
                "no section for the node `{node}` (it has {})",
                sections.join(", ")
            ),
        ));
    }
    node_config(&ros_params(&text, node, &origin)?, &origin)
}

/// Turns dotted keys (`a.b: 1`, how ROS 2 names nested parameters) into nested mappings.
pub fn nest_dotted(flat: serde_yaml::Mapping) -> serde_yaml::Value {
    let mut nested = serde_yaml::Mapping::new();
    for (k, v) in flat {
        insert_dotted(&mut nested, &k, v);
    }
    serde_yaml::Value::Mapping(nested)
}

/// Inserts `value` at `key`, a dotted key (`a.b`) going into nested mappings.
pub(crate) fn insert_dotted(
    map: &mut serde_yaml::Mapping,
    key: &serde_yaml::Value,
    value: serde_yaml::Value,
) {
    use serde_yaml::{Mapping, Value};
    match key.as_str().and_then(|k| k.split_once('.')) {
        Some((head, rest)) => {
            let child = map
                .entry(Value::String(head.to_string()))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !child.is_mapping() {
                *child = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(m) = child {
                insert_dotted(m, &Value::String(rest.to_string()), value);
            }
        }
        None => {
            map.insert(key.clone(), value);
        }
    }
}

/// Whether a ROS 2 params file asks for `use_sim_time: true` for `node`.
pub fn ros_use_sim_time(text: &str, node: &str) -> bool {
    let Ok(serde_yaml::Value::Mapping(top)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return false;
    };
    // The same sections as [`ros_params`] reads.
    [
        "/**".to_string(),
        "/*".to_string(),
        node.to_string(),
        format!("/{node}"),
        format!("/**/{node}"),
    ]
    .iter()
    .any(|k| {
        top.get(k.as_str())
            .and_then(|s| s.get("ros__parameters"))
            .and_then(|p| p.get("use_sim_time"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    })
}
