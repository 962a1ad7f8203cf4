//! `cargo xtask dev`: from a fresh clone to the running, smoke-checked local stack
//! (stigmer-server and the agent-runner container), and nothing more than a decision and
//! two health probes when nothing changed.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::lifecycle::{ensure_running, wait_until_ready, StartOutcome};
use runner_container::lock::StackLock;
use runner_container::progress::{seconds, Progress};
use runner_container::server_process::{self, ServerState};
use xshell::{cmd, Shell};

use crate::image::{self, short_id};
use crate::{publish, smoke, Project};

/// How long the service may take to answer after its container started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct Dev {}

impl Dev {
    pub fn run(self, sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        // Taken only once the engine answered: without one, nothing is written.
        let _lock = StackLock::acquire(&project.stack.data_dir, "cargo xtask dev", |holder| {
            progress.note(&format!("waiting for {holder} to finish with this stack"));
        })?;
        let plan = image::plan(sh, &docker, project, &mut progress)?;
        eprintln!(
            "agent-runner image: {} (decided in {})",
            plan.reason(project),
            seconds(plan.decision_time)
        );
        let image = match (&plan.image, plan.decision.needs_build()) {
            (Some(current), false) => current.clone(),
            _ => match publish::pull_instead_of_building(&docker, project, &plan, &mut progress)? {
                Some(pulled) => pulled,
                None => image::build(sh, &docker, project, &engine, &plan, false, &mut progress)?,
            },
        };
        progress.phase("Building stigmer-server and stigmer", |_| {
            build_binaries(sh, project)
        })?;
        let server = progress.phase("Starting stigmer-server", |_| start_server(project))?;
        let spec = project.container_spec(&engine);
        let outcome = progress.phase("Starting the agent-runner container", |_| {
            ensure_running(
                &docker,
                &spec,
                &image.id,
                &project.stack.data_dir,
                project.host_user,
            )
        })?;
        match &outcome {
            StartOutcome::AlreadyRunning { .. } => progress.note(
                "container already running from the current image and configuration: left alone",
            ),
            StartOutcome::Replaced { reason, .. } => {
                progress.note(&format!("replaced the previous container: {reason}"))
            }
            StartOutcome::Started { .. } => {}
        }
        let early_checks = outcome
            .started_something()
            .then(|| smoke::start_image_checks(project));
        if outcome.started_something() {
            let ready = progress.phase("Waiting until ready", |_| {
                wait_until_ready(&docker, &spec, READY_TIMEOUT)
            })?;
            progress.note(&format!("ready {} after start", seconds(ready)));
            image::remove_replaced(&docker, plan.image.as_ref(), &image);
        }
        // A run killed before its checks leaves a container nobody checked: check it now.
        if outcome.started_something()
            || server.started
            || !smoke::was_checked(project, outcome.id())
        {
            smoke::run_checks(&docker, project, &mut progress, early_checks)?;
            smoke::mark_checked(project, outcome.id())?;
        }
        progress.summary();
        println!(
            "✓ stigmer-server (pid {}) at {}; agent-runner {} from {} ({}), health at {}",
            server.pid,
            server_process::url(project.stack.server_port),
            &outcome.id()[..outcome.id().len().min(12)],
            project.stack.runner.image,
            short_id(&image.id),
            project.stack.runner.health_url()
        );
        Ok(())
    }
}

/// The server and the CLI come from this checkout; cargo decides whether they are current
/// (asked only when a source is newer than its last answer: see [`binaries_fresh`]).
fn build_binaries(sh: &Shell, project: &Project) -> Result<()> {
    if binaries_fresh(project) {
        return Ok(());
    }
    let _dir = sh.push_dir(&project.root);
    // Taken before the build, so a source saved while cargo runs is newer than the stamp.
    let stamp = binaries_stamp(project);
    let _ = std::fs::remove_file(&stamp);
    let started = std::time::SystemTime::now();
    cmd!(
        sh,
        "cargo build --quiet --package stigmer-server --package stigmer"
    )
    .quiet()
    .run()
    .context("building stigmer-server and the stigmer CLI")?;
    // Only a cache: without it cargo is simply asked next time.
    let _ = std::fs::create_dir_all(project.cache_dir())
        .and_then(|()| std::fs::File::create(&stamp).and_then(|file| file.set_modified(started)));
    Ok(())
}

/// Cargo's own no-op check costs about 100 ms (it loads the workspace and fingerprints every
/// unit), more than the whole rest of a no-change `dev` (see BENCHMARKS.md). So a stamp is
/// written each time cargo has made the binaries current, and cargo is asked again only when
/// a source the binaries were built from (the dep-info files cargo writes beside them), a
/// manifest or `Cargo.lock` is newer than that stamp. Anything unreadable (a path with
/// spaces, another target directory) asks cargo. Not seen: a changed toolchain or RUSTFLAGS.
fn binaries_fresh(project: &Project) -> bool {
    let Some(dir) = project
        .stack
        .server_config()
        .ok()
        .and_then(|config| config.binary.parent().map(std::path::Path::to_path_buf))
    else {
        return false;
    };
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified());
    let Ok(confirmed) = modified(&binaries_stamp(project)) else {
        return false;
    };
    let manifests: Vec<std::path::PathBuf> = [
        "Cargo.lock",
        "Cargo.toml",
        ".cargo/config.toml",
        "backend/services/stigmer-server/Cargo.toml",
        "client-apps/cli/Cargo.toml",
        "crates/runner-container/Cargo.toml",
    ]
    .iter()
    .map(|path| project.root.join(path))
    .filter(|path| path.exists())
    .collect();
    ["stigmer-server", "stigmer"].iter().all(|name| {
        let (Ok(_), Ok(dep_info)) = (
            modified(&dir.join(name)),
            std::fs::read_to_string(dir.join(format!("{name}.d"))),
        ) else {
            return false;
        };
        let Some((_, sources)) = dep_info
            .lines()
            .next()
            .and_then(|line| line.split_once(": "))
        else {
            return false;
        };
        sources
            .split_whitespace()
            .map(std::path::PathBuf::from)
            .chain(manifests.iter().cloned())
            .all(|source| modified(&source).is_ok_and(|time| time <= confirmed))
    })
}

fn binaries_stamp(project: &Project) -> std::path::PathBuf {
    project.cache_dir().join("binaries-current.stamp")
}

struct ServerRun {
    pid: i32,
    started: bool,
}

/// Starts the server, or restarts it when it runs an older build than the one just made.
fn start_server(project: &Project) -> Result<ServerRun> {
    let config = project.stack.server_config()?;
    if let ServerState::Running { record } = server_process::state(&project.stack.data_dir) {
        if server_process::runs_outdated_binary(&record, &config.binary) {
            server_process::stop(&project.stack.data_dir)
                .context("stopping the outdated stigmer-server")?;
        }
    }
    let outcome = server_process::start(&project.stack.data_dir, &config)?;
    Ok(ServerRun {
        pid: outcome.pid(),
        started: matches!(outcome, server_process::StartOutcome::Started { .. }),
    })
}
