//! `dreamplan soak`: the in-process graph under a steady camera load for minutes, with a
//! subscriber that cannot keep up, to show what a long run does to memory and to messages.
//!
//! The graph is real nodes on the in-process bus (the camera node's pattern source at the
//! asked rate and size, and a monitor node on its topic); beside them the soak holds two
//! subscriptions of its own, made before the graph starts so that both see every frame:
//! a fast one that only counts, and a slow one that spends `work_ms` on each message with a
//! short queue, as a planner busy with a decision does. At the end every frame the camera
//! published must be accounted for in the slow subscription: taken, dropped by its
//! keep-last queue (and counted), or still queued. Resident memory is sampled every second
//! from `/proc/self/status`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dreamplan::bus::{Bus, LocalBus, Qos};
use dreamplan::config::GraphConfig;
use dreamplan::msg::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Arguments of `dreamplan soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Seconds to run.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Camera frames per second.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Camera image width (pixels).
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Camera image height (pixels).
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Milliseconds the slow subscriber spends on each message.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// Queue depth of the slow subscriber (keep-last).
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// Resident memory after the first tenth of the run (the warm-up: queues and the
    /// allocator's pools filled) may grow by at most this many MiB to the end; more is a
    /// failure (exit code 1).
    #[arg(long, default_value_t = 32.0)]
    max_growth_mib: f64,
    /// The report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Resident memory over time as a PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Keep every frame the slow subscriber takes (a deliberate leak): shows that the
    /// memory check fails when memory does grow.
    #[arg(long, hide = true)]
    leak: bool,
}

/// What a soak run measured.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub rate_hz: f64,
    pub width: u32,
    pub height: u32,
    pub work_ms: u64,
    /// Frames the camera published (every one reached the fast subscription's queue).
    pub published: u64,
    /// Published frames per second of wall time.
    pub published_hz: f64,
    /// Frames the fast subscription lost to its queue (it only counts; 0 expected).
    pub fast_dropped: u64,
    /// Frames the slow subscriber processed.
    pub slow_taken: u64,
    /// Frames its keep-last queue evicted unread.
    pub slow_dropped: u64,
    /// Frames still in its queue at the end.
    pub slow_queued: u64,
    /// `published − taken − dropped − queued`: frames lost without a count (0 expected).
    pub unaccounted: i64,
    /// Times the slow subscriber saw a stamp not later than the one before (0 expected).
    pub out_of_order: u64,
    /// Resident memory (MiB) at the first sample, after the warm-up, at the end, at most.
    pub rss_first_mib: f64,
    pub rss_warm_mib: f64,
    pub rss_end_mib: f64,
    pub rss_max_mib: f64,
    /// `rss_end − rss_warm`.
    pub rss_growth_mib: f64,
    /// Every node stopped by itself when asked (none failed, none aborted).
    pub clean: bool,
    /// `[seconds, MiB]` once a second.
    pub rss_samples: Vec<(f64, f64)>,
}

impl SoakReport {
    /// Why this run fails its checks (empty when it passes).
    pub fn failures(&self, max_growth_mib: f64) -> Vec<String> {
        let mut f = Vec::new();
        if self.unaccounted != 0 {
            f.push(format!(
                "{} frame(s) lost without a count",
                self.unaccounted
            ));
        }
        if self.out_of_order != 0 {
            f.push(format!(
                "{} frame(s) out of order at the slow subscriber",
                self.out_of_order
            ));
        }
        if self.rss_growth_mib > max_growth_mib {
            f.push(format!(
                "resident memory grew {:.1} MiB after the warm-up (limit {max_growth_mib})",
                self.rss_growth_mib
            ));
        }
        if !self.clean {
            f.push("a node did not stop cleanly".into());
        }
        if self.published == 0 {
            f.push("the camera published nothing".into());
        }
        f
    }
}

/// Resident set size of this process in MiB (`VmRSS` of `/proc/self/status`).
fn rss_mib() -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("/proc/self/status has no VmRSS line")?;
    Ok(kib / 1024.0)
}

fn graph(args: &SoakArgs) -> anyhow::Result<GraphConfig> {
    let text = format!(
        "
duration_s: {duration}
nodes:
  - name: camera
    kind: camera
    params: {{source: pattern, rate_hz: {rate}, width: {w}, height: {h}}}
  - name: monitor
    kind: monitor
    params: {{topics: [/camera/image_raw], report_every_s: 10.0}}
",
        duration = args.duration,
        rate = args.rate,
        w = args.width,
        h = args.height,
    );
    Ok(GraphConfig::from_yaml(&text, "the soak graph")?)
}

/// Runs the soak and returns its report.
pub async fn soak(args: &SoakArgs) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(
        args.duration.is_finite() && args.duration >= 1.0,
        "--duration must be at least 1 s"
    );
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0 && args.rate <= 1000.0,
        "--rate must be in (0, 1000] Hz"
    );
    anyhow::ensure!(args.depth >= 1, "--depth must be at least 1");
    let graph = graph(args)?;
    let bus = LocalBus::default();
    let topic = "/camera/image_raw";
    let mut fast = bus.subscribe::<Image>(topic, Qos::keep_last(64))?;
    let mut slow = bus.subscribe::<Image>(topic, Qos::keep_last(args.depth))?;
    let stop = CancellationToken::new();

    let counter = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = fast.recv() => if m.is_none() { break } else { n += 1 },
                }
            }
            while fast.try_recv().is_some() {
                n += 1;
            }
            (fast.received(), fast.dropped(), n)
        }
    });
    let work = Duration::from_millis(args.work_ms);
    let leak = args.leak;
    let worker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut taken, mut out_of_order) = (0u64, 0u64);
            let mut kept = Vec::new();
            let mut last: Option<(i32, u32)> = None;
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = slow.recv() => match m { Some(m) => m, None => break },
                };
                taken += 1;
                let stamp = (m.header.stamp.sec, m.header.stamp.nanosec);
                if last.is_some_and(|l| stamp <= l) {
                    out_of_order += 1;
                }
                last = Some(stamp);
                if leak {
                    kept.push(m.clone());
                }
                // The work: a thread busy for `work` (not an async sleep), as a planner's
                // decision holds a core.
                let _ = tokio::task::spawn_blocking(move || std::thread::sleep(work)).await;
            }
            drop(kept);
            (taken, slow.dropped(), slow.queued() as u64, out_of_order)
        }
    });

    let started = Instant::now();
    let mut samples = vec![(0.0, rss_mib()?)];
    let run = dreamplan::runner::run_graph(bus.clone(), &graph, stop.child_token());
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let progress = crate::LineProgress::stderr();
    let total = args.duration.ceil() as usize;
    let report = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = tick.tick() => {
                let t = started.elapsed().as_secs_f64();
                let rss = rss_mib()?;
                samples.push((t, rss));
                let done = (t as usize).min(total);
                progress.update(done, total, &format!(
                    "soak {done}/{total} s: resident {rss:.1} MiB, eta {:.0} s",
                    (args.duration - t).max(0.0)
                ));
            }
        }
    };
    progress.finish();
    let wall = started.elapsed().as_secs_f64();
    samples.push((wall, rss_mib()?));
    stop.cancel();
    let (published, fast_dropped, _) = counter.await.context("the counting subscriber")?;
    let (slow_taken, slow_dropped, slow_queued, out_of_order) =
        worker.await.context("the slow subscriber")?;

    let warm_at = args.duration / 10.0;
    let rss_warm = samples
        .iter()
        .find(|(t, _)| *t >= warm_at)
        .map_or(samples[0].1, |s| s.1);
    let rss_end = samples.last().map_or(0.0, |s| s.1);
    let rss_max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    Ok(SoakReport {
        duration_s: wall,
        rate_hz: args.rate,
        width: args.width,
        height: args.height,
        work_ms: args.work_ms,
        published,
        published_hz: published as f64 / wall,
        fast_dropped,
        slow_taken,
        slow_dropped,
        slow_queued,
        unaccounted: published as i64 - (slow_taken + slow_dropped + slow_queued) as i64,
        out_of_order,
        rss_first_mib: samples[0].1,
        rss_warm_mib: rss_warm,
        rss_end_mib: rss_end,
        rss_max_mib: rss_max,
        rss_growth_mib: rss_end - rss_warm,
        clean: report.is_clean(),
        rss_samples: samples,
    })
}

/// `dreamplan soak`.
pub fn run(args: SoakArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(soak(&args))?;
    println!(
        "soak: {:.0} s, camera {}×{} at {} Hz: {} frames published ({:.1} Hz)",
        r.duration_s, r.width, r.height, r.rate_hz, r.published, r.published_hz
    );
    println!(
        "slow subscriber ({} ms a message, queue {}): {} taken, {} dropped and counted, {} queued at the end, {} unaccounted, {} out of order",
        r.work_ms, args.depth, r.slow_taken, r.slow_dropped, r.slow_queued, r.unaccounted, r.out_of_order
    );
    println!(
        "resident memory: {:.1} MiB at start, {:.1} after the warm-up, {:.1} at the end (max {:.1}): {:+.1} MiB after the warm-up",
        r.rss_first_mib, r.rss_warm_mib, r.rss_end_mib, r.rss_max_mib, r.rss_growth_mib
    );
    println!(
        "nodes stopped cleanly: {}",
        if r.clean { "yes" } else { "no" }
    );
    if let Some(p) = &args.json {
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.plot {
        let panel = dreamplan::plot::Panel {
            title: "resident memory (MiB) per second",
            series: vec![dreamplan::plot::Series {
                label: "RSS",
                values: r.rss_samples.iter().map(|s| s.1).collect(),
                rgb: (40, 90, 200),
            }],
        };
        dreamplan::plot::line_panels(&[panel], p)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    let failures = r.failures(args.max_growth_mib);
    if failures.is_empty() {
        println!("soak passed");
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        Ok(std::process::ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> SoakReport {
        SoakReport {
            duration_s: 5.0,
            rate_hz: 30.0,
            width: 64,
            height: 48,
            work_ms: 100,
            published: 150,
            published_hz: 30.0,
            fast_dropped: 0,
            slow_taken: 50,
            slow_dropped: 99,
            slow_queued: 1,
            unaccounted: 0,
            out_of_order: 0,
            rss_first_mib: 20.0,
            rss_warm_mib: 30.0,
            rss_end_mib: 31.0,
            rss_max_mib: 31.0,
            rss_growth_mib: 1.0,
            clean: true,
            rss_samples: Vec::new(),
        }
    }

    #[test]
    fn each_check_fails_on_its_own() {
        assert!(passing().failures(32.0).is_empty());
        type Spoil = fn(&mut SoakReport);
        let cases: [(Spoil, &str); 5] = [
            (|r| r.unaccounted = 3, "lost without a count"),
            (|r| r.out_of_order = 1, "out of order"),
            (|r| r.rss_growth_mib = 40.0, "resident memory grew"),
            (|r| r.clean = false, "did not stop cleanly"),
            (|r| r.published = 0, "published nothing"),
        ];
        for (spoil, says) in cases {
            let mut r = passing();
            spoil(&mut r);
            let f = r.failures(32.0);
            assert_eq!(f.len(), 1, "{f:?}");
            assert!(f[0].contains(says), "{f:?}");
        }
    }

    #[test]
    fn resident_memory_is_read() {
        let mib = rss_mib().unwrap();
        assert!(mib > 1.0 && mib < 64.0 * 1024.0, "{mib}");
    }
}
