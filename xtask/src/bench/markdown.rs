//! The report as Markdown, for stdout and BENCHMARKS.md: the command and machine, one table
//! per group of scenarios with a column per tool, where `dev` spends its time, the checks
//! and the targets.

use std::fmt::Write as _;

use super::report::{Report, Row, Stats};
use super::scenario::{Peer, Scenario, Unit};

fn show(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Seconds if value < 1.0 => format!("{:.0} ms", value * 1000.0),
        Unit::Seconds => format!("{value:.2} s"),
        Unit::Megabytes => format!("{value:.1} MB"),
    }
}

fn cell(unit: Unit, stats: &Stats) -> String {
    if stats.samples.len() == 1 {
        return show(unit, stats.median);
    }
    let spread = if stats.samples.len() >= 20 {
        format!("p95 {}", show(unit, stats.p95))
    } else {
        format!("{}–{}", show(unit, stats.min), show(unit, stats.max))
    };
    format!(
        "{} ({spread}, n={})",
        show(unit, stats.median),
        stats.samples.len()
    )
}

/// The groups the tables print, in order, each with its scenarios.
const GROUPS: [(&str, &[Scenario]); 3] = [
    (
        "The edit loop on the runner as shipped (issue 11)",
        &[
            Scenario::FirstBuild,
            Scenario::NoChange,
            Scenario::Touched,
            Scenario::SourceChange,
            Scenario::SourceChangeImage,
            Scenario::WatchReaction,
            Scenario::LockChange,
            Scenario::ImageSize,
            Scenario::IdleMemory,
        ],
    ),
    (
        "The realistic fixture, about 86 locked packages (issue 9)",
        &[
            Scenario::RealisticFirstBuild,
            Scenario::RealisticNoChange,
            Scenario::RealisticSourceChange,
            Scenario::RealisticReload,
            Scenario::RealisticImageSize,
            Scenario::RealisticIdleMemory,
            Scenario::RealisticImportCheck,
        ],
    ),
    (
        "The stack (issue 10)",
        &[
            Scenario::RunEcho,
            Scenario::ServerStart,
            Scenario::IdleMemoryTemporal,
            Scenario::IdleMemoryServer,
            Scenario::IdleMemoryRunner,
            Scenario::RunnerImageSize,
        ],
    ),
];

fn table(out: &mut String, title: &str, rows: &[&Row]) {
    if rows.is_empty() {
        return;
    }
    let mut peers: Vec<Peer> = rows
        .iter()
        .flat_map(|row| row.results.keys().copied())
        .collect();
    peers.sort();
    peers.dedup();
    let _ = writeln!(out, "### {title}\n");
    let header: Vec<&str> = peers.iter().map(|peer| peer.label()).collect();
    let _ = writeln!(
        out,
        "| scenario | {} | what is measured |",
        header.join(" | ")
    );
    let _ = writeln!(out, "| --- |{} --- |", " --- |".repeat(peers.len()));
    for row in rows {
        let cells: Vec<String> = peers
            .iter()
            .map(|peer| {
                row.results
                    .get(peer)
                    .map_or_else(|| "–".to_string(), |stats| cell(row.unit, stats))
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.scenario.label(),
            cells.join(" | "),
            row.note
        );
    }
    out.push('\n');
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Command: `{}` ({} runs per scenario and tool unless a cell says otherwise; runs alternate between tools)\n",
            self.command, self.runs
        );
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {} MB memory, kernel {}, Docker engine {} ({} storage driver), \
             image builder: {}; Compose v2: {}; Compose v1: {}; other containers on the engine at \
             start/end: {}/{}\n",
            m.cpus,
            m.cpu_model,
            m.memory_mb,
            m.kernel,
            m.docker_engine,
            m.storage_driver,
            m.builder,
            m.peers.compose_v2,
            m.peers.compose_v1.as_deref().unwrap_or("absent"),
            m.other_containers.0,
            m.other_containers.1
        );
        for (title, scenarios) in GROUPS {
            let rows: Vec<&Row> = scenarios
                .iter()
                .filter_map(|scenario| self.rows.iter().find(|row| row.scenario == *scenario))
                .collect();
            table(&mut out, title, &rows);
        }
        for (scenario, phases) in &self.dev_phases {
            if phases.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "Where `xtask dev` spends its time, {} (medians of the phases `dev --json` reports):\n",
                scenario.label()
            );
            let _ = writeln!(out, "| phase | median |\n| --- | --- |");
            for (phase, seconds) in phases {
                let _ = writeln!(out, "| {phase} | {} |", show(Unit::Seconds, *seconds));
            }
            out.push('\n');
        }
        if let Some(size) = &self.realistic_size {
            let _ = writeln!(out, "The realistic image's size (`cargo xtask size`):\n");
            let _ = writeln!(out, "```\n{}```\n", size.table());
        }
        if !self.checks.is_empty() {
            let _ = writeln!(out, "Correctness (measured on each side):\n");
            for check in &self.checks {
                let mark = if check.ok { "✓" } else { "✗" };
                let _ = writeln!(
                    out,
                    "- {mark} {} — {}{}: {}",
                    check.peer.map_or("the benchmark", |peer| peer.label()),
                    check
                        .scenario
                        .map_or(String::new(), |s| format!("{}: ", s.label())),
                    check.check.label(),
                    check.detail
                );
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
                    target.scenario.label(),
                    target.target,
                    target.measured
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
