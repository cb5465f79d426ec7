//! ROS 2 XML launch files read without ROS: the dreamplan nodes a launch file starts, with
//! their parameters, as a [`GraphConfig`] that `dreamplan run --launch` runs in one
//! process and the tests check (every executable a node kind, every parameter declared,
//! every topic connected).
//!
//! Why our own reader: no crate reads ROS launch files outside ROS. The XML is parsed by
//! `quick-xml`; of the launch language, only what dreamplan's launch files use is
//! evaluated, and anything else is an error that names it, never a guess:
//! - `<arg name default description>`; `<node pkg exec name if unless output>` (another
//!   attribute of a dreamplan node, such as `namespace` or `ros_args`, is an error) with
//!   `<param from="FILE"/>` (a ROS 2 params file, read as the node does) and
//!   `<param name value/>` (typed as ROS types launch parameter strings: `true`/`false`
//!   in any case, integers, floats, else text);
//! - `<include>`, `<executable>` and other packages' `<node>`s are listed as external:
//!   they start processes that are not dreamplan nodes (Gazebo, bridges, `ros2 bag`);
//! - substitutions `$(var NAME)`, `$(find-pkg-share dreamplan)`, `$(env NAME [DEFAULT])`
//!   and `$(eval '…')` restricted to one comparison of two quoted strings (`==`, `!=`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};

use crate::config::{insert_dotted, ros_params, GraphConfig, NodeSpec};

/// A launch argument.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchArg {
    /// Its name (`name:=value` on the command line).
    pub name: String,
    /// Its default; an argument without one must be given.
    pub default: Option<String>,
    /// What it sets.
    pub description: String,
}

/// A parameter source of a launched node, in file order (later ones win).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSource {
    /// `<param from="FILE"/>`: a ROS 2 params file.
    File(String),
    /// `<param name="N" value="V"/>`.
    Value(String, String),
}

/// A `<node>` of a launch file, substitutions not yet evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchNode {
    /// Package.
    pub pkg: String,
    /// Executable.
    pub exec: String,
    /// Node name (`name=`); the executable's name when absent.
    pub name: String,
    /// `if=` condition.
    pub if_: Option<String>,
    /// `unless=` condition.
    pub unless: Option<String>,
    /// Command-line arguments (`args=`), as written; only other packages' nodes take them.
    pub args: Option<String>,
    /// Parameters.
    pub params: Vec<ParamSource>,
}

/// Something a launch file starts that is not a dreamplan node.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// What it is, e.g. `include $(find-pkg-share ros_gz_sim)/launch/gz_sim.launch.py`.
    pub what: String,
    /// `if=` condition.
    pub if_: Option<String>,
    /// `unless=` condition.
    pub unless: Option<String>,
}

/// A parsed launch file.
#[derive(Debug, Clone)]
pub struct LaunchFile {
    /// Where it was read from (for errors).
    pub path: PathBuf,
    /// Its arguments, in order.
    pub args: Vec<LaunchArg>,
    /// Its nodes, in order.
    pub nodes: Vec<LaunchNode>,
    /// What it starts besides nodes of this package.
    pub externals: Vec<External>,
}

/// A launch file with its arguments applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The dreamplan nodes it starts, as a graph for `dreamplan run`.
    pub graph: GraphConfig,
    /// The external processes it would start (not run in process), substitutions applied.
    pub externals: Vec<String>,
    /// The argument values used.
    pub args: BTreeMap<String, String>,
    /// Whether a started node is given `use_sim_time: true` (a `<param>` or its params
    /// file): the graph's clock should follow `/clock`. Before session 52 it was dropped,
    /// and `gazebo.launch.xml` or `bag_replay.launch.xml` ran on wall time over DDS.
    pub use_sim_time: bool,
}

/// Why a launch file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LaunchError {
    /// The launch file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

const PKG: &str = "dreamplan";

fn attrs(e: &BytesStart<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        out.insert(key, value);
    }
    Ok(out)
}

impl LaunchFile {
    /// Reads and parses a launch file.
    pub fn load(path: &Path) -> Result<Self, LaunchError> {
        let text = std::fs::read_to_string(path).map_err(|e| LaunchError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses launch XML; `path` names it in errors and nothing is read from it.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LaunchError> {
        let fail = |message: String| LaunchError {
            path: path.display().to_string(),
            message,
        };
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut out = Self {
            path: path.to_path_buf(),
            args: Vec::new(),
            nodes: Vec::new(),
            externals: Vec::new(),
        };
        // Open elements, innermost last; the node being read, if any.
        let mut stack: Vec<String> = Vec::new();
        let mut node: Option<LaunchNode> = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| fail(format!("XML at byte {}: {e}", reader.buffer_position())))?;
            let (e, empty) = match &event {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    let tag = stack.pop().unwrap_or_default();
                    if tag == "node" {
                        out.push_node(node.take());
                    }
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            let a = attrs(e).map_err(&fail)?;
            let get = |k: &str| -> Result<String, LaunchError> {
                a.get(k)
                    .cloned()
                    .ok_or_else(|| fail(format!("<{tag}> without `{k}`")))
            };
            let parent = stack.last().map(String::as_str);
            match (parent, tag.as_str()) {
                (None, "launch") => {}
                (Some("launch"), "arg") => out.args.push(LaunchArg {
                    name: get("name")?,
                    default: a.get("default").cloned(),
                    description: a.get("description").cloned().unwrap_or_default(),
                }),
                (Some("launch"), "node") => {
                    let exec = get("exec")?;
                    // A dreamplan node takes its settings from its <param>s: an attribute
                    // this reader would drop (`namespace`, `ros_args`, `respawn`, …) is an
                    // error, not ignored (before session 52 a `ros_args="-p …"` was).
                    if a.get("pkg").map(String::as_str) == Some(PKG) {
                        const TAKEN: [&str; 6] = ["pkg", "exec", "name", "if", "unless", "output"];
                        if let Some(k) = a.keys().find(|k| !TAKEN.contains(&k.as_str())) {
                            return Err(fail(format!(
                                "<node exec=\"{exec}\">: attribute `{k}` is not supported here (set the node's parameters with <param>; a namespace with `dreamplan run --ros-args -r __ns:=/NS`)"
                            )));
                        }
                    }
                    node = Some(LaunchNode {
                        pkg: get("pkg")?,
                        name: a.get("name").cloned().unwrap_or_else(|| exec.clone()),
                        exec,
                        if_: a.get("if").cloned(),
                        unless: a.get("unless").cloned(),
                        args: a.get("args").cloned(),
                        params: Vec::new(),
                    });
                    if empty {
                        out.push_node(node.take());
                    }
                }
                (Some("node"), "param") => {
                    let p = match (a.get("from"), a.get("name"), a.get("value")) {
                        (Some(f), None, None) => ParamSource::File(f.clone()),
                        (None, Some(n), Some(v)) => ParamSource::Value(n.clone(), v.clone()),
                        _ => {
                            return Err(fail(
                                "<param> needs either `from` or both `name` and `value`".into(),
                            ))
                        }
                    };
                    if let Some(n) = node.as_mut() {
                        n.params.push(p);
                    }
                }
                (Some("launch"), "include" | "executable") => {
                    let what = match tag.as_str() {
                        "include" => format!("include {}", get("file")?),
                        _ => format!("executable {}", get("cmd")?),
                    };
                    out.externals.push(External {
                        what,
                        if_: a.get("if").cloned(),
                        unless: a.get("unless").cloned(),
                    });
                }
                // What an include, an executable or another package's node carries.
                (Some("include" | "executable"), "arg" | "env") => {}
                (Some("node"), "remap") => {
                    return Err(fail(
                        "<remap> is not supported: set the node's topic parameters instead (every dreamplan node names its topics in its parameters)"
                            .into(),
                    ))
                }
                (p, t) => {
                    return Err(fail(format!(
                        "<{t}> inside <{}> is not supported here",
                        p.unwrap_or("(top)")
                    )))
                }
            }
            if !empty {
                stack.push(tag);
            }
        }
        if out.nodes.is_empty() && out.externals.is_empty() {
            return Err(fail(
                "starts nothing (no <node>, <include> or <executable>)".into(),
            ));
        }
        Ok(out)
    }

    fn push_node(&mut self, node: Option<LaunchNode>) {
        let Some(n) = node else { return };
        if n.pkg == PKG {
            self.nodes.push(n);
        } else {
            let args = n.args.map(|a| format!(" {a}")).unwrap_or_default();
            self.externals.push(External {
                what: format!("node {}/{}{args}", n.pkg, n.exec),
                if_: n.if_,
                unless: n.unless,
            });
        }
    }

    /// Applies `overrides` (`name → value`, as `name:=value` on the command line) to the
    /// arguments and evaluates every substitution; `share` stands for
    /// `$(find-pkg-share dreamplan)` (the installed share folder, or the source tree).
    /// Unknown arguments and arguments without a value are errors, as in `ros2 launch`.
    pub fn resolve(
        &self,
        overrides: &BTreeMap<String, String>,
        share: &Path,
    ) -> Result<Resolved, LaunchError> {
        let fail = |message: String| LaunchError {
            path: self.path.display().to_string(),
            message,
        };
        let declared: Vec<&str> = self.args.iter().map(|a| a.name.as_str()).collect();
        if let Some(unknown) = overrides.keys().find(|k| !declared.contains(&k.as_str())) {
            return Err(fail(format!(
                "no launch argument `{unknown}` (it has: {})",
                declared.join(", ")
            )));
        }
        let mut args = BTreeMap::new();
        for a in &self.args {
            let raw = match (overrides.get(&a.name), &a.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => {
                    return Err(fail(format!(
                        "launch argument `{}` has no default: give {}:=VALUE",
                        a.name, a.name
                    )))
                }
            };
            // A default may refer to arguments declared before it.
            let value = substitute(&raw, &args, share).map_err(&fail)?;
            args.insert(a.name.clone(), value);
        }
        let sub = |s: &str| substitute(s, &args, share).map_err(&fail);
        let active = |if_: &Option<String>, unless: &Option<String>| -> Result<bool, LaunchError> {
            let truth = |c: &Option<String>| -> Result<Option<bool>, LaunchError> {
                c.as_deref()
                    .map(|c| sub(c).and_then(|v| parse_bool(&v).map_err(&fail)))
                    .transpose()
            };
            Ok(truth(if_)?.unwrap_or(true) && !truth(unless)?.unwrap_or(false))
        };
        let mut nodes = Vec::new();
        let mut use_sim_time = false;
        for n in &self.nodes {
            if !active(&n.if_, &n.unless)? {
                continue;
            }
            let name = sub(&n.name)?;
            let mut params = serde_yaml::Mapping::new();
            for p in &n.params {
                match p {
                    ParamSource::File(f) => {
                        let file = PathBuf::from(sub(f)?);
                        let text = std::fs::read_to_string(&file)
                            .map_err(|e| fail(format!("{}: {e}", file.display())))?;
                        let origin = file.display().to_string();
                        use_sim_time |= crate::config::ros_use_sim_time(&text, &name);
                        let v =
                            ros_params(&text, &name, &origin).map_err(|e| fail(e.to_string()))?;
                        if let serde_yaml::Value::Mapping(m) = v {
                            for (k, v) in m {
                                merge(&mut params, k, v);
                            }
                        }
                    }
                    ParamSource::Value(k, v) => {
                        let (k, v) = (sub(k)?, sub(v)?);
                        // Standard ROS parameter every node takes; the in-process graph
                        // has one clock for all.
                        if k == "use_sim_time" {
                            use_sim_time |= typed(&v) == serde_yaml::Value::Bool(true);
                            continue;
                        }
                        insert_dotted(&mut params, &serde_yaml::Value::String(k), typed(&v));
                    }
                }
            }
            nodes.push(NodeSpec {
                name,
                kind: sub(&n.exec)?,
                params: serde_yaml::Value::Mapping(params),
                enabled: true,
            });
        }
        let mut externals = Vec::new();
        for x in &self.externals {
            if active(&x.if_, &x.unless)? {
                externals.push(sub(&x.what)?);
            }
        }
        Ok(Resolved {
            graph: GraphConfig {
                duration_s: 0.0,
                nodes,
                origin: self.path.display().to_string(),
            },
            externals,
            args,
            use_sim_time,
        })
    }
}

/// Deep merge: mappings merge key by key, anything else replaces.
fn merge(into: &mut serde_yaml::Mapping, key: serde_yaml::Value, value: serde_yaml::Value) {
    match (into.get_mut(&key), value) {
        (Some(serde_yaml::Value::Mapping(old)), serde_yaml::Value::Mapping(new)) => {
            for (k, v) in new {
                merge(old, k, v);
            }
        }
        (_, v) => {
            into.insert(key, v);
        }
    }
}

/// A launch condition's value: `true`/`false` in any case, or `1`/`0`.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("condition `{v}` is neither true nor false")),
    }
}

/// A launch parameter string typed as ROS 2 launch types it: booleans (any case),
/// integers, floats, else the text itself (empty included).
pub fn typed(v: &str) -> serde_yaml::Value {
    use serde_yaml::Value;
    match v.to_ascii_lowercase().as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() {
            return Value::Number(f.into());
        }
    }
    Value::String(v.to_string())
}

/// Evaluates every `$(…)` in `s`, innermost first.
fn substitute(s: &str, args: &BTreeMap<String, String>, share: &Path) -> Result<String, String> {
    let mut s = s.to_string();
    for _ in 0..64 {
        // The last `$(` opens an innermost substitution; it ends at the next `)`.
        let Some(start) = s.rfind("$(") else {
            return Ok(s);
        };
        let end = s[start..]
            .find(')')
            .map(|e| start + e)
            .ok_or_else(|| format!("unclosed substitution in `{s}`"))?;
        let body = &s[start + 2..end];
        let (verb, rest) = body.split_once(' ').unwrap_or((body, ""));
        let rest = rest.trim();
        let value = match verb {
            "var" => args
                .get(rest)
                .cloned()
                .ok_or_else(|| format!("$(var {rest}): no such launch argument"))?,
            "find-pkg-share" if rest == PKG => share.display().to_string(),
            "find-pkg-share" => {
                // Another package's share: left for ROS (only externals use it).
                format!("<share of {rest}>")
            }
            "env" => {
                let (name, default) = rest.split_once(' ').unwrap_or((rest, ""));
                match std::env::var(name) {
                    Ok(v) => v,
                    Err(_) if rest.contains(' ') => default.trim().to_string(),
                    Err(_) => return Err(format!("$(env {name}): not set and no default")),
                }
            }
            "eval" => eval(rest)?,
            _ => return Err(format!("substitution `$({body})` is not supported here")),
        };
        s.replace_range(start..=end, &value);
    }
    Err(format!("too many nested substitutions in `{s}`"))
}

/// `$(eval '…')` limited to `'a' == 'b'` or `'a' != 'b'`; `True`/`False` as Python prints.
fn eval(expr: &str) -> Result<String, String> {
    let unsupported =
        || format!("$(eval {expr}): only a comparison of two quoted strings is supported");
    let inner = expr
        .strip_prefix('\'')
        .and_then(|e| e.strip_suffix('\''))
        .ok_or_else(unsupported)?
        .replace("\\'", "'");
    let quoted = |t: &str| -> Option<String> {
        let t = t.trim();
        t.strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .filter(|t| !t.contains('\''))
            .map(str::to_string)
    };
    for (op, equal) in [("==", true), ("!=", false)] {
        if let Some((a, b)) = inner.split_once(op) {
            let (a, b) = (
                quoted(a).ok_or_else(unsupported)?,
                quoted(b).ok_or_else(unsupported)?,
            );
            return Ok(if (a == b) == equal { "True" } else { "False" }.into());
        }
    }
    Err(unsupported())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutions_nest_and_eval_compares_quoted_strings() {
        let a = args(&[("wm", ""), ("task", "cloth")]);
        let share = Path::new("/share/dreamplan");
        let s = |x: &str| substitute(x, &a, share);
        assert_eq!(s("$(var task)").unwrap(), "cloth");
        assert_eq!(
            s("$(find-pkg-share dreamplan)/config/ros/sim.yaml").unwrap(),
            "/share/dreamplan/config/ros/sim.yaml"
        );
        assert_eq!(s(r"$(eval '\'$(var wm)\' != \'\'')").unwrap(), "False");
        assert_eq!(
            s(r"$(eval '\'$(var task)\' == \'cloth\'')").unwrap(),
            "True"
        );
        assert!(s("$(var nope)")
            .unwrap_err()
            .contains("no such launch argument"));
        assert!(s("$(eval '1 + 1')")
            .unwrap_err()
            .contains("only a comparison"));
        assert!(s("$(command ls)").unwrap_err().contains("not supported"));
        assert!(s("$(var task").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn parameter_strings_are_typed_as_ros_launch_types_them() {
        use serde_yaml::Value;
        assert_eq!(typed("True"), Value::Bool(true));
        assert_eq!(typed("false"), Value::Bool(false));
        assert_eq!(typed("3"), Value::Number(3.into()));
        assert_eq!(typed("0.5"), Value::Number(0.5.into()));
        assert_eq!(typed(""), Value::String(String::new()));
        assert_eq!(typed("/dev/video0"), Value::String("/dev/video0".into()));
        assert_eq!(typed("nan"), Value::String("nan".into()));
    }
}
