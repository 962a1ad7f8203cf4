//! The stack's status: one serializable report of Temporal, stigmer-server and the runner
//! container, the same for `stigmer server status --json` and `cargo xtask status --json`.

use std::time::Duration;

use crate::docker::engine;
use crate::docker::inspect::{ContainerState, Health, RunStatus};
use crate::docker::Docker;
use crate::runner::lifecycle;
use crate::runner::spec::{DATA_DIR_LABEL, DEFAULT_IMAGE, MODE_LABEL};
use crate::server::{self, ServerStatus};
use crate::stack::StackConfig;
use crate::temporal::{self, TemporalStatus};
use crate::util::time;

/// The agent-runner's part of the status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunnerStatus {
    /// Docker's status (`running`, `exited`, ...), `absent`, `foreign` or `unknown` (no engine).
    pub state: String,
    pub container: String,
    pub id: Option<String>,
    pub docker_health: Option<Health>,
    pub health_url: String,
    /// The runner's own health endpoint answered.
    pub healthy: bool,
    pub uptime_seconds: Option<u64>,
    pub image: String,
    /// `image` (the image's own source runs) or `mounted` (the working tree's, reloaded in
    /// place by `cargo xtask dev`).
    pub mode: Option<String>,
    pub image_id: Option<String>,
    /// The container runs the image the tag names now; `None` when either is unknown.
    pub image_current: Option<bool>,
    /// Whatever needs the user's attention (no image, a foreign container, no engine).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StackStatus {
    pub data_dir: String,
    pub temporal: TemporalStatus,
    pub server: ServerStatus,
    pub agent_runner: RunnerStatus,
}

impl StackStatus {
    /// Every component runs and answers.
    pub fn healthy(&self) -> bool {
        self.temporal.healthy
            && self.server.healthy
            && self.server.process.state == "running"
            && self.agent_runner.state == "running"
            && self.agent_runner.healthy
    }
}

impl std::fmt::Display for StackStatus {
    /// The human report: one mark and line per component, then where it answers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        let answers = |ok: bool| if ok { "answers" } else { "does not answer" };
        let temporal = &self.temporal;
        match &temporal.process {
            Some(process) => writeln!(
                f,
                "{} temporal        {}",
                mark(process.state == "running" && temporal.healthy),
                process_line(process)
            )?,
            None => writeln!(
                f,
                "{} temporal        existing, at {}",
                mark(temporal.healthy),
                temporal.address
            )?,
        }
        writeln!(
            f,
            "    {} (HTTP {}) {}",
            temporal.address,
            temporal.http,
            answers(temporal.healthy)
        )?;
        if let Some(ui) = &temporal.ui {
            writeln!(f, "    Web UI {ui}")?;
        }
        let server = &self.server;
        writeln!(
            f,
            "{} stigmer-server  {}",
            mark(server.process.state == "running" && server.healthy),
            process_line(&server.process)
        )?;
        let answer = match (server.process.state, server.healthy) {
            ("running", true) => "answers",
            (_, true) => "answers, but from a process this data directory did not start",
            (_, false) => "does not answer",
        };
        writeln!(f, "    {} {answer}", server.url)?;
        let stale = temporal
            .process
            .as_ref()
            .and_then(|process| process.stale_reason.as_ref())
            .into_iter()
            .chain(server.process.stale_reason.as_ref());
        for reason in stale {
            writeln!(f, "    stale PID file: {reason}")?;
        }
        let runner = &self.agent_runner;
        writeln!(
            f,
            "{} agent-runner    {}{}{}{}",
            mark(runner.state == "running" && runner.healthy),
            runner.state,
            runner
                .id
                .as_ref()
                .map(|id| format!(
                    ", container {} ({})",
                    runner.container,
                    crate::docker::short_id(id)
                ))
                .unwrap_or_default(),
            runner
                .docker_health
                .map(|health| format!(", docker health {health:?}").to_lowercase())
                .unwrap_or_default(),
            runner
                .uptime_seconds
                .map(|s| format!(", up {}", time::duration_text(s)))
                .unwrap_or_default(),
        )?;
        writeln!(f, "    {} {}", runner.health_url, answers(runner.healthy))?;
        let current = match runner.image_current {
            Some(true) => " (current)",
            Some(false) => " (outdated: `stigmer server start --restart` runs the new image)",
            None => "",
        };
        let mode = match runner.mode.as_deref() {
            Some("mounted") => ", with the working tree's source mounted (cargo xtask dev)",
            Some("image") => ", with its own source",
            _ => "",
        };
        writeln!(f, "    image {}{current}{mode}", runner.image)?;
        if let Some(problem) = &runner.problem {
            writeln!(f, "    ⚠ {}", problem.replace('\n', "\n      "))?;
        }
        writeln!(f, "  data directory  {}", self.data_dir)
    }
}

fn process_line(process: &crate::process::ProcessStatus) -> String {
    format!(
        "{}{}{}",
        process.state,
        process
            .pid
            .map(|pid| format!(", pid {pid}"))
            .unwrap_or_default(),
        process
            .uptime_seconds
            .map(|s| format!(", up {}", time::duration_text(s)))
            .unwrap_or_default()
    )
}

pub fn status(config: &StackConfig, docker: &Docker) -> StackStatus {
    StackStatus {
        data_dir: config.data_dir.root().display().to_string(),
        temporal: temporal::status(&config.temporal, &config.data_dir),
        server: server::status(&config.data_dir, config.server_port),
        agent_runner: runner_status(config, docker),
    }
}

/// The original's build hint, naming this project's command.
pub fn image_missing_message(image: &str) -> String {
    let command = if image == DEFAULT_IMAGE {
        "cargo xtask rebuild-runner".to_string()
    } else {
        format!("STIGMER_RUNNER_IMAGE={image} cargo xtask rebuild-runner")
    };
    format!("Docker image not found. Please build it first:\n  {command}\n(image `{image}`; `cargo xtask dev` builds it and starts the whole stack)")
}

/// The runner container's state.
pub fn runner_status(config: &StackConfig, docker: &Docker) -> RunnerStatus {
    let runner = &config.runner;
    let mut status = RunnerStatus {
        state: "unknown".to_string(),
        container: runner.container_name.clone(),
        id: None,
        docker_health: None,
        health_url: runner.health_url(),
        healthy: false,
        uptime_seconds: None,
        image: runner.image.clone(),
        mode: None,
        image_id: None,
        image_current: None,
        problem: None,
    };
    if engine::check_engine(docker).is_err() {
        status.problem = Some("Docker does not answer".to_string());
        return status;
    }
    let tagged = lifecycle::inspect_image(docker, &runner.image)
        .ok()
        .flatten();
    match lifecycle::inspect_container(docker, &runner.container_name) {
        Err(err) => status.problem = Some(format!("{err:#}")),
        Ok(ContainerState::Absent) => status.state = "absent".to_string(),
        Ok(ContainerState::Foreign(container)) => {
            status.state = "foreign".to_string();
            status.id = Some(container.id.clone());
            status.problem = Some(lifecycle::foreign_container_message(&container));
        }
        Ok(ContainerState::Ours(container)) => {
            status.state = serde_json::to_value(container.status)
                .ok()
                .and_then(|value| value.as_str().map(String::from))
                .unwrap_or_default();
            status.id = Some(container.id.clone());
            status.mode = container.labels.get(MODE_LABEL).cloned();
            status.docker_health = container.health;
            if container.status == RunStatus::Running {
                status.uptime_seconds = time::seconds_since(&container.started_at);
                status.healthy =
                    crate::http::healthz(runner.health_port, Duration::from_secs(2)).is_ok();
            }
            let data_dir = config.data_dir.root().display().to_string();
            match container.labels.get(DATA_DIR_LABEL) {
                Some(owner) if *owner != data_dir => {
                    status.problem = Some(format!(
                        "this container belongs to the data directory {owner}, not {data_dir}"
                    ))
                }
                _ => {}
            }
            status.image_current = tagged.as_ref().map(|image| image.id == container.image_id);
            status.image_id = Some(container.image_id);
        }
    }
    if tagged.is_none() && status.problem.is_none() {
        status.problem = Some(image_missing_message(&runner.image));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_hint_names_the_command() {
        assert_eq!(
            image_missing_message(DEFAULT_IMAGE)
                .lines()
                .take(2)
                .collect::<Vec<_>>(),
            [
                "Docker image not found. Please build it first:",
                "  cargo xtask rebuild-runner"
            ]
        );
        assert!(image_missing_message("x:test")
            .contains("STIGMER_RUNNER_IMAGE=x:test cargo xtask rebuild-runner"));
    }
}
