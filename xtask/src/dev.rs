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
        let spec = project.container_spec();
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
            smoke::run_checks(&docker, project, &mut progress)?;
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

/// The server and the CLI come from this checkout; cargo decides whether they are current.
fn build_binaries(sh: &Shell, project: &Project) -> Result<()> {
    let _dir = sh.push_dir(&project.root);
    cmd!(
        sh,
        "cargo build --quiet --package stigmer-server --package stigmer"
    )
    .quiet()
    .run()
    .context("building stigmer-server and the stigmer CLI")
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
