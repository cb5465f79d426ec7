//! The `dreamplan` command line: run a node graph in one process, inspect messages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// mimalloc: message decoding allocates many small strings and vectors; it reads bags
/// about 20% faster than the system allocator (`dreamplan bag bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (position 15 of `mi_option_t` in mimalloc 2 and 3;
/// the enum keeps deprecated entries so positions never move). libmimalloc-sys names no
/// constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory instead of returning it to the OS 10 ms later (mimalloc's default):
/// model training and inference free and reallocate the same large tensors every step,
/// and each return meant fresh pages for the kernel to fault in and zero. Measured on the
/// 2-core machine: 15% off a `pretrain-zero-shot` step (`MIMALLOC_PURGE_DELAY=-1` has the
/// same effect). The cost: the process keeps its peak memory until it exits.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads it when it next purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Progress of a long run on stderr: one `\r`-updated line in a terminal; in a log
/// (stderr not a terminal) a whole line per tenth of the total instead of one endless line.
#[derive(Clone, Copy)]
pub struct LineProgress {
    tty: bool,
}

impl LineProgress {
    /// Progress to stderr, as a terminal or as a log.
    pub fn stderr() -> Self {
        Self {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// `line` says `done` of `total` are done.
    pub fn update(&self, done: usize, total: usize, line: &str) {
        if self.tty {
            eprint!("\r{line}");
            let _ = std::io::Write::flush(&mut std::io::stderr());
        } else if done >= 1 && total > 0 && done * 10 / total != (done - 1) * 10 / total {
            eprintln!("{line}");
        }
    }

    /// Ends the terminal line.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

mod bag;
mod bench;
mod calibration;
mod collect;
mod eval;
mod experiment;
mod plan_bench;
mod progress;
mod robot;
mod run_report;
mod sim;
mod soak;
mod stage3;
mod vlm;
mod world_model;
mod zero_shot;

/// `--device` and `--dtype` of every command that runs a model (`dreamplan::device`).
#[derive(Clone, Copy, clap::Args)]
pub struct ComputeArgs {
    /// Where models compute: cpu, cuda or cuda:N (a GPU needs a `cuda` build; docs/gpu.md).
    #[arg(long, default_value = "cpu")]
    pub device: dreamplan::device::DeviceSpec,
    /// Compute dtype: auto (f32 on the CPU, bf16 on a GPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: dreamplan::device::DtypeSpec,
}

impl ComputeArgs {
    /// Opens the device (a clear error for a GPU this build or machine cannot give).
    pub fn open(&self) -> anyhow::Result<dreamplan::device::Compute> {
        Ok(dreamplan::device::Compute::open(self.device, self.dtype)?)
    }
}

/// Refuses the flags a command reads only for its VLM planner when another planner was
/// chosen: `given` pairs each flag with whether it was set (or moved off its default).
/// Before session 53, `eval --planner coverage --model zs --adapter orpo` ran the rule
/// without a word and printed its table, easily taken for the model's.
pub fn refuse_model_flags(planner: &str, given: &[(&str, bool)]) -> anyhow::Result<()> {
    let named: Vec<&str> = given
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect();
    anyhow::ensure!(
        named.is_empty(),
        "{} {} to --planner vlm only; the {planner} planner runs no model (drop {})",
        named.join(", "),
        if named.len() == 1 { "applies" } else { "apply" },
        if named.len() == 1 { "it" } else { "them" }
    );
    Ok(())
}

/// What every benchmark command shares: repetitions, the JSON report and the compute device.
#[derive(Clone, clap::Args)]
pub struct BenchRun {
    /// Timed repetitions (after one untimed warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

impl BenchRun {
    /// Writes `doc` to `--json`, when asked.
    pub fn write_json(&self, doc: &serde_json::Value) -> anyhow::Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        std::fs::write(path, serde_json::to_string_pretty(doc)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Median seconds of `iters` runs of `f` after one warm-up run.
/// Refuses seeds `first .. first + count` that run past `u64::MAX` (in a release build
/// the sum wrapped: no episode ran, and the report was a table of NaN with exit 0).
pub fn check_seed_range(first: u64, count: u64, count_flag: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        first.checked_add(count).is_some(),
        "--first-seed {first} + {count_flag} {count} runs past the largest seed ({})",
        u64::MAX
    );
    Ok(())
}

pub fn median_secs(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut v = Vec::new();
    for _ in 0..iters.max(1) {
        let t0 = std::time::Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// `--task` of the commands that run episodes: one task or all three.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
pub enum TaskSel {
    Rope,
    Cloth,
    Toy,
    All,
}

impl TaskSel {
    /// The selected tasks, in the paper's order.
    pub fn tasks(self) -> Vec<dreamplan::sim::tasks::Task> {
        use dreamplan::sim::tasks::Task;
        match self {
            TaskSel::Rope => vec![Task::Rope],
            TaskSel::Cloth => vec![Task::Cloth],
            TaskSel::Toy => vec![Task::Toy],
            TaskSel::All => Task::ALL.to_vec(),
        }
    }
}

use dreamplan::bus::LocalBus;
use dreamplan::config::GraphConfig;

#[derive(Parser)]
#[command(
    name = "dreamplan",
    version,
    about = "DreamPlan: VLM planners for deformable objects, tuned in a video world model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `dreamplan=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "DREAMPLAN_LOG",
        help_heading = "Global options"
    )]
    log: String,
}

/// Which bus `dreamplan run` uses.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BusArg {
    /// In this process (tokio channels).
    Local,
    /// ROS 2 over DDS (`ROS_DOMAIN_ID`, `ROS_LOCALHOST_ONLY`).
    Dds,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node graph in this process: on the in-process bus, or over DDS as ROS 2 nodes with `--bus dds`.
    Run {
        /// Graph config (YAML); the built-in default graph when absent.
        #[arg(long, conflicts_with = "launch")]
        config: Option<PathBuf>,
        /// A ROS 2 XML launch file of this package (e.g. launch/sim.launch.xml): its
        /// dreamplan nodes and parameters run in this process; `$(find-pkg-share
        /// dreamplan)` is the folder above the file's `launch/`.
        #[arg(long)]
        launch: Option<PathBuf>,
        /// Launch arguments for --launch, as `ros2 launch` takes them.
        #[arg(value_name = "NAME:=VALUE", requires = "launch")]
        launch_args: Vec<String>,
        /// Stop after this many seconds, ≥ 0; 0 runs until Ctrl-C (overrides the config's
        /// duration_s).
        #[arg(long, allow_negative_numbers = true)]
        duration: Option<f64>,
        /// Where each scored episode of the graph's simulator is written as a GIF.
        #[arg(long, default_value = "dreamplan_run")]
        out: PathBuf,
        /// The bus the nodes talk on: `local` (in this process) or `dds` (a real ROS 2
        /// participant over DDS, no ROS install: other processes and ROS 2 nodes on the
        /// same `ROS_DOMAIN_ID` see the topics; needs the `ros2-dds` build feature).
        #[arg(long, value_enum, default_value_t = BusArg::Local)]
        bus: BusArg,
        /// ROS arguments for the graph's nodes, last on the line, as `ros2 run` takes them:
        /// `--params-file FILE` (its `/**` section to every node that has a key, a node's
        /// own section to it), `-p NAME:=VALUE` (every node that has NAME), `-r FROM:=TO`
        /// (topic remap for all nodes), `-r __ns:=/NS` (namespace of the ROS nodes on the
        /// DDS bus), `-p use_sim_time:=true` (the clock follows `/clock`, DDS bus).
        #[arg(long = "ros-args", num_args = 0.., allow_hyphen_values = true, value_name = "ARG")]
        ros_args: Option<Vec<String>>,
    },
    /// The built-in world: render a task, run an episode to a GIF.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// rosbag2 bags: info, play, record, and a reading/writing benchmark against rosbags.
    #[command(subcommand)]
    Bag(bag::BagCommand),
    /// Print the built-in default graph config (a starting point for your own).
    DefaultConfig,
    /// The robot arm: forward kinematics of a URDF, and the executor's safety envelope audit.
    #[command(subcommand)]
    Robot(robot::RobotCommand),
    /// The Qwen3-VL planner model: reference forward, preprocessing, sampling, and the
    /// forward, training-step and decoding benchmarks.
    #[command(subcommand)]
    Vlm(vlm::VlmCommand),
    /// Evaluate a planner on the built-in world: the paper's table (mean score per task
    /// with a 95% interval, average, seconds per decision), optionally as JSON.
    Eval(eval::EvalArgs),
    /// DreamPlan end to end on the built-in world: zero-shot planner, collection, world
    /// model, world-model-verified preferences and ORPO, and the evaluation table
    /// (resumable; `--quick` for a tiny run of the same path).
    Experiment(experiment::ExperimentArgs),
    /// Run sim, planner (sampling), executor and recorder in one process and write one
    /// rosbag2 bag per task: the zero-shot data the world model trains on.
    Collect(collect::CollectArgs),
    /// Check the hand-eye calibration on a bag: the arm drawn from its joint states through
    /// the executor's camera model over the camera's images, and how far the drawing sits
    /// from the arm's edges (exit 1 beyond the tolerance).
    CheckCalibration(calibration::CheckCalibrationArgs),
    /// Build the tiny zero-shot planner: a few-M-parameter Qwen3-VL folder trained on a
    /// physics-blind keypoint rule's answers (coverage by default; never on action
    /// outcomes).
    PretrainZeroShot(zero_shot::ZeroShotArgs),
    /// Stage 3: preference pairs from a planner's sampled candidates, scored by a verifier.
    Preferences(stage3::PreferencesArgs),
    /// Stage 3: ORPO fine-tuning of a planner on preference pairs (LoRA or full).
    TrainOrpo(stage3::TrainOrpoArgs),
    /// A model folder with a LoRA adapter merged into its weights (the base of a next
    /// ORPO round).
    MergeAdapter(stage3::MergeAdapterArgs),
    /// Stage 2: train the action-conditioned video world model on recorded bags.
    TrainWorldModel(world_model::TrainArgs),
    /// Stage 2: a world model's predicted frames for one action, as a GIF beside the truth.
    Predict(world_model::PredictArgs),
    /// Stage 2: how well a world model ranks candidate actions against the simulator, on
    /// held-out states.
    WmEval(world_model::WmEvalArgs),
    /// Stage 2: world-model training steps/s and prediction latency by batch and sampler steps.
    WmBench(world_model::WmBenchArgs),
    /// Stage 2: fit the particle prior's constants (table mobility, sag, stretch) to the
    /// bags' clips, and write the model config that holds them.
    FitPrior(world_model::FitPriorArgs),
    /// Decision latency of a VLM planner folder (image in → action out) and K candidates
    /// batched vs one by one.
    PlanBench(plan_bench::PlanBenchArgs),
    /// Memory and message accounting of a long in-process run: a camera at 30 Hz, 640×480,
    /// with a subscriber that cannot keep up (10 min by default).
    Soak(soak::SoakArgs),
    /// Message types: list them, or show one's full definition.
    Interface {
        /// `pkg/msg/Name` to show; all types are listed when absent.
        type_name: Option<String>,
    },
}

/// The command line, where every option that takes a value takes a negative number as
/// that value: `--lr -1` reaches the option's own check, or clap's "invalid value '-1' for
/// '--episodes'", instead of "unexpected argument '-1' found", which named no option
/// (before session 43 only `run --duration` allowed it).
fn command_line() -> clap::Command {
    fn negative_values(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| {
            if a.get_action().takes_values() {
                a.allow_negative_numbers(true)
            } else {
                a
            }
        })
        .mut_subcommands(negative_values)
    }
    negative_values(<Cli as clap::CommandFactory>::command())
}

fn main() -> ExitCode {
    // Parsing spawns no thread, so the thread counts can still be set after it.
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&command_line().get_matches())
        .unwrap_or_else(|e| e.exit());
    if let Command::PretrainZeroShot(args) = &cli.command {
        dreamplan::vlm::share_cpu_threads(args.candidates_side_by_side());
    }
    dreamplan::vlm::pin_cpu_threads();
    keep_freed_memory();
    let mut filter = quiet_dds_logs(&cli.log);
    if matches!(
        cli.command,
        Command::Robot(robot::RobotCommand::Envelope { .. })
    ) && !filter.contains("executor")
    {
        // The audit clamps thousands of actions on purpose: the executor's warning for
        // each would bury the report.
        filter.push_str(",dreamplan::nodes::executor=error");
    }
    let env_filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        // Said, not silently replaced (before session 43 a typo'd filter gave `info`).
        eprintln!(
            "warning: --log {:?} is not a log filter ({e}); logging at info",
            cli.log
        );
        "info".into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many errors already put their
/// source in their own text (`"{path}: {source}"`), and anyhow's `{:#}` would print that
/// source a second time.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            launch,
            launch_args,
            duration,
            out,
            bus,
            ros_args,
        } => {
            let mut launch_sim_time = false;
            let mut graph = match launch {
                Some(file) => {
                    let (mut g, sim_time) = graph_of_launch(&file, &launch_args)?;
                    launch_sim_time = sim_time;
                    if let Some(d) = duration {
                        anyhow::ensure!(
                            d.is_finite() && d >= 0.0,
                            "--duration must be a finite number of seconds ≥ 0 (0: until Ctrl-C)"
                        );
                        g.duration_s = d;
                    }
                    g
                }
                None => {
                    // clap's `requires` is not checked once --config is given (it conflicts
                    // with --launch): launch arguments were silently dropped.
                    anyhow::ensure!(
                        launch_args.is_empty(),
                        "{} are launch arguments, for --launch FILE; a --config graph takes its settings in the YAML or with --ros-args -p",
                        launch_args.join(" ")
                    );
                    load_graph(config.as_deref(), duration)?
                }
            };
            let mut ros = dreamplan::ros_args::RosArgs::parse(ros_args.as_deref().unwrap_or(&[]))
                .map_err(anyhow::Error::msg)?;
            ros.apply(&mut graph, dreamplan::nodes::accepts)
                .map_err(anyhow::Error::msg)?;
            if launch_sim_time {
                // The launch file's nodes follow /clock as under `ros2 launch`; the local
                // bus has none, so there it runs on wall time and says so.
                if bus == BusArg::Local {
                    tracing::warn!("the launch file sets use_sim_time: the local bus has no /clock, so this graph runs on wall time (--bus dds follows /clock)");
                } else {
                    ros.use_sim_time = true;
                }
            }
            run_graph_in_process(graph, Some(&out), bus, &ros)
        }
        Command::Bag(cmd) => bag::run(cmd),
        Command::Sim(cmd) => sim::run(cmd),
        Command::Robot(cmd) => robot::run(cmd),
        Command::Vlm(cmd) => vlm::run(cmd),
        Command::Eval(args) => eval::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Collect(args) => collect::run(args),
        Command::CheckCalibration(args) => calibration::run(args),
        Command::PretrainZeroShot(args) => zero_shot::run(args),
        Command::PlanBench(args) => plan_bench::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Preferences(args) => stage3::preferences(args),
        Command::TrainOrpo(args) => stage3::train_orpo(args),
        Command::MergeAdapter(args) => stage3::merge_adapter(args),
        Command::TrainWorldModel(args) => world_model::train(args),
        Command::Predict(args) => world_model::predict(args),
        Command::WmEval(args) => world_model::wm_eval(args),
        Command::WmBench(args) => world_model::wm_bench(args),
        Command::FitPrior(args) => world_model::fit_prior(args),
        Command::DefaultConfig => {
            print!("{}", dreamplan::config::DEFAULT_GRAPH_YAML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Interface { type_name } => {
            match type_name {
                None => dreamplan::msg::ALL_TYPE_NAMES
                    .iter()
                    .for_each(|t| println!("{t}")),
                Some(name) => {
                    struct Def;
                    impl dreamplan::msg::TypeVisitor for Def {
                        type Output = &'static str;
                        fn visit<M: dreamplan::msg::Message>(self) -> &'static str {
                            M::DEFINITION
                        }
                    }
                    let def = dreamplan::msg::visit_type(&name, Def).with_context(|| {
                        format!("unknown message type `{name}` (see `dreamplan interface`)")
                    })?;
                    print!("{def}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `filter` with RustDDS's and ros2-client's own logs at `error` unless it names them:
/// at `warn` they report every discovery hiccup of a healthy graph, several per second.
fn quiet_dds_logs(filter: &str) -> String {
    let mut f = filter.to_string();
    for target in ["rustdds", "ros2_client"] {
        if !f.contains(target) {
            f.push_str(&format!(",{target}=error"));
        }
    }
    f
}

/// The dreamplan nodes of a launch file with its arguments applied, and whether it asks
/// for `use_sim_time`; what it would start besides them is named on stderr.
fn graph_of_launch(file: &std::path::Path, args: &[String]) -> anyhow::Result<(GraphConfig, bool)> {
    let launch = dreamplan::launch::LaunchFile::load(file)?;
    let mut overrides = std::collections::BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once(":=")
            .ok_or_else(|| anyhow::anyhow!("launch argument `{a}`: expected NAME:=VALUE"))?;
        overrides.insert(k.to_string(), v.to_string());
    }
    let share = std::path::absolute(file)?
        .parent()
        .and_then(|p| p.parent())
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("{}: no folder above it", file.display()))?;
    let resolved = launch.resolve(&overrides, &share)?;
    for x in &resolved.externals {
        eprintln!("not started in this process (outside dreamplan): {x}");
    }
    anyhow::ensure!(
        !resolved.graph.nodes.is_empty(),
        "{}: starts no dreamplan node with these arguments",
        file.display()
    );
    Ok((resolved.graph, resolved.use_sim_time))
}

/// The graph from `config` (or the built-in one), with `--duration` applied.
fn load_graph(
    config: Option<&std::path::Path>,
    duration: Option<f64>,
) -> anyhow::Result<GraphConfig> {
    let mut graph = match config {
        Some(path) if !path.exists() => anyhow::bail!(
            "--config {}: no such graph file (`dreamplan default-config > graph.yaml` writes the built-in one to start from)",
            path.display()
        ),
        Some(path) => GraphConfig::load(path)?,
        None => GraphConfig::builtin(),
    };
    if let Some(d) = duration {
        anyhow::ensure!(
            d.is_finite() && d >= 0.0,
            "--duration must be a finite number of seconds ≥ 0 (0: until Ctrl-C)"
        );
        graph.duration_s = d;
    }
    Ok(graph)
}

/// Runs `graph` on the in-process bus until it ends or Ctrl-C; failure if any node failed.
/// Runs `graph` on the in-process bus until its duration, its first node's end or Ctrl-C;
/// with `report`, each scored episode becomes a GIF there and a summary is printed.
fn run_graph_in_process(
    graph: GraphConfig,
    report: Option<&std::path::Path>,
    bus: BusArg,
    ros: &dreamplan::ros_args::RosArgs,
) -> anyhow::Result<ExitCode> {
    use dreamplan::bus::remap::Remapped;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match bus {
        BusArg::Local => {
            anyhow::ensure!(
                !ros.use_sim_time,
                "use_sim_time needs a bus with a /clock publisher: --bus dds"
            );
            if ros.namespace.is_some() {
                tracing::warn!("--ros-args __ns has no effect on the local bus (no ROS nodes)");
            }
            let bus = Remapped::new(LocalBus::default(), &ros.remaps)?;
            run_graph_on(&rt, bus, graph, report)
        }
        #[cfg(feature = "dds-bus")]
        BusArg::Dds => {
            let _guard = rt.enter();
            let mut opts = dreamplan::bus::dds::DdsOptions::from_env("dreamplan")?;
            opts.use_sim_time = ros.use_sim_time;
            if let Some(ns) = &ros.namespace {
                opts.namespace = ns.clone();
            }
            tracing::info!(
                domain = opts.domain_id,
                localhost_only = opts.localhost_only,
                namespace = %opts.namespace,
                use_sim_time = opts.use_sim_time,
                "joining ROS 2 over DDS"
            );
            let bus = Remapped::new(dreamplan::bus::dds::DdsBus::new(&opts)?, &ros.remaps)?;
            run_graph_on(&rt, bus, graph, report)
        }
        #[cfg(not(feature = "dds-bus"))]
        BusArg::Dds => anyhow::bail!(
            "--bus dds needs the `ros2-dds` feature, a default one this build left out (--no-default-features): cargo build --release"
        ),
    }
}

/// Runs `graph` on `bus` (see [`run_graph_in_process`]).
fn run_graph_on<B: dreamplan::bus::Bus>(
    rt: &tokio::runtime::Runtime,
    bus: B,
    graph: GraphConfig,
    report: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let (report, summary) = rt.block_on(async {
        let reporter = match report {
            Some(out) => Some(run_report::Reporter::start(&bus, &graph, out)?),
            None => None,
        };
        let result = dreamplan::runner::run_until_ctrl_c(bus, &graph).await;
        let summary = match reporter {
            Some(r) => {
                let (out, planner, has_sim) = (r.out.clone(), r.planner.clone(), r.has_sim);
                let episodes = r.finish().await?;
                Some(run_report::summary(
                    &episodes,
                    &out,
                    planner.as_deref(),
                    has_sim,
                ))
            }
            None => None,
        };
        anyhow::Ok((result?, summary))
    })?;
    if let Some(s) = summary {
        println!("{s}");
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option of every subcommand, with the path of subcommands that leads to it.
    fn all_args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((path.to_string(), a.clone()));
        }
        for sub in cmd.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_of_every_subcommand_has_a_help_line() {
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        let mut args = Vec::new();
        all_args(&cmd, "dreamplan", &mut args);
        assert!(args.len() > 100, "walked only {} options", args.len());
        let undocumented: Vec<String> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none_or(|h| h.to_string().trim().is_empty()))
            .map(|(path, a)| format!("{path} --{}", a.get_long().unwrap_or(a.get_id().as_str())))
            .collect();
        assert!(
            undocumented.is_empty(),
            "options without help: {undocumented:#?}"
        );
    }

    #[test]
    fn options_with_a_default_show_it_in_help() {
        let cmd = super::Cli::command();
        let mut args = Vec::new();
        all_args(&cmd, "dreamplan", &mut args);
        let hidden: Vec<String> = args
            .iter()
            .filter(|(_, a)| !a.get_default_values().is_empty() && a.is_hide_default_value_set())
            .map(|(path, a)| format!("{path} --{}", a.get_id()))
            .collect();
        assert!(hidden.is_empty(), "defaults hidden from help: {hidden:#?}");
    }

    #[test]
    fn errors_name_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        #[derive(Debug, thiserror::Error)]
        #[error("/x/a.yaml: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = anyhow::Error::new(Outer(io)).context("loading the graph");
        assert_eq!(
            super::error_text(&e),
            "loading the graph: /x/a.yaml: No such file or directory"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_text(&plain), "outer: inner");
    }
}
