//! `stigmer server start|stop|status|logs`: the stigmer-server process (through
//! `runner_container::server_process`) and the agent-runner container (through
//! `runner_container::lifecycle`), in that order on start and the reverse on stop.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use runner_container::docker::{tail_lines, Docker};
use runner_container::engine;
use runner_container::inspect::{ContainerState, Health, RunStatus};
use runner_container::interrupt;
use runner_container::lifecycle::{self, StartOutcome};
use runner_container::lock::StackLock;
use runner_container::progress::Progress;
use runner_container::registry::{self, Registry};
use runner_container::server_process;
use runner_container::spec::{ContainerSpec, HostUser, DATA_DIR_LABEL, DEFAULT_IMAGE};
use serde::Serialize;

use crate::Component;
use runner_container::stack::StackConfig as Config;
use runner_container::time::{self, duration_text};

/// How long the runner may take from `docker run` to answering its health endpoint.
const RUNNER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The build hint of the original message, naming this project's command.
pub fn image_missing_message(image: &str) -> String {
    let command = if image == DEFAULT_IMAGE {
        "cargo xtask rebuild-runner".to_string()
    } else {
        format!("STIGMER_RUNNER_IMAGE={image} cargo xtask rebuild-runner")
    };
    format!("Docker image not found. Please build it first:\n  {command}\n(image `{image}`; `cargo xtask dev` builds it and starts the whole stack)")
}

pub fn start(config: &Config, restart: bool) -> Result<()> {
    let data_dir = &config.data_dir;
    let mut progress = Progress::new();
    interrupt::install()?;
    let docker = Docker::new()?;
    // Docker and the image are checked before anything is written or started: without them
    // the command fails and leaves the machine as it found it.
    let engine = progress.phase("Checking Docker", |phase| {
        let info = engine::check_engine(&docker)?;
        phase.line(&format!(
            "Docker {} ({})",
            info.server_version,
            info.platform()
        ));
        Ok(info)
    })?;
    let registry = Registry::from_process_env()?;
    let image = progress.phase("Checking the agent-runner image", |_| {
        match lifecycle::inspect_image(&docker, &config.runner.image)? {
            Some(image) => Ok(image),
            // Never built implicitly: a build takes minutes and belongs to the dev loop. The
            // image published for this version is pulled when a registry is configured.
            None => pull_published_image(&docker, registry.as_ref(), &config.runner.image),
        }
    })?;
    let _lock = progress.phase("Setting up data directory", |phase| {
        phase.line(&data_dir.root().display().to_string());
        for dir in [data_dir.root().to_path_buf(), data_dir.logs_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        StackLock::acquire(data_dir, "stigmer server start", |holder| {
            phase.line(&format!("waiting for {holder} to finish with this stack"));
        })
    })?;
    let server_config = progress.phase("Loading configuration", |_| config.server_config())?;
    if restart {
        progress.phase("Stopping the running stack", |_| {
            stop_quietly(config, &docker);
            Ok(())
        })?;
    }
    let mut notes = Vec::new();
    progress.phase("Cleaning up orphans", |_| {
        if let Some(reason) = server_process::remove_stale(data_dir)? {
            notes.push(format!("removed a stale server PID file: {reason}"));
        }
        for name in lifecycle::remove_orphans(&docker, data_dir, &config.runner.container_name)? {
            notes.push(format!("removed the orphaned container {name}"));
        }
        Ok(())
    })?;
    for note in notes {
        progress.note(&note);
    }
    let server = progress.phase("Starting Stigmer server", |_| {
        server_process::start(data_dir, &server_config)
    })?;
    if let server_process::StartOutcome::AlreadyRunning { pid } = server {
        progress.note(&format!("the Stigmer server already runs (pid {pid})"));
    }
    let runner = match start_runner(config, &engine, &mut progress, &docker, &image) {
        Ok(runner) => runner,
        Err(err) => {
            if let server_process::StartOutcome::Started { .. } = server {
                // Nothing is left half-running: the server started above goes again.
                match server_process::stop(data_dir) {
                    Ok(_) => progress.note("stopped the Stigmer server started above"),
                    Err(stop_err) => progress.warn(&format!(
                        "the Stigmer server started above could not be stopped: {stop_err:#}"
                    )),
                }
            }
            return Err(err);
        }
    };
    let already = matches!(server, server_process::StartOutcome::AlreadyRunning { .. })
        && matches!(runner, StartOutcome::AlreadyRunning { .. });
    let headline = if already {
        "✓ Stigmer is already running (use `stigmer server start --restart` to restart it)"
    } else {
        "✓ Stigmer is running"
    };
    let id = runner.id();
    println!(
        "{headline}\n  stigmer-server  pid {pid}, {url}, log {log}\n  agent-runner    container {name} ({short}), image {image}, health {health}\n  data directory  {data}\n  logs            stigmer server logs [--component agent-runner] [-f]",
        pid = server.pid(),
        url = server_process::url(config.server_port),
        log = server_process::log_file(data_dir).display(),
        name = config.runner.container_name,
        short = &id[..id.len().min(12)],
        image = config.runner.image,
        health = config.runner.health_url(),
        data = data_dir.root().display(),
    );
    Ok(())
}

/// The image published for this CLI's version in `registry`, tagged as `image`; the build
/// hint when no registry is configured or the pull fails.
fn pull_published_image(
    docker: &Docker,
    registry: Option<&Registry>,
    image: &str,
) -> Result<runner_container::inspect::Image> {
    let Some(registry) = registry else {
        bail!(image_missing_message(image));
    };
    registry::pull_for_version(docker, registry, env!("CARGO_PKG_VERSION"), image).map_err(|err| {
        anyhow::anyhow!(
            "{}
(the registry {} ({}) did not help: {err:#})",
            image_missing_message(image),
            registry.as_str(),
            registry::REGISTRY_ENV
        )
    })
}

fn start_runner(
    config: &Config,
    engine: &engine::EngineInfo,
    progress: &mut Progress,
    docker: &Docker,
    image: &runner_container::inspect::Image,
) -> Result<StartOutcome> {
    let host_user = HostUser::current();
    let spec = ContainerSpec::agent_runner(
        &config.runner.for_engine(engine),
        &config.data_dir,
        host_user,
    );
    let outcome = progress.phase("Starting agent runner", |_| {
        lifecycle::ensure_running(docker, &spec, &image.id, &config.data_dir, host_user)
    })?;
    match &outcome {
        StartOutcome::AlreadyRunning { .. } => progress.note(&format!(
            "the agent-runner container {} already runs",
            spec.name
        )),
        StartOutcome::Replaced { reason, .. } => {
            progress.note(&format!("replaced the agent-runner container: {reason}"))
        }
        StartOutcome::Started { .. } => {}
    }
    let ready = progress.phase("Waiting for agent runner", |_| {
        lifecycle::wait_until_ready(docker, &spec, RUNNER_READY_TIMEOUT)
    });
    if let Err(err) = ready {
        if outcome.started_something() {
            let _ = lifecycle::stop(docker, &config.data_dir, &spec.name);
        }
        return Err(err);
    }
    Ok(outcome)
}

/// For `--restart`: stops both, reporting on stderr, never failing the start because of it.
fn stop_quietly(config: &Config, docker: &Docker) {
    if engine::check_engine(docker).is_ok() {
        if let Err(err) = lifecycle::stop(docker, &config.data_dir, &config.runner.container_name) {
            eprintln!("⚠ {err:#}");
        }
    }
    if let Err(err) = server_process::stop(&config.data_dir) {
        eprintln!("⚠ {err:#}");
    }
}

pub fn stop(config: &Config) -> Result<()> {
    let docker = Docker::new()?;
    let engine = engine::check_engine(&docker);
    let _lock = StackLock::acquire_if_present(&config.data_dir, "stigmer server stop", |holder| {
        eprintln!("ℹ waiting for {holder} to finish with this stack");
    })?;
    let name = &config.runner.container_name;
    match &engine {
        Err(_) => eprintln!(
            "⚠ Docker does not answer, so the agent-runner container ({name}) could not be checked; \
             run `stigmer server stop` again once Docker runs"
        ),
        Ok(_) => match lifecycle::stop(&docker, &config.data_dir, name) {
            Ok(lifecycle::StopOutcome::Stopped { id }) => eprintln!(
                "✓ stopped and removed the agent-runner container {name} ({})",
                &id[..id.len().min(12)]
            ),
            Ok(lifecycle::StopOutcome::NotRunning) => {
                eprintln!("ℹ the agent-runner container was not running")
            }
            // A foreign container with our name: reported, left alone, and not our stack.
            Err(err) => eprintln!("⚠ {err:#}"),
        },
    }
    match server_process::stop(&config.data_dir)? {
        server_process::StopOutcome::Stopped { pid, killed: false } => {
            eprintln!("✓ stopped the Stigmer server (pid {pid})")
        }
        server_process::StopOutcome::Stopped { pid, killed: true } => eprintln!(
            "✓ stopped the Stigmer server (pid {pid}); it ignored SIGTERM for {} s and was killed",
            server_process::STOP_GRACE.as_secs()
        ),
        server_process::StopOutcome::NotRunning { stale: None } => {
            eprintln!("ℹ the Stigmer server was not running")
        }
        server_process::StopOutcome::NotRunning {
            stale: Some(reason),
        } => {
            eprintln!("ℹ the Stigmer server was not running (removed its stale PID file: {reason})")
        }
    }
    // The server is down, but whether the container is could not be known.
    engine.map(|_| ())
}

/// The agent-runner's part of `stigmer server status`.
#[derive(Debug, Serialize)]
pub struct RunnerStatus {
    /// Docker's status (`running`, `exited`, ...), `absent`, `foreign` or `unknown` (no engine).
    pub state: String,
    pub container: String,
    pub id: Option<String>,
    pub docker_health: Option<Health>,
    pub health_url: String,
    /// The runner's own health endpoint answered.
    pub health_endpoint: bool,
    pub uptime_seconds: Option<u64>,
    pub image: String,
    pub image_id: Option<String>,
    /// The container runs the image the tag names now.
    pub image_current: Option<bool>,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    data_dir: String,
    server: server_process::ServerStatus,
    agent_runner: RunnerStatus,
}

fn runner_status(config: &Config) -> RunnerStatus {
    let runner = &config.runner;
    let mut status = RunnerStatus {
        state: "unknown".to_string(),
        container: runner.container_name.clone(),
        id: None,
        docker_health: None,
        health_url: runner.health_url(),
        health_endpoint: false,
        uptime_seconds: None,
        image: runner.image.clone(),
        image_id: None,
        image_current: None,
        problem: None,
    };
    let docker = match Docker::new() {
        Ok(docker) if engine::check_engine(&docker).is_ok() => docker,
        _ => {
            status.problem = Some("Docker does not answer".to_string());
            return status;
        }
    };
    let tagged = lifecycle::inspect_image(&docker, &runner.image)
        .ok()
        .flatten();
    match lifecycle::inspect_container(&docker, &runner.container_name) {
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
            status.docker_health = container.health;
            if container.status == RunStatus::Running {
                status.uptime_seconds = time::seconds_since(&container.started_at);
                status.health_endpoint =
                    runner_container::http::healthz(runner.health_port, Duration::from_secs(2))
                        .is_ok();
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

pub fn status(config: &Config, json: bool) -> Result<()> {
    let status = Status {
        data_dir: config.data_dir.root().display().to_string(),
        server: server_process::status(&config.data_dir, config.server_port),
        agent_runner: runner_status(config),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).context("formatting the status")?
        );
        return Ok(());
    }
    let server = &status.server;
    let mark = |ok: bool| if ok { "✓" } else { "✗" };
    println!(
        "{} stigmer-server  {}{}{}",
        mark(server.state == "running" && server.healthy),
        server.state,
        server
            .pid
            .map(|pid| format!(", pid {pid}"))
            .unwrap_or_default(),
        server
            .uptime_seconds
            .map(|s| format!(", up {}", duration_text(s)))
            .unwrap_or_default(),
    );
    let answer = match (server.state, server.healthy) {
        ("running", true) => "answers",
        (_, true) => "answers, but from a process this data directory did not start",
        (_, false) => "does not answer",
    };
    println!("    {} {answer}", server.url);
    if let Some(reason) = &server.stale_reason {
        println!("    stale PID file: {reason}");
    }
    let runner = &status.agent_runner;
    println!(
        "{} agent-runner    {}{}{}{}",
        mark(runner.state == "running" && runner.health_endpoint),
        runner.state,
        runner
            .id
            .as_ref()
            .map(|id| format!(
                ", container {} ({})",
                runner.container,
                &id[..id.len().min(12)]
            ))
            .unwrap_or_default(),
        runner
            .docker_health
            .map(|health| format!(", docker health {health:?}").to_lowercase())
            .unwrap_or_default(),
        runner
            .uptime_seconds
            .map(|s| format!(", up {}", duration_text(s)))
            .unwrap_or_default(),
    );
    println!(
        "    {} {}",
        runner.health_url,
        if runner.health_endpoint {
            "answers"
        } else {
            "does not answer"
        }
    );
    let current = match runner.image_current {
        Some(true) => " (current)",
        Some(false) => " (outdated: `stigmer server start --restart` runs the new image)",
        None => "",
    };
    println!("    image {}{current}", runner.image);
    if let Some(problem) = &runner.problem {
        println!("    ⚠ {}", problem.replace('\n', "\n      "));
    }
    println!("  data directory  {}", status.data_dir);
    Ok(())
}

pub fn logs(config: &Config, component: Component, follow: bool, tail: u32) -> Result<()> {
    match component {
        Component::StigmerServer => {
            let path = server_process::log_file(&config.data_dir);
            if !path.exists() {
                bail!(
                    "no server log yet at {}: the server has not been started with this data directory (`stigmer server start`)",
                    path.display()
                );
            }
            file_logs(&path, follow, tail)
        }
        Component::AgentRunner => {
            let docker = Docker::new()?;
            engine::check_engine(&docker)?;
            let target = runner_container_for_logs(config, &docker)?;
            docker.passthrough(&lifecycle::logs_args(&target, follow, Some(tail)))
        }
    }
}

/// Our container: through the ID file or, failing that, by exact name.
fn runner_container_for_logs(config: &Config, docker: &Docker) -> Result<String> {
    match lifecycle::find_ours(docker, &config.data_dir, &config.runner.container_name)? {
        Some(container) => Ok(container.id),
        None => bail!(
            "there is no agent-runner container ({}): start it with `stigmer server start`",
            config.runner.container_name
        ),
    }
}

/// Prints the last `tail` lines of a file, then (with `follow`) what is appended to it.
fn file_logs(path: &Path, follow: bool, tail: u32) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut stdout = std::io::stdout();
    let shown = tail_lines(&text, tail as usize);
    if !shown.is_empty() {
        writeln!(stdout, "{shown}").context("writing to stdout")?;
    }
    if !follow {
        return Ok(());
    }
    let mut position = text.len() as u64;
    let mut buffer = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let length = fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        if length < position {
            // Truncated or replaced: start again from its beginning.
            file = File::open(path).with_context(|| format!("reopening {}", path.display()))?;
            position = 0;
        }
        file.seek(SeekFrom::Start(position))
            .context("seeking in the log")?;
        buffer.clear();
        position += file.read_to_end(&mut buffer).context("reading the log")? as u64;
        stdout
            .write_all(&buffer)
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
    }
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
