//! Progress on stderr: an indicatif spinner per phase when stderr is a terminal, plain
//! timestamped lines otherwise (CI logs). Every phase's duration is kept for the summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    fancy: bool,
    phases: Vec<(String, Duration)>,
}

/// The running phase: lets its work report what it is doing.
pub struct Phase {
    spinner: Option<ProgressBar>,
}

impl Phase {
    /// A line of passing detail (a build's output): the spinner's message on a terminal,
    /// replaced by the next one; a log line otherwise.
    pub fn line(&self, text: &str) {
        match &self.spinner {
            Some(spinner) => spinner.set_message(text.chars().take(100).collect::<String>()),
            None => eprintln!("{}     {text}", timestamp()),
        }
    }

    /// A line that stays (a check's result): printed above the spinner on a terminal.
    pub fn report(&self, text: &str) {
        match &self.spinner {
            Some(spinner) => spinner.println(format!("    {text}")),
            None => eprintln!("{}     {text}", timestamp()),
        }
    }
}

impl Default for Progress {
    fn default() -> Progress {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            fancy: std::io::stderr().is_terminal(),
            phases: Vec::new(),
        }
    }

    /// Runs `work` as one named phase and records how long it took.
    pub fn phase<T>(&mut self, name: &str, work: impl FnOnce(&Phase) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let spinner = self.fancy.then(|| {
            let spinner = ProgressBar::new_spinner().with_prefix(name.to_string());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
            {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        if spinner.is_none() {
            eprintln!("{} ▶ {name}", timestamp());
        }
        let phase = Phase { spinner };
        let result = work(&phase);
        let elapsed = started.elapsed();
        if let Some(spinner) = &phase.spinner {
            spinner.finish_and_clear();
        }
        let mark = if result.is_ok() { "✓" } else { "✗" };
        eprintln!(
            "{}{mark} {name} ({})",
            if self.fancy {
                String::new()
            } else {
                format!("{} ", timestamp())
            },
            seconds(elapsed)
        );
        self.phases.push((name.to_string(), elapsed));
        result
    }

    /// A remark between phases.
    pub fn note(&self, text: &str) {
        if self.fancy {
            eprintln!("ℹ {text}");
        } else {
            eprintln!("{} ℹ {text}", timestamp());
        }
    }

    /// A warning between phases: something the user may want to act on.
    pub fn warn(&self, text: &str) {
        if self.fancy {
            eprintln!("⚠ {text}");
        } else {
            eprintln!("{} ⚠ {text}", timestamp());
        }
    }

    /// Each phase's name and duration, in order.
    pub fn phases(&self) -> &[(String, Duration)] {
        &self.phases
    }

    /// How long each phase took, and the total.
    pub fn summary(&self) {
        let width = self
            .phases
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let mut total = Duration::ZERO;
        eprintln!("phase timings:");
        for (name, elapsed) in &self.phases {
            total += *elapsed;
            eprintln!("  {name:<width$}  {:>8}", seconds(*elapsed));
        }
        eprintln!("  {:<width$}  {:>8}", "total", seconds(total));
    }
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

/// `HH:MM:SS` in UTC, without a date-time dependency.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "[{:02}:{:02}:{:02}]",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}
