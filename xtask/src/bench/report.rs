//! The benchmark's results as plain data: statistics over runs, one row per scenario with a
//! figure per tool, the checks and targets, and the machine they were measured on. The JSON
//! written by `--json` is this, serialized; [`super::markdown`] prints it for people.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scenario::{Check, Peer, Scenario, Unit};
use crate::size::Breakdown;

/// Median, 95th percentile, minimum and maximum of one series of samples.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub median: f64,
    pub p95: f64,
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
        // Nearest rank: the smallest sample at or above 95 % of the series.
        let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
        Some(Stats {
            median,
            p95: sorted[rank.clamp(1, sorted.len()) - 1],
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        })
    }
}

/// One scenario: a figure per tool measured, and what the figures cover.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub unit: Unit,
    pub results: BTreeMap<Peer, Stats>,
    pub note: String,
}

/// One check on one tool in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: Check,
    pub scenario: Option<Scenario>,
    pub peer: Option<Peer>,
    pub ok: bool,
    pub detail: String,
}

/// One target of the issues and whether the measurement meets it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: Scenario,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// A Compose version found (or not) on this machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerVersions {
    pub compose_v2: String,
    /// `None`: Compose v1 is not installed here.
    pub compose_v1: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mb: u64,
    pub kernel: String,
    pub docker_engine: String,
    pub storage_driver: String,
    pub builder: String,
    pub peers: PeerVersions,
    /// Containers running on the engine that the benchmark did not start, at start and end.
    pub other_containers: (usize, usize),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub command: String,
    pub runs: usize,
    pub machine: Machine,
    pub rows: Vec<Row>,
    /// Medians of the phases `dev --json` reported, no change and source change.
    pub dev_phases: BTreeMap<Scenario, Vec<(String, f64)>>,
    pub realistic_size: Option<Breakdown>,
    pub checks: Vec<CheckResult>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, scenario: Scenario, peer: Peer, samples: &[f64], note: &str) {
        let Some(stats) = Stats::of(samples) else {
            return;
        };
        match self.rows.iter_mut().find(|row| row.scenario == scenario) {
            Some(row) => {
                row.results.insert(peer, stats);
                if !note.is_empty() && !row.note.contains(note) {
                    if !row.note.is_empty() {
                        row.note.push(' ');
                    }
                    row.note.push_str(note);
                }
            }
            None => self.rows.push(Row {
                scenario,
                unit: scenario.unit(),
                results: BTreeMap::from([(peer, stats)]),
                note: note.to_string(),
            }),
        }
    }

    pub fn stats(&self, scenario: Scenario, peer: Peer) -> Option<&Stats> {
        self.rows
            .iter()
            .find(|row| row.scenario == scenario)
            .and_then(|row| row.results.get(&peer))
    }

    pub fn median(&self, scenario: Scenario, peer: Peer) -> Option<f64> {
        self.stats(scenario, peer).map(|stats| stats.median)
    }

    pub fn check(
        &mut self,
        check: Check,
        scenario: Option<Scenario>,
        peer: Option<Peer>,
        ok: bool,
        detail: String,
    ) {
        self.checks.push(CheckResult {
            check,
            scenario,
            peer,
            ok,
            detail,
        });
    }

    pub fn failed_checks(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| {
                format!(
                    "{} ({}, {}): {}",
                    check.check.label(),
                    check.peer.map_or("-", |peer| peer.label()),
                    check.scenario.map_or("-", |scenario| scenario.label()),
                    check.detail
                )
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        let odd = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (odd.median, odd.min, odd.max, odd.p95),
            (2.0, 1.0, 3.0, 3.0)
        );
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Stats::of(&hundred).unwrap().p95, 95.0);
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
    fn rows_are_keyed_by_scenario_and_peer() {
        let mut report = Report::default();
        report.add(Scenario::NoChange, Peer::Dev, &[0.1, 0.2, 0.3], "");
        report.add(Scenario::NoChange, Peer::ComposeV2, &[1.0], "");
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.median(Scenario::NoChange, Peer::Dev), Some(0.2));
        assert_eq!(report.median(Scenario::NoChange, Peer::ComposeV1), None);
        let json = serde_json::to_value(&report).unwrap();
        assert!(
            json["rows"][0]["results"]["compose-v2"].is_object(),
            "{json}"
        );
    }
}
