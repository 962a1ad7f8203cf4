//! Bringing the stack down: the runner container first (30 s grace, then kill, then remove), so
//! its worker drains while Temporal still answers, then stigmer-server, then the managed
//! Temporal. Each step is idempotent; a step that cannot be done (no Docker, a foreign
//! container with our name) is reported and the others still run.

use anyhow::Result;

use crate::docker::engine;
use crate::docker::Docker;
use crate::process::{self, StopOutcome};
use crate::runner::lifecycle;
use crate::stack::StackConfig;
use crate::{server, temporal};

/// What became of the runner container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RunnerStop {
    Stopped {
        id: String,
    },
    NotRunning,
    /// Docker did not answer, so the container could not be checked.
    EngineUnavailable,
    /// A container with our name that this stack did not create, or another error: left alone.
    Refused {
        message: String,
    },
}

/// What [`down`] did, component by component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DownReport {
    pub runner: RunnerStop,
    pub server: StopOutcome,
    /// `None` for an existing Temporal given by address, which is never stopped.
    pub temporal: Option<StopOutcome>,
}

impl std::fmt::Display for DownReport {
    /// One line per component, in the order they were stopped.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.runner {
            RunnerStop::Stopped { id } => writeln!(
                f,
                "✓ stopped and removed the agent-runner container ({})",
                crate::docker::short_id(id)
            )?,
            RunnerStop::NotRunning => writeln!(f, "ℹ the agent-runner container was not running")?,
            RunnerStop::EngineUnavailable => writeln!(
                f,
                "⚠ Docker does not answer, so the agent-runner container could not be checked"
            )?,
            // A foreign container with our name: reported, left alone, and not our stack.
            RunnerStop::Refused { message } => writeln!(f, "⚠ {message}")?,
        }
        write_process_stop(f, "stigmer-server", &self.server)?;
        match &self.temporal {
            Some(outcome) => write_process_stop(f, "Temporal", outcome),
            None => writeln!(f, "ℹ Temporal is not run by this stack: left alone"),
        }
    }
}

fn write_process_stop(
    f: &mut std::fmt::Formatter<'_>,
    what: &str,
    outcome: &StopOutcome,
) -> std::fmt::Result {
    match outcome {
        StopOutcome::Stopped { pid, killed: false } => writeln!(f, "✓ stopped {what} (pid {pid})"),
        StopOutcome::Stopped { pid, killed: true } => {
            writeln!(
                f,
                "✓ stopped {what} (pid {pid}); it ignored SIGTERM and was killed"
            )
        }
        StopOutcome::NotRunning { stale: None } => writeln!(f, "ℹ {what} was not running"),
        StopOutcome::NotRunning {
            stale: Some(reason),
        } => writeln!(
            f,
            "ℹ {what} was not running (removed its stale PID file: {reason})"
        ),
    }
}

/// Stops the stack in the order runner, server, Temporal. Fails only when a host process could
/// not be stopped; the runner's problems are in the report.
pub fn down(config: &StackConfig, docker: &Docker) -> Result<DownReport> {
    let data_dir = &config.data_dir;
    let runner = match engine::check_engine(docker) {
        Err(_) => RunnerStop::EngineUnavailable,
        Ok(_) => match lifecycle::stop(docker, data_dir, &config.runner.container_name) {
            Ok(lifecycle::StopOutcome::Stopped { id }) => RunnerStop::Stopped { id },
            Ok(lifecycle::StopOutcome::NotRunning) => RunnerStop::NotRunning,
            Err(err) => RunnerStop::Refused {
                message: format!("{err:#}"),
            },
        },
    };
    let server = process::stop(
        &data_dir.server_pid_file(),
        server::COMPONENT,
        server::STOP_GRACE,
    )?;
    let temporal = if config.temporal.is_managed() {
        Some(process::stop(
            &data_dir.temporal_pid_file(),
            temporal::COMPONENT,
            temporal::STOP_GRACE,
        )?)
    } else {
        None
    };
    Ok(DownReport {
        runner,
        server,
        temporal,
    })
}
