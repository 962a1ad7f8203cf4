//! Idempotent start, readiness, stop and log access for the agent-runner container.
//!
//! The daemon is the source of truth: the container is found by exact name or ID with
//! `docker inspect` and judged by its labels; the ID file beside `daemon.pid` is only a
//! cache. A container that merely has our name but not our label is never stopped or
//! removed: the caller gets an error that says what to do. With several engines on one
//! machine (`DOCKER_HOST`, docker contexts), the ID file and the containers' labels name the
//! engine they came from, and nothing recorded against one engine is acted on in another.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::docker::inspect::{
    parse_containers, parse_images, Container, ContainerState, Image, RunStatus,
};
use crate::docker::{args, Docker};
use crate::http;
use crate::runner::spec::{
    ContainerSpec, HostUser, DATA_DIR_LABEL, ENGINE_LABEL, IMAGE_USER_ID, STOP_GRACE_SECONDS,
};
use crate::stack::DataDir;

/// Looks up one container by exact name or ID.
pub fn inspect_container(docker: &Docker, name_or_id: &str) -> Result<ContainerState> {
    let captured = docker.capture(&args(["inspect", "--type", "container", name_or_id]))?;
    // A missing container prints `[]` and exits 1; anything unparsable is a real failure.
    match parse_containers(&captured.stdout) {
        Ok(containers) => Ok(ContainerState::from_containers(containers)),
        Err(_) => bail!(
            "`docker inspect {name_or_id}` failed: {}",
            captured.stderr_tail()
        ),
    }
}

/// Looks up one image by reference or ID; `None` when the engine does not have it.
pub fn inspect_image(docker: &Docker, reference: &str) -> Result<Option<Image>> {
    let captured = docker.capture(&args(["image", "inspect", reference]))?;
    match parse_images(&captured.stdout) {
        Ok(mut images) => Ok(images.pop()),
        Err(_) => bail!(
            "`docker image inspect {reference}` failed: {}",
            captured.stderr_tail()
        ),
    }
}

/// The message for a container that has our name but is not ours.
pub fn foreign_container_message(container: &Container) -> String {
    format!(
        "a container named `{name}` ({id}) exists but was not created by Stigmer: it lacks the label \
         dev.stigmer.managed=true, so it was left untouched.\n\
         Rename or remove it yourself if you are sure it is not needed (`docker rm -f {name}`), \
         or choose another name with STIGMER_RUNNER_CONTAINER.",
        name = container.name,
        id = container.short_id()
    )
}

/// The message for a container of ours that belongs to another data directory's stack.
pub fn other_stack_message(container: &Container) -> String {
    format!(
        "the container `{name}` ({id}) belongs to the Stigmer stack of another data directory ({dir}), \
         so it was left untouched.\nStop that stack first (`STIGMER_HOME={home} stigmer server stop`), \
         or choose another container name with STIGMER_RUNNER_CONTAINER.",
        name = container.name,
        id = container.short_id(),
        dir = container.labels.get(DATA_DIR_LABEL).map(String::as_str).unwrap_or("unknown"),
        home = container
            .labels
            .get(DATA_DIR_LABEL)
            .and_then(|dir| Path::new(dir).parent())
            .map(|home| home.display().to_string())
            .unwrap_or_default(),
    )
}

/// The message for a container of ours whose label names another engine than the one it is
/// on (a daemon whose identity changed): never touched.
pub fn other_engine_message(container: &Container, engine: &str) -> String {
    format!(
        "the container `{name}` ({id}) was created by Stigmer on another Docker engine ({other}) \
         than this one ({engine}), so it was left untouched. Remove it yourself if it is not \
         needed (`docker rm -f {name}`).",
        name = container.name,
        id = container.short_id(),
        other = container
            .labels
            .get(ENGINE_LABEL)
            .map(String::as_str)
            .unwrap_or("unknown"),
    )
}

/// This stack's container from `state`, `None` when there is none; a foreign container,
/// another stack's or another engine's is an error that says what to do, and is never touched.
pub fn claim(state: ContainerState, data_dir: &DataDir, engine: &str) -> Result<Option<Container>> {
    match state {
        ContainerState::Absent => Ok(None),
        ContainerState::Foreign(container) => bail!(foreign_container_message(&container)),
        ContainerState::Ours(container) if !container.belongs_to(data_dir) => {
            bail!(other_stack_message(&container))
        }
        ContainerState::Ours(container) if !container.created_on(engine) => {
            bail!(other_engine_message(&container, engine))
        }
        ContainerState::Ours(container) => Ok(Some(container)),
    }
}

/// This stack's container, found through the ID file when it was recorded on this engine, or
/// failing that by exact name.
pub fn find_ours(docker: &Docker, data_dir: &DataDir, name: &str) -> Result<Option<Container>> {
    let engine = docker.engine_id()?;
    if let Some(record) = read_id_file(data_dir).filter(|record| record.engine == engine) {
        // A stale file may name a container that is gone or, after ID reuse, not ours.
        if let ContainerState::Ours(container) = inspect_container(docker, &record.container)? {
            if container.belongs_to(data_dir) && container.created_on(&engine) {
                return Ok(Some(container));
            }
        }
    }
    claim(inspect_container(docker, name)?, data_dir, &engine)
}

/// What [`ensure_running`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// Already running from the wanted image and configuration, and answering: left alone.
    AlreadyRunning {
        id: String,
    },
    Started {
        id: String,
    },
    Replaced {
        id: String,
        reason: String,
    },
}

impl StartOutcome {
    pub fn id(&self) -> &str {
        match self {
            StartOutcome::AlreadyRunning { id }
            | StartOutcome::Started { id }
            | StartOutcome::Replaced { id, .. } => id,
        }
    }

    pub fn started_something(&self) -> bool {
        !matches!(self, StartOutcome::AlreadyRunning { .. })
    }
}

/// Makes the container with `spec` run from `image_id`: leaves a matching, answering
/// container alone, replaces one of ours that is outdated, refuses a foreign one.
pub fn ensure_running(
    docker: &Docker,
    spec: &ContainerSpec,
    image_id: &str,
    data_dir: &DataDir,
    host_user: HostUser,
) -> Result<StartOutcome> {
    let engine = docker.engine_id()?;
    let reason = match claim(inspect_container(docker, &spec.name)?, data_dir, &engine)? {
        None => None,
        Some(container) => {
            let reason = match replacement_reason(&container, spec, image_id) {
                None if http::healthz(spec.health_port, Duration::from_millis(500)).is_ok() => {
                    // Nothing is written when nothing changed: the file only caches the ID.
                    let record = IdRecord {
                        engine: engine.clone(),
                        container: container.id.clone(),
                    };
                    if read_id_file(data_dir).as_ref() != Some(&record) {
                        write_id_file(data_dir, &record)?;
                    }
                    return Ok(StartOutcome::AlreadyRunning { id: container.id });
                }
                None => "it runs but its health endpoint does not answer".to_string(),
                Some(reason) => reason,
            };
            remove_container(docker, &container.id)?;
            Some(reason)
        }
    };
    // Orphans are looked for on every start, and only then: a stack left alone has none to
    // make room for.
    remove_orphans(docker, data_dir, &spec.name)?;
    let id = start(docker, spec, data_dir, host_user)?;
    Ok(match reason {
        None => StartOutcome::Started { id },
        Some(reason) => StartOutcome::Replaced { id, reason },
    })
}

/// Why a container of ours must be replaced, or `None` when it is what `spec` asks for.
pub fn replacement_reason(
    container: &Container,
    spec: &ContainerSpec,
    image_id: &str,
) -> Option<String> {
    if container.image_id != image_id {
        return Some(format!(
            "it runs an older image ({})",
            short(&container.image_id)
        ));
    }
    if container.config_digest() != Some(spec.config_digest().as_str()) {
        return Some("its configuration changed".to_string());
    }
    if container.status != RunStatus::Running {
        return Some(
            format!(
                "it is {:?} (exit code {})",
                container.status, container.exit_code
            )
            .to_lowercase(),
        );
    }
    None
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// Creates the workspace and runs the container; on failure nothing of it is left behind.
pub fn start(
    docker: &Docker,
    spec: &ContainerSpec,
    data_dir: &DataDir,
    host_user: HostUser,
) -> Result<String> {
    prepare_workspace(&data_dir.workspace(), host_user)?;
    let captured = docker.capture_with_env(&spec.run_args(), &spec.client_env())?;
    if !captured.success {
        // `docker run` may have created the container before failing to start it.
        if let ContainerState::Ours(container) = inspect_container(docker, &spec.name)? {
            docker.capture(&args(["rm", "--force", &container.id]))?;
        }
        bail!(
            "starting the agent-runner container failed:\n{}",
            captured.stderr_tail()
        );
    }
    let id = captured.stdout.trim().to_string();
    let record = IdRecord {
        engine: docker.engine_id()?,
        container: id.clone(),
    };
    write_id_file(data_dir, &record)?;
    Ok(id)
}

/// The workspace must exist before docker mounts it (docker would create it owned by root),
/// and must be writable by the container's user.
pub fn prepare_workspace(workspace: &Path, host_user: HostUser) -> Result<()> {
    fs::create_dir_all(workspace)
        .with_context(|| format!("creating the workspace {}", workspace.display()))?;
    if host_user.uid == 0 {
        // Root on the host runs the container as the image's user (see HostUser::container_user).
        std::os::unix::fs::chown(workspace, Some(IMAGE_USER_ID), Some(IMAGE_USER_ID))
            .with_context(|| {
                format!(
                    "handing {} to the container's user {IMAGE_USER_ID}",
                    workspace.display()
                )
            })?;
    }
    Ok(())
}

/// Removes containers of ours for this data directory that have another name: left by a
/// crashed or renamed run. Containers of other data directories (another checkout, a test)
/// and foreign containers are never touched.
pub fn remove_orphans(docker: &Docker, data_dir: &DataDir, keep_name: &str) -> Result<Vec<String>> {
    let filter = format!("label={DATA_DIR_LABEL}={}", data_dir.root().display());
    let listing = docker.checked(&args([
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        &filter,
        "--format",
        "{{.ID}}\t{{.Names}}",
    ]))?;
    let mut removed = Vec::new();
    for line in listing.lines() {
        let Some((id, name)) = line.split_once('\t') else {
            continue;
        };
        if name == keep_name {
            continue;
        }
        // Confirm with an exact lookup before removing anything.
        if let ContainerState::Ours(container) = inspect_container(docker, id)? {
            if container.created_on(&docker.engine_id()?) {
                remove_container(docker, &container.id)?;
                removed.push(container.name);
            }
        }
    }
    Ok(removed)
}

/// Stops (SIGTERM, then SIGKILL after the grace period), then removes; idempotent.
pub fn remove_container(docker: &Docker, id: &str) -> Result<()> {
    let grace = STOP_GRACE_SECONDS.to_string();
    let stopped = docker.capture(&args(["stop", "--time", &grace, id]))?;
    if !stopped.success {
        if let ContainerState::Absent = inspect_container(docker, id)? {
            return Ok(());
        }
        docker.capture(&args(["kill", id]))?;
    }
    let removed = docker.capture(&args(["rm", "--force", id]))?;
    if !removed.success && inspect_container(docker, id)? != ContainerState::Absent {
        bail!(
            "removing container {} failed:\n{}",
            short(id),
            removed.stderr_tail()
        );
    }
    Ok(())
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped { id: String },
    NotRunning,
}

/// Stops and removes our container, found through the ID file or, failing that, by exact name.
/// An ID file recorded on another engine is kept: it is that engine's to act on.
pub fn stop(docker: &Docker, data_dir: &DataDir, name: &str) -> Result<StopOutcome> {
    let outcome = match find_ours(docker, data_dir, name)? {
        Some(container) => {
            remove_container(docker, &container.id)?;
            StopOutcome::Stopped { id: container.id }
        }
        None => StopOutcome::NotRunning,
    };
    let engine = docker.engine_id()?;
    if read_id_file(data_dir).is_none_or(|record| record.engine == engine) {
        remove_id_file(data_dir)?;
    }
    Ok(outcome)
}

/// What the ID file holds: the engine and the container started on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRecord {
    pub engine: String,
    pub container: String,
}

impl IdRecord {
    /// Parses `<engine id> <container id>`; a bare container ID (written before engines were
    /// recorded) or anything malformed is `None`: then the container is looked up by name.
    pub fn parse(text: &str) -> Option<IdRecord> {
        let (engine, container) = text.trim().split_once(' ')?;
        let hex =
            |id: &str| (12..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit());
        let engine_ok = !engine.is_empty()
            && engine
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-".contains(c));
        (engine_ok && hex(container)).then(|| IdRecord {
            engine: engine.to_string(),
            container: container.to_string(),
        })
    }

    fn to_line(&self) -> String {
        format!("{} {}\n", self.engine, self.container)
    }
}

/// Reads the cached container ID and its engine; a missing or corrupt file counts as none.
pub fn read_id_file(data_dir: &DataDir) -> Option<IdRecord> {
    IdRecord::parse(&fs::read_to_string(data_dir.container_id_file()).ok()?)
}

fn write_id_file(data_dir: &DataDir, record: &IdRecord) -> Result<()> {
    let path = data_dir.container_id_file();
    fs::create_dir_all(data_dir.root())
        .with_context(|| format!("creating {}", data_dir.root().display()))?;
    crate::files::write_atomically(&path, record.to_line().as_bytes())
}

fn remove_id_file(data_dir: &DataDir) -> Result<()> {
    let path = data_dir.container_id_file();
    crate::files::remove_if_present(&path)
}

/// Polls the health endpoint until it answers, watching the container so that an exit is
/// reported at once with its code and last log lines instead of after the whole timeout.
pub fn wait_until_ready(
    docker: &Docker,
    spec: &ContainerSpec,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last_state_check = Instant::now();
    loop {
        crate::ui::interrupt::check()?;
        if http::healthz(spec.health_port, Duration::from_millis(250)).is_ok() {
            return Ok(started.elapsed());
        }
        if last_state_check.elapsed() >= Duration::from_millis(300) {
            last_state_check = Instant::now();
            match inspect_container(docker, &spec.name)? {
                ContainerState::Ours(container) if container.status == RunStatus::Running => {}
                ContainerState::Ours(container) => bail!(
                    "the agent-runner container stopped while starting ({:?}, exit code {}); its last log lines:\n{}",
                    container.status,
                    container.exit_code,
                    log_tail(docker, &container.id, 50)
                ),
                _ => bail!("the agent-runner container disappeared while starting"),
            }
        }
        if started.elapsed() >= timeout {
            bail!(
                "the agent-runner did not answer on {} within {} s; its last log lines:\n{}",
                format_args!("127.0.0.1:{}", spec.health_port),
                timeout.as_secs(),
                log_tail(docker, &spec.name, 50)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A reload the runner made: the generation now answering, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    pub after: Duration,
}

/// What the runner's `/healthz` says about its processes (its supervisor's record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    /// The runner process that answered.
    pub answering: u64,
    /// The last start the supervisor attempted and how it went (`failed` with its reason).
    pub attempted: Option<(u64, Result<(), String>)>,
}

impl Generations {
    /// Reads `generation` and `reload` from a `/healthz` answer (pure, for tests).
    pub fn parse(health: &serde_json::Value) -> Option<Generations> {
        let answering = health["generation"].as_u64()?;
        let reload = &health["reload"];
        let attempted = reload["generation"].as_u64().map(|generation| {
            let outcome = match reload["state"].as_str() {
                Some("failed") => Err(reload["error"]
                    .as_str()
                    .unwrap_or("no reason recorded")
                    .to_string()),
                _ => Ok(()),
            };
            (generation, outcome)
        });
        Some(Generations {
            answering,
            attempted,
        })
    }
}

/// Reloads the runner inside its container: on SIGHUP its supervisor forks a new runner from
/// the dependencies it imported once, which loads the current (mounted) source, and stops the
/// old one only once the new one answers (see the runner's `supervisor.py`). Waits until the
/// new generation answers; a new runner that crashes or never gets ready fails this with its
/// reason, and the old one goes on serving.
pub fn reload(docker: &Docker, spec: &ContainerSpec, timeout: Duration) -> Result<Reloaded> {
    let started = Instant::now();
    let before = http::healthz(spec.health_port, Duration::from_secs(2))
        .ok()
        .and_then(|health| Generations::parse(&health))
        .context("the runner does not report its generation: is it the current runner image?")?;
    // Generations are counted by the supervisor: whatever it attempts after the signal is
    // newer than both the runner answering now and the last start it recorded (which may
    // be an earlier failed attempt).
    let last_attempt = before
        .attempted
        .as_ref()
        .map_or(before.answering, |(generation, _)| *generation)
        .max(before.answering);
    docker.checked(&args(["kill", "--signal", "HUP", &spec.name]))?;
    loop {
        crate::ui::interrupt::check()?;
        if let Some(now) = http::healthz(spec.health_port, Duration::from_millis(250))
            .ok()
            .and_then(|health| Generations::parse(&health))
        {
            if now.answering > before.answering {
                return Ok(Reloaded {
                    generation: now.answering,
                    after: started.elapsed(),
                });
            }
            if let Some((generation, Err(reason))) = now.attempted {
                if generation > last_attempt {
                    bail!(
                        "the new runner did not start, so the previous one (generation {}) goes on \
                         serving: {reason}",
                        before.answering
                    );
                }
            }
        }
        if started.elapsed() >= timeout {
            bail!(
                "the runner did not reload within {} s; its last log lines:\n{}",
                timeout.as_secs(),
                log_tail(docker, &spec.name, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `lines` log lines of a container, for error reports.
pub fn log_tail(docker: &Docker, name_or_id: &str, lines: u32) -> String {
    match docker.capture(&logs_args(name_or_id, false, Some(lines))) {
        Ok(captured) => format!("{}{}", captured.stdout, captured.stderr),
        Err(err) => format!("(could not read the logs: {err:#})"),
    }
}

/// `docker logs` arguments.
pub fn logs_args(name_or_id: &str, follow: bool, tail: Option<u32>) -> Vec<String> {
    let mut list = vec!["logs".to_string()];
    if follow {
        list.push("--follow".to_string());
    }
    if let Some(tail) = tail {
        list.extend(["--tail".to_string(), tail.to_string()]);
    }
    list.push(name_or_id.to_string());
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::inspect::parse_containers;
    use crate::runner::spec::RunnerSettings;
    use std::path::PathBuf;

    fn spec() -> ContainerSpec {
        ContainerSpec::agent_runner(
            &RunnerSettings::default(),
            &DataDir::at(PathBuf::from("/d")),
            HostUser {
                uid: 1000,
                gid: 1000,
            },
        )
    }

    fn running(image: &str, digest: &str) -> Container {
        let mut container = parse_containers(include_str!(
            "../../tests/fixtures/inspect-running-healthy.json"
        ))
        .unwrap()
        .remove(0);
        container.image_id = image.to_string();
        container.labels.insert(
            crate::runner::spec::CONFIG_LABEL.to_string(),
            digest.to_string(),
        );
        container
    }

    #[test]
    fn matching_container_is_kept() {
        let spec = spec();
        assert_eq!(
            replacement_reason(
                &running("sha256:aa", &spec.config_digest()),
                &spec,
                "sha256:aa"
            ),
            None
        );
    }

    #[test]
    fn outdated_image_or_config_is_replaced() {
        let spec = spec();
        let reason = replacement_reason(
            &running("sha256:0123456789abcdef", &spec.config_digest()),
            &spec,
            "sha256:bb",
        )
        .unwrap();
        assert_eq!(reason, "it runs an older image (0123456789ab)");
        let reason =
            replacement_reason(&running("sha256:bb", "other"), &spec, "sha256:bb").unwrap();
        assert_eq!(reason, "its configuration changed");
        let mut exited = running("sha256:bb", &spec.config_digest());
        exited.status = RunStatus::Exited;
        exited.exit_code = 3;
        assert_eq!(
            replacement_reason(&exited, &spec, "sha256:bb").unwrap(),
            "it is exited (exit code 3)"
        );
    }

    #[test]
    fn generations_come_from_the_health_answer() {
        let health: serde_json::Value = serde_json::from_str(
            r#"{"status":"ok","generation":3,"reload":{"generation":4,"state":"failed","error":"SyntaxError: x","at":"t"}}"#,
        )
        .unwrap();
        assert_eq!(
            Generations::parse(&health),
            Some(Generations {
                answering: 3,
                attempted: Some((4, Err("SyntaxError: x".to_string())))
            })
        );
        let first: serde_json::Value =
            serde_json::from_str(r#"{"generation":1,"reload":null}"#).unwrap();
        assert_eq!(
            Generations::parse(&first),
            Some(Generations {
                answering: 1,
                attempted: None
            })
        );
        assert_eq!(
            Generations::parse(&serde_json::json!({"status": "ok"})),
            None
        );
    }

    #[test]
    fn logs_arguments() {
        assert_eq!(
            logs_args("c", true, Some(50)),
            args(["logs", "--follow", "--tail", "50", "c"])
        );
        assert_eq!(logs_args("c", false, None), args(["logs", "c"]));
    }

    #[test]
    fn id_file_must_look_like_an_id() {
        let root = std::env::temp_dir().join(format!("idfile-{}", std::process::id()));
        let data_dir = DataDir::at(root.clone());
        let record = IdRecord {
            engine: "KO7T:VFQZ:VJIN".to_string(),
            container: "0123456789abcdef".to_string(),
        };
        write_id_file(&data_dir, &record).unwrap();
        assert_eq!(read_id_file(&data_dir), Some(record));
        for corrupt in [
            "rm -rf /\n",
            "0123456789abcdef\n",
            "e; 0123456789abcdef",
            "e zz",
        ] {
            fs::write(data_dir.container_id_file(), corrupt).unwrap();
            assert_eq!(read_id_file(&data_dir), None, "{corrupt:?}");
        }
        remove_id_file(&data_dir).unwrap();
        remove_id_file(&data_dir).unwrap();
        fs::remove_dir_all(root).unwrap();
    }
}
