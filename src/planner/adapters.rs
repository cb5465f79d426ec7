//! Adapter sets: one LoRA adapter per task, in one folder.
//!
//! `dreamplan train-orpo` (by default: `--shared`, `--task` and `--full` switch it off)
//! trains an adapter on each task's preference pairs alone and writes them to `OUT/<task>/`, with `OUT/adapter_set.json` naming them. Every
//! place that takes an adapter folder (`eval --adapter`, `preferences --adapter`, the
//! planner node) takes such a set too: the planner then answers each task with the base
//! model and that task's adapter merged ([`super::vlm_planner::VlmPlanner`]), and a task
//! the set has no adapter for with the base model alone.
//!
//! Why: one adapter shared by the three tasks trades them against each other. The tiny
//! zero-shot planner answers every task with the same rule and never needed the task's
//! name, so a shared adapter that learns cloth's fold also moves rope's answers (docs/stage3.md,
//! "Session 12"). The task is known at every decision, so choosing the adapter by it costs
//! nothing at run time; a model that has learned to read the task word can use one adapter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sim::tasks::Task;

/// The set's index file inside its folder.
pub const ADAPTER_SET: &str = "adapter_set.json";
const FORMAT: &str = "dreamplan-adapter-set";

/// The index of an adapter set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSet {
    /// Always `dreamplan-adapter-set`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Per task name, its adapter folder, relative to the set's folder.
    pub adapters: BTreeMap<String, String>,
}

impl AdapterSet {
    /// A set of `tasks`, each adapter in the sub-folder named after its task.
    pub fn of_tasks(tasks: &[Task]) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            adapters: tasks
                .iter()
                .map(|t| (t.name().to_string(), t.name().to_string()))
                .collect(),
        }
    }

    /// Whether `dir` holds an adapter set (rather than a single adapter).
    pub fn is_set(dir: &Path) -> bool {
        dir.join(ADAPTER_SET).is_file()
    }

    /// Reads and checks `dir`'s index: a known format, known tasks, and an adapter folder
    /// (`adapter_config.json`) for each.
    pub fn read(dir: &Path) -> Result<Vec<(Task, PathBuf)>, String> {
        let path = dir.join(ADAPTER_SET);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let set: AdapterSet =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if set.format != FORMAT || set.version != 1 {
            return Err(format!(
                "{}: format {:?} version {}, expected {FORMAT:?} version 1",
                path.display(),
                set.format,
                set.version
            ));
        }
        if set.adapters.is_empty() {
            return Err(format!("{}: the set names no adapter", path.display()));
        }
        set.adapters
            .iter()
            .map(|(name, sub)| {
                let task = Task::from_name(name).ok_or_else(|| {
                    format!(
                        "{}: unknown task {name:?} (rope, cloth or toy)",
                        path.display()
                    )
                })?;
                let folder = dir.join(sub);
                if !folder.join("adapter_config.json").is_file() {
                    return Err(format!(
                        "{}: the adapter of {name}, {}, is not an adapter folder (no adapter_config.json)",
                        path.display(),
                        folder.display()
                    ));
                }
                Ok((task, folder))
            })
            .collect()
    }

    /// Writes the index into `dir` (atomically: a temporary file, then a rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(ADAPTER_SET);
        // Synced before the rename, the folder after it (it was neither before session 44).
        crate::train::checkpoint::write_atomic(
            &path,
            serde_json::to_string_pretty(self)
                .expect("an adapter set serialises")
                .as_bytes(),
        )
    }
}
