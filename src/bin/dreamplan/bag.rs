//! `dreamplan bag info|play|record`, in the spirit of `ros2 bag`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use dreamplan::bag::replay::{Pace, PlayOptions, Player};
use dreamplan::bag::{written_whole, BagReader, Decodable, Filter};
use dreamplan::bus::LocalBus;
use dreamplan::config::{GraphConfig, NodeSpec};

#[derive(Subcommand)]
pub enum BagCommand {
    /// Files, duration, topics with types, counts and QoS.
    Info {
        /// Bag directory, .mcap or .db3 file.
        path: PathBuf,
        /// Count messages by reading the whole bag (for bags without metadata or summary).
        #[arg(long)]
        count: bool,
        /// Also list the DreamPlan transitions the world model would learn from (one row per
        /// executed action: its episode events, action, joint states and frames), with what
        /// each lacks.
        #[arg(long)]
        transitions: bool,
    },
    /// Publish a bag's messages onto the in-process bus (with a node graph listening).
    Play {
        /// Bag directory, .mcap or .db3 file.
        path: PathBuf,
        /// Playback rate relative to recorded time.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        /// Ignore timing; publish as fast as subscribers take messages.
        #[arg(long, conflicts_with = "rate")]
        fast: bool,
        /// Only these topics (comma separated).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// Publish rosgraph_msgs/Clock on /clock.
        #[arg(long)]
        clock: bool,
        /// Node graph to run while playing; default: a monitor of every played topic.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a node graph in-process and record its topics into a new bag.
    Record {
        /// Bag directory to create.
        #[arg(short, long)]
        out: PathBuf,
        /// Graph to run (default: the built-in graph).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only these topics (comma separated; default all).
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        /// Stop after this many seconds (default: the graph's duration, or Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// zstd chunk compression.
        #[arg(long)]
        zstd: bool,
        /// Split files at this many MiB of messages, counted before compression (zstd files
        /// come out smaller).
        #[arg(long)]
        split_mib: Option<u64>,
        /// Split files at this many seconds.
        #[arg(long)]
        split_s: Option<f64>,
    },
    /// Benchmark bag writing and reading against PyPI rosbags on the same files.
    Bench {
        /// Working directory to create for the bags (relative to where you run it).
        #[arg(long, default_value = "target/bag-bench")]
        dir: PathBuf,
        /// Python with rosbags (scripts/requirements.txt) for the side-by-side figures.
        #[arg(long)]
        python: Option<PathBuf>,
        /// JointState messages.
        #[arg(long, default_value_t = 100_000)]
        joint_states: u64,
        /// 640×480 images.
        #[arg(long, default_value_t = 500)]
        images: u64,
    },
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// What reading a whole bag found.
struct ReadThrough {
    per_topic: std::collections::BTreeMap<String, u64>,
    messages: u64,
    first: Option<u64>,
    last: Option<u64>,
    damage: Option<dreamplan::bag::BagError>,
}

impl ReadThrough {
    fn duration_s(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 * 1e-9,
            _ => 0.0,
        }
    }
}

/// Reads every message up to the end or the first damage.
fn read_through(reader: &BagReader) -> ReadThrough {
    let mut r = ReadThrough {
        per_topic: Default::default(),
        messages: 0,
        first: None,
        last: None,
        damage: None,
    };
    for item in reader.messages(&Filter::default()) {
        match item {
            Ok(rec) => {
                *r.per_topic.entry(rec.topic.to_string()).or_insert(0) += 1;
                r.messages += 1;
                r.first = Some(r.first.map_or(rec.log_time, |f| f.min(rec.log_time)));
                r.last = Some(r.last.map_or(rec.log_time, |l| l.max(rec.log_time)));
            }
            Err(e) => {
                r.damage = Some(e);
                break;
            }
        }
    }
    r
}

/// `bag info --transitions`: the transitions of the default DreamPlan topics, a row each,
/// and how many lack what a world-model clip needs (an action that finished, joint states,
/// an object-only frame of its episode before the action, object-only frames).
fn print_transitions(path: &std::path::Path) -> anyhow::Result<()> {
    use dreamplan::bag::transitions::TransitionTopics;
    let reader = BagReader::open(path)?;
    let mut rows = Vec::new();
    let (mut episodes, mut no_action, mut unfinished, mut failed, mut no_joints, mut no_objects) =
        (std::collections::BTreeSet::new(), 0, 0, 0, 0, 0);
    let mut no_context = 0;
    // Damage ends the listing after the rows read before it, which are printed (before
    // session 52 the error came alone).
    let mut damage = None;
    for tr in reader.transitions(TransitionTopics::default()) {
        let tr = match tr {
            Ok(tr) => tr,
            Err(e) => {
                damage = Some(e);
                break;
            }
        };
        episodes.insert(tr.episode);
        no_action += usize::from(tr.action.is_none());
        unfinished += usize::from(tr.finished.is_none());
        failed += usize::from(tr.failed);
        no_joints += usize::from(tr.joint_states.is_empty());
        no_objects += usize::from(tr.object_frames.is_empty());
        no_context += usize::from(tr.object_observation.is_none());
        rows.push(format!(
            "  {:>7} {:>4}  {:<6} {:>5}  {:<6} {:<8} {:>6} {:>6}/{:<5} {:>6}",
            tr.episode,
            tr.step,
            tr.task,
            tr.score.map_or("-".into(), |s| format!("{s:.2}")),
            if tr.action.is_some() { "yes" } else { "none" },
            match (tr.failed, tr.finished) {
                (true, _) => "failed",
                (false, Some(_)) => "yes",
                (false, None) => "never",
            },
            tr.joint_states.len(),
            tr.frames_during.len(),
            tr.frames_after.len(),
            tr.object_frames.len(),
        ));
    }
    println!(
        "Transitions: {} in {} episodes; without an action {no_action}, never finished \
         {unfinished}, failed {failed}, without joint states {no_joints}, without an object-only \
         frame before the action {no_context}, without object-only frames {no_objects}",
        rows.len(),
        episodes.len()
    );
    if !rows.is_empty() {
        println!(
            "  episode step  task   score  action finished joints frames (during/after) object-only"
        );
        rows.iter().for_each(|r| println!("{r}"));
    }
    match damage {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::from(e)
            .context(format!("reading the transitions of {}", path.display()))),
    }
}

fn info(path: &std::path::Path, count: bool) -> anyhow::Result<ExitCode> {
    let reader = BagReader::open(path)?;
    let files = reader.files();
    let size: u64 = files.iter().map(|f| f.1).sum();
    println!("Bag:        {}", path.display());
    println!(
        "Files:      {}",
        files
            .iter()
            .map(|f| f
                .0
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("Size:       {}", human_bytes(size));
    // A file cut off before its summary may hold fewer messages than metadata.yaml
    // promises: read it through, and report what is really there.
    let whole = written_whole(&reader);
    let read = (count || !whole || reader.metadata().is_none()).then(|| read_through(&reader));
    if let Some(m) = reader.metadata() {
        println!(
            "Storage:    {} (metadata.yaml version {})",
            m.storage_identifier, m.version
        );
        let listed = (m.message_count, m.duration.nanoseconds as f64 * 1e-9);
        match &read {
            Some(r) if r.messages != listed.0 || r.damage.is_some() => {
                println!(
                    "Duration:   {:.3} s readable (metadata.yaml says {:.3} s)",
                    r.duration_s(),
                    listed.1
                );
                println!(
                    "Start:      {:.3} s since epoch",
                    m.starting_time.nanoseconds_since_epoch as f64 * 1e-9
                );
                println!(
                    "Messages:   {} readable (metadata.yaml says {})",
                    r.messages, listed.0
                );
            }
            _ => {
                println!("Duration:   {:.3} s", listed.1);
                println!(
                    "Start:      {:.3} s since epoch",
                    m.starting_time.nanoseconds_since_epoch as f64 * 1e-9
                );
                println!("Messages:   {}", listed.0);
            }
        }
    } else {
        let r = read.as_ref().expect("read when there is no metadata");
        println!("Storage:    no metadata.yaml (recovered from the storage files)");
        println!("Duration:   {:.3} s (counted)", r.duration_s());
        println!("Messages:   {} (counted)", r.messages);
    }
    if !whole {
        println!(
            "Warning:    a storage file has no summary (cut off, or its recorder stopped before \
             the end); the counts below are what could be read"
        );
    }
    let read_through = read.is_some();
    let (counted, damage) = match read {
        Some(r) => (r.per_topic, r.damage),
        None => Default::default(),
    };
    println!("Topics:");
    for t in reader.topics() {
        // Read through, a topic of which nothing could be read has 0 (not the count
        // metadata.yaml promised).
        let n = if read_through {
            Some(counted.get(&t.name).copied().unwrap_or(0))
        } else {
            t.message_count
        }
        .map_or("?".into(), |n| n.to_string());
        let qos = t
            .qos
            .first()
            .map(|q| {
                format!("depth {} {:?} {:?}", q.depth, q.reliability, q.durability).to_lowercase()
            })
            .unwrap_or_else(|| "qos unknown".into());
        let note = match t.decodable {
            Decodable::Yes => "",
            Decodable::UnknownType => "  [type not known to dreamplan: skipped on play]",
            Decodable::SchemaMismatch => "  [schema differs from dreamplan's: skipped on play]",
        };
        println!(
            "  {:<32} {:<36} {:>8} msgs  {qos}{note}",
            t.name, t.type_name, n
        );
    }
    if let Some(e) = damage {
        println!("Damage:     {e}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: BagCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BagCommand::Info {
            path,
            count,
            transitions,
        } => {
            let code = info(&path, count)?;
            if transitions {
                print_transitions(&path)?;
            }
            Ok(code)
        }
        BagCommand::Bench {
            dir,
            python,
            joint_states,
            images,
        } => {
            crate::bench::run(&dir, python.as_deref(), joint_states, images)?;
            Ok(ExitCode::SUCCESS)
        }
        BagCommand::Play {
            path,
            rate,
            fast,
            topics,
            clock,
            config,
        } => {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be > 0");
            let reader = BagReader::open(&path)?;
            // A topic the bag does not have plays nothing: say so (the default monitor
            // then failed with "topics must list at least one topic").
            let absent: Vec<&String> = topics
                .iter()
                .filter(|t| !reader.topics().iter().any(|b| &b.name == *t))
                .collect();
            if !absent.is_empty() {
                let have: Vec<String> = reader.topics().iter().map(|t| t.name.clone()).collect();
                anyhow::bail!(
                    "--topics {}: not in {} (its topics: {})",
                    absent
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                    path.display(),
                    have.join(", ")
                );
            }
            let graph = match &config {
                Some(p) => GraphConfig::load(p)?,
                None => {
                    let mut topics: Vec<String> = reader
                        .topics()
                        .iter()
                        .filter(|t| {
                            t.decodable == Decodable::Yes
                                && (topics.is_empty() || topics.contains(&t.name))
                        })
                        .map(|t| t.name.clone())
                        .collect();
                    if clock && !topics.iter().any(|t| t == "/clock") {
                        // What --clock publishes is shown too (docs/bags.md says so).
                        topics.push("/clock".into());
                    }
                    let params = serde_yaml::to_value(serde_yaml::Mapping::from_iter([
                        ("topics".into(), serde_yaml::to_value(&topics)?),
                        ("report_every_s".into(), 1.0.into()),
                    ]))?;
                    GraphConfig {
                        duration_s: 0.0,
                        nodes: vec![NodeSpec {
                            name: "monitor".into(),
                            kind: "monitor".into(),
                            params,
                            enabled: true,
                        }],
                        origin: "bag play's default monitor".into(),
                    }
                }
            };
            let options = PlayOptions {
                pace: if fast {
                    Pace::AsFastAsConsumed
                } else {
                    Pace::Rate(rate)
                },
                filter: Filter::topics(topics),
                clock_topic: clock.then(|| "/clock".to_string()),
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let bus = LocalBus::new(dreamplan::clock::Clock::sim(Default::default()));
                // The bag's topics exist before the graph starts, so that nodes which find
                // topics on the bus (the monitor) subscribe before the first message.
                let player = Player::new(&reader, &bus, &options)?;
                let stop = CancellationToken::new();
                let graph_stop = stop.clone();
                let graph_bus = bus.clone();
                let graph_task = tokio::spawn(async move {
                    dreamplan::runner::run_graph(graph_bus, &graph, graph_stop).await
                });
                // Let the graph's subscribers join before the first message: every played
                // topic for the default monitor; a custom graph may leave some unheard.
                let missing = player
                    .wait_for_subscribers(&reader, std::time::Duration::from_secs(2))
                    .await;
                if !missing.is_empty() {
                    tracing::info!("played with no subscriber in the graph: {missing:?}");
                }
                let ctrl_c = stop.clone();
                let watcher = tokio::spawn(async move {
                    dreamplan::runner::stop_requested().await;
                    ctrl_c.cancel();
                });
                let report = player.play(&reader, &bus, &stop).await;
                // Give subscribers a moment to drain, then stop the graph.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                stop.cancel();
                watcher.abort();
                let graph_report = graph_task.await.context("graph task")??;
                let report = report?;
                println!("published: {:?}", report.published);
                if !report.skipped.is_empty() {
                    println!("skipped (unknown type or schema): {:?}", report.skipped);
                }
                if !report.undecodable.is_empty() {
                    println!("undecodable: {:?}", report.undecodable);
                }
                if let Some(d) = &report.damage {
                    println!("stopped at damage: {d}");
                }
                Ok(if graph_report.is_clean() && report.damage.is_none() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            })
        }
        BagCommand::Record {
            out,
            config,
            topics,
            duration,
            zstd,
            split_mib,
            split_s,
        } => {
            let mut graph = crate::load_graph(config.as_deref(), duration)?;
            let mut params = serde_yaml::Mapping::new();
            params.insert("out_dir".into(), out.to_string_lossy().to_string().into());
            params.insert("topics".into(), serde_yaml::to_value(&topics)?);
            params.insert(
                "compression".into(),
                if zstd { "zstd" } else { "none" }.into(),
            );
            if let Some(m) = split_mib {
                params.insert("split_max_mib".into(), m.into());
            }
            if let Some(s) = split_s {
                params.insert("split_max_s".into(), s.into());
            }
            graph.nodes.push(NodeSpec {
                name: "recorder".into(),
                kind: "recorder".into(),
                params: params.into(),
                enabled: true,
            });
            crate::run_graph_in_process(graph, None, crate::BusArg::Local, &Default::default())
        }
    }
}
