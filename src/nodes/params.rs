//! A running node's parameters in the ROS 2 model: flat dotted names (`motion.lift_height_m`)
//! with typed values, listed, read and set while the node runs.
//!
//! A node's parameters are its YAML config; this store holds that config flattened the
//! way ROS params files are (nested keys joined by `.`), answers the parameter services a
//! bus serves for the node ([`crate::bus::Bus::serve_parameters`]), and tells the node
//! when a value changed. A set is refused, with the reason, when the name is not a
//! parameter of the node, when the node reads it only at start ([`crate::nodes::Node::LIVE`]
//! names those it applies while running), or when the config it would give does not
//! validate (the node's own checks). Written here rather than taken from a ROS client
//! library because it must work on every bus, the in-process one included, and speak the
//! node's own config types.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_yaml::{Mapping, Value};

use super::Node;

/// Checks a whole (nested) config; `Err` says why it is not acceptable.
type Check = Box<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// One node's parameters while it runs.
pub struct LiveParams {
    node: String,
    values: Mutex<BTreeMap<String, Value>>,
    /// Parameters of the node that are not its config (the bus's `use_sim_time`): listed
    /// and read like the others, never set, never part of the config.
    read_only: Mutex<BTreeMap<String, Value>>,
    live: &'static [&'static str],
    check: Check,
    changed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for LiveParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveParams")
            .field("node", &self.node)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl LiveParams {
    /// A node with no parameters to serve (tests, nodes built by hand).
    pub fn fixed() -> Arc<Self> {
        Self::new(
            "",
            &Value::Mapping(Mapping::new()),
            &[],
            Box::new(|_| Ok(())),
        )
    }

    /// The parameters of `node`: `declared` (its config as YAML, defaults filled in),
    /// `live` (names, or prefixes ending in `.`, that may change while it runs) and the
    /// check a changed config must pass.
    pub fn new(
        node: &str,
        declared: &Value,
        live: &'static [&'static str],
        check: Check,
    ) -> Arc<Self> {
        let mut values = BTreeMap::new();
        flatten("", declared, &mut values);
        Arc::new(Self {
            node: node.to_string(),
            values: Mutex::new(values),
            read_only: Mutex::new(BTreeMap::new()),
            live,
            check,
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_only(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.read_only.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a parameter that is not part of the node's config (a name the config has
    /// already keeps the config's): listed and read, refused when set.
    pub fn declare_read_only(&self, name: &str, value: Value) {
        if !self.lock().contains_key(name) {
            self.read_only().insert(name.to_string(), value);
        }
    }

    /// Every parameter name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.extend(self.read_only().keys().cloned());
        names.sort();
        names
    }

    /// A parameter's value (`None`: no such parameter).
    pub fn get(&self, name: &str) -> Option<Value> {
        let value = self.lock().get(name).cloned();
        value.or_else(|| self.read_only().get(name).cloned())
    }

    /// Whether the node applies `name` while it runs.
    pub fn is_live(&self, name: &str) -> bool {
        self.live
            .iter()
            .any(|l| name == *l || (l.ends_with('.') && name.starts_with(l)))
    }

    /// Sets one parameter. The value must have the parameter's type (an integer is taken
    /// for a float); the node must apply the name while running; the resulting config
    /// must pass the node's check. Nothing changes when it fails.
    pub fn set(&self, name: &str, value: Value) -> Result<(), String> {
        self.set_all(vec![(name.to_string(), value)])
    }

    /// Sets several parameters at once, all or none (ROS's `set_parameters_atomically`):
    /// each must pass [`LiveParams::set`]'s checks, and the config with all of them must
    /// pass the node's check, which sees no intermediate state. The node is told once.
    /// The error names the first parameter refused, or the whole set.
    pub fn set_all(&self, changes: Vec<(String, Value)>) -> Result<(), String> {
        let mut values = self.lock();
        let mut next = values.clone();
        for (name, value) in changes.iter().cloned() {
            if self.read_only().contains_key(&name) {
                return Err(format!(
                    "`{name}` is read when node `{}` starts (a ROS argument: -p {name}:=… or a params file)",
                    self.node
                ));
            }
            let Some(old) = values.get(&name) else {
                return Err(format!("node `{}` has no parameter `{name}`", self.node));
            };
            let value = same_type(old, value)
                .ok_or_else(|| format!("`{name}` is {}, not that type", kind(old)))?;
            if !self.is_live(&name) {
                return Err(format!(
                    "`{name}` is read when node `{}` starts; change it in its config and restart it (live: {})",
                    self.node,
                    if self.live.is_empty() { "none".to_string() } else { self.live.join(", ") }
                ));
            }
            next.insert(name, value);
        }
        let what = match changes.as_slice() {
            [(name, _)] => format!("`{name}`"),
            _ => format!(
                "the set of {}",
                changes
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        (self.check)(&nest(&next)).map_err(|e| format!("{what} refused: {e}"))?;
        *values = next;
        drop(values);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The whole config as nested YAML, current values.
    pub fn config_value(&self) -> Value {
        nest(&self.lock())
    }

    /// The current config as the node's type.
    pub fn config<C: serde::de::DeserializeOwned>(&self) -> Result<C, String> {
        serde_yaml::from_value(self.config_value()).map_err(|e| e.to_string())
    }

    /// A receiver that sees each successful set (its value counts them).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The config as the node's type when a set happened since `seen` last looked, else
    /// `None`: what a live node calls before its next action or decision. A config that
    /// does not read back (it passed the node's check, so this is a bug) is logged and
    /// skipped, the node keeping its old values.
    pub fn changed<C: serde::de::DeserializeOwned>(
        &self,
        seen: &mut tokio::sync::watch::Receiver<u64>,
    ) -> Option<C> {
        if !seen.has_changed().unwrap_or(false) {
            return None;
        }
        seen.mark_unchanged();
        match self.config() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(node = %self.node, "parameters changed but do not read back ({e}); keeping the old ones");
                None
            }
        }
    }

    /// The parameters of a node of type `N` named `name`: its declared config (or `given`,
    /// the keys its graph config gave, when it declares none), its live names, and its own
    /// check ([`Node::validate`]) on every set.
    pub fn for_node<N: Node>(name: &str, config: &N::Config, given: &Value) -> Arc<Self> {
        let declared = N::declared(config).unwrap_or_else(|| given.clone());
        Self::new(
            name,
            &declared,
            N::LIVE,
            Box::new(|v| {
                let c: N::Config = serde_yaml::from_value(v.clone()).map_err(|e| e.to_string())?;
                N::validate(&c).map_err(|e| format!("{e:#}"))
            }),
        )
    }
}

/// `value` converted to `old`'s type, or `None` when it cannot be.
fn same_type(old: &Value, value: Value) -> Option<Value> {
    match (old, &value) {
        (Value::Bool(_), Value::Bool(_)) | (Value::String(_), Value::String(_)) => Some(value),
        (Value::Number(o), Value::Number(n)) => {
            if o.is_f64() {
                n.as_f64().map(Value::from)
            } else {
                n.as_i64().map(Value::from)
            }
        }
        (Value::Sequence(o), Value::Sequence(n)) => {
            // Arrays keep their element type; an empty default takes any scalars.
            match o.first() {
                Some(first) => n
                    .iter()
                    .map(|v| same_type(first, v.clone()))
                    .collect::<Option<Vec<_>>>()
                    .map(Value::Sequence),
                None => Some(value),
            }
        }
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a bool",
        Value::Number(n) if n.is_f64() => "a double",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Sequence(_) => "an array",
        _ => "another type",
    }
}

/// ROS params-file flattening: nested mappings join their keys with `.`; unset values
/// (`~`) are not parameters; sequences are array parameters.
pub(crate) fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, v, out);
            }
        }
        Value::Null => {}
        Value::Tagged(t) => flatten(prefix, &t.value, out),
        other if !prefix.is_empty() => {
            out.insert(prefix.to_string(), other.clone());
        }
        _ => {}
    }
}

/// The inverse of [`flatten`] (dotted names into nested mappings).
fn nest(values: &BTreeMap<String, Value>) -> Value {
    let mut root = Mapping::new();
    for (name, v) in values {
        crate::config::insert_dotted(&mut root, &Value::from(name.as_str()), v.clone());
    }
    Value::Mapping(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<LiveParams> {
        let declared: Value = serde_yaml::from_str(
            "{width: 96, motion: {speed: 0.25, steps: 3}, name: a, flags: [true], unset: ~}",
        )
        .unwrap();
        LiveParams::new(
            "exec",
            &declared,
            &["motion."],
            Box::new(|v| match v["motion"]["speed"].as_f64() {
                Some(s) if s > 0.0 => Ok(()),
                _ => Err("motion.speed must be > 0".into()),
            }),
        )
    }

    #[test]
    fn flattens_like_a_ros_params_file_and_nests_back() {
        let p = store();
        assert_eq!(
            p.names(),
            ["flags", "motion.speed", "motion.steps", "name", "width"]
        );
        assert_eq!(p.get("motion.speed"), Some(Value::from(0.25)));
        assert_eq!(p.config_value()["motion"]["steps"], Value::from(3));
    }

    #[test]
    fn sets_live_values_and_refuses_the_rest_with_reasons() {
        let p = store();
        let mut seen = p.watch();
        p.set("motion.speed", Value::from(0.1)).unwrap();
        assert!(seen.has_changed().unwrap());
        seen.mark_unchanged();
        assert_eq!(p.config_value()["motion"]["speed"], Value::from(0.1));
        // An integer for a double is taken as a double.
        p.set("motion.speed", Value::from(1)).unwrap();
        assert_eq!(p.get("motion.speed"), Some(Value::from(1.0)));
        seen.mark_unchanged();
        let e = p.set("nope", Value::from(1)).unwrap_err();
        assert!(e.contains("no parameter `nope`"), "{e}");
        let e = p.set("width", Value::from(64)).unwrap_err();
        assert!(e.contains("read when node `exec` starts"), "{e}");
        let e = p.set("motion.steps", Value::from("x")).unwrap_err();
        assert!(e.contains("is an integer"), "{e}");
        let e = p.set("motion.speed", Value::from(-1.0)).unwrap_err();
        assert!(e.contains("must be > 0"), "{e}");
        // Refusals change nothing and wake nobody.
        assert_eq!(p.get("motion.speed"), Some(Value::from(1.0)));
        assert_eq!(p.get("width"), Some(Value::from(96)));
        assert!(!seen.has_changed().unwrap());
        assert_eq!(*seen.borrow(), 2);
    }

    /// A read-only parameter (the bus's `use_sim_time`) is listed and read, refused when
    /// set, and never part of the config the node reads back.
    #[test]
    fn a_read_only_parameter_is_listed_and_read_but_never_set_nor_in_the_config() {
        let p = store();
        p.declare_read_only("use_sim_time", Value::Bool(true));
        // A name the config has keeps the config's value.
        p.declare_read_only("width", Value::from(1));
        assert_eq!(
            p.names(),
            [
                "flags",
                "motion.speed",
                "motion.steps",
                "name",
                "use_sim_time",
                "width"
            ]
        );
        assert_eq!(p.get("use_sim_time"), Some(Value::Bool(true)));
        assert_eq!(p.get("width"), Some(Value::from(96)));
        let e = p.set("use_sim_time", Value::Bool(false)).unwrap_err();
        assert!(
            e.contains("`use_sim_time` is read when node `exec` starts"),
            "{e}"
        );
        let e = p
            .set_all(vec![
                ("motion.speed".into(), Value::from(0.5)),
                ("use_sim_time".into(), Value::Bool(false)),
            ])
            .unwrap_err();
        assert!(e.contains("use_sim_time"), "{e}");
        assert_eq!(p.get("motion.speed"), Some(Value::from(0.25)));
        assert!(p.config_value().get("use_sim_time").is_none());
        p.set("motion.speed", Value::from(0.5)).unwrap();
        assert!(p.config_value().get("use_sim_time").is_none());
    }

    #[test]
    fn an_atomic_set_is_checked_as_a_whole_and_applies_all_or_nothing() {
        let declared: Value =
            serde_yaml::from_str("{width: 96, band: {low: 1.0, high: 2.0}}").unwrap();
        let p = LiveParams::new(
            "exec",
            &declared,
            &["band."],
            Box::new(|v| {
                let (lo, hi) = (v["band"]["low"].as_f64(), v["band"]["high"].as_f64());
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(()),
                    _ => Err("band.low must be <= band.high".into()),
                }
            }),
        );
        let mut seen = p.watch();
        let band = |lo: f64, hi: f64| {
            vec![
                ("band.low".to_string(), Value::from(lo)),
                ("band.high".to_string(), Value::from(hi)),
            ]
        };
        // One at a time, moving the band up fails at the first step (low 5 > high 2) ...
        let e = p.set("band.low", Value::from(5.0)).unwrap_err();
        assert!(e.contains("`band.low` refused"), "{e}");
        // ... at once it is one change, checked once, told once.
        p.set_all(band(5.0, 6.0)).unwrap();
        assert_eq!(p.get("band.low"), Some(Value::from(5.0)));
        assert_eq!(p.get("band.high"), Some(Value::from(6.0)));
        assert_eq!(*seen.borrow_and_update(), 1);
        // A set whose whole fails the check changes nothing and names the set.
        let e = p.set_all(band(9.0, 8.0)).unwrap_err();
        assert!(
            e.contains("the set of `band.low`, `band.high` refused"),
            "{e}"
        );
        // One refused member (unknown, read-only, wrong type) refuses all.
        for bad in [
            ("nope", Value::from(1)),
            ("width", Value::from(64)),
            ("band.high", Value::from("x")),
        ] {
            let mut changes = band(6.5, 7.0);
            changes.push((bad.0.to_string(), bad.1.clone()));
            assert!(p.set_all(changes).is_err(), "{bad:?}");
        }
        assert_eq!(p.get("band.low"), Some(Value::from(5.0)));
        assert_eq!(p.get("band.high"), Some(Value::from(6.0)));
        assert_eq!(p.get("width"), Some(Value::from(96)));
        assert!(!seen.has_changed().unwrap());
    }
}
