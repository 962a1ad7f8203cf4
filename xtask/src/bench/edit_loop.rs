//! The edit loop on the runner as shipped (issue 11), `dev` against Compose v2 and v1 side by
//! side: runs alternate between the tools, and every edit is made before each tool's run, so
//! no tool reuses another's work. Each scenario records its figures and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use stigmer_stack::ui::progress::Phase;

use super::check;
use super::fixture::{self, EDITED_SOURCE};
use super::measure::{self, Outcome};
use super::report::{Report, Stats};
use super::scenario::{Peer, Scenario};
use super::session::Session;
use super::watch;

/// What a compose side runs for a scenario: `up -d --build`, with `--wait` where the issue
/// compares with it and the version has it (v1 does not: the benchmark waits instead).
fn compose_up(peer: Peer, wait: bool) -> Vec<&'static str> {
    let mut args = vec!["up", "-d", "--build"];
    if wait && peer == Peer::ComposeV2 {
        args.push("--wait");
    }
    args
}

/// One run of `peer` for `scenario`.
fn run_once(session: &Session, scenario: Scenario, peer: Peer) -> Result<Outcome> {
    let new_process = !matches!(scenario, Scenario::NoChange | Scenario::Touched);
    let wait = matches!(scenario, Scenario::SourceChange | Scenario::LockChange);
    match peer {
        Peer::Dev => session.dev(&session.dev, &session.service_dir, &[], new_process),
        Peer::DevImage => session.dev(
            &session.dev,
            &session.service_dir,
            &["--image"],
            new_process,
        ),
        _ => {
            let side = session
                .compose
                .iter()
                .find(|side| side.peer == peer)
                .with_context(|| format!("{} is not set up", peer.label()))?;
            session.compose(side, &compose_up(peer, wait), new_process)
        }
    }
}

/// `runs` rounds over `peers`, calling `prepare` before each run.
fn alternate(
    session: &mut Session,
    scenario: Scenario,
    peers: &[Peer],
    runs: usize,
    phase: &Phase,
    prepare: impl FnMut(&mut Session, Peer) -> Result<()>,
) -> Result<BTreeMap<Peer, Vec<Outcome>>> {
    rounds(session, peers, runs, phase, prepare, |session, peer| {
        run_once(session, scenario, peer)
    })
}

/// `runs` rounds over `peers`: `prepare`, then `run`, for each.
pub(super) fn rounds(
    session: &mut Session,
    peers: &[Peer],
    runs: usize,
    phase: &Phase,
    mut prepare: impl FnMut(&mut Session, Peer) -> Result<()>,
    run: impl Fn(&Session, Peer) -> Result<Outcome>,
) -> Result<BTreeMap<Peer, Vec<Outcome>>> {
    let mut outcomes: BTreeMap<Peer, Vec<Outcome>> = BTreeMap::new();
    for round in 1..=runs {
        for &peer in peers {
            prepare(session, peer)?;
            let outcome = run(session, peer)?;
            phase.line(&format!(
                "run {round} {}: {:.2} s, answering after {:.2} s (image {}, container {})",
                peer.label(),
                outcome.seconds,
                outcome.until_answering,
                if outcome.image_changed() {
                    "new"
                } else {
                    "same"
                },
                if outcome.restarted() { "new" } else { "same" },
            ));
            outcomes.entry(peer).or_default().push(outcome);
        }
    }
    Ok(outcomes)
}

/// The rows of one scenario and, where `dev` ran, the medians of its phases.
pub(super) fn record(
    report: &mut Report,
    scenario: Scenario,
    outcomes: &BTreeMap<Peer, Vec<Outcome>>,
    until_answering: bool,
    note: &str,
) {
    if let Some(dev) = outcomes.get(&Peer::Dev) {
        report.dev_phases.insert(scenario, phase_medians(dev));
    }
    for (peer, runs) in outcomes {
        let samples: Vec<f64> = runs
            .iter()
            .map(|o| {
                if until_answering {
                    o.until_answering
                } else {
                    o.seconds
                }
            })
            .collect();
        report.add(scenario, *peer, &samples, note);
    }
}

/// Medians of the phases `dev --json` reported over these runs.
fn phase_medians(runs: &[Outcome]) -> Vec<(String, f64)> {
    let Some(first) = runs.first().and_then(|o| o.summary.as_ref()) else {
        return Vec::new();
    };
    first
        .phases
        .iter()
        .filter_map(|phase| {
            let samples: Vec<f64> = runs
                .iter()
                .filter_map(|o| o.summary.as_ref())
                .filter_map(|s| s.phases.iter().find(|p| p.name == phase.name))
                .map(|p| p.seconds)
                .collect();
            Stats::of(&samples).map(|stats| (phase.name.clone(), stats.median))
        })
        .collect()
}

/// First build with only the base image present: no image, no container, a venv cache of
/// its own for each tool.
pub fn first_build(
    session: &mut Session,
    report: &mut Report,
    peers: &[Peer],
    phase: &Phase,
) -> Result<()> {
    let dockerfile = session.service_dir.join("Dockerfile");
    let shipped = std::fs::read(&dockerfile).context("reading the copy's Dockerfile")?;
    let outcomes = alternate(
        session,
        Scenario::FirstBuild,
        peers,
        1,
        phase,
        |session, peer| {
            let tag = format!("{}-{}", std::process::id(), session.next_edit());
            fixture::fresh_venv_cache(&session.service_dir, &tag)?;
            fixture::write_legacy_dockerfile(&session.service_dir)?;
            let (container, image) = match peer {
                Peer::Dev | Peer::DevImage => {
                    (session.dev.container.clone(), session.dev.image.clone())
                }
                _ => session
                    .compose
                    .iter()
                    .find(|side| side.peer == peer)
                    .map(|side| (side.container.clone(), side.image.clone()))
                    .unwrap_or_default(),
            };
            // Only this tool's image and container: the others' are still in use. The fresh
            // venv cache makes the expensive step start from nothing for each tool.
            for remove in [["rm", "--force", &container], ["rmi", "--force", &image]] {
                let _ = session.docker.capture(&stigmer_stack::docker::args(remove));
            }
            Ok(())
        },
    )?;
    // Untimed: every tool brought up to date with the Dockerfile as shipped again, so the
    // scenarios after this one start from the same inputs on every side.
    std::fs::write(&dockerfile, shipped).context("restoring the copy's Dockerfile")?;
    fixture::write_legacy_dockerfile(&session.service_dir)?;
    for &peer in peers {
        run_once(session, Scenario::Touched, peer)?;
    }
    record(
        report,
        Scenario::FirstBuild,
        &outcomes,
        true,
        "no image, no container, an empty venv cache; until the runner answers on the host",
    );
    Ok(())
}

/// No change, then every file touched without a change: nothing may be built or restarted.
pub fn unchanged(
    session: &mut Session,
    report: &mut Report,
    peers: &[Peer],
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let outcomes = alternate(session, Scenario::NoChange, peers, runs, phase, |_, _| {
        Ok(())
    })?;
    for (peer, runs) in &outcomes {
        check::no_build_no_restart(report, Scenario::NoChange, *peer, runs);
    }
    record(
        report,
        Scenario::NoChange,
        &outcomes,
        false,
        "the whole command, stack running",
    );
    let outcomes = alternate(
        session,
        Scenario::Touched,
        peers,
        runs,
        phase,
        |session, _| {
            let edit = session.next_edit();
            fixture::touch_tree(&session.service_dir, edit)
        },
    )?;
    for (peer, runs) in &outcomes {
        check::no_build_no_restart(report, Scenario::Touched, *peer, runs);
    }
    record(
        report,
        Scenario::Touched,
        &outcomes,
        false,
        "every file of the service gets a new modification time, same bytes",
    );
    Ok(())
}

/// One source file changed: `dev` reloads the runner process (source mounted), compose
/// rebuilds and replaces the container; timed until the new process answers.
pub fn source_change(
    session: &mut Session,
    report: &mut Report,
    peers: &[Peer],
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let outcomes = alternate(
        session,
        Scenario::SourceChange,
        peers,
        runs,
        phase,
        |session, _| {
            let edit = session.next_edit();
            fixture::append_comment(&session.service_dir, EDITED_SOURCE, edit)
        },
    )?;
    for (peer, runs) in &outcomes {
        match peer {
            Peer::Dev => check::reloaded_without_build(report, Scenario::SourceChange, *peer, runs),
            _ => check::dependency_layer_reused(report, Scenario::SourceChange, *peer, runs),
        }
    }
    if let Some(dev) = outcomes.get(&Peer::Dev) {
        let whole = Stats::of(&dev.iter().map(|o| o.seconds).collect::<Vec<_>>());
        let reload = Stats::of(
            &dev.iter()
                .filter_map(|o| o.summary.as_ref()?.reload_seconds)
                .collect::<Vec<_>>(),
        );
        if let (Some(whole), Some(reload)) = (whole, reload) {
            report.notes.push(format!(
                "Source change with `dev`: the new process answered after the medians above; \
                 `dev` itself measured {:.0} ms from its SIGHUP to the new generation answering, \
                 and the whole command (smoke checks after the reload included) took {:.2} s.",
                reload.median * 1e3,
                whole.median
            ));
        }
    }
    record(
        report,
        Scenario::SourceChange,
        &outcomes,
        true,
        &format!(
            "a comment appended to {EDITED_SOURCE}; from the command's start until a new runner \
             process answers /healthz (a new generation, or an answer after the old container went away)"
        ),
    );
    Ok(())
}

/// The same edit with the source baked into the image (`dev --image`, as CI): a build that
/// must reuse the dependency layer. Leaves the stack in dev mode again.
pub fn source_change_image(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    run_once(session, Scenario::SourceChangeImage, Peer::DevImage)?;
    let outcomes = alternate(
        session,
        Scenario::SourceChangeImage,
        &[Peer::DevImage],
        runs,
        phase,
        |session, _| {
            let edit = session.next_edit();
            fixture::append_comment(&session.service_dir, EDITED_SOURCE, edit)
        },
    )?;
    if let Some(runs) = outcomes.get(&Peer::DevImage) {
        check::dependency_layer_reused(report, Scenario::SourceChangeImage, Peer::DevImage, runs);
    }
    record(
        report,
        Scenario::SourceChangeImage,
        &outcomes,
        true,
        "`dev --image`: image rebuilt with the new source, container replaced; until the new process answers",
    );
    run_once(session, Scenario::SourceChange, Peer::Dev)?;
    Ok(())
}

/// `dev --watch` against `compose watch`, one block each (both watch the same files).
pub fn watch_reaction(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let dev = watch::dev_watch(session, runs)?;
    record_watch(
        report,
        phase,
        Peer::DevWatch,
        &dev,
        "from writing the edit until the reaction's JSON line arrived (the new process answers by then), debounce included",
        format!(
            "{}/{} edits reacted to with a reload whose generation then answered; dev's own figure: median {:.0} ms{}",
            dev.answered,
            dev.seen.len(),
            Stats::of(&dev.reported).map_or(0.0, |s| s.median * 1e3),
            if dev.other.is_empty() {
                String::new()
            } else {
                format!("; also seen: {}", dev.other.join("; "))
            }
        ),
    );
    if let Some(mut side) = session
        .compose
        .iter()
        .find(|side| side.peer == Peer::ComposeV2)
        .cloned()
    {
        side.overrides
            .push(fixture::write_watch_override(&session.service_dir)?);
        side.run(&["up", "-d"])?;
        let theirs = watch::compose_watch(session, &side, runs)?;
        record_watch(
            report,
            phase,
            Peer::ComposeWatch,
            &theirs,
            "`compose watch --no-up` (its runner as root: see the notes): from writing the edit until the restarted container answers",
            format!(
                "{}/{} edits made the container restart and answer",
                theirs.answered,
                theirs.seen.len()
            ),
        );
    }
    Ok(())
}

/// A package added with Poetry (`poetry add --lock`) to the shipped project before each run:
/// `dev` sees the lock; compose sees the wheels `dev` prepared from it into the context.
pub fn lock_change(
    session: &mut Session,
    report: &mut Report,
    peers: &[Peer],
    runs: usize,
    phase: &Phase,
) -> Result<()> {
    let shipped = fixture::ShippedLock::read(&session.service_dir)?;
    let poetry = fixture::poetry(&session.root)?;
    let mut changes = 0;
    let outcomes = alternate(
        session,
        Scenario::LockChange,
        peers,
        runs,
        phase,
        |session, peer| {
            fixture::lock_with_extra_package(&poetry, &session.service_dir, &shipped, changes)?;
            changes += 1;
            // Compose cannot read the lock: it gets the wheels xtask prepares from it (not
            // timed); `dev` prepares them itself, in its own time.
            if peer != Peer::Dev {
                session.prepare_wheels(phase)?;
            }
            Ok(())
        },
    )?;
    for (peer, runs) in &outcomes {
        check::rebuilt(report, Scenario::LockChange, *peer, runs);
    }
    record(
        report,
        Scenario::LockChange,
        &outcomes,
        true,
        "before each run, the lock as shipped plus one pure-Python package, a different one each \
         time (so no tool reuses another's build); compose builds from the wheels xtask prepared \
         (not timed); until the new process answers",
    );
    Ok(())
}

/// Each tool's image size and its runner's idle memory.
pub fn size_and_memory(session: &Session, report: &mut Report, peers: &[Peer]) -> Result<()> {
    for &peer in peers {
        let (image, container, port) = match peer {
            Peer::Dev => (
                session.dev.image.clone(),
                session.dev.container.clone(),
                session.dev.health_port,
            ),
            _ => match session.compose.iter().find(|side| side.peer == peer) {
                Some(side) => (side.image.clone(), side.container.clone(), side.health_port),
                None => continue,
            },
        };
        if let Some(found) = measure::state(&session.docker, &image, &container).image {
            report.add(
                Scenario::ImageSize,
                peer,
                &[found.size as f64 / 1e6],
                "`docker image inspect` Size, base included",
            );
        }
        idle_memory(
            session,
            report,
            Scenario::IdleMemory,
            peer,
            &container,
            port,
        )?;
    }
    Ok(())
}

/// One watcher's reactions: the progress line, the row and the check that every edit was
/// reacted to and answered.
fn record_watch(
    report: &mut Report,
    phase: &Phase,
    peer: Peer,
    reactions: &watch::Reactions,
    note: &str,
    detail: String,
) {
    phase.line(&format!(
        "{}: median {:.0} ms",
        peer.label(),
        Stats::of(&reactions.seen).map_or(0.0, |s| s.median * 1e3)
    ));
    report.add(Scenario::WatchReaction, peer, &reactions.seen, note);
    report.check(
        super::scenario::Check::WatchReacted,
        Some(Scenario::WatchReaction),
        Some(peer),
        !reactions.seen.is_empty() && reactions.answered == reactions.seen.len(),
        detail,
    );
}

/// The runner container's idle memory, as a row of `scenario`.
pub(super) fn idle_memory(
    session: &Session,
    report: &mut Report,
    scenario: Scenario,
    peer: Peer,
    container: &str,
    health_port: u16,
) -> Result<()> {
    let memory = measure::idle_container_memory(
        &session.docker,
        container,
        health_port,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )?;
    report.add(
        scenario,
        peer,
        &[memory],
        "`docker stats` MemUsage, 5 s after it answered",
    );
    Ok(())
}
