//! Progress of long jobs with phases: a bar with ETA per phase on a terminal, a line per 5%
//! of each phase otherwise (log files, CI).

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Bars for the phases of one job.
pub struct PhaseProgress {
    bar: Mutex<Option<(String, ProgressBar)>>,
    style: ProgressStyle,
    tty: bool,
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
        }
    }

    /// `done` of `total` of `phase` are done; `msg` is shown beside the bar.
    pub fn update(&self, phase: &str, done: usize, total: usize, msg: &str) {
        if !self.tty {
            let every = (total / 20).max(1);
            if done.is_multiple_of(every) || done == total {
                eprintln!("{phase} {done}/{total} {msg}");
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
