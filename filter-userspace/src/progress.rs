//! Progress for people: a long list load or snapshot restore draws an indicatif bar on stderr,
//! but only when stderr is a terminal and only once the work has run for a moment, so a quick
//! command shows nothing and pipes, files and machine output (`--json`) stay exactly as they
//! were. The library reports progress through plain `progress(done, total)` callbacks; this is
//! the one people see.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Work done sooner than this never shows a bar.
const DELAY: Duration = Duration::from_millis(300);

pub struct Progress {
    /// What is counted, after the numbers: "entries".
    what: &'static str,
    /// Where a bar goes; None: nowhere (stderr is not a terminal).
    target: Option<fn() -> ProgressDrawTarget>,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar counting `what` on stderr, if stderr is a terminal.
    pub fn on_terminal(what: &'static str) -> Progress {
        let target = std::io::stderr()
            .is_terminal()
            .then_some(ProgressDrawTarget::stderr as fn() -> ProgressDrawTarget);
        Progress::new(what, target)
    }

    fn new(what: &'static str, target: Option<fn() -> ProgressDrawTarget>) -> Progress {
        Progress {
            what,
            target,
            started: Instant::now(),
            bar: None,
        }
    }

    /// The `progress(done, total)` callback.
    pub fn update(&mut self, done: usize, total: usize) {
        let Some(target) = self.target else {
            return;
        };
        if self.bar.is_none() {
            if done >= total || self.started.elapsed() < DELAY {
                return;
            }
            let bar = ProgressBar::with_draw_target(Some(total as u64), target())
                .with_style(
                    ProgressStyle::with_template(
                        "  [{bar:30}] {human_pos}/{human_len} {msg} ({percent}%)",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                )
                .with_message(self.what);
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done >= total {
                bar.finish_and_clear();
            }
        }
    }
}

impl Drop for Progress {
    /// A bar never outlives its work, also when the work failed: the error is printed next.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_terminal_no_bar() {
        let mut p = Progress::new("entries", None);
        p.started -= 10 * DELAY;
        p.update(1, 100_000);
        assert!(p.bar.is_none(), "nothing is drawn without a terminal");
    }

    #[test]
    fn a_bar_only_once_the_work_has_taken_a_moment() {
        let mut p = Progress::new("entries", Some(ProgressDrawTarget::hidden));
        p.update(1_000, 100_000);
        assert!(p.bar.is_none(), "quick work shows nothing");
        p.started -= 2 * DELAY;
        p.update(100_000, 100_000);
        assert!(p.bar.is_none(), "work that is done shows nothing");
        p.update(5_000, 100_000);
        let bar = p.bar.as_ref().expect("a bar once the work has run a while");
        assert_eq!(
            (bar.position(), bar.length()),
            (5_000, Some(100_000)),
            "the bar shows done of total"
        );
        p.update(100_000, 100_000);
        assert!(
            p.bar.as_ref().is_some_and(ProgressBar::is_finished),
            "the bar is finished (and cleared) when the work is"
        );
    }
}
