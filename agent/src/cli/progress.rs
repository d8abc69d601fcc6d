//! Progress of long commands (`snapshot save`, a restore): on a terminal a bar of bytes done
//! (indicatif), otherwise plain lines at most every few seconds, so logs of scripted runs
//! stay short. Output goes to stderr, leaving stdout for the command's result.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How often a plain line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Bytes done of one piece of work.
pub struct BytesProgress {
    label: String,
    bar: Option<ProgressBar>,
    total: Option<u64>,
    done: u64,
    last_line: Option<Instant>,
}

impl BytesProgress {
    /// Starts showing progress of `label` (e.g. "snapshot"): a bar on a terminal.
    pub fn new(label: &str) -> Self {
        Self::with_terminal(label, std::io::stderr().is_terminal())
    }

    /// As [`Self::new`], saying whether stderr is a terminal (tests use plain lines).
    pub fn with_terminal(label: &str, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(style(None));
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            label: label.to_owned(),
            bar,
            total: None,
            done: 0,
            last_line: None,
        }
    }

    /// Sets the expected total (an estimate: the bar never claims more than 100 %).
    pub fn set_total(&mut self, total: Option<u64>) {
        if self.total == total {
            return;
        }
        self.total = total;
        if let Some(bar) = &self.bar {
            bar.set_style(style(total));
            if let Some(t) = total {
                bar.set_length(t.max(self.done));
            }
        }
    }

    /// Sets the bytes done.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        match &self.bar {
            Some(bar) => {
                if let Some(t) = self.total {
                    bar.set_length(t.max(done));
                }
                bar.set_position(done);
            }
            None => {
                if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    self.last_line = Some(Instant::now());
                    eprintln!("{}", self.line());
                }
            }
        }
    }

    /// Adds `n` bytes done.
    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// The plain line for the current state.
    pub fn line(&self) -> String {
        match self.total {
            Some(t) => format!(
                "{}: {} of about {}",
                self.label,
                HumanBytes(self.done),
                HumanBytes(t)
            ),
            None => format!("{}: {}", self.label, HumanBytes(self.done)),
        }
    }

    /// Ends the display with a last message.
    pub fn finish(self, message: &str) {
        match self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{}: {message}", self.label);
            }
            None => eprintln!("{}: {message}", self.label),
        }
    }

    /// Ends the display after a failure (the caller reports the error).
    pub fn abandon(self) {
        if let Some(bar) = self.bar {
            bar.abandon();
        }
    }
}

fn template(total: Option<u64>) -> &'static str {
    match total {
        Some(_) => "{prefix}: {spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        None => "{prefix}: {spinner} {bytes} {bytes_per_sec}",
    }
}

fn style(total: Option<u64>) -> ProgressStyle {
    ProgressStyle::with_template(template(total))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_bytes_done_and_the_estimate() {
        let mut p = BytesProgress::with_terminal("snapshot", false);
        p.add(3 * 1024 * 1024);
        assert_eq!(p.line(), "snapshot: 3.00 MiB");
        p.set_total(Some(10 * 1024 * 1024));
        assert_eq!(p.line(), "snapshot: 3.00 MiB of about 10.00 MiB");
        p.finish("done");
    }

    #[test]
    fn the_terminal_bar_takes_totals_and_bytes() {
        let mut p = BytesProgress::with_terminal("snapshot", true);
        p.set(10);
        p.set_total(Some(5));
        p.add(100);
        p.set_total(None);
        assert_eq!(p.line(), "snapshot: 110 B");
        p.finish("verified");
        BytesProgress::with_terminal("restore", true).abandon();
    }

    #[test]
    fn the_templates_are_valid() {
        for total in [None, Some(1)] {
            assert!(ProgressStyle::with_template(template(total)).is_ok());
        }
    }
}
