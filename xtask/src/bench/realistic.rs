//! The realistic fixture's figures (issue 9): the original runner's dependency set, about 86
//! locked packages with two path dependencies, built and run by `xtask dev --image` under a
//! stack of its own, beside Compose v2 on the same fixture (runs alternate): first build with
//! the base image present, no change, a source-only change that must reuse the dependency
//! layer, image size (`dev`'s split by `cargo xtask size`'s code) and idle memory; then the
//! in-image import check's time from the report `dev` kept, and `dev`'s reload with the
//! source mounted.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use stigmer_stack::runner::lifecycle;
use stigmer_stack::ui::progress::Phase;

use super::check;
use super::edit_loop;
use super::fixture::{self, EDITED_SOURCE};
use super::measure::{self, Outcome};
use super::peer::{ComposeSetting, ComposeSide};
use super::report::Report;
use super::scenario::{Peer, Scenario};
use super::session::{DevStack, Session};

/// The realistic stack's first port (server; health + 1, Temporal + 2).
const PORT: u16 = 7481;
/// The health port of Compose v2's runner on the realistic fixture.
const COMPOSE_HEALTH_PORT: u16 = 7486;

/// The fixture as `dev` and Compose v2 see it.
struct Sides<'a> {
    stack: &'a DevStack,
    service: &'a Path,
    compose: Option<&'a ComposeSide>,
}

impl Sides<'_> {
    /// One run of `peer`: `dev` mounted or `--image`, or `compose up -d --build` (`--wait`
    /// when a new process is expected).
    fn run(&self, session: &Session, peer: Peer, new_process: bool) -> Result<Outcome> {
        match (peer, self.compose) {
            (Peer::Dev, _) => session.dev(self.stack, self.service, &[], new_process),
            (Peer::DevImage, _) => session.dev(self.stack, self.service, &["--image"], new_process),
            (_, Some(side)) if new_process => {
                session.compose(side, &["up", "-d", "--build", "--wait"], true)
            }
            (_, Some(side)) => session.compose(side, &["up", "-d", "--build"], false),
            (_, None) => anyhow::bail!("{} is not set up", peer.label()),
        }
    }

    /// `runs` rounds over `peers`; with `edit`, one source file changed before each run.
    fn alternate(
        &self,
        session: &mut Session,
        peers: &[Peer],
        runs: usize,
        edit: bool,
        phase: &Phase,
    ) -> Result<BTreeMap<Peer, Vec<Outcome>>> {
        let prepare = |session: &mut Session, _| {
            if edit {
                let edit = session.next_edit();
                fixture::append_comment(self.service, EDITED_SOURCE, edit)?;
            }
            Ok(())
        };
        edit_loop::rounds(session, peers, runs, phase, prepare, |session, peer| {
            self.run(session, peer, edit)
        })
    }
}

pub fn realistic(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let scratch = session.scratch.join("realistic");
    let service = fixture::assemble_realistic(&session.root, &scratch)?;
    let stack = DevStack::new(&session.scratch, "realistic", PORT);
    session.realistic = Some((stack.clone(), service.clone()));
    let compose = compose_side(session, &stack, &service)?;
    if let Some(side) = &compose {
        // Pushed first, so cleaning up takes it down whatever happens next.
        session.compose.push(side.clone());
    }
    let sides = Sides {
        stack: &stack,
        service: &service,
        compose: compose.as_ref(),
    };
    let mut peers = vec![Peer::DevImage];
    peers.extend(compose.as_ref().map(|side| side.peer));

    // First builds, each from a venv cache of its own; `dev` builds first, and lays out the
    // wheels compose builds from.
    let mut first = BTreeMap::new();
    for &peer in &peers {
        fixture::fresh_venv_cache(
            &service,
            &format!("{}-realistic-{peer:?}", std::process::id()),
        )?;
        first.insert(peer, vec![sides.run(session, peer, true)?]);
    }
    // Untimed: `dev` brought up to date with the Dockerfile the last first build used.
    sides.run(session, Peer::DevImage, true)?;
    if let Some(summary) = first
        .get(&Peer::DevImage)
        .and_then(|runs| runs[0].summary.as_ref())
    {
        report.dev_phases.insert(
            Scenario::RealisticFirstBuild,
            summary
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.seconds))
                .collect(),
        );
    }
    edit_loop::record(
        report,
        Scenario::RealisticFirstBuild,
        &first,
        true,
        "no image, an empty venv cache; wheels from the host's cache; until the runner answers",
    );

    let unchanged = sides.alternate(session, &peers, runs, false, phase)?;
    for (peer, runs) in &unchanged {
        check::no_build_no_restart(report, Scenario::RealisticNoChange, *peer, runs);
    }
    edit_loop::record(
        report,
        Scenario::RealisticNoChange,
        &unchanged,
        false,
        "the whole command, stack running",
    );

    let changed = sides.alternate(session, &peers, runs.min(3), true, phase)?;
    for (peer, runs) in &changed {
        check::dependency_layer_reused(report, Scenario::RealisticSourceChange, *peer, runs);
    }
    edit_loop::record(
        report,
        Scenario::RealisticSourceChange,
        &changed,
        true,
        "image rebuilt with the new source, container replaced; until the new process answers",
    );

    size_and_memory(session, report, &sides)?;
    import_check(session, report, &stack, &service);

    // The source mounted (the default mode): untimed switch, then reloads.
    sides.run(session, Peer::Dev, true)?;
    let reloaded = sides.alternate(session, &[Peer::Dev], runs, true, phase)?;
    for (peer, runs) in &reloaded {
        check::reloaded_without_build(report, Scenario::RealisticReload, *peer, runs);
    }
    edit_loop::record(
        report,
        Scenario::RealisticReload,
        &reloaded,
        true,
        "source mounted, the runner process reloaded; until the new process answers",
    );
    session.xtask(&stack, &service, &["stop"])?;
    if let Some(side) = &compose {
        side.run(&["down", "--timeout", "5"])?;
    }
    Ok(())
}

/// Compose v2 on the fixture, a worker of the realistic stack's Temporal and server; `None`
/// when the benchmark has no Compose v2.
fn compose_side(
    session: &Session,
    stack: &DevStack,
    service: &Path,
) -> Result<Option<ComposeSide>> {
    let Some(v2) = session
        .compose
        .iter()
        .find(|side| side.peer == Peer::ComposeV2)
    else {
        return Ok(None);
    };
    let base = session.base_reference();
    let setting = ComposeSetting {
        base_image: &base,
        backend: stack,
        host_user: session.host_user,
        scratch: &session.scratch,
        service_dir: service,
    };
    let side = ComposeSide::new(
        Peer::ComposeV2,
        v2.program.clone(),
        "realistic-v2",
        COMPOSE_HEALTH_PORT,
        &setting,
    );
    lifecycle::prepare_workspace(&side.workspace, session.host_user)?;
    Ok(Some(side))
}

/// Each tool's image size (`dev`'s split by `cargo xtask size`'s code) and idle memory.
fn size_and_memory(session: &mut Session, report: &mut Report, sides: &Sides) -> Result<()> {
    let breakdown = crate::size::breakdown(&session.docker, &sides.stack.image)?;
    report.add(
        Scenario::RealisticImageSize,
        Peer::DevImage,
        &[breakdown.image_bytes as f64 / 1e6],
        "base + installed dependencies + the rest, split below",
    );
    report.realistic_size = Some(breakdown);
    let mut containers = vec![(
        Peer::DevImage,
        sides.stack.container.clone(),
        sides.stack.health_port,
    )];
    if let Some(side) = sides.compose {
        if let Some(image) = measure::state(&session.docker, &side.image, &side.container).image {
            report.add(
                Scenario::RealisticImageSize,
                side.peer,
                &[image.size as f64 / 1e6],
                "base + installed dependencies + the rest, split below",
            );
        }
        containers.push((side.peer, side.container.clone(), side.health_port));
    }
    for (peer, container, port) in containers {
        edit_loop::idle_memory(
            session,
            report,
            Scenario::RealisticIdleMemory,
            peer,
            &container,
            port,
        )?;
    }
    Ok(())
}

/// The in-image import check's own time, from the report `dev` kept for the image.
fn import_check(session: &Session, report: &mut Report, stack: &DevStack, service: &Path) {
    let image_id = measure::state(&session.docker, &stack.image, &stack.container)
        .image
        .map(|image| image.id)
        .unwrap_or_default();
    match crate::import_check::kept_seconds(
        &session.root.join("target/xtask"),
        service,
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
}
