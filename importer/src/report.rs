//! Progress and the final summary: an indicatif bar with rows per second on a terminal,
//! structured log lines otherwise, and always a summary table at the end.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::db::Progress;
use crate::job::{Outcome, Status};

/// Row progress across all files of a run.
pub struct Reporter {
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A bar when stderr is a terminal, nothing otherwise (log lines carry the progress).
    pub fn new(files: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {human_pos} rows ({rate} rows/s) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}", s.per_sec());
                    },
                ),
            );
            bar.set_message(format!("0/{files} files"));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar }
    }

    /// The callback the parsers report rows to; it tells them to stop once `cancel` is set.
    pub fn rows(&self, cancel: Arc<AtomicBool>) -> Progress {
        let bar = self.bar.clone();
        Arc::new(move |n| {
            if let Some(bar) = &bar {
                bar.inc(n);
            }
            !cancel.load(Ordering::Relaxed)
        })
    }

    pub fn file_done(&self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{done}/{total} files"));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The summary table, one line per file plus totals. `read = loaded + rejected` on every line.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:<11} {:>10} {:>10} {:>9} {:>10} {:>8} {:>10}  error",
        "tenant", "module", "status", "read", "loaded", "rejected", "written", "secs", "rows/s"
    );
    let mut totals = [0u64; 4];
    for o in outcomes {
        let c = o.loaded.map(|l| l.counts).unwrap_or_default();
        let written = o.loaded.map_or(0, |l| l.written);
        for (t, v) in totals
            .iter_mut()
            .zip([c.read, c.loaded, c.rejected, written])
        {
            *t += v;
        }
        let secs = o.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            c.read as f64 / secs
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<11} {:>10} {:>10} {:>9} {:>10} {:>8.2} {:>10.0}  {}",
            o.tenant,
            o.module,
            o.status.as_str(),
            c.read,
            c.loaded,
            c.rejected,
            written,
            secs,
            rate,
            o.error.as_deref().unwrap_or("")
        );
    }
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:<11} {:>10} {:>10} {:>9} {:>10}",
        "total",
        format!("{} files", outcomes.len()),
        "",
        totals[0],
        totals[1],
        totals[2],
        totals[3]
    );
    let _ = writeln!(
        out,
        "loaded {}, duplicate {}, missing {}, empty {}, failed {}, interrupted {}",
        count(Status::Loaded),
        count(Status::Duplicate),
        count(Status::Missing),
        count(Status::Empty),
        count(Status::Failed),
        count(Status::Interrupted)
    );
    out
}
