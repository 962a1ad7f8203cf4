//! `cargo xtask dev`: from a fresh clone to a running, smoke-checked agent-runner, and
//! nothing more than a decision and a health probe when nothing changed.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::lifecycle::{ensure_running, wait_until_ready, StartOutcome};
use xshell::Shell;

use crate::image::{self, short_id};
use crate::{smoke, Project};
use runner_container::progress::{seconds, Progress};

/// How long the service may take to answer after its container started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct Dev {}

impl Dev {
    pub fn run(self, sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let plan = image::plan(sh, &docker, project, &mut progress)?;
        let reason = plan.reason(project);
        eprintln!(
            "agent-runner image: {reason} (decided in {})",
            seconds(plan.decision_time)
        );
        let image = match (&plan.image, plan.decision.needs_build()) {
            (Some(current), false) => current.clone(),
            _ => image::build(sh, &docker, project, &engine, &plan, false, &mut progress)?,
        };
        let spec = project.container_spec();
        let outcome = progress.phase("Starting the agent-runner container", |_| {
            ensure_running(
                &docker,
                &spec,
                &image.id,
                &project.data_dir,
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
            smoke::run_checks(&docker, project, &mut progress)?;
        }
        progress.summary();
        println!(
            "✓ agent-runner {} from {} ({}), health at {}",
            &outcome.id()[..outcome.id().len().min(12)],
            project.settings.image,
            short_id(&image.id),
            project.settings.health_url()
        );
        Ok(())
    }
}
