//! Bringing the stack up: stale PID files cleaned, then Temporal, stigmer-server and the runner
//! container started (each left alone when it already runs as wanted), and, when anything
//! fails, everything this call started stopped again, so a failed start leaves the machine as
//! it found it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::docker::engine::EngineInfo;
use crate::docker::inspect::Image;
use crate::docker::Docker;
use crate::process::{self, Launch, ProcessSpec, ProcessState};
use crate::runner::lifecycle::{self, StartOutcome};
use crate::runner::spec::{ContainerSpec, HostUser};
use crate::stack::lock::StackLock;
use crate::stack::StackConfig;
use crate::ui::progress::Progress;
use crate::{server, temporal};

/// How long the runner may take from `docker run` to answering its health endpoint.
pub const RUNNER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the caller decided before bringing the stack up.
pub struct UpRequest<'a> {
    pub engine: &'a EngineInfo,
    /// The runner image, present in the engine (checked, pulled or built by the caller).
    pub image: &'a Image,
    /// The `stigmer` program that runs the server (`stigmer server run`).
    pub program: PathBuf,
    /// Replace a running server whose binary is older than `program` (the dev loop rebuilt it).
    pub replace_outdated_server: bool,
    pub host_user: HostUser,
    /// Called once a new container runs, before its service answers: work that needs only the
    /// container (the dev loop's in-image checks) overlaps the service's start.
    pub on_runner_started: &'a dyn Fn(),
}

/// What happened to one host process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ComponentStart {
    AlreadyRunning {
        pid: i32,
    },
    Started {
        pid: i32,
    },
    /// An existing Temporal given by address: nothing to start, it answered.
    External {
        address: String,
    },
}

impl ComponentStart {
    /// What a launch came to once the process is ready (at once when it already ran).
    fn from_launch(launch: Launch, spec: &ProcessSpec) -> Result<ComponentStart> {
        Ok(match launch {
            Launch::AlreadyRunning { pid } => ComponentStart::AlreadyRunning { pid },
            Launch::Launched(launched) => match launched.wait_until_ready(spec)? {
                process::StartOutcome::AlreadyRunning { pid } => {
                    ComponentStart::AlreadyRunning { pid }
                }
                process::StartOutcome::Started { pid } => ComponentStart::Started { pid },
            },
        })
    }

    pub fn started(&self) -> bool {
        matches!(self, ComponentStart::Started { .. })
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            ComponentStart::AlreadyRunning { pid } | ComponentStart::Started { pid } => Some(*pid),
            ComponentStart::External { .. } => None,
        }
    }
}

/// What [`up`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpReport {
    pub temporal: ComponentStart,
    pub server: ComponentStart,
    pub runner: StartOutcome,
    pub spec: ContainerSpec,
    /// How long the runner took to answer after it started (`None` when left alone).
    pub runner_ready_after: Option<Duration>,
    /// Orphans and stale files removed, outdated components replaced.
    pub notes: Vec<String>,
}

impl UpReport {
    /// Whether anything was started or replaced (a stack left alone needs no new checks).
    pub fn started_something(&self) -> bool {
        self.temporal.started() || self.server.started() || self.runner.started_something()
    }
}

/// Brings the stack up. `_lock` proves the caller holds this data directory's stack lock.
pub fn up(
    config: &StackConfig,
    docker: &Docker,
    request: &UpRequest<'_>,
    _lock: &StackLock,
    progress: &mut Progress,
) -> Result<UpReport> {
    // Stray containers are removed by the runner's start, and only then: a stack left alone
    // costs no container listing.
    let mut notes = remove_stale_pid_files(config)?;
    let mut started = Started::default();
    let outcome = start_all(config, docker, request, progress, &mut notes, &mut started);
    if outcome.is_err() {
        // Nothing is left half-running: what this call started goes again, newest first.
        for note in started.undo(config, docker) {
            progress.note(&note);
        }
    }
    let (temporal, server, runner, runner_ready_after, spec) = outcome?;
    for note in &notes {
        progress.note(note);
    }
    Ok(UpReport {
        temporal,
        server,
        runner,
        spec,
        runner_ready_after,
        notes,
    })
}

type Started5 = (
    ComponentStart,
    ComponentStart,
    StartOutcome,
    Option<Duration>,
    ContainerSpec,
);

fn start_all(
    config: &StackConfig,
    docker: &Docker,
    request: &UpRequest<'_>,
    progress: &mut Progress,
    notes: &mut Vec<String>,
    started: &mut Started,
) -> Result<Started5> {
    let data_dir = &config.data_dir;
    // Everything is launched first and waited for after, so the start-up times overlap: the
    // server and the runner both keep trying Temporal until it answers.
    let temporal = progress.phase("Starting Temporal", |phase| {
        temporal::launch(&config.temporal, data_dir, &config.tools_dir, |url| {
            phase.line(&format!("downloading the Temporal CLI once: {url}"));
        })
    })?;
    started.temporal = matches!(temporal, Some((_, Launch::Launched(_))));
    if let Some(url) = config.temporal.ui_url() {
        progress.note(&format!("Temporal Web UI: {url}"));
    }
    let server_spec = config
        .server_config(request.program.clone())
        .process_spec(data_dir);
    let server = progress.phase("Starting Stigmer server", |_| {
        if let ProcessState::Running { record } = process::state(&server_spec.pid_file) {
            if request.replace_outdated_server
                && process::runs_outdated_binary(&record, &server_spec.program)
            {
                process::stop(
                    &server_spec.pid_file,
                    server_spec.component,
                    server_spec.stop_grace,
                )?;
                notes.push(format!(
                    "replaced stigmer-server (pid {}): it ran an older build",
                    record.pid
                ));
            }
        }
        process::launch(&server_spec)
    })?;
    started.server = matches!(server, Launch::Launched(_));
    let spec = ContainerSpec::agent_runner(
        &config.runner.for_engine(request.engine),
        data_dir,
        request.host_user,
    );
    let runner = progress.phase("Starting agent runner", |_| {
        lifecycle::ensure_running(
            docker,
            &spec,
            &request.image.id,
            data_dir,
            request.host_user,
        )
    })?;
    for name in runner.removed_orphans() {
        notes.push(format!("removed the orphaned container {name}"));
    }
    if let StartOutcome::Replaced { reason, .. } = &runner {
        notes.push(format!("replaced the agent-runner container: {reason}"));
    }
    started.runner = runner.started_something().then(|| spec.name.clone());
    if runner.started_something() {
        (request.on_runner_started)();
    }
    let runner_started = runner.started_something();
    let finish = || -> Result<(ComponentStart, ComponentStart, Option<Duration>)> {
        let temporal = match temporal {
            None => ComponentStart::External {
                address: config.temporal.frontend_address(),
            },
            Some((spec, launch)) => ComponentStart::from_launch(launch, &spec)?,
        };
        let server = ComponentStart::from_launch(server, &server_spec)?;
        let ready_after = runner_started
            .then(|| lifecycle::wait_until_ready(docker, &spec, RUNNER_READY_TIMEOUT))
            .transpose()?;
        Ok((temporal, server, ready_after))
    };
    // What already ran answers at once: only a start is worth a phase of its own.
    let (temporal, server, ready_after) = if started.temporal || started.server || runner_started {
        progress.phase("Waiting for the stack to answer", |_| finish())?
    } else {
        finish()?
    };
    Ok((temporal, server, runner, ready_after, spec))
}

/// Stale PID files of this data directory left by a crashed run.
fn remove_stale_pid_files(config: &StackConfig) -> Result<Vec<String>> {
    let data_dir = &config.data_dir;
    let mut notes = Vec::new();
    for (component, pid_file) in [
        (server::COMPONENT, data_dir.server_pid_file()),
        (temporal::COMPONENT, data_dir.temporal_pid_file()),
    ] {
        if let Some(reason) = process::remove_stale(&pid_file)? {
            notes.push(format!("removed a stale {component} PID file: {reason}"));
        }
    }
    Ok(notes)
}

/// What one [`up`] started, so that a failure can stop exactly that.
#[derive(Default)]
struct Started {
    temporal: bool,
    server: bool,
    runner: Option<String>,
}

impl Started {
    fn undo(self, config: &StackConfig, docker: &Docker) -> Vec<String> {
        let data_dir = &config.data_dir;
        let mut notes = Vec::new();
        if let Some(name) = self.runner {
            notes.push(match lifecycle::stop(docker, data_dir, &name) {
                Ok(_) => "removed the agent-runner container started above".to_string(),
                Err(err) => format!(
                    "the agent-runner container started above could not be removed: {err:#}"
                ),
            });
        }
        for (component, pid_file, grace, was_started) in [
            (
                server::COMPONENT,
                data_dir.server_pid_file(),
                server::STOP_GRACE,
                self.server,
            ),
            (
                temporal::COMPONENT,
                data_dir.temporal_pid_file(),
                temporal::STOP_GRACE,
                self.temporal,
            ),
        ] {
            if was_started {
                notes.push(match process::stop(&pid_file, component, grace) {
                    Ok(_) => format!("stopped {component}, started above"),
                    Err(err) => {
                        format!("{component}, started above, could not be stopped: {err:#}")
                    }
                });
            }
        }
        notes
    }
}
