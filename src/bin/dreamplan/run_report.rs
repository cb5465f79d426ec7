//! What `dreamplan run` leaves behind: every scored episode of the graph's simulator as a
//! GIF (the camera beside the goal) and a summary that says what ran, what a score means
//! and what to try next. It listens on the same bus as the nodes, so it sees exactly what
//! the planner saw.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dreamplan::bus::{Bus, Qos};
use dreamplan::config::GraphConfig;
use dreamplan::msg::prelude::*;
use dreamplan::render::Frame;
use dreamplan::sim::tasks::Task;
use tokio_util::sync::CancellationToken;

/// Camera frames kept per episode for its GIF (every other one beyond this is dropped, so
/// a long episode still fits).
const MAX_FRAMES: usize = 150;

/// How many of the bus's delivery times ([`Bus::settle`]) the reporter waits, once
/// stopped, for the `scored` of an episode still open.
const LINGER_SETTLES: u32 = 5;

/// One scored episode.
pub struct EpisodeSummary {
    pub episode: u32,
    pub task: String,
    pub seed: String,
    pub score: f64,
    pub detail: String,
    pub gif: Option<PathBuf>,
}

/// The graph runs a simulator of its own (an enabled `sim` node).
fn has_sim(graph: &GraphConfig) -> bool {
    graph.nodes.iter().any(|n| n.enabled && n.kind == "sim")
}

/// The topics the reporter listens to: the first enabled `sim` node's, or the defaults.
fn topics(graph: &GraphConfig) -> (String, String, String, Option<String>) {
    let sim = graph
        .nodes
        .iter()
        .find(|n| n.enabled && n.kind == "sim")
        .and_then(|n| {
            serde_yaml::from_value::<dreamplan::nodes::sim::SimConfig>(n.params.clone()).ok()
        });
    let planner = graph
        .nodes
        .iter()
        .find(|n| n.enabled && n.kind == "planner")
        .and_then(|n| n.params.get("backend"))
        .and_then(|b| b.as_str().map(str::to_string));
    let t = sim.map(|s| s.topics).unwrap_or_default();
    (t.image, t.goal, t.episode, planner)
}

/// Listens on `bus` until `stop`, writing each scored episode's GIF into `out`.
pub struct Reporter {
    task: tokio::task::JoinHandle<anyhow::Result<Vec<EpisodeSummary>>>,
    stop: CancellationToken,
    pub out: PathBuf,
    /// `out` did not exist before this run.
    made: bool,
    pub planner: Option<String>,
    /// The graph has a `sim` node (else episodes come only from one elsewhere on the bus).
    pub has_sim: bool,
}

impl Reporter {
    /// Subscribes before the graph starts (so the first episode's `reset` is seen).
    /// `out` is made (or checked) first, so a path that cannot be a folder is refused
    /// before the graph runs, not after it.
    pub fn start<B: Bus>(bus: &B, graph: &GraphConfig, out: &Path) -> anyhow::Result<Self> {
        let made = !out.exists();
        std::fs::create_dir_all(out).with_context(|| {
            format!(
                "--out {}: cannot make the folder for the episodes' GIFs",
                out.display()
            )
        })?;
        let (image_topic, goal_topic, episode_topic, planner) = topics(graph);
        let mut images = bus.subscribe::<Image>(&image_topic, Qos::keep_last(50))?;
        let mut goals = bus.subscribe::<Image>(&goal_topic, Qos::keep_last(5))?;
        let mut events = bus.subscribe::<EpisodeEvent>(&episode_topic, Qos::keep_last(100))?;
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        // An episode still open (reset, not scored) when the run stops is waited for this
        // long: a few of the bus's delivery times (zero in process).
        let linger = bus.settle() * LINGER_SETTLES;
        // So is the first `scored` of a graph with a simulator, even when no `reset` was
        // seen: over DDS the reporter's reader may match the sim's writer only after its
        // first `reset` (the sim starts as soon as the goal has a reader, and the
        // reporter's goal reader is one), and a `scored` still in flight at the stop was
        // then lost (a CI run in session 49: "no episode was scored" though the sim had
        // scored its one episode).
        let await_first = has_sim(graph);
        let dir = out.to_path_buf();
        let task = tokio::spawn(async move {
            let mut st = Listening {
                dir,
                done: Vec::new(),
                frames: Vec::new(),
                goal: None,
                seed: String::new(),
                open: false,
            };
            loop {
                tokio::select! {
                    // Events first: a `scored` already here is never dropped for the stop.
                    biased;
                    Some(e) = events.recv() => st.event(&e)?,
                    _ = cancelled.cancelled() => break,
                    Some(img) = images.recv() => st.image(&img),
                    Some(img) = goals.recv() => st.goal = frame_of(&img),
                    else => break,
                }
            }
            // Stopped with an episode open: its `scored` may still be on its way (a DDS
            // sample resent after a lost packet takes a heartbeat period), so wait for it
            // up to the linger before giving up on it.
            let until = tokio::time::Instant::now() + linger;
            while st.open || (await_first && st.done.is_empty()) {
                match tokio::time::timeout_at(until, events.recv()).await {
                    Ok(Some(e)) => st.event(&e)?,
                    _ => break,
                }
            }
            while let Some(e) = events.try_recv() {
                st.event(&e)?;
            }
            Ok(st.done)
        });
        Ok(Self {
            task,
            stop,
            out: out.to_path_buf(),
            made,
            planner,
            has_sim: has_sim(graph),
        })
    }

    /// Stops listening and returns the scored episodes. A folder this run made and left
    /// empty is removed.
    pub async fn finish(self) -> anyhow::Result<Vec<EpisodeSummary>> {
        self.stop.cancel();
        let done = self
            .task
            .await
            .context("the run reporter stopped abnormally")?;
        if self.made {
            // Fails, as it should, when the folder is not empty.
            let _ = std::fs::remove_dir(&self.out);
        }
        done
    }
}

/// What the reporter has seen so far.
struct Listening {
    dir: PathBuf,
    done: Vec<EpisodeSummary>,
    frames: Vec<Frame>,
    goal: Option<Frame>,
    seed: String,
    /// An episode was reset and not yet scored.
    open: bool,
}

impl Listening {
    fn image(&mut self, img: &Image) {
        if let Some(f) = frame_of(img) {
            if self.frames.len() >= MAX_FRAMES {
                // Halve the frame rate rather than cut the episode's end.
                self.frames = std::mem::take(&mut self.frames)
                    .into_iter()
                    .step_by(2)
                    .collect();
            }
            self.frames.push(f);
        }
    }

    fn event(&mut self, e: &EpisodeEvent) -> anyhow::Result<()> {
        if e.event == EpisodeEvent::EVENT_RESET {
            self.frames.clear();
            self.seed = e.detail.trim_start_matches("seed ").to_string();
            self.open = true;
        } else if e.event == EpisodeEvent::EVENT_SCORED {
            self.open = false;
            let gif = if self.frames.is_empty() {
                None
            } else {
                let path = self.dir.join(format!(
                    "episode_{:03}_{}_seed{}.gif",
                    e.episode, e.task, self.seed
                ));
                let shown: Vec<Frame> = self
                    .frames
                    .iter()
                    .map(|f| beside(f, self.goal.as_ref()))
                    .collect();
                // A GIF that cannot be written (a full disk, the folder removed) costs
                // that GIF, not the run's summary.
                match std::fs::create_dir_all(&self.dir)
                    .with_context(|| format!("creating {}", self.dir.display()))
                    .and_then(|()| crate::sim::save_gif(&shown, 10.0, &path))
                {
                    Ok(()) => Some(path),
                    Err(err) => {
                        tracing::warn!("episode {}: no GIF: {err:#}", e.episode);
                        None
                    }
                }
            };
            self.done.push(EpisodeSummary {
                episode: e.episode,
                task: e.task.clone(),
                seed: self.seed.clone(),
                score: e.score,
                detail: e.detail.clone(),
                gif,
            });
        }
        Ok(())
    }
}

/// rgb8 pixels of a camera image; other encodings are not shown.
fn frame_of(img: &Image) -> Option<Frame> {
    let rgb = dreamplan::world_model::clip::image_rgb(img).ok()?;
    Some(Frame {
        width: img.width,
        height: img.height,
        rgb,
        depth: Vec::new(),
    })
}

/// The camera frame with the goal image to its right (same height), so a viewer compares
/// what the arm did with what was asked.
fn beside(cam: &Frame, goal: Option<&Frame>) -> Frame {
    let Some(goal) = goal.filter(|g| g.height == cam.height) else {
        return cam.clone();
    };
    let (w, h) = ((cam.width + goal.width) as usize, cam.height as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        rgb.extend_from_slice(&cam.rgb[y * cam.width as usize * 3..][..cam.width as usize * 3]);
        rgb.extend_from_slice(&goal.rgb[y * goal.width as usize * 3..][..goal.width as usize * 3]);
    }
    Frame {
        width: w as u32,
        height: h as u32,
        rgb,
        depth: Vec::new(),
    }
}

/// Episode GIFs in `out` (`episode_*.gif`, as this reporter names them) that none of
/// `episodes` wrote.
fn earlier_gifs(out: &Path, episodes: &[EpisodeSummary]) -> usize {
    let Ok(entries) = std::fs::read_dir(out) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("episode_") && name.ends_with(".gif")
        })
        .filter(|p| {
            !episodes
                .iter()
                .any(|e| e.gif.as_deref() == Some(p.as_path()))
        })
        .count()
}

/// The summary printed when `run` ends.
pub fn summary(
    episodes: &[EpisodeSummary],
    out: &Path,
    planner: Option<&str>,
    has_sim: bool,
) -> String {
    let mut s = String::new();
    let planner = planner.unwrap_or("configured");
    if episodes.is_empty() && !has_sim {
        s.push_str(
            "no episode was scored in this run: the graph has no `sim` node, so only a simulator elsewhere on the bus (another process, with --bus dds) would score one\n",
        );
    } else if episodes.is_empty() {
        s.push_str(&format!(
            "no episode was scored in this run (the {planner} planner's first action takes a few seconds; try a longer --duration)\n"
        ));
    } else {
        let mean = episodes.iter().map(|e| e.score).sum::<f64>() / episodes.len() as f64;
        s.push_str(&format!(
            "{} episode(s) scored with the {planner} planner, mean score {mean:.2}:\n",
            episodes.len()
        ));
        for e in episodes {
            s.push_str(&format!(
                "  episode {} ({}, seed {}): score {} ({})",
                e.episode, e.task, e.seed, e.score, e.detail
            ));
            if let Some(g) = &e.gif {
                s.push_str(&format!(" → {}", g.display()));
            }
            s.push('\n');
        }
        let tasks: Vec<&str> = {
            let mut t: Vec<&str> = episodes.iter().map(|e| e.task.as_str()).collect();
            t.dedup();
            t
        };
        for name in tasks {
            if let Some(task) = Task::from_name(name) {
                let (full, half) = task.thresholds();
                s.push_str(&format!(
                    "score ({name}): 1 when the object ends within {:.0} mm of the goal shape, 0.5 within {:.0} mm, else 0 (how each task measures it: `score` in src/sim/tasks.rs).\n",
                    full * 1000.0,
                    half * 1000.0
                ));
            }
        }
        s.push_str(&format!(
            "each GIF in {} shows the camera (left) beside the goal (right).\n",
            out.display()
        ));
        // A second run into the same folder overwrites the GIFs of the same names and
        // leaves the rest (a review finding, session 53: they looked like this run's).
        let older = earlier_gifs(out, episodes);
        if older > 0 {
            s.push_str(&format!(
                "{} also holds {older} episode GIF(s) of an earlier run, not listed above.\n",
                out.display()
            ));
        }
        // A newcomer's first run (the correspondence rule on rope) mostly scores 0: say
        // that this is the rule, not a broken install.
        if matches!(planner, "correspondence" | "coverage" | "random")
            && episodes.iter().any(|e| e.score == 0.0)
        {
            s.push_str(&format!(
                "the {planner} planner is a simple baseline and scores 0 on many episodes; \
                 README.md → Planner evaluation (built-in world) has its average per task over 100 seeds.\n"
            ));
        }
    }
    s.push_str(
        "next: `dreamplan eval --planner correspondence --episodes 30` scores a planner over many seeds; \
         `dreamplan sim render --task cloth --out cloth.png --keypoints 8` shows what the planner sees; \
         README.md → Command line lists the rest.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With nothing scored, the hint fits the graph: a longer run where a simulator runs,
    /// the missing `sim` node where none does (a longer run cannot help there).
    #[test]
    fn the_summary_of_an_empty_run_fits_the_graph() {
        let out = Path::new("dreamplan_run");
        let with_sim = summary(&[], out, Some("coverage"), true);
        assert!(with_sim.contains("try a longer --duration"), "{with_sim}");
        let without = summary(&[], out, None, false);
        assert!(without.contains("the graph has no `sim` node"), "{without}");
        assert!(!without.contains("--duration"), "{without}");
    }

    /// GIFs an earlier run left in the folder are said, not passed off as this run's.
    #[test]
    fn the_summary_tells_an_earlier_runs_gifs_apart() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("episode_000_rope_seed0.gif");
        for name in [
            "episode_000_rope_seed0.gif",
            "episode_003_cloth_seed3.gif",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let episode = EpisodeSummary {
            episode: 0,
            task: "rope".into(),
            seed: "0".into(),
            score: 1.0,
            detail: "distance 0.01 m".into(),
            gif: Some(ours.clone()),
        };
        let s = summary(
            std::slice::from_ref(&episode),
            dir.path(),
            Some("coverage"),
            true,
        );
        assert!(
            s.contains("also holds 1 episode GIF(s) of an earlier run"),
            "{s}"
        );
        std::fs::remove_file(dir.path().join("episode_003_cloth_seed3.gif")).unwrap();
        let s = summary(&[episode], dir.path(), Some("coverage"), true);
        assert!(!s.contains("earlier run"), "{s}");
    }

    /// The README sections the summary sends a newcomer to exist under those names.
    #[test]
    fn the_summary_names_readme_sections_that_exist() {
        let zero = EpisodeSummary {
            episode: 0,
            task: "rope".into(),
            seed: "0".into(),
            score: 0.0,
            detail: "distance 0.12 m".into(),
            gif: None,
        };
        let s = summary(&[zero], Path::new("x"), Some("correspondence"), true);
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let sections: Vec<&str> = s
            .split("README.md → ")
            .skip(1)
            .map(|part| part.split(" lists").next().unwrap())
            .map(|part| part.split(" has its").next().unwrap())
            .collect();
        assert_eq!(sections.len(), 2, "{s}");
        for section in sections {
            assert!(
                readme
                    .lines()
                    .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == section),
                "README.md has no section `{section}`"
            );
        }
    }
}
