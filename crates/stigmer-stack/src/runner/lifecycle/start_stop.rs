//! Starting, replacing and stopping the agent-runner's container, idempotently: what already
//! runs as wanted is left alone, what is absent is not an error, and only this stack's
//! containers are ever removed (orphans of a crashed run included).
//!
//! Apart from finding because these are the operations that change the engine's state.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::find::{
    claim, find_ours, inspect_container, read_id_file, remove_id_file, write_id_file, IdRecord,
};
use crate::docker::inspect::{Container, ContainerState, RunStatus};
use crate::docker::{args, short_id, Docker};
use crate::http;
use crate::runner::spec::{
    ContainerSpec, HostUser, DATA_DIR_LABEL, IMAGE_USER_ID, STOP_GRACE_SECONDS,
};
use crate::stack::DataDir;

/// What [`ensure_running`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// Already running from the wanted image and configuration, and answering: left alone.
    AlreadyRunning { id: String },
    /// `removed_orphans`: the names of this data directory's stray containers removed first.
    Started {
        id: String,
        removed_orphans: Vec<String>,
    },
    Replaced {
        id: String,
        reason: String,
        removed_orphans: Vec<String>,
    },
}

impl StartOutcome {
    pub fn id(&self) -> &str {
        match self {
            StartOutcome::AlreadyRunning { id }
            | StartOutcome::Started { id, .. }
            | StartOutcome::Replaced { id, .. } => id,
        }
    }

    pub fn removed_orphans(&self) -> &[String] {
        match self {
            StartOutcome::AlreadyRunning { .. } => &[],
            StartOutcome::Started {
                removed_orphans, ..
            }
            | StartOutcome::Replaced {
                removed_orphans, ..
            } => removed_orphans,
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
    let removed_orphans = remove_orphans(docker, data_dir, &spec.name)?;
    let id = start(docker, spec, data_dir, host_user)?;
    Ok(match reason {
        None => StartOutcome::Started {
            id,
            removed_orphans,
        },
        Some(reason) => StartOutcome::Replaced {
            id,
            reason,
            removed_orphans,
        },
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
            short_id(&container.image_id)
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
fn remove_orphans(docker: &Docker, data_dir: &DataDir, keep_name: &str) -> Result<Vec<String>> {
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
            short_id(id),
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
            "../../../tests/fixtures/inspect-running-healthy.json"
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
}
