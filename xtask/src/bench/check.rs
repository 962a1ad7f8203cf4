//! The correctness checks, judged from what was measured on each side: the image and
//! container IDs before and after, `dev --json`'s own account, and the image history. Compose's
//! side is measured exactly as ours is; nothing is assumed to pass.

use super::measure::Outcome;
use super::report::Report;
use super::scenario::{Check, Peer, Scenario};

/// Neither a new image nor a new container, and `dev` says it built and started nothing.
pub fn no_build_no_restart(report: &mut Report, scenario: Scenario, peer: Peer, runs: &[Outcome]) {
    let built = runs
        .iter()
        .filter(|o| o.image_changed() || o.summary.as_ref().is_some_and(|s| s.built))
        .count();
    let restarted = runs
        .iter()
        .filter(|o| {
            o.restarted()
                || o.summary
                    .as_ref()
                    .is_some_and(|s| s.started || s.reloaded_generation.is_some())
        })
        .count();
    report.check(
        Check::NoBuildNoRestart,
        Some(scenario),
        Some(peer),
        !runs.is_empty() && built == 0 && restarted == 0,
        format!(
            "{} runs: {built} built a new image, {restarted} started or replaced the runner",
            runs.len()
        ),
    );
}

/// `dev` with the source mounted: a reload, no build, the same container.
pub fn reloaded_without_build(
    report: &mut Report,
    scenario: Scenario,
    peer: Peer,
    runs: &[Outcome],
) {
    let reloaded = runs
        .iter()
        .filter(|o| {
            o.summary
                .as_ref()
                .is_some_and(|s| s.reloaded_generation.is_some() && !s.built)
                && !o.image_changed()
                && !o.restarted()
        })
        .count();
    report.check(
        Check::ReloadedWithoutBuild,
        Some(scenario),
        Some(peer),
        !runs.is_empty() && reloaded == runs.len(),
        format!(
            "{reloaded}/{} runs reloaded the runner process without a build, in the same container",
            runs.len()
        ),
    );
}

/// Each run made a new image that kept the dependency layer and everything below it.
pub fn dependency_layer_reused(
    report: &mut Report,
    scenario: Scenario,
    peer: Peer,
    runs: &[Outcome],
) {
    let verdicts: Vec<(bool, String)> = runs
        .iter()
        .map(|o| {
            o.dependency_layer
                .clone()
                .unwrap_or_else(|| (false, "no new image was built".to_string()))
        })
        .collect();
    let reused = verdicts.iter().filter(|(ok, _)| *ok).count();
    let details: Vec<String> = verdicts.iter().map(|(_, detail)| detail.clone()).collect();
    report.check(
        Check::DependencyLayerReused,
        Some(scenario),
        Some(peer),
        !runs.is_empty() && reused == runs.len(),
        format!(
            "{reused}/{} runs rebuilt with every layer up to the dependency layer identical ({})",
            runs.len(),
            details.join("; ")
        ),
    );
}

/// Each run made a new image.
pub fn rebuilt(report: &mut Report, scenario: Scenario, peer: Peer, runs: &[Outcome]) {
    let rebuilt = runs.iter().filter(|o| o.image_changed()).count();
    report.check(
        Check::Rebuilt,
        Some(scenario),
        Some(peer),
        !runs.is_empty() && rebuilt == runs.len(),
        format!("{rebuilt}/{} runs made a new image", runs.len()),
    );
}
