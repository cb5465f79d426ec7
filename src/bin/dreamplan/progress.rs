//! Progress of long jobs with phases: a bar with ETA per phase on a terminal, a line per 5%
//! of each phase otherwise (log files, CI), with the phase's elapsed time and ETA.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Bars for the phases of one job.
pub struct PhaseProgress {
    bar: Mutex<Option<(String, ProgressBar)>>,
    style: ProgressStyle,
    tty: bool,
    /// Off a terminal: the phase being logged, when this process started it and how many
    /// were done then (a resumed run starts part-way: its pace counts only its own work).
    started: Mutex<Option<(String, Instant, usize)>>,
}

impl PhaseProgress {
    /// Progress on stderr.
    pub fn stderr() -> Self {
        Self {
            bar: Mutex::new(None),
            style: ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed} elapsed, eta {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            started: Mutex::new(None),
        }
    }

    /// `done` of `total` of `phase` are done; `msg` is shown beside the bar.
    pub fn update(&self, phase: &str, done: usize, total: usize, msg: &str) {
        if !self.tty {
            let (elapsed, from) = {
                let mut started = self.started.lock().expect("progress lock");
                if started.as_ref().map(|(p, _, _)| p.as_str()) != Some(phase) {
                    *started = Some((phase.to_string(), Instant::now(), done));
                }
                started
                    .as_ref()
                    .map(|(_, t, from)| (t.elapsed(), *from))
                    .unwrap_or_default()
            };
            let every = (total / 20).max(1);
            if done.is_multiple_of(every) || done == total {
                eprintln!("{}", log_line(phase, (from, done), total, msg, elapsed));
            }
            return;
        }
        let mut guard = self.bar.lock().expect("progress lock");
        if guard.as_ref().map(|(p, _)| p.as_str()) != Some(phase) {
            if let Some((_, b)) = guard.take() {
                b.finish();
            }
            let b = ProgressBar::new(total as u64).with_style(self.style.clone());
            b.set_prefix(phase.to_string());
            // A resumed phase starts part-way: that jump is not pace.
            b.set_position(done as u64);
            b.reset_eta();
            *guard = Some((phase.to_string(), b));
        }
        if let Some((_, b)) = guard.as_ref() {
            b.set_position(done as u64);
            if !msg.is_empty() {
                b.set_message(msg.to_string());
            }
        }
    }

    /// Ends the current bar.
    pub fn finish(&self) {
        if let Some((_, b)) = self.bar.lock().expect("progress lock").take() {
            b.finish();
        }
    }
}

/// One progress line off a terminal: `phase done/total msg (elapsed, eta)`; the ETA assumes
/// the rest goes at this process's pace so far (`from`: how many were done when it started
/// the phase, a resumed run's checkpoint), and is left out before its first item is done.
/// Before session 42 a resumed run divided its elapsed time by everything done, the
/// checkpoint's work included, and promised a fraction of the time left.
fn log_line(
    phase: &str,
    (from, done): (usize, usize),
    total: usize,
    msg: &str,
    elapsed: Duration,
) -> String {
    let msg = if msg.is_empty() {
        String::new()
    } else {
        format!(" {msg}")
    };
    let secs = elapsed.as_secs_f64();
    let timing = if done <= from {
        String::new()
    } else {
        let left = secs / (done - from) as f64 * total.saturating_sub(done) as f64;
        format!(" ({} elapsed, eta {})", clock(secs), clock(left))
    };
    format!("{phase} {done}/{total}{msg}{timing}")
}

/// Seconds as `1h02m`, `3m05s` or `42s`.
fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_carries_the_phase_its_count_and_the_pace_so_far() {
        let d = Duration::from_secs;
        assert_eq!(log_line("rope", (0, 0), 50, "", d(3)), "rope 0/50");
        assert_eq!(
            log_line("rope", (0, 10), 50, "", d(20)),
            "rope 10/50 (20s elapsed, eta 1m20s)"
        );
        assert_eq!(
            log_line("toy", (0, 25), 100, "loss 0.5", d(1800)),
            "toy 25/100 loss 0.5 (30m00s elapsed, eta 1h30m)"
        );
        assert_eq!(
            log_line("cloth", (0, 4), 4, "", d(9)),
            "cloth 4/4 (9s elapsed, eta 0s)"
        );
        // Resumed at 150 of 200, 10 steps in 10 s: 40 s left (it said 2.5 s).
        assert_eq!(
            log_line("orpo", (150, 160), 200, "", d(10)),
            "orpo 160/200 (10s elapsed, eta 40s)"
        );
        assert_eq!(log_line("orpo", (150, 150), 200, "", d(1)), "orpo 150/200");
    }
}
