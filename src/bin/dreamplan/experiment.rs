//! `dreamplan experiment`: DreamPlan end to end on the built-in world, as one resumable run.
//!
//! The stages are the project's own commands, run as child processes of this executable in
//! order (pretrain the zero-shot planner; collect its transitions; train the world model;
//! rate it; world-model-verified preferences and ORPO, i.e. DreamPlan; the same with the
//! simulator as verifier; evaluate every row), so a stage here does exactly what the
//! command does by hand, prints the same progress, and resumes the same way. What this
//! module adds is the order, the bookkeeping and the table:
//!
//! - every stage records its command line and, when it finished, `done` in
//!   `OUT/stages/<name>.json`. A re-run skips a finished stage whose command line is the
//!   same and none of whose inputs was remade; it reruns one whose command line changed or
//!   whose input stage ran again (its old output is moved aside to `<name>.old`, or `<name>.old.N` beside earlier ones, first;
//!   when a stage starts, the records of every stage that reads its output, directly or
//!   not, are marked stale, so an invocation killed after remaking an input still remakes
//!   what reads it the next time), or
//!   whose record names another mask measure than this build's (the stages that score
//!   predicted frames: world-model quality, world-model preferences, test-time
//!   verification; a record from before measures were named counts as another), and
//!   whose outside input (`--zero-shot`, `--bags`) changed since (a stamp of the folder's
//!   files: names, sizes, modification times; since session 46), and
//!   continues an interrupted one: the trainers (the zero-shot pretraining too, since
//!   session 42) and the preference generator resume from their own checkpoints; commands
//!   that cannot resume (collection, evaluation) start that stage over; a zero-shot
//!   build that finished just before the run was killed is recorded as done (since
//!   session 48; it was built again);
//! - a preference file without a pair (the verifier told no candidates apart) skips its
//!   ORPO stage and that planner's evaluation, and the table says so instead of failing
//!   the run;
//! - each stage announces itself with the overall ETA (the expected durations of the stages
//!   this run will start, not of those it skips, scaled by how long the finished stages
//!   took against their expectation);
//! - at the end: `table.json`, `table.md` and `table.png` (the paper's table: rows random,
//!   zero-shot, test-time verification with the world model at best of 4 and best of 8,
//!   DreamPlan, ORPO with the simulator as verifier, the keypoint oracle; columns rope,
//!   cloth, toy, average with 95% intervals, seconds per decision), and the world model's
//!   quality table (ranking agreement, top-1, frame metrics).
//!
//! Seeds: evaluation 0–99 per task; zero-shot training scenes 1,000,000 up; collection
//! 2,000,000 up; preference states 3,000,000 up; world-model rating 4,000,000 up. No stage
//! sees an evaluation seed before the evaluations: `--bags` whose `collect.json` names
//! seeds of the evaluation, the preferences or the rating are refused, and no count flag
//! may pass a range's 1,000,000. Command lines are compared with their paths made
//! absolute, so `--out exp` and `--out ./exp/` are one run.
//!
//! `--quick` runs every stage of the same path on tiny settings (a few episodes and steps;
//! minutes, not hours) for CI. Its figures mean nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use dreamplan::planner::eval::mean_ci;
use dreamplan::verifier::measure::MEASURE_NAME;

#[derive(Args)]
pub struct ExperimentArgs {
    /// Output folder: every stage's output, `stages/` (what ran), and the tables.
    #[arg(long)]
    out: PathBuf,
    /// Reuse this zero-shot planner folder instead of pretraining one.
    #[arg(long)]
    zero_shot: Option<PathBuf>,
    /// Reuse these zero-shot bags instead of collecting (a `collect --task all` output
    /// folder, as `train-world-model --bags` reads it): recordings from a real arm, or an
    /// earlier collection. They should come from the zero-shot planner this experiment
    /// uses, on seeds apart from the evaluation's.
    #[arg(long)]
    bags: Option<PathBuf>,
    /// Tiny settings for every stage (CI): the same code path in minutes; the figures mean
    /// nothing.
    #[arg(long)]
    quick: bool,
    /// Evaluation episodes per task and row (the keypoint oracle row too).
    #[arg(long, default_value_t = 100)]
    episodes: u64,
    /// Episodes per task collected for the world model (3 × this transitions).
    #[arg(long, default_value_t = 700)]
    collect_episodes: u64,
    /// World-model training steps.
    #[arg(long, default_value_t = 1000)]
    world_model_steps: usize,
    /// Preference states per task (for each verifier).
    #[arg(long, default_value_t = 100)]
    states: usize,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// One stage: a command line of this executable and what it leaves behind.
struct Stage {
    name: &'static str,
    argv: Vec<String>,
    /// The stage's output (file or folder), moved aside when the command line changes.
    output: PathBuf,
    /// The command continues from its own checkpoint after an interruption.
    resumes: bool,
    /// Expected seconds at the default settings (for the ETA): the stage times of session
    /// 34's full run, and session 35's zero-shot build (release build, 2 cores;
    /// docs/stage3.md), scaled by the stage's own count (episodes, steps, states) against
    /// its default (before session 52 a run of 1,000 evaluation episodes expected 100's
    /// time).
    expect_s: f64,
    /// An ORPO stage's preference file: with no pair in it the stage is skipped, and
    /// recorded as such (the verifier told no candidates apart: nothing to train on).
    pairs: Option<PathBuf>,
    /// A stage whose skip skips this one too (an evaluation of a tuned planner).
    after: Option<&'static str>,
    /// The stages whose output this one reads: when one of them runs again, so does this.
    deps: Vec<&'static str>,
}

impl Stage {
    /// The stage scores predicted frames with the mask measure (`wm-eval`, or a command
    /// with `--verifier world-model`): its record names the measure
    /// (`measure::MEASURE_NAME`), and a record made with another measure, or before records
    /// named one, does not count as finished (the command line is the same, the figures
    /// are not).
    fn scores_frames(&self) -> bool {
        self.argv[0] == "wm-eval"
            || self
                .argv
                .windows(2)
                .any(|w| w[0] == "--verifier" && w[1] == "world-model")
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn args_of(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

/// The rows of the main table: (label, the eval JSON's stage name).
const ROWS: [(&str, &str); 7] = [
    ("random", "eval-random"),
    ("zero-shot", "eval-zero-shot"),
    ("zero-shot + world model, best of 4", "eval-wm-best-of-4"),
    ("zero-shot + world model, best of 8", "eval-wm-best-of-8"),
    ("DreamPlan (ORPO, world-model verifier)", "eval-dreamplan"),
    ("ORPO, simulator verifier", "eval-orpo-sim"),
    ("keypoint oracle", "eval-keypoint-oracle"),
];

fn stages(a: &ExperimentArgs) -> Vec<Stage> {
    let out = &a.out;
    let q = a.quick;
    let zs = a.zero_shot.clone().unwrap_or_else(|| out.join("zero-shot"));
    let wm = out.join("world-model");
    let eval_dir = out.join("eval");
    let mut v = Vec::new();
    if a.zero_shot.is_none() {
        // No --force: it would clear an interrupted build's checkpoints, which the command
        // resumes from (a kill 40 minutes in started the build over before session 42).
        let mut argv = args_of(&["pretrain-zero-shot", "--out"]);
        argv.push(s(&zs));
        if q {
            argv.extend(args_of(&[
                "--steps",
                "3",
                "--batch",
                "2",
                "--scenes",
                "2,2,2",
                "--held-out",
                "1",
                "--hidden",
                "32",
                "--layers",
                "1",
            ]));
        }
        v.push(Stage {
            name: "zero-shot",
            argv,
            output: zs.clone(),
            resumes: true,
            expect_s: 850.0,
            pairs: None,
            after: None,
            deps: vec![],
        });
    }
    let bags = a.bags.clone().unwrap_or_else(|| out.join("bags"));
    let mut argv = args_of(&["collect", "--task", "all", "--zstd"]);
    if q {
        // A planner of three training steps answers nothing valid, so it would record no
        // action: the quick run records the rule the zero-shot model is taught.
        argv.extend(args_of(&["--planner", "coverage"]));
    } else {
        argv.extend(["--planner".into(), "vlm".into(), "--model".into(), s(&zs)]);
    }
    argv.extend([
        "--seed".into(),
        crate::collect::DATA_SEED_BASE.to_string(),
        "--episodes".into(),
        if q {
            "2".into()
        } else {
            a.collect_episodes.to_string()
        },
        "--out".into(),
        s(&bags),
    ]);
    if a.bags.is_none() {
        v.push(Stage {
            name: "collect",
            argv,
            output: bags.clone(),
            resumes: false,
            expect_s: 730.0 * a.collect_episodes as f64 / 700.0,
            pairs: None,
            after: None,
            deps: vec!["zero-shot"],
        });
    }
    let mut argv = args_of(&["train-world-model", "--bags"]);
    argv.extend([s(&bags), "--out".into(), s(&wm)]);
    if q {
        argv.extend([
            "--config".into(),
            s(&out.join("world-model-tiny.json")),
            "--steps".into(),
            "2".into(),
            "--val-every".into(),
            "2".into(),
        ]);
    } else {
        argv.extend([
            "--steps".into(),
            a.world_model_steps.to_string(),
            "--val-every".into(),
            "500".into(),
        ]);
    }
    v.push(Stage {
        name: "world-model",
        argv,
        output: wm.clone(),
        resumes: true,
        expect_s: 1290.0 * a.world_model_steps as f64 / 1000.0,
        pairs: None,
        after: None,
        deps: vec!["collect"],
    });
    let mut argv = args_of(&["wm-eval", "--world-model"]);
    argv.extend([
        s(&wm),
        "--planner".into(),
        s(&zs),
        "--episodes".into(),
        if q { "1".into() } else { "50".into() },
        "--k".into(),
        if q { "3".into() } else { "8".into() },
        "--out".into(),
        s(&out.join("wm_eval.json")),
    ]);
    v.push(Stage {
        name: "world-model-quality",
        argv,
        output: out.join("wm_eval.json"),
        resumes: false,
        expect_s: 290.0,
        pairs: None,
        after: None,
        deps: vec!["zero-shot", "world-model"],
    });
    for (verifier, pairs_dir, tuned) in [
        ("world-model", "preferences-wm", "dreamplan"),
        ("sim", "preferences-sim", "orpo-sim"),
    ] {
        let pairs = out.join(pairs_dir).join("pairs.jsonl");
        let mut argv = args_of(&["preferences", "--verifier", verifier, "--planner"]);
        argv.extend([s(&zs), "--out".into(), s(&pairs)]);
        if verifier == "world-model" {
            argv.extend(["--world-model".into(), s(&wm)]);
        }
        argv.extend([
            "--states".into(),
            if q { "1".into() } else { a.states.to_string() },
        ]);
        if q {
            // Any difference of the barely trained world model's predictions makes a pair.
            argv.extend(args_of(&["--k", "6", "--margin", "0"]));
        } else {
            // Both verifiers judge the planner's own samples (temperature 1, nucleus 0.9,
            // as at test time), with no exploring ones. On actions the planner rarely
            // proposes the world model's imagination errs most, and pairs made from them
            // taught rope nothing (session 29: +0.12 with exploring samples, +0.23
            // without). The simulator, a perfect judge, gains as much from the planner's
            // own samples as from exploring ones (session 30: +0.30 / +0.23 for two
            // training seeds, against +0.24 with exploring samples) in a sixth of the
            // time (3.5 min against 21), and the two rows then differ only by the judge
            // (README, docs/stage3.md).
            argv.extend(args_of(&[
                "--k",
                "16",
                "--temperature",
                "1",
                "--top-p",
                "0.9",
                "--explore-k",
                "0",
            ]));
        }
        v.push(Stage {
            name: if verifier == "sim" {
                "preferences-sim"
            } else {
                "preferences-wm"
            },
            argv,
            output: out.join(pairs_dir),
            resumes: true,
            expect_s: (if verifier == "sim" { 115.0 } else { 125.0 }) * a.states as f64 / 100.0,
            pairs: None,
            after: None,
            deps: if verifier == "sim" {
                vec!["zero-shot"]
            } else {
                vec!["zero-shot", "world-model"]
            },
        });
        let mut argv = args_of(&["train-orpo", "--planner"]);
        argv.extend([
            s(&zs),
            "--pairs".into(),
            s(&pairs),
            "--out".into(),
            s(&out.join(tuned)),
        ]);
        if q {
            argv.extend(args_of(&["--steps", "2", "--batch", "2"]));
        } else {
            // Spelled out, so that a folder trained at another count is remade (session
            // 31: 200 steps per adapter, against 100 before; docs/stage3.md).
            argv.extend(args_of(&["--steps", "200"]));
        }
        v.push(Stage {
            name: if verifier == "sim" {
                "orpo-sim"
            } else {
                "orpo-wm"
            },
            argv,
            output: out.join(tuned),
            resumes: true,
            expect_s: 520.0,
            pairs: Some(pairs.clone()),
            after: None,
            deps: vec![if verifier == "sim" {
                "preferences-sim"
            } else {
                "preferences-wm"
            }],
        });
    }
    let episodes = if q { 1 } else { a.episodes };
    for (_, name) in ROWS {
        let json = eval_dir.join(format!("{name}.json"));
        let mut argv = args_of(&["eval", "--episodes"]);
        argv.extend([episodes.to_string(), "--json".into(), s(&json)]);
        let vlm = |argv: &mut Vec<String>| {
            argv.extend(["--planner".into(), "vlm".into(), "--model".into(), s(&zs)]);
            if q {
                // The barely trained planner's answers run to the token limit: one round.
                argv.extend(args_of(&["--attempts", "1"]));
            }
        };
        let expect_s = match name {
            "eval-random" => {
                argv.extend(args_of(&["--planner", "random"]));
                20.0
            }
            "eval-zero-shot" => {
                vlm(&mut argv);
                50.0
            }
            "eval-wm-best-of-4" | "eval-wm-best-of-8" => {
                vlm(&mut argv);
                let k = if name.ends_with('4') { "4" } else { "8" };
                argv.extend([
                    "--k".into(),
                    k.into(),
                    "--verifier".into(),
                    "world-model".into(),
                ]);
                argv.extend(["--world-model".into(), s(&wm)]);
                if k == "4" {
                    100.0
                } else {
                    115.0
                }
            }
            "eval-dreamplan" => {
                vlm(&mut argv);
                argv.extend(["--adapter".into(), s(&out.join("dreamplan"))]);
                50.0
            }
            "eval-orpo-sim" => {
                vlm(&mut argv);
                argv.extend(["--adapter".into(), s(&out.join("orpo-sim"))]);
                50.0
            }
            _ => {
                argv.extend(args_of(&["--planner", "keypoint-oracle"]));
                if q {
                    // 3 × 3 simulated actions per episode instead of 8 × 8.
                    argv.extend(args_of(&["--keypoints", "3"]));
                }
                850.0
            }
        };
        v.push(Stage {
            name,
            argv,
            output: json,
            resumes: false,
            expect_s: expect_s * episodes as f64 / 100.0,
            pairs: None,
            after: match name {
                "eval-dreamplan" => Some("orpo-wm"),
                "eval-orpo-sim" => Some("orpo-sim"),
                _ => None,
            },
            deps: match name {
                "eval-random" | "eval-keypoint-oracle" => vec![],
                "eval-zero-shot" => vec!["zero-shot"],
                "eval-dreamplan" => vec!["orpo-wm"],
                "eval-orpo-sim" => vec!["orpo-sim"],
                _ => vec!["zero-shot", "world-model"],
            },
        });
    }
    // Every stage that runs a model computes where --device says. The flags are added
    // only when set, so a CPU run's stage records match those written before they existed.
    use dreamplan::device::{DeviceSpec, DtypeSpec};
    for st in &mut v {
        let stage = st.argv[0].clone();
        if ![
            "collect",
            "train-world-model",
            "wm-eval",
            "preferences",
            "train-orpo",
            "eval",
        ]
        .contains(&stage.as_str())
        {
            continue;
        }
        // `collect` and `eval` with a rule planner (`eval-random`, the quick run's
        // `collect`) run no model, and refuse model flags since session 53. (The other
        // stages' `--planner` is a model folder.)
        let rule = matches!(stage.as_str(), "collect" | "eval")
            && st
                .argv
                .windows(2)
                .any(|w| w[0] == "--planner" && w[1] != "vlm");
        if rule {
            continue;
        }
        if a.compute.device != DeviceSpec::Cpu {
            st.argv
                .extend(["--device".into(), a.compute.device.to_string()]);
        }
        // World-model training computes in f32 whatever the dtype.
        if a.compute.dtype != DtypeSpec::Auto && stage != "train-world-model" {
            st.argv
                .extend(["--dtype".into(), a.compute.dtype.to_string()]);
        }
    }
    v
}

/// A stage's record (`OUT/stages/<name>.json`) as the stage finds it.
struct Record {
    previous: Option<serde_json::Value>,
    /// What the record is to say beside the command line: the mask measure of a stage
    /// that scores predicted frames, else null.
    tag: serde_json::Value,
    /// The stamps of the outside folders (`--zero-shot`, `--bags`) its command line names
    /// ([`Inputs::of`]).
    inputs: serde_json::Value,
    /// Made by the same command line (and measure).
    same: bool,
    /// An input stage started again after this one was made (`mark_stale`).
    stale: bool,
}

impl Record {
    fn read(out: &Path, st: &Stage, inputs: &Inputs) -> Self {
        let tag = if st.scores_frames() {
            serde_json::json!(MEASURE_NAME)
        } else {
            serde_json::Value::Null
        };
        let stamps = inputs.of(st);
        let previous: Option<serde_json::Value> = std::fs::read(stage_file(out, st.name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let same = previous.as_ref().is_some_and(|p| {
            same_argv(&p["argv"], &st.argv)
                && (!st.scores_frames() || p["measure"] == tag)
                // Records from before session 46 hold no stamps: taken as the same.
                && (p.get("inputs").is_none() || p["inputs"] == stamps)
        });
        let stale = previous.as_ref().is_some_and(|p| p["stale"] == true);
        Self {
            previous,
            tag,
            inputs: stamps,
            same,
            stale,
        }
    }

    /// Finished by the same command line, its output still there, and none of its inputs
    /// remade (`remade`: the stages that run in this invocation before it).
    fn finished(&self, st: &Stage, remade: &[&str]) -> bool {
        let skipped_before = self
            .previous
            .as_ref()
            .is_some_and(|p| p["skipped"].is_string());
        self.same
            && !self.stale
            && !st.deps.iter().any(|d| remade.contains(d))
            && self.previous.as_ref().is_some_and(|p| p["done"] == true)
            && (st.output.exists() || skipped_before)
    }
}

/// Whether a recorded command line is `argv`, its paths compared as absolute paths
/// (`--out exp`, `--out ./exp/` and `--out /abs/exp` name one folder: before session 46 a
/// re-run spelled otherwise moved every finished stage aside and made it again).
fn same_argv(recorded: &serde_json::Value, argv: &[String]) -> bool {
    let Some(rec) = recorded.as_array() else {
        return false;
    };
    rec.len() == argv.len()
        && rec
            .iter()
            .zip(argv)
            .all(|(r, a)| r.as_str().is_some_and(|r| norm(r) == norm(a)))
}

/// A command-line word as an absolute path (a flag or an empty word as it is), for
/// comparing spellings of one path.
fn norm(arg: &str) -> String {
    if arg.starts_with('-') || arg.is_empty() {
        return arg.to_string();
    }
    match std::path::absolute(arg) {
        Ok(p) => {
            // `absolute` keeps `.` in the middle and a trailing `/`: the components drop
            // both.
            let p: PathBuf = p.components().collect();
            p.display().to_string()
        }
        Err(_) => arg.to_string(),
    }
}

/// The outside folders a run reads (`--zero-shot`, `--bags`) and a stamp of each (every
/// file's name, size and modification time, [`folder_stamp`]): a stage whose command line
/// names one is made again when its stamp changed (a zero-shot model trained again in
/// place, bags recorded again at the same path). Before session 46 a re-run took the old
/// figures as finished.
struct Inputs(Vec<(String, String)>);

impl Inputs {
    fn new(a: &ExperimentArgs) -> anyhow::Result<Self> {
        let mut v = Vec::new();
        for p in [&a.zero_shot, &a.bags].into_iter().flatten() {
            v.push((norm(&s(p)), folder_stamp(p)?));
        }
        Ok(Self(v))
    }

    /// The stamps of the folders `st`'s command line names, by absolute path (`zs` and
    /// `./zs/` are one folder).
    fn of(&self, st: &Stage) -> serde_json::Value {
        let named: Vec<String> = st.argv.iter().map(|w| norm(w)).collect();
        let m: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .filter(|(p, _)| named.contains(p))
            .map(|(p, stamp)| (p.clone(), serde_json::json!(stamp)))
            .collect();
        serde_json::Value::Object(m)
    }
}

/// A stamp of a folder's files, without reading them: FNV-1a over each file's path under
/// it, size and modification time (`checkpoint::file_stamp`), hidden files (locks) left
/// out. A copy of the folder made without keeping times counts as changed.
fn folder_stamp(dir: &Path) -> anyhow::Result<String> {
    let files = dreamplan::train::checkpoint::folder_stamps(dir, true)
        .with_context(|| format!("reading {}", dir.display()))?;
    let lines: Vec<String> = files
        .iter()
        .map(|(rel, stamp)| format!("{}|{stamp}", rel.display()))
        .collect();
    Ok(format!(
        "{:016x}",
        dreamplan::train::checkpoint::fnv1a(lines.join("\n").as_bytes())
    ))
}

/// The width of each stage's seed range (evaluation from 0, zero-shot training from
/// 1,000,000, collection 2,000,000, preferences 3,000,000, world-model rating 4,000,000).
const SEED_RANGE: u64 = 1_000_000;

/// Refuses `--bags` collected on seeds another stage of this run uses (the evaluation's
/// scenes above all: a world model trained on them would have seen the test), from the
/// `collect.json` that `dreamplan collect` writes beside its bags since session 46. Bags
/// without one (a real arm's, an older collection) are named in a warning: their seeds
/// cannot be checked.
fn check_bag_seeds(bags: &Path, a: &ExperimentArgs) -> anyhow::Result<()> {
    let file = bags.join("collect.json");
    let Ok(bytes) = std::fs::read(&file) else {
        eprintln!(
            "warning: {} has no collect.json: the seeds its episodes were collected on cannot \
             be checked against the evaluation's (0–{})",
            bags.display(),
            a.episodes - 1
        );
        return Ok(());
    };
    let c: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", file.display()))?;
    let (Some(first), Some(n)) = (c["seed"].as_u64(), c["episodes"].as_u64()) else {
        anyhow::bail!("{}: no `seed` and `episodes`", file.display());
    };
    let used = [
        ("the evaluation", 0, a.episodes),
        (
            "the preference states",
            dreamplan::train::preferences::PREFERENCE_SEED_BASE,
            a.states as u64,
        ),
        ("the world model's rating", 4 * SEED_RANGE, 50),
    ];
    for (what, start, len) in used {
        let overlap = first < start + len && start < first.saturating_add(n);
        anyhow::ensure!(
            !overlap,
            "--bags {}: collected on seeds {first}–{} ({}), which {what} uses ({start}–{}): \
             collect again with another --seed (collect's default, 2000000, is the experiment's own)",
            bags.display(),
            first.saturating_add(n) - 1,
            file.display(),
            start + len - 1
        );
    }
    Ok(())
}

/// The stages a run would start, in order: those not finished before, and those whose
/// inputs one of them remakes.
fn will_run(out: &Path, all: &[Stage], inputs: &Inputs) -> Vec<&'static str> {
    let mut will: Vec<&'static str> = Vec::new();
    for st in all {
        if !Record::read(out, st, inputs).finished(st, &will) {
            will.push(st.name);
        }
    }
    will
}

/// `started` runs (again): every later stage that reads its output, directly or through
/// another stage, has its record marked stale (not done). Before session 42 only the
/// stages remade in the same invocation counted: a run killed after remaking the world
/// model skipped the preferences, ORPO and evaluations made from the old one when re-run.
fn mark_stale(out: &Path, all: &[Stage], started: &str) -> anyhow::Result<()> {
    let mut affected = vec![started];
    let at = all
        .iter()
        .position(|s| s.name == started)
        .unwrap_or(all.len());
    for st in all.iter().skip(at + 1) {
        if !st.deps.iter().any(|d| affected.contains(d)) {
            continue;
        }
        affected.push(st.name);
        let file = stage_file(out, st.name);
        let Some(mut rec) = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        else {
            continue;
        };
        if rec["stale"] == true {
            continue;
        }
        rec["stale"] = true.into();
        rec["done"] = false.into();
        write_atomic(&file, &serde_json::to_vec_pretty(&rec)?)?;
    }
    Ok(())
}

/// Where an output made by another command line is kept: `<name>.old`, or the first free
/// `<name>.old.N` (N = 2, 3, …) when an earlier one is there. Before session 47 a second
/// set-aside deleted the first (a zero-shot build of 14 minutes, say) without a word.
fn aside_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let mut aside = output.with_file_name(format!("{name}.old"));
    let mut n = 2;
    while aside.exists() || aside.is_symlink() {
        aside = output.with_file_name(format!("{name}.old.{n}"));
        n += 1;
    }
    aside
}

fn stage_file(out: &Path, name: &str) -> PathBuf {
    out.join("stages").join(format!("{name}.json"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    dreamplan::train::checkpoint::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn fmt_s(secs: f64) -> String {
    let m = (secs / 60.0).round() as u64;
    if m >= 60 {
        format!("{} h {:02} min", m / 60, m % 60)
    } else if secs >= 60.0 {
        format!("{m} min")
    } else {
        format!("{secs:.0} s")
    }
}

pub fn run(a: ExperimentArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.episodes > 0, "--episodes must be > 0");
    anyhow::ensure!(a.collect_episodes > 0, "--collect-episodes must be > 0");
    anyhow::ensure!(a.world_model_steps > 0, "--world-model-steps must be > 0");
    anyhow::ensure!(a.states > 0, "--states must be > 0");
    // Each seed range is 1,000,000 wide (the module doc): more would reach the next.
    for (flag, n) in [
        ("--episodes", a.episodes),
        ("--collect-episodes", a.collect_episodes),
        ("--states", a.states as u64),
    ] {
        anyhow::ensure!(
            n <= SEED_RANGE,
            "{flag} {n}: at most {SEED_RANGE}, or its seeds would reach another stage's"
        );
    }
    // A GPU this build or machine cannot give is refused before the first stage.
    a.compute.open()?;
    if let Some(zs) = &a.zero_shot {
        anyhow::ensure!(
            zs.join("config.json").is_file(),
            "--zero-shot {}: not a model folder (no config.json)",
            zs.display()
        );
    }
    if let Some(b) = &a.bags {
        anyhow::ensure!(
            b.is_dir(),
            "--bags {}: not a folder (a `dreamplan collect` output)",
            b.display()
        );
        check_bag_seeds(b, &a)?;
    }
    std::fs::create_dir_all(a.out.join("stages"))
        .with_context(|| format!("creating {}", a.out.display()))?;
    // A second experiment on the same folder would move aside, resume and record the same
    // stages as this one: refused while this one runs (its children lock their own
    // outputs, not `stages/`).
    let _lock = dreamplan::train::checkpoint::lock_output(&a.out.join("stages"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(a.out.join("eval"))?;
    if a.quick {
        let tiny = serde_json::to_vec_pretty(&dreamplan::world_model::Config::tiny())?;
        write_atomic(&a.out.join("world-model-tiny.json"), &tiny)?;
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let all = stages(&a);
    let inputs = Inputs::new(&a)?;
    // This build of dreamplan: its version and a stamp of its executable. A finished stage
    // made by another build is kept (its command line is the same) and said so.
    let build = format!(
        "{} {}",
        env!("CARGO_PKG_VERSION"),
        dreamplan::train::checkpoint::file_stamp(&exe).unwrap_or_default()
    );
    let t0 = Instant::now();
    let (mut done_expect, mut done_actual) = (0.0f64, 0.0f64);
    // The stages this invocation will run, as far as their records tell (an ORPO stage
    // whose preference file has no pair is skipped when its turn comes): the ETA sums these.
    let will = will_run(&a.out, &all, &inputs);
    // Stages run (or skipped anew) in this invocation: what depends on them runs again.
    let mut ran: Vec<&'static str> = Vec::new();
    for (i, st) in all.iter().enumerate() {
        let record = stage_file(&a.out, st.name);
        let rec = Record::read(&a.out, st, &inputs);
        let finished = rec.finished(st, &ran);
        let dep_ran = st.deps.iter().any(|d| ran.contains(d));
        let dep_ran = dep_ran || rec.stale;
        let Record {
            previous,
            tag,
            inputs: stamps,
            same,
            ..
        } = rec;
        if finished {
            let other_build = previous
                .as_ref()
                .and_then(|p| p.get("build"))
                .is_some_and(|b| *b != build);
            eprintln!(
                "[{}/{}] {}: done before, skipped{}",
                i + 1,
                all.len(),
                st.name,
                if other_build {
                    format!(
                        " (made by another build of dreamplan; remove {} to make it again with this one)",
                        record.display()
                    )
                } else {
                    String::new()
                }
            );
            continue;
        }
        // A zero-shot build this same command line finished, the experiment killed before
        // its record said so: the model is whole (`zero_shot.json` written, the build
        // marker gone), so it is recorded rather than moved aside and built again (before
        // session 48, some 14 minutes). What reads it was marked stale when it started.
        let unrecorded = st.argv[0] == "pretrain-zero-shot"
            && same
            && !dep_ran
            && previous
                .as_ref()
                .is_some_and(|p| p["argv"] == serde_json::json!(st.argv))
            && st.output.join("zero_shot.json").is_file()
            && !st
                .output
                .join(dreamplan::train::zero_shot::BUILDING_FILE)
                .exists();
        if let (true, Some(mut rec)) = (unrecorded, previous.clone()) {
            eprintln!(
                "[{}/{}] {}: finished before the last run stopped; recorded, not made again",
                i + 1,
                all.len(),
                st.name
            );
            rec["done"] = true.into();
            write_atomic(&record, &serde_json::to_vec_pretty(&rec)?)?;
            continue;
        }
        ran.push(st.name);
        mark_stale(&a.out, &all, st.name)?;
        if st.scores_frames()
            && previous
                .as_ref()
                .is_some_and(|p| same_argv(&p["argv"], &st.argv) && p["measure"] != tag)
        {
            eprintln!(
                "[{}/{}] {}: made with another mask measure ({}); this build's is {MEASURE_NAME}: run again",
                i + 1,
                all.len(),
                st.name,
                previous
                    .as_ref()
                    .and_then(|p| p["measure"].as_str())
                    .unwrap_or("the one before measures were named")
            );
        }
        if let Some(p) = previous.as_ref().filter(|p| {
            same_argv(&p["argv"], &st.argv) && p.get("inputs").is_some() && p["inputs"] != stamps
        }) {
            let changed: Vec<&str> = stamps
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| p["inputs"][k.as_str()] != **v)
                .map(|(k, _)| k.as_str())
                .collect();
            eprintln!(
                "[{}/{}] {}: {} changed since it was made: run again",
                i + 1,
                all.len(),
                st.name,
                changed.join(", ")
            );
        }
        // A finished zero-shot model without a finished record that another command line
        // made is not continued: the command would refuse to replace it without --force.
        let finished_model =
            st.argv[0] == "pretrain-zero-shot" && st.output.join("zero_shot.json").exists();
        // A command that resumes checks its own record of the paths it was given, as typed:
        // an interrupted stage is continued only by the identical command line (another
        // spelling of the same paths would be refused by the command) and otherwise made
        // again; a finished one counts as the same with any spelling.
        let identical = previous
            .as_ref()
            .is_some_and(|p| p["argv"] == serde_json::json!(st.argv));
        if st.output.exists() && (!same || !st.resumes || !identical || dep_ran || finished_model) {
            // Another command line made it, or the command cannot continue it: keep it aside.
            let aside = aside_path(&st.output);
            std::fs::rename(&st.output, &aside).with_context(|| {
                format!(
                    "moving {} aside to {}",
                    st.output.display(),
                    aside.display()
                )
            })?;
            eprintln!("{}: moved to {}", st.output.display(), aside.display());
        }
        if let Some(why) = skip_reason(&a.out, st)? {
            eprintln!("[{}/{}] {}: skipped: {why}", i + 1, all.len(), st.name);
            write_atomic(
                &record,
                &serde_json::to_vec_pretty(
                    &serde_json::json!({"argv": st.argv, "measure": tag, "inputs": stamps, "build": build, "done": true, "skipped": why}),
                )?,
            )?;
            continue;
        }
        write_atomic(
            &record,
            &serde_json::to_vec_pretty(
                &serde_json::json!({"argv": st.argv, "measure": tag, "inputs": stamps, "build": build, "done": false}),
            )?,
        )?;
        // A stage that continues an interrupted run of itself does only part of its work:
        // its time says nothing of this machine's pace.
        let resumed = st.output.exists();
        let left: f64 = all[i..]
            .iter()
            .filter(|x| will.contains(&x.name))
            .map(|x| x.expect_s)
            .sum();
        let eta = if a.quick {
            String::new()
        } else {
            format!(
                ", about {} left",
                fmt_s(left * pace(done_expect, done_actual))
            )
        };
        eprintln!(
            "[{}/{}] {} (elapsed {}{eta}): dreamplan {}",
            i + 1,
            all.len(),
            st.name,
            fmt_s(t0.elapsed().as_secs_f64()),
            st.argv.join(" ")
        );
        if let Some(parent) = st.output.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let ts = Instant::now();
        let mut cmd = Command::new(&exe);
        cmd.args(&st.argv);
        ends_with_this_process(&mut cmd);
        let status = cmd
            .status()
            .with_context(|| format!("starting stage {}", st.name))?;
        anyhow::ensure!(
            status.success(),
            "stage {} failed ({status}); fix the cause and re-run the same command: finished stages are kept",
            st.name
        );
        let secs = ts.elapsed().as_secs_f64();
        if !resumed {
            done_expect += st.expect_s;
            done_actual += secs;
        }
        write_atomic(
            &record,
            &serde_json::to_vec_pretty(
                &serde_json::json!({"argv": st.argv, "measure": tag, "inputs": stamps, "build": build, "done": true, "seconds": secs}),
            )?,
        )?;
    }
    tables(&a.out)?;
    eprintln!("experiment done in {}", fmt_s(t0.elapsed().as_secs_f64()));
    Ok(ExitCode::SUCCESS)
}

/// Makes the stage's process end when this one does, however it ends: a `kill -9` of the
/// experiment would otherwise leave the stage running, and the re-run that resumes would
/// start a second one writing the same output. (Ctrl-C reaches both anyway: they share
/// the terminal's process group.) Linux's `PR_SET_PDEATHSIG`; elsewhere nothing.
fn ends_with_this_process(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Why `st` cannot run: its preference file holds no pair, or the stage it evaluates was
/// skipped.
fn skip_reason(out: &Path, st: &Stage) -> anyhow::Result<Option<String>> {
    if let Some(pairs) = &st.pairs {
        let file = dreamplan::verifier::preferences::read(pairs)
            .with_context(|| format!("reading {}", pairs.display()))?;
        let n: usize = file.states.iter().map(|x| x.pairs.len()).sum();
        if n == 0 {
            return Ok(Some(format!(
                "{} holds no preference pair: the verifier told none of the {} states' candidates apart by the margin",
                pairs.display(),
                file.states.len()
            )));
        }
    }
    if let Some(before) = st.after {
        let record: Option<serde_json::Value> = std::fs::read(stage_file(out, before))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(why) = record.as_ref().and_then(|r| r["skipped"].as_str()) {
            return Ok(Some(format!("{before} was skipped ({why})")));
        }
    }
    Ok(None)
}

/// How much slower (> 1) or faster than expected this machine runs, from the stages run
/// whole in this invocation (expected and actual seconds); 1 before any. Bounded to
/// [1/4, 4]: one odd stage (a cache already warm, a machine busy with something else for
/// a while) must not turn the estimate into nonsense.
fn pace(done_expect: f64, done_actual: f64) -> f64 {
    if done_expect > 0.0 {
        (done_actual / done_expect).clamp(0.25, 4.0)
    } else {
        1.0
    }
}

/// An eval's scores by (task, seed).
type ScoresBySeed = std::collections::BTreeMap<(String, u64), f64>;

/// Reads the eval JSONs and the world-model rating; writes and prints the tables.
fn tables(out: &Path) -> anyhow::Result<()> {
    let tasks = ["rope", "cloth", "toy"];
    let mut rows = Vec::new();
    let mut md = String::from(
        "| planner | rope | cloth | toy | average (95%) | s per decision |\n|---|---|---|---|---|---|\n",
    );
    let mut groups = Vec::new();
    let mut labels = Vec::new();
    // Each row's scores by (task, seed), for the gains over the zero-shot row.
    let mut by_seed: Vec<(&str, ScoresBySeed)> = Vec::new();
    for (label, name) in ROWS {
        let path = out.join("eval").join(format!("{name}.json"));
        let record: Option<serde_json::Value> = std::fs::read(stage_file(out, name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(why) = record.as_ref().and_then(|r| r["skipped"].as_str()) {
            md.push_str(&format!("| {label} | — | — | — | not run: {why} | |\n"));
            rows.push(serde_json::json!({"row": label, "skipped": why}));
            labels.push(label);
            groups.push(vec![(f64::NAN, None); 4]);
            continue;
        }
        let doc: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        let episodes = doc["episodes"].as_array().cloned().unwrap_or_default();
        by_seed.push((
            label,
            episodes
                .iter()
                .filter_map(|e| {
                    Some((
                        (e["task"].as_str()?.to_string(), e["seed"].as_u64()?),
                        e["score"].as_f64()?,
                    ))
                })
                .collect(),
        ));
        let score_of = |task: &str| -> Vec<f64> {
            episodes
                .iter()
                .filter(|e| e["task"] == task)
                .filter_map(|e| e["score"].as_f64())
                .collect()
        };
        let mut per_task = Vec::new();
        let mut cells = Vec::new();
        for t in tasks {
            let (m, lo, hi) = mean_ci(&score_of(t));
            per_task.push(serde_json::json!({"task": t, "mean": m, "ci95": [lo, hi]}));
            cells.push((m, Some((lo, hi))));
        }
        // Each task's mean weighs alike, and so does its own variance.
        let by_task: Vec<Vec<f64>> = tasks.iter().map(|t| score_of(t)).collect();
        let (avg, lo, hi) = dreamplan::planner::eval::stratified_mean_ci(&by_task);
        let decision: Vec<f64> = episodes
            .iter()
            .filter_map(|e| e["decision_s"].as_f64())
            .collect();
        let decision_s = decision.iter().sum::<f64>() / decision.len().max(1) as f64;
        md.push_str(&format!(
            "| {label} | {} | {} | {} | {avg:.2} ({lo:.2}–{hi:.2}) | {decision_s:.3} |\n",
            fmt_cell(cells[0]),
            fmt_cell(cells[1]),
            fmt_cell(cells[2]),
        ));
        cells.push((avg, Some((lo, hi))));
        rows.push(serde_json::json!({
            "row": label, "eval": s(&path), "tasks": per_task, "average": avg,
            "average_ci95": [lo, hi], "episodes_per_task": episodes.len() / tasks.len(),
            "seconds_per_decision": decision_s,
        }));
        labels.push(label);
        groups.push(cells);
    }
    // Every row's gain over the zero-shot row, paired by task and seed (the episodes both
    // evaluated); the average's interval from within the tasks, not clipped.
    let mut gains = Vec::new();
    if let Some((_, base)) = by_seed.iter().find(|(l, _)| *l == "zero-shot") {
        md.push_str(
            "\n| gain over zero-shot, paired by seed | rope | cloth | toy | average (95%) |\n|---|---|---|---|---|\n",
        );
        for (label, row) in by_seed.iter().filter(|(l, _)| *l != "zero-shot") {
            let diffs: Vec<Vec<f64>> = tasks
                .iter()
                .map(|t| {
                    row.iter()
                        .filter(|((task, _), _)| task == t)
                        .filter_map(|(k, v)| Some(v - base.get(k)?))
                        .collect()
                })
                .collect();
            let (g, lo, hi) = dreamplan::planner::eval::paired_gain_ci(&diffs);
            // A task with no episode in both rows has no gain (NaN, "—").
            let per: Vec<f64> = diffs
                .iter()
                .map(|d| d.iter().sum::<f64>() / d.len() as f64)
                .collect();
            let cell = |x: f64| {
                if x.is_finite() {
                    format!("{x:+.2}")
                } else {
                    "—".into()
                }
            };
            let average = if g.is_finite() {
                format!("{g:+.2} ({lo:+.2} to {hi:+.2})")
            } else {
                "—".into()
            };
            md.push_str(&format!(
                "| {label} | {} | {} | {} | {average} |\n",
                cell(per[0]),
                cell(per[1]),
                cell(per[2])
            ));
            gains.push(serde_json::json!({
                "row": label, "tasks": per, "average": g, "average_ci95": [lo, hi],
                "pairs": diffs.iter().map(Vec::len).sum::<usize>(),
            }));
        }
    }
    let wm_path = out.join("wm_eval.json");
    let wm: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&wm_path).with_context(|| format!("reading {}", wm_path.display()))?,
    )
    .with_context(|| format!("parsing {}", wm_path.display()))?;
    md.push_str(
        "\n| world model | states | ranking agreement (95%) | top-1 hits (chance) | mask IoU (copy) | PSNR (copy) | SSIM (copy) | ms per candidate |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in wm.as_array().cloned().unwrap_or_default() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let ci = |k: &str, i: usize| r[k][i].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {} | {:.0}% ({:.0}–{:.0}%) | {:.2} ({:.2}) | {:.3} ({:.3}) | {:.2} ({:.2}) | {:.3} ({:.3}) | {:.0} |\n",
            r["task"].as_str().unwrap_or("?"),
            r["states"],
            100.0 * f("agreement"),
            100.0 * ci("agreement_ci", 0),
            100.0 * ci("agreement_ci", 1),
            f("top1_hits"),
            f("top1_chance"),
            f("iou"),
            f("iou_copy"),
            f("psnr"),
            f("psnr_copy"),
            f("ssim"),
            f("ssim_copy"),
            f("ms_per_candidate"),
        ));
    }
    // Which build of dreamplan made each row's stage (records since session 46): a table
    // whose stages came from several builds says so.
    let builds: serde_json::Map<String, serde_json::Value> = ROWS
        .iter()
        .filter_map(|(_, name)| {
            let r: serde_json::Value =
                serde_json::from_slice(&std::fs::read(stage_file(out, name)).ok()?).ok()?;
            Some((name.to_string(), r.get("build")?.clone()))
        })
        .collect();
    let distinct: std::collections::BTreeSet<String> =
        builds.values().map(|b| b.to_string()).collect();
    if distinct.len() > 1 {
        eprintln!(
            "note: the rows were evaluated by {} builds of dreamplan (table.json, \"builds\")",
            distinct.len()
        );
    }
    let doc =
        serde_json::json!({"rows": rows, "gains": gains, "world_model": wm, "builds": builds});
    write_atomic(&out.join("table.json"), &serde_json::to_vec_pretty(&doc)?)?;
    std::fs::write(out.join("table.md"), &md)
        .with_context(|| format!("writing {}", out.join("table.md").display()))?;
    let bar_groups: Vec<dreamplan::plot::BarGroup<'_>> = labels
        .iter()
        .zip(groups)
        .map(|(label, values)| dreamplan::plot::BarGroup { label, values })
        .collect();
    let png = out.join("table.png");
    dreamplan::plot::bars(
        "DreamPlan on the built-in world: mean score per task (95% interval)",
        &["rope", "cloth", "toy", "average"],
        &bar_groups,
        1.0,
        &png,
    )
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", png.display()))?;
    println!("{md}");
    println!(
        "wrote {}, {} and {}",
        out.join("table.json").display(),
        out.join("table.md").display(),
        png.display()
    );
    Ok(())
}

fn fmt_cell((m, ci): (f64, Option<(f64, f64)>)) -> String {
    match ci {
        Some((lo, hi)) => format!("{m:.2} ({lo:.2}–{hi:.2})"),
        None => format!("{m:.2}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: ExperimentArgs,
    }

    /// No outside folder (the tests' `--zero-shot zs` does not exist).
    const NO_INPUTS: Inputs = Inputs(Vec::new());

    /// Every stage of `all` finished in `out`, with this build's command lines and measure.
    fn all_finished(out: &Path, all: &[Stage]) {
        std::fs::create_dir_all(out.join("stages")).unwrap();
        for st in all {
            std::fs::create_dir_all(st.output.parent().unwrap()).unwrap();
            std::fs::write(&st.output, b"").unwrap();
            let tag = Record::read(out, st, &NO_INPUTS).tag;
            let rec = serde_json::json!({"argv": st.argv, "measure": tag, "done": true});
            std::fs::write(stage_file(out, st.name), rec.to_string()).unwrap();
        }
    }

    #[test]
    fn one_folder_spelled_two_ways_is_one_command_line_and_a_rewritten_file_a_new_stamp() {
        let rec = serde_json::json!(["eval", "--model", "exp/zs", "--json", "./exp//e.json"]);
        let cwd = std::env::current_dir().unwrap();
        let abs = cwd.join("exp/zs").display().to_string();
        let argv = |m: &str, j: &str| -> Vec<String> {
            ["eval", "--model", m, "--json", j]
                .map(String::from)
                .to_vec()
        };
        assert!(same_argv(&rec, &argv(&abs, "exp/e.json")));
        assert!(same_argv(&rec, &argv("exp/zs/", "exp/./e.json")));
        assert!(!same_argv(&rec, &argv("exp/zs2", "exp/e.json")));
        assert!(!same_argv(&rec, &argv("exp/zs", "exp/e.json")[..4]));
        assert!(!same_argv(
            &serde_json::json!(null),
            &argv("exp/zs", "exp/e.json")
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"x").unwrap();
        let before = folder_stamp(dir.path()).unwrap();
        assert_eq!(folder_stamp(dir.path()).unwrap(), before);
        // A lock file (hidden) does not change it; the same bytes written again do.
        std::fs::write(dir.path().join(".dreamplan.lock"), b"").unwrap();
        assert_eq!(folder_stamp(dir.path()).unwrap(), before);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("sub/a"), b"x").unwrap();
        assert_ne!(folder_stamp(dir.path()).unwrap(), before);
    }

    /// The ETA scales each stage's expected time by its own count against the default.
    #[test]
    fn expected_stage_times_follow_the_count_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: ExperimentArgs,
        }
        let expect = |extra: &[&str]| -> std::collections::BTreeMap<&'static str, f64> {
            let mut argv = vec!["x", "--out", "exp"];
            argv.extend(extra);
            stages(&Cli::parse_from(argv).a)
                .into_iter()
                .map(|st| (st.name, st.expect_s))
                .collect()
        };
        let base = expect(&[]);
        let more = expect(&[
            "--episodes",
            "1000",
            "--collect-episodes",
            "350",
            "--world-model-steps",
            "2000",
            "--states",
            "50",
        ]);
        let ratio = |name: &str| more[name] / base[name];
        assert!((ratio("eval-zero-shot") - 10.0).abs() < 1e-9);
        assert!((ratio("collect") - 0.5).abs() < 1e-9);
        assert!((ratio("world-model") - 2.0).abs() < 1e-9);
        assert!((ratio("preferences-sim") - 0.5).abs() < 1e-9);
        assert!((ratio("zero-shot") - 1.0).abs() < 1e-9);
    }

    /// An output set aside twice keeps both: the second goes to `.old.2`, not over the first.
    #[test]
    fn a_second_set_aside_output_does_not_replace_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("zero-shot");
        assert_eq!(aside_path(&out), dir.path().join("zero-shot.old"));
        std::fs::create_dir(dir.path().join("zero-shot.old")).unwrap();
        assert_eq!(aside_path(&out), dir.path().join("zero-shot.old.2"));
        std::fs::write(dir.path().join("zero-shot.old.2"), b"").unwrap();
        assert_eq!(aside_path(&out), dir.path().join("zero-shot.old.3"));
    }

    /// A folder's stamp is found under any spelling of its path in a stage's command line
    /// (before, `--zero-shot ./zs/` after `--zero-shot zs` remade every stage as changed).
    #[test]
    fn an_input_stamp_is_keyed_by_the_folder_not_its_spelling() {
        let inputs = Inputs(vec![(norm("exp/zs"), "stamp".into())]);
        let stage = |zs: &str| Stage {
            name: "eval-zero-shot",
            argv: ["eval", "--model", zs].map(String::from).to_vec(),
            output: PathBuf::from("e.json"),
            resumes: false,
            expect_s: 1.0,
            pairs: None,
            after: None,
            deps: vec![],
        };
        let want = serde_json::json!({ norm("exp/zs"): "stamp" });
        assert_eq!(inputs.of(&stage("./exp/zs/")), want);
        assert_eq!(inputs.of(&stage("exp/zs")), want);
        assert_eq!(inputs.of(&stage("exp/zs2")), serde_json::json!({}));
    }

    #[test]
    fn a_changed_measure_or_command_line_remakes_that_stage_and_what_reads_it() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("exp");
        let a = Cli::parse_from(["x", "--out", out.to_str().unwrap(), "--zero-shot", "zs"]).a;
        let all = stages(&a);
        let framed: Vec<_> = all
            .iter()
            .filter(|s| s.scores_frames())
            .map(|s| s.name)
            .collect();
        assert_eq!(
            framed,
            [
                "world-model-quality",
                "preferences-wm",
                "eval-wm-best-of-4",
                "eval-wm-best-of-8"
            ]
        );
        // A fresh folder runs everything.
        assert_eq!(will_run(&out, &all, &NO_INPUTS).len(), all.len());
        // Every stage finished, with this build's command lines and measure.
        all_finished(&out, &all);
        assert!(will_run(&out, &all, &NO_INPUTS).is_empty());
        // The world-model preferences named another measure: they and what reads them.
        let rec = serde_json::json!({
            "argv": all.iter().find(|s| s.name == "preferences-wm").unwrap().argv,
            "done": true,
        });
        std::fs::write(stage_file(&out, "preferences-wm"), rec.to_string()).unwrap();
        assert_eq!(
            will_run(&out, &all, &NO_INPUTS),
            ["preferences-wm", "orpo-wm", "eval-dreamplan"]
        );
        // A stage that scores no predicted frame ignores the measure field.
        let st = all.iter().find(|s| s.name == "preferences-sim").unwrap();
        assert!(!st.scores_frames());
        let rec = serde_json::json!({"argv": st.argv, "measure": "another", "done": true});
        std::fs::write(stage_file(&out, st.name), rec.to_string()).unwrap();
        assert_eq!(
            will_run(&out, &all, &NO_INPUTS),
            ["preferences-wm", "orpo-wm", "eval-dreamplan"]
        );
        // Its command line changed: it and what reads it run again.
        let rec = serde_json::json!({"argv": ["preferences"], "done": true});
        std::fs::write(stage_file(&out, st.name), rec.to_string()).unwrap();
        assert_eq!(
            will_run(&out, &all, &NO_INPUTS),
            [
                "preferences-wm",
                "orpo-wm",
                "preferences-sim",
                "orpo-sim",
                "eval-dreamplan",
                "eval-orpo-sim"
            ]
        );
    }

    #[test]
    fn a_stage_started_again_makes_what_reads_it_stale_for_the_next_invocation() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("exp");
        let a = Cli::parse_from(["x", "--out", out.to_str().unwrap(), "--zero-shot", "zs"]).a;
        let all = stages(&a);
        all_finished(&out, &all);
        assert!(will_run(&out, &all, &NO_INPUTS).is_empty());
        // The world model was trained again and finished; the invocation was killed
        // before anything that reads it ran. The next one remakes all of that.
        mark_stale(&out, &all, "world-model").unwrap();
        assert_eq!(
            will_run(&out, &all, &NO_INPUTS),
            [
                "world-model-quality",
                "preferences-wm",
                "orpo-wm",
                "eval-wm-best-of-4",
                "eval-wm-best-of-8",
                "eval-dreamplan"
            ]
        );
        // Stale stays stale until the stage itself is made again.
        mark_stale(&out, &all, "world-model").unwrap();
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(stage_file(&out, "orpo-wm")).unwrap()).unwrap();
        assert_eq!(
            (rec["stale"].clone(), rec["done"].clone()),
            (true.into(), false.into())
        );
    }

    #[test]
    fn the_pace_comes_from_whole_stages_and_stays_bounded() {
        assert_eq!(pace(0.0, 0.0), 1.0);
        assert!((pace(1000.0, 1500.0) - 1.5).abs() < 1e-12);
        // A stage that finished almost at once (e.g. a resumed one, were it counted) must
        // not promise minutes for hours of work, nor the reverse.
        assert_eq!(pace(1500.0, 94.0), 0.25);
        assert_eq!(pace(100.0, 1000.0), 4.0);
    }
}
