//! The realistic fixture's figures (issue 9): the original runner's dependency set, about 86
//! locked packages with two path dependencies, built and run by `xtask dev --image` under a
//! stack of its own: first build with the base image present, no change, a source-only change
//! that must reuse the dependency layer, the image's size split by `cargo xtask size`'s code,
//! idle memory, and the in-image import check's time from the report `dev` kept.

use std::time::Duration;

use anyhow::Result;
use stigmer_stack::ui::progress::Phase;

use super::check;
use super::fixture::{self, EDITED_SOURCE};
use super::measure;
use super::report::Report;
use super::scenario::{Peer, Scenario};
use super::session::{DevStack, Session};

/// The realistic stack's first port (server; health + 1, Temporal + 2).
const PORT: u16 = 7481;

pub fn realistic(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let scratch = session.scratch.join("realistic");
    let service = fixture::assemble_realistic(&session.root, &scratch)?;
    fixture::fresh_venv_cache(&service, &format!("{}-realistic", std::process::id()))?;
    let stack = DevStack::new(&session.scratch, "realistic", PORT);
    session.realistic = Some((stack.clone(), service.clone()));
    let image = ["--image"];

    let first = session.dev(&stack, &service, &image, true)?;
    phase.line(&format!("first build: {:.1} s", first.seconds));
    report.add(
        Scenario::RealisticFirstBuild,
        Peer::DevImage,
        &[first.seconds],
        "no image, an empty venv cache; wheels from the host's cache; build, start, smoke checks",
    );
    if let Some(summary) = &first.summary {
        report.dev_phases.insert(
            Scenario::RealisticFirstBuild,
            summary
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.seconds))
                .collect(),
        );
    }

    let mut unchanged = Vec::new();
    for _ in 0..runs {
        unchanged.push(session.dev(&stack, &service, &image, false)?);
    }
    report.add(
        Scenario::RealisticNoChange,
        Peer::DevImage,
        &unchanged.iter().map(|o| o.seconds).collect::<Vec<_>>(),
        "",
    );
    check::no_build_no_restart(
        report,
        Scenario::RealisticNoChange,
        Peer::DevImage,
        &unchanged,
    );

    let mut changed = Vec::new();
    for _ in 0..runs.min(3) {
        let edit = session.next_edit();
        fixture::append_comment(&service, EDITED_SOURCE, edit)?;
        changed.push(session.dev(&stack, &service, &image, true)?);
    }
    report.add(
        Scenario::RealisticSourceChange,
        Peer::DevImage,
        &changed.iter().map(|o| o.seconds).collect::<Vec<_>>(),
        "the image rebuilt with the new source, the container replaced, smoke checks",
    );
    check::dependency_layer_reused(
        report,
        Scenario::RealisticSourceChange,
        Peer::DevImage,
        &changed,
    );

    let breakdown = crate::size::breakdown(&session.docker, &stack.image)?;
    report.add(
        Scenario::RealisticImageSize,
        Peer::DevImage,
        &[breakdown.image_bytes as f64 / 1e6],
        "base + installed dependencies + the rest, split below",
    );
    report.realistic_size = Some(breakdown);
    let memory = measure::idle_container_memory(
        &session.docker,
        &stack.container,
        stack.health_port,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )?;
    report.add(
        Scenario::RealisticIdleMemory,
        Peer::DevImage,
        &[memory],
        "`docker stats` MemUsage, 5 s after it answered",
    );
    let image_id = measure::state(&session.docker, &stack.image, &stack.container)
        .image
        .map(|image| image.id)
        .unwrap_or_default();
    match crate::import_check::kept_seconds(
        &session.root.join("target/xtask"),
        &service,
        &image_id,
        None,
    ) {
        Some(seconds) => report.add(
            Scenario::RealisticImportCheck,
            Peer::DevImage,
            &[seconds],
            "the check's own time in the container, from the report `dev` kept for the image (once per image)",
        ),
        None => report
            .notes
            .push("realistic import check: no kept report was found for the image".to_string()),
    }
    session.xtask(&stack, &service, &["stop"])?;
    Ok(())
}
