//! The targets of issues 9, 10 and 11, judged from the report's figures: each says what was
//! measured against what, and whether it is met.

use super::report::{Report, Target};
use super::scenario::{Peer, Scenario};

fn ms(seconds: f64) -> String {
    format!("{:.0} ms", seconds * 1e3)
}

pub fn targets(report: &Report) -> Vec<Target> {
    let mut targets = Vec::new();
    let median = |scenario, peer| report.median(scenario, peer);
    if let (Some(ours), Some(v2)) = (
        median(Scenario::NoChange, Peer::Dev),
        median(Scenario::NoChange, Peer::ComposeV2),
    ) {
        targets.push(Target {
            scenario: Scenario::NoChange,
            target: "at most ½ of Compose v2 `up -d --build`".into(),
            measured: format!("{} vs {} (1/{:.1})", ms(ours), ms(v2), v2 / ours),
            met: ours * 2.0 <= v2,
        });
    }
    if let Some(ours) = median(Scenario::SourceChange, Peer::Dev) {
        let v2 = median(Scenario::SourceChange, Peer::ComposeV2).map_or_else(String::new, |v2| {
            format!(" (Compose v2 `up -d --build --wait`: {v2:.2} s)")
        });
        targets.push(Target {
            scenario: Scenario::SourceChange,
            target: "at most 0.3 s median until the new process answers".into(),
            measured: format!("{}{v2}", ms(ours)),
            met: ours <= 0.3,
        });
    }
    if let Some(reload) = report.stats(Scenario::RealisticReload, Peer::Dev) {
        let v2 = median(Scenario::RealisticSourceChange, Peer::ComposeV2)
            .map_or_else(String::new, |v2| {
                format!(" (Compose v2 rebuilding: {v2:.2} s)")
            });
        targets.push(Target {
            scenario: Scenario::RealisticReload,
            target: "with the realistic dependency set, at most 0.3 s median and 0.5 s p95 until the new process answers".into(),
            measured: format!("median {}, p95 {}{v2}", ms(reload.median), ms(reload.p95)),
            met: reload.median <= 0.3 && reload.p95 <= 0.5,
        });
    }
    if let Some(ours) = median(Scenario::WatchReaction, Peer::DevWatch) {
        let theirs = median(Scenario::WatchReaction, Peer::ComposeWatch);
        targets.push(Target {
            scenario: Scenario::WatchReaction,
            target: "at most 0.3 s median and at most ⅓ of `compose watch` (sync+restart)".into(),
            measured: match theirs {
                Some(theirs) => format!("{} vs {} (1/{:.1})", ms(ours), ms(theirs), theirs / ours),
                None => format!("{} (compose watch not measured)", ms(ours)),
            },
            met: ours <= 0.3 && theirs.is_some_and(|theirs| ours * 3.0 <= theirs),
        });
    }
    if let (Some(ours), Some(v2)) = (
        median(Scenario::LockChange, Peer::Dev),
        median(Scenario::LockChange, Peer::ComposeV2),
    ) {
        targets.push(Target {
            scenario: Scenario::LockChange,
            target: "at most Compose v2 `up -d --build --wait`".into(),
            measured: format!("{ours:.2} s vs {v2:.2} s"),
            met: ours <= v2,
        });
    }
    if let Some(echo) = report.stats(Scenario::RunEcho, Peer::Stigmer) {
        targets.push(Target {
            scenario: Scenario::RunEcho,
            target: "at most 150 ms p50, the CLI process included".into(),
            measured: format!("p50 {}, p95 {}", ms(echo.median), ms(echo.p95)),
            met: echo.median <= 0.150,
        });
    }
    if let Some(start) = median(Scenario::ServerStart, Peer::Stigmer) {
        targets.push(Target {
            scenario: Scenario::ServerStart,
            target: "at most 3 s".into(),
            measured: format!("{start:.2} s"),
            met: start <= 3.0,
        });
    }
    if let Some(size) = &report.realistic_size {
        let beyond =
            size.image_bytes as i64 - size.base_bytes as i64 - size.dependencies_bytes as i64;
        targets.push(Target {
            scenario: Scenario::RealisticImageSize,
            target: "the base plus the installed dependencies plus less than 5 MB".into(),
            measured: format!(
                "{:.1} MB = base {:.1} MB + dependencies {:.1} MB + {:.2} MB",
                size.image_bytes as f64 / 1e6,
                size.base_bytes as f64 / 1e6,
                size.dependencies_bytes as f64 / 1e6,
                beyond as f64 / 1e6
            ),
            met: beyond < 5_000_000,
        });
    }
    if let Some(seconds) = median(Scenario::RealisticImportCheck, Peer::DevImage) {
        targets.push(Target {
            scenario: Scenario::RealisticImportCheck,
            target: "at most 2 s added to a start with about 100 distributions".into(),
            measured: format!("{seconds:.2} s, once per image"),
            met: seconds <= 2.0,
        });
    }
    targets
}
