//! `--ros-args` for a whole graph in one process (`dreamplan run ... --ros-args ...`), as
//! a ROS 2 user passes them to `ros2 run`: `--params-file FILE`, `-p NAME:=VALUE`,
//! `-r FROM:=TO`, `-r __ns:=/NS`, and `use_sim_time`.
//!
//! rcl parses these for an r2r executable; a graph of several nodes on the DDS (or local)
//! bus has no rcl, so they are read here with ROS's meaning for a process of several
//! nodes: a params file's `/**` section and each `-p` go to every node that has the
//! parameter (a ROS node ignores overrides it never declares; here a name no node has is
//! an error, since it is most likely a typo), a node's own section (`executor:` or
//! `/executor:`) to that node; remaps rename topics for every node. `__node` (which would
//! give every node of the process the same name) is refused: name nodes in the graph.

use std::path::PathBuf;

use serde_yaml::Value;

use crate::config::{insert_dotted, ros_params, GraphConfig};

/// The parsed arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RosArgs {
    /// `--params-file FILE`, in order (later files win).
    pub params_files: Vec<PathBuf>,
    /// `-p NAME:=VALUE` (value parsed as YAML), in order, after the files.
    pub params: Vec<(String, Value)>,
    /// `-r FROM:=TO` topic remaps.
    pub remaps: Vec<(String, String)>,
    /// `-r __ns:=/NS`: the namespace of the process's ROS nodes.
    pub namespace: Option<String>,
    /// `use_sim_time` from `-p` or a params file.
    pub use_sim_time: bool,
}

impl RosArgs {
    /// Parses the arguments after `--ros-args` (a trailing `--` ends them).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("--ros-args: `{flag}` needs a value"))
            };
            match a.as_str() {
                "--" => break,
                "--params-file" => out.params_files.push(PathBuf::from(value(a)?)),
                "-p" | "--param" => {
                    let v = value(a)?;
                    let (name, text) = split_assign(&v, a)?;
                    let parsed: Value = serde_yaml::from_str(text)
                        .map_err(|e| format!("--ros-args: `{a} {v}`: the value is not YAML: {e}"))?;
                    if name == "use_sim_time" {
                        out.use_sim_time = parsed.as_bool().ok_or_else(|| {
                            format!("--ros-args: use_sim_time must be true or false, not `{text}`")
                        })?;
                    } else {
                        out.params.push((name.to_string(), parsed));
                    }
                }
                "-r" | "--remap" => {
                    let v = value(a)?;
                    let (from, to) = split_assign(&v, a)?;
                    match from {
                        "__ns" => {
                            if !to.starts_with('/') {
                                return Err(format!(
                                    "--ros-args: the namespace `{to}` must start with `/`"
                                ));
                            }
                            out.namespace = Some(to.to_string());
                        }
                        "__node" | "__name" => {
                            return Err(
                                "--ros-args: `__node` would give every node of this process one name; name the nodes in the graph config instead"
                                    .into(),
                            )
                        }
                        f if f.contains(':') => {
                            return Err(format!(
                                "--ros-args: node-specific remap `{v}` is not supported; remap for all nodes (`-r FROM:=TO`) or set the node's topics in the graph config"
                            ))
                        }
                        _ => {
                            for t in [from, to] {
                                if !t.starts_with('/') {
                                    return Err(format!(
                                        "--ros-args: remap `{v}`: use absolute topic names (`/{t}`), as the nodes' topics are"
                                    ));
                                }
                            }
                            out.remaps.push((from.to_string(), to.to_string()));
                        }
                    }
                }
                "--log-level" | "--enclave" => {
                    // Accepted for compatibility: logging is set with --log here.
                    value(a)?;
                }
                other => {
                    return Err(format!(
                        "--ros-args: `{other}` is not understood (known: --params-file FILE, -p NAME:=VALUE, -r FROM:=TO, -r __ns:=/NS)"
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Applies the parameters to `graph`'s nodes. `accepts(kind, params)` says whether a
    /// node of `kind` takes those parameters (its config deserialises). Reads the params
    /// files; `use_sim_time` in them is taken into `self`.
    pub fn apply(
        &mut self,
        graph: &mut GraphConfig,
        accepts: impl Fn(&str, &Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut overrides: Vec<(Option<String>, String, Value)> = Vec::new();
        for file in &self.params_files {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--params-file {}: {e}", file.display()))?;
            let origin = file.display().to_string();
            let ns = self.namespace.clone();
            if crate::config::ros_use_sim_time(&text, "/**")
                || graph.nodes.iter().any(|n| {
                    crate::config::ros_use_sim_time(&text, &n.name)
                        || ns.as_deref().is_some_and(|ns| {
                            crate::config::ros_use_sim_time(
                                &text,
                                &format!("{}/{}", ns.trim_end_matches('/'), n.name),
                            )
                        })
                })
            {
                self.use_sim_time = true;
            }
            // The wildcard section for every node that has the key; each node's own.
            let all = ros_params(&text, "\u{0}none", &origin).map_err(|e| e.to_string())?;
            for (k, v) in flat(&all) {
                overrides.push((None, k, v));
            }
            let ns = self.namespace.as_deref();
            for n in &graph.nodes {
                for (k, v) in own_section(&text, &n.name, ns, &origin)? {
                    overrides.push((Some(n.name.clone()), k, v));
                }
            }
            // Sections no node of this graph takes: said, and a file of which no section
            // is taken is an error (before session 52 `/lab/executor:` under `-r
            // __ns:=/lab` was ignored without a word, and the executor ran on defaults).
            let names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
            let sections = section_names(&text);
            let taken = |k: &str| {
                ["/**", "/*"].contains(&k)
                    || names
                        .iter()
                        .any(|n| section_keys(n, ns).iter().any(|s| s == k))
            };
            let unmatched: Vec<&String> = sections.iter().filter(|k| !taken(k)).collect();
            if !sections.is_empty() && unmatched.len() == sections.len() {
                return Err(format!(
                    "--params-file {}: no section is for a node of this graph ({} ; nodes: {}{}): name a section `/NODE` or `/**`",
                    file.display(),
                    unmatched.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
                    names.join(", "),
                    ns.map(|n| format!(", in namespace {n}")).unwrap_or_default()
                ));
            }
            for k in unmatched {
                tracing::warn!(
                    "--params-file {}: section `{k}` is for no node of this graph",
                    file.display()
                );
            }
        }
        for (k, v) in &self.params {
            overrides.push((None, k.clone(), v.clone()));
        }
        // Keys of one struct from one place (`camera.width`, `camera.fx`, … of a params
        // file's nested `camera:`) are applied together: a struct a node's config leaves
        // unset cannot take its fields one by one (before session 47 the first field alone
        // was refused as an incomplete struct).
        // (the node, or every node that has the keys; the keys with their values)
        type Group = (Option<String>, Vec<(String, Value)>);
        let mut groups: Vec<Group> = Vec::new();
        for (node, key, value) in overrides {
            let head = |k: &str| k.split_once('.').map(|(h, _)| h.to_string());
            match groups.last_mut() {
                Some((n, keys))
                    if *n == node && head(&key).is_some() && head(&key) == head(&keys[0].0) =>
                {
                    keys.push((key, value))
                }
                _ => groups.push((node, vec![(key, value)])),
            }
        }
        for (node, keys) in groups {
            let key = keys
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join("`, `");
            let mut taken = false;
            let mut reasons = Vec::new();
            for n in graph.nodes.iter_mut() {
                if node.as_ref().is_some_and(|name| *name != n.name) {
                    continue;
                }
                let mut params = match &n.params {
                    Value::Mapping(m) => m.clone(),
                    _ => Default::default(),
                };
                for (k, value) in &keys {
                    insert_dotted(&mut params, &Value::from(k.clone()), value.clone());
                }
                let params = Value::Mapping(params);
                match accepts(&n.kind, &params) {
                    Ok(()) => {
                        n.params = params;
                        taken = true;
                    }
                    // The node's checks name its kind; its name only when that differs.
                    Err(e) if e.starts_with(&format!("{}:", n.name)) => reasons.push(e),
                    Err(e) => reasons.push(format!("{}: {e}", n.name)),
                }
            }
            // Without a node named: the nodes that have the key but refused the value
            // (a node without the key refuses it as an unknown field).
            let refused: Vec<&String> = reasons
                .iter()
                .filter(|r| !r.contains("unknown field"))
                .collect();
            if !taken {
                return Err(match node {
                    Some(name) => format!(
                        "--ros-args: parameter `{key}` for node `{name}` is not accepted ({})",
                        reasons.join("; ")
                    ),
                    None if !refused.is_empty() => format!(
                        "--ros-args: parameter `{key}` is not accepted ({})",
                        refused
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    None => format!(
                        "--ros-args: no node of the graph has a parameter `{key}` (nodes: {})",
                        graph
                            .nodes
                            .iter()
                            .map(|n| format!("{} ({})", n.name, n.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The section names a params file may give `node`: `node`, `/node`, `/**/node`, and in a
/// namespace `ns` (`-r __ns:=/lab`) `/lab/node` too, as `ros2 param dump` writes it.
fn section_keys(node: &str, ns: Option<&str>) -> Vec<String> {
    let mut keys = vec![node.to_string(), format!("/{node}"), format!("/**/{node}")];
    if let Some(ns) = ns
        .map(|n| n.trim_end_matches('/'))
        .filter(|n| !n.is_empty())
    {
        keys.push(format!("{ns}/{node}"));
    }
    keys
}

/// The top-level sections of a params file that hold `ros__parameters`.
fn section_names(text: &str) -> Vec<String> {
    serde_yaml::from_str::<Value>(text)
        .ok()
        .as_ref()
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.get("ros__parameters").is_some())
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A node's own sections of a params file, without the wildcard, as (dotted name, value)
/// pairs in the order of [`section_keys`].
fn own_section(
    text: &str,
    node: &str,
    ns: Option<&str>,
    origin: &str,
) -> Result<Vec<(String, Value)>, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    let mut out = Vec::new();
    for key in section_keys(node, ns) {
        if let Some(s) = doc.get(key.as_str()) {
            // Read as the node's own section, whatever its spelling.
            let mut one = serde_yaml::Mapping::new();
            one.insert(Value::from(node), s.clone());
            let one = serde_yaml::to_string(&Value::Mapping(one)).map_err(|e| e.to_string())?;
            out.extend(flat(
                &ros_params(&one, node, origin).map_err(|e| e.to_string())?,
            ));
        }
    }
    Ok(out)
}

/// `name:=value`.
fn split_assign<'a>(v: &'a str, flag: &str) -> Result<(&'a str, &'a str), String> {
    v.split_once(":=")
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("--ros-args: `{flag} {v}` is not NAME:=VALUE"))
}

/// Nested YAML as (dotted name, leaf value) pairs, the way ROS names parameters.
fn flat(v: &Value) -> Vec<(String, Value)> {
    let mut out = std::collections::BTreeMap::new();
    crate::nodes::params::flatten("", v, &mut out);
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_what_ros2_run_takes() {
        let a = RosArgs::parse(&args(
            "--params-file a.yaml -p motion.lift_height_m:=0.07 --param name:=x -r /camera/image_raw:=/cam/image -r __ns:=/lab -p use_sim_time:=true -- ignored",
        ))
        .unwrap();
        assert_eq!(a.params_files, [PathBuf::from("a.yaml")]);
        assert_eq!(
            a.params,
            [
                ("motion.lift_height_m".to_string(), Value::from(0.07)),
                ("name".to_string(), Value::from("x"))
            ]
        );
        assert_eq!(
            a.remaps,
            [("/camera/image_raw".to_string(), "/cam/image".to_string())]
        );
        assert_eq!(a.namespace.as_deref(), Some("/lab"));
        assert!(a.use_sim_time);
        for (bad, says) in [
            ("-p nope", "is not NAME:=VALUE"),
            ("-p", "needs a value"),
            ("-r __node:=x", "name the nodes in the graph"),
            ("-r planner:/a:=/b", "node-specific remap"),
            ("-r a:=/b", "absolute topic names"),
            ("-r __ns:=lab", "must start with `/`"),
            ("--frobnicate", "is not understood"),
            ("-p use_sim_time:=maybe", "true or false"),
        ] {
            let e = RosArgs::parse(&args(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn params_go_to_the_nodes_that_have_them() {
        let mut graph = GraphConfig::from_yaml(
            "nodes:\n  - {name: planner, kind: planner, params: {keypoints: 8}}\n  - {name: executor, kind: executor}\n",
            "g.yaml",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(
            &file,
            "/**:\n  ros__parameters:\n    use_sim_time: true\n    table_z: 0.01\nexecutor:\n  ros__parameters:\n    motion.lift_height_m: 0.07\n",
        )
        .unwrap();
        let mut a = RosArgs::parse(&[
            "--params-file".into(),
            file.display().to_string(),
            "-p".into(),
            "keypoints:=6".into(),
        ])
        .unwrap();
        a.apply(&mut graph, crate::nodes::accepts).unwrap();
        assert!(a.use_sim_time, "use_sim_time from the wildcard section");
        let (planner, executor) = (&graph.nodes[0].params, &graph.nodes[1].params);
        assert_eq!(planner["keypoints"], Value::from(6));
        assert!(
            planner.get("table_z").is_none(),
            "the planner has no table_z"
        );
        assert_eq!(executor["table_z"], Value::from(0.01));
        assert_eq!(executor["motion"]["lift_height_m"], Value::from(0.07));
        assert!(executor.get("keypoints").is_none());
        let mut typo = RosArgs::parse(&["-p".into(), "keypionts:=6".into()]).unwrap();
        let e = typo.apply(&mut graph, crate::nodes::accepts).unwrap_err();
        assert!(
            e.contains("no node of the graph has a parameter `keypionts`"),
            "{e}"
        );
        // A node that has the key but not that value: its own reason, not "no node has it".
        let mut bad = RosArgs::parse(&["-p".into(), "keypoints:=eight".into()]).unwrap();
        let e = bad.apply(&mut graph, crate::nodes::accepts).unwrap_err();
        assert!(
            e.starts_with("--ros-args: parameter `keypoints` is not accepted (planner: "),
            "{e}"
        );
        assert!(e.contains("invalid type") && !e.contains("executor"), "{e}");
    }

    /// Sections in the spellings `ros2 param dump` and rcl use: `/lab/executor` under `-r
    /// __ns:=/lab`, `/**/executor`; a file none of whose sections is for a node of the
    /// graph is refused (before session 52 both were ignored and the node ran on its
    /// defaults).
    #[test]
    fn namespaced_and_wildcard_sections_are_read_and_a_file_for_no_node_is_refused() {
        let graph = || {
            GraphConfig::from_yaml("nodes:\n  - {name: executor, kind: executor}\n", "g.yaml")
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        let apply = |yaml: &str, ns: bool| -> Result<Value, String> {
            std::fs::write(&file, yaml).unwrap();
            let mut argv = vec!["--params-file".to_string(), file.display().to_string()];
            if ns {
                argv.extend(["-r".into(), "__ns:=/lab".into()]);
            }
            let mut g = graph();
            RosArgs::parse(&argv)?.apply(&mut g, crate::nodes::accepts)?;
            Ok(g.nodes[0].params.clone())
        };
        let p = apply(
            "/lab/executor:\n  ros__parameters:\n    table_z: 0.05\n",
            true,
        )
        .unwrap();
        assert_eq!(p["table_z"], Value::from(0.05));
        // `use_sim_time` from such a section too (what `ros2 param dump` always writes).
        std::fs::write(
            &file,
            "/lab/executor:\n  ros__parameters:\n    use_sim_time: true\n    table_z: 0.05\n",
        )
        .unwrap();
        let mut a = RosArgs::parse(&[
            "--params-file".to_string(),
            file.display().to_string(),
            "-r".into(),
            "__ns:=/lab".into(),
        ])
        .unwrap();
        a.apply(&mut graph(), crate::nodes::accepts).unwrap();
        assert!(a.use_sim_time);
        let p = apply(
            "/**/executor:\n  ros__parameters:\n    table_z: 0.06\n",
            false,
        )
        .unwrap();
        assert_eq!(p["table_z"], Value::from(0.06));
        let p = apply("/*:\n  ros__parameters:\n    table_z: 0.07\n", false).unwrap();
        assert_eq!(p["table_z"], Value::from(0.07));
        let e = apply(
            "/lab/executor:\n  ros__parameters:\n    table_z: 0.05\n",
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("no section is for a node of this graph (/lab/executor ; nodes: executor)"),
            "{e}"
        );
    }

    /// A struct the node's config leaves unset (the sim's `camera`) is taken whole from a
    /// params file's nested section; one field of it alone is refused naming the key.
    #[test]
    fn a_struct_left_unset_is_taken_whole_from_a_params_file() {
        let mut graph = GraphConfig::from_yaml(
            "nodes:\n  - {name: sim, kind: sim, params: {width: 64, height: 64}}\n",
            "g.yaml",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(
            &file,
            "sim:\n  ros__parameters:\n    camera: {width: 640, height: 480, fx: 628.0, fy: 628.0, cx: 319.5, cy: 239.5, \
             base_from_camera_xyz: [1.0, 0.0, 0.8], base_from_camera_xyzw: [-0.6797, -0.6797, 0.1949, 0.1949]}\n    episodes: 2\n",
        )
        .unwrap();
        let mut a = RosArgs::parse(&["--params-file".into(), file.display().to_string()]).unwrap();
        a.apply(&mut graph, crate::nodes::accepts).unwrap();
        let sim = &graph.nodes[0].params;
        assert_eq!(sim["camera"]["fx"], Value::from(628.0));
        assert_eq!(sim["camera"]["width"], Value::from(640));
        assert_eq!(sim["episodes"], Value::from(2));
        let mut half = RosArgs::parse(&["-p".into(), "camera.fx:=600.0".into()]).unwrap();
        let mut fresh =
            GraphConfig::from_yaml("nodes:\n  - {name: sim, kind: sim}\n", "g.yaml").unwrap();
        let e = half.apply(&mut fresh, crate::nodes::accepts).unwrap_err();
        assert!(
            e.contains("parameter `camera.fx` is not accepted (sim: ")
                && e.contains("missing field `width`"),
            "{e}"
        );
    }
}
