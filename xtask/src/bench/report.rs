//! The benchmark's results as plain data: statistics over runs, the table of medians and
//! ratios, the targets of issue 4 as a checklist, and the Markdown and JSON they print as.

use std::fmt::Write as _;

use serde::Serialize;

/// Median, minimum and maximum of one series of runs, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = match sorted.len() {
            0 => return None,
            n if n % 2 == 1 => sorted[middle],
            _ => (sorted[middle - 1] + sorted[middle]) / 2.0,
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        })
    }

    fn cell(&self, unit: Unit) -> String {
        format!(
            "{} ({}–{})",
            unit.show(self.median),
            unit.show(self.min),
            unit.show(self.max)
        )
    }
}

/// How a row's values print.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Seconds,
    Megabytes,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Seconds if value < 1.0 => format!("{:.0} ms", value * 1000.0),
            Unit::Seconds => format!("{value:.2} s"),
            Unit::Megabytes => format!("{value:.1} MB"),
        }
    }
}

/// One scenario measured for both tools.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub unit: Unit,
    pub ours: Option<Stats>,
    pub compose: Option<Stats>,
    /// What the two numbers cover, when they differ in more than the tool.
    pub note: String,
}

impl Row {
    /// ours ÷ compose, on medians.
    pub fn ratio(&self) -> Option<f64> {
        let (ours, compose) = (self.ours.as_ref()?, self.compose.as_ref()?);
        (compose.median > 0.0).then(|| ours.median / compose.median)
    }
}

/// The rebuild decision's cost for one source tree.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    pub tree: String,
    pub declared_files: usize,
    pub ignored_files: usize,
    pub seconds: Stats,
    pub files_per_second: f64,
    pub micros_per_declared_file: f64,
}

/// A floor: what one unavoidable step costs on its own.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub what: String,
    pub seconds: Stats,
}

/// One target of the issue and whether the measurement meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// A correctness check (no timing): what CI asserts.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mb: u64,
    pub kernel: String,
    pub docker_engine: String,
    pub storage_driver: String,
    pub compose: String,
    /// Containers running on the engine that the benchmark did not start, at its start and end.
    pub other_containers: (usize, usize),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub command: String,
    pub runs: usize,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Median of each phase `xtask dev` reported for the no-change case, and the rest.
    pub no_change_phases: Vec<(String, f64)>,
    /// The same for the one-source-file-changed case.
    pub source_change_phases: Vec<(String, f64)>,
    pub decision_in_process: Option<Stats>,
    pub decision_scaling: Vec<DecisionRow>,
    pub floors: Vec<Floor>,
    pub checks: Vec<Check>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&self, scenario: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.scenario == scenario)
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: String) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
    }

    /// The results as Markdown, for stdout and BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Command: `{}` ({} runs per scenario and tool, alternating)\n",
            self.command, self.runs
        );
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {} MB memory, kernel {}, Docker engine {} ({} storage driver), {}; \
             other containers running on the engine at start/end: {}/{}\n",
            m.cpus, m.cpu_model, m.memory_mb, m.kernel, m.docker_engine, m.storage_driver, m.compose,
            m.other_containers.0, m.other_containers.1
        );
        if !self.rows.is_empty() {
            let _ = writeln!(out, "| scenario | `xtask dev` median (min–max) | `docker-compose` median (min–max) | ours ÷ compose | what is measured |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
            for row in &self.rows {
                let cell = |stats: &Option<Stats>| {
                    stats
                        .as_ref()
                        .map_or_else(|| "–".to_string(), |s| s.cell(row.unit))
                };
                let ratio = row
                    .ratio()
                    .map_or_else(|| "–".to_string(), |r| format!("{r:.2}"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {ratio} | {} |",
                    row.scenario,
                    cell(&row.ours),
                    cell(&row.compose),
                    row.note
                );
            }
            out.push('\n');
        }
        for (case, phases) in [
            ("no change", &self.no_change_phases),
            ("one source file changed", &self.source_change_phases),
        ] {
            if phases.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "Where `xtask dev` spends its time, {case} (medians of the phases it reports):\n"
            );
            let _ = writeln!(out, "| phase | median |\n| --- | --- |");
            for (phase, seconds) in phases {
                let _ = writeln!(out, "| {phase} | {} |", Unit::Seconds.show(*seconds));
            }
            out.push('\n');
        }
        if let Some(decision) = &self.decision_in_process {
            let _ = writeln!(
                out,
                "The rebuild decision in process on the benchmark's tree (one `docker image inspect` and the hashes): median {} (min {}, max {}).\n",
                ms(decision.median), ms(decision.min), ms(decision.max)
            );
        }
        if !self.decision_scaling.is_empty() {
            let _ = writeln!(out, "The rebuild decision's cost against the source tree (hashing and comparing only, warm page cache):\n");
            let _ = writeln!(out, "| tree | declared files | ignored files | median (min–max) | declared files/s | µs per declared file |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
            for row in &self.decision_scaling {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} ({}–{}) | {:.0} | {:.1} |",
                    row.tree,
                    row.declared_files,
                    row.ignored_files,
                    ms(row.seconds.median),
                    ms(row.seconds.min),
                    ms(row.seconds.max),
                    row.files_per_second,
                    row.micros_per_declared_file
                );
            }
            out.push('\n');
        }
        if !self.floors.is_empty() {
            let _ = writeln!(out, "Floors (what single steps cost on their own):\n");
            let _ = writeln!(out, "| step | median (min–max) |\n| --- | --- |");
            for floor in &self.floors {
                let _ = writeln!(
                    out,
                    "| {} | {} |",
                    floor.what,
                    floor.seconds.cell(Unit::Seconds)
                );
            }
            out.push('\n');
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "Correctness:\n");
            for check in &self.checks {
                let mark = if check.ok { "✓" } else { "✗" };
                let _ = writeln!(out, "- {mark} {}: {}", check.name, check.detail);
            }
            out.push('\n');
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "Targets:\n");
            for target in &self.targets {
                let mark = if target.met { "[x]" } else { "[ ]" };
                let verdict = if target.met { "met" } else { "NOT met" };
                let _ = writeln!(
                    out,
                    "- {mark} {}: {} — measured {} ({verdict})",
                    target.scenario, target.target, target.measured
                );
            }
            out.push('\n');
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

pub fn ms(seconds: f64) -> String {
    if seconds < 0.01 {
        format!("{:.2} ms", seconds * 1000.0)
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

/// `45.2MiB / 23.5GiB` (the usage part of `docker stats --format {{.MemUsage}}`) → MB.
pub fn parse_memory_usage(text: &str) -> Option<f64> {
    let usage = text.split('/').next()?.trim();
    let split = usage.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = usage.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    let bytes = match unit {
        "B" => value,
        "kB" | "KB" => value * 1e3,
        "KiB" => value * 1024.0,
        "MB" => value * 1e6,
        "MiB" => value * 1024.0 * 1024.0,
        "GB" => value * 1e9,
        "GiB" => value * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(bytes / 1e6)
}

/// The phase timings `Progress::summary` prints (`  name    0.12s` after `phase timings:`).
pub fn parse_phase_timings(stderr: &str) -> Vec<(String, f64)> {
    let Some((_, table)) = stderr.split_once("phase timings:\n") else {
        return Vec::new();
    };
    table
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| {
            let line = line.trim();
            let (name, value) = line.rsplit_once(' ')?;
            let seconds: f64 = value.strip_suffix('s')?.parse().ok()?;
            Some((name.trim().to_string(), seconds))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_series() {
        let odd = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn docker_stats_memory() {
        assert_eq!(parse_memory_usage("1.5GB / 23.5GiB"), Some(1500.0));
        let mib = parse_memory_usage("45MiB / 23.54GiB").unwrap();
        assert!((mib - 47.18592).abs() < 1e-6, "{mib}");
        assert_eq!(parse_memory_usage("--"), None);
    }

    #[test]
    fn phase_timings_from_a_summary() {
        let stderr = "[10:00:00] ▶ Checking Docker\nphase timings:\n  Checking Docker     0.03s\n  total               0.25s\nagent-runner ...\n";
        assert_eq!(
            parse_phase_timings(stderr),
            vec![
                ("Checking Docker".to_string(), 0.03),
                ("total".to_string(), 0.25)
            ]
        );
    }
}
