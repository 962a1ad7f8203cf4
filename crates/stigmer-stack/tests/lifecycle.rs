//! Engine-backed tests of the lifecycle: waiting for a runner that never becomes ready, bridge
//! networking, engine identity, and orphans removed on a start. They use the image `stigmer-agent-runner:test` that `cargo xtask ci` builds, and
//! fail (never skip) without an engine or that image.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stigmer_stack::docker::inspect::{ContainerState, RunStatus};
use stigmer_stack::docker::Docker;
use stigmer_stack::runner::lifecycle::{
    ensure_running, inspect_container, inspect_image, stop, wait_until_ready, StartOutcome,
    StopOutcome,
};
use stigmer_stack::runner::spec::{ContainerSpec, HostUser, RunnerSettings, ENGINE_LABEL};
use stigmer_stack::stack::DataDir;

const IMAGE: &str = "stigmer-agent-runner:test";

struct Cleanup {
    data_dir: DataDir,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(docker) = Docker::new() {
            let _ = stop(&docker, &self.data_dir, &self.name);
        }
        let _ = std::fs::remove_dir_all(self.data_dir.root());
    }
}

/// Starts the test image as `name`, with `settings` over the defaults and `adjust` applied to
/// the spec; the container and its data directory go when the guard does.
fn start_test_container(
    name: &str,
    settings: RunnerSettings,
    adjust: impl FnOnce(&mut ContainerSpec),
) -> (Docker, ContainerSpec, Cleanup) {
    let docker = Docker::new().unwrap();
    let image = inspect_image(&docker, IMAGE).unwrap().unwrap_or_else(|| {
        panic!("{IMAGE} is missing: `STIGMER_RUNNER_IMAGE={IMAGE} cargo xtask rebuild-runner` (cargo xtask ci does)")
    });
    let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let data_dir = DataDir::at(PathBuf::from(&root));
    let settings = RunnerSettings {
        image: IMAGE.to_string(),
        container_name: name.to_string(),
        ..settings
    };
    let user = HostUser::current();
    let mut spec = ContainerSpec::agent_runner(&settings, &data_dir, user);
    adjust(&mut spec);
    let cleanup = Cleanup {
        data_dir: data_dir.clone(),
        name: spec.name.clone(),
    };
    ensure_running(&docker, &spec, &image.id, &data_dir, user).unwrap();
    (docker, spec, cleanup)
}

#[test]
fn a_runner_that_never_answers_is_given_up_on_with_its_logs() {
    let settings = RunnerSettings {
        health_port: 7361,
        ..RunnerSettings::default()
    };
    let (docker, spec, _cleanup) =
        start_test_container("stigmer-agent-runner-lifecycle-test", settings, |spec| {
            // The service listens on another port than the one polled: it never looks ready.
            for (key, value) in &mut spec.env {
                if key == "STIGMER_RUNNER_HEALTH_PORT" {
                    *value = "7362".to_string();
                }
            }
        });

    let started = Instant::now();
    let err = wait_until_ready(&docker, &spec, Duration::from_secs(3)).unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let message = format!("{err:#}");
    assert!(
        message.contains("did not answer on 127.0.0.1:7361 within 3 s"),
        "{message}"
    );
    assert!(
        message.contains("Stigmer Agent Runner"),
        "the log lines are missing: {message}"
    );
    // No restart policy: docker does not bring it back in a loop.
    let ContainerState::Ours(container) = inspect_container(&docker, &spec.name).unwrap() else {
        panic!("the container is gone")
    };
    assert_eq!(container.status, RunStatus::Running);
    let policy = docker
        .checked(&[
            "inspect".to_string(),
            "--format".to_string(),
            "{{.HostConfig.RestartPolicy.Name}}".to_string(),
            spec.name.clone(),
        ])
        .unwrap();
    assert!(matches!(policy.trim(), "" | "no"), "{policy}");
}

#[test]
fn bridge_networking_publishes_the_service_on_loopback_only() {
    let settings = RunnerSettings {
        health_port: 7363,
        network: Some(stigmer_stack::runner::spec::Network::Bridge),
        ..RunnerSettings::default()
    };
    let (docker, spec, _cleanup) =
        start_test_container("stigmer-agent-runner-bridge-test", settings, |_| {});
    wait_until_ready(&docker, &spec, Duration::from_secs(30)).unwrap();
    let health = stigmer_stack::http::healthz(7363, Duration::from_secs(2)).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        health["backend"]["endpoint"], "host.docker.internal:7234",
        "{health}"
    );
    let ports = docker
        .checked(&["port".to_string(), spec.name.clone()])
        .unwrap();
    assert_eq!(ports.trim(), "7363/tcp -> 127.0.0.1:7363", "{ports}");
}

#[test]
fn nothing_recorded_on_another_engine_is_acted_on() {
    let settings = RunnerSettings {
        health_port: 7364,
        ..RunnerSettings::default()
    };
    let (docker, spec, cleanup) =
        start_test_container("stigmer-agent-runner-engine-test", settings, |_| {});
    let data_dir = &cleanup.data_dir;
    let ContainerState::Ours(container) = inspect_container(&docker, &spec.name).unwrap() else {
        panic!("the container is gone")
    };
    // The ID file as a stack on a second engine (another DOCKER_HOST or docker context) would
    // have left it: its ID must never be used to stop a container here.
    let recorded = format!("OTHER:ENGINE:ID {}\n", container.id);
    std::fs::write(data_dir.container_id_file(), &recorded).unwrap();
    let outcome = stop(&docker, data_dir, "stigmer-agent-runner-engine-test-absent").unwrap();
    assert_eq!(outcome, StopOutcome::NotRunning);
    let ContainerState::Ours(still) = inspect_container(&docker, &spec.name).unwrap() else {
        panic!("the container recorded on another engine was removed")
    };
    assert_eq!(still.status, RunStatus::Running);
    assert_eq!(
        std::fs::read_to_string(data_dir.container_id_file()).unwrap(),
        recorded,
        "the other engine's record is kept for it"
    );

    // A container of ours whose label names another engine is refused by name too.
    let mut foreign_engine = spec.clone();
    foreign_engine.name = "stigmer-agent-runner-engine-test-2".to_string();
    foreign_engine
        .labels
        .insert(ENGINE_LABEL.to_string(), "OTHER:ENGINE:ID".to_string());
    let _second = Cleanup {
        data_dir: data_dir.clone(),
        name: foreign_engine.name.clone(),
    };
    let created = docker
        .checked(&foreign_engine.run_args())
        .unwrap()
        .trim()
        .to_string();
    let err = stop(&docker, data_dir, &foreign_engine.name).unwrap_err();
    assert!(
        format!("{err:#}").contains("another Docker engine"),
        "{err:#}"
    );
    let ContainerState::Ours(kept) = inspect_container(&docker, &created).unwrap() else {
        panic!("the other engine's container was removed")
    };
    assert_eq!(kept.status, RunStatus::Running);
    let _ = docker.capture(&["rm".to_string(), "--force".to_string(), created]);
}

#[test]
fn an_orphan_of_the_data_directory_goes_when_the_runner_starts_and_only_then() {
    let settings = RunnerSettings {
        health_port: 7366,
        ..RunnerSettings::default()
    };
    // A container of this data directory under another name: what a renamed or crashed run
    // leaves behind.
    let (docker, old, cleanup) =
        start_test_container("stigmer-agent-runner-orphan-test", settings.clone(), |_| {});
    let data_dir = cleanup.data_dir.clone();
    let user = HostUser::current();
    let settings = RunnerSettings {
        image: IMAGE.to_string(),
        container_name: "stigmer-agent-runner-orphan-test-new".to_string(),
        health_port: 7367,
        ..settings
    };
    let spec = ContainerSpec::agent_runner(&settings, &data_dir, user);
    let _new = Cleanup {
        data_dir: data_dir.clone(),
        name: spec.name.clone(),
    };
    let image = inspect_image(&docker, IMAGE).unwrap().unwrap();

    let started = ensure_running(&docker, &spec, &image.id, &data_dir, user).unwrap();
    assert!(
        matches!(started, StartOutcome::Started { .. }),
        "{started:?}"
    );
    assert_eq!(started.removed_orphans(), std::slice::from_ref(&old.name));
    assert_eq!(
        inspect_container(&docker, &old.name).unwrap(),
        ContainerState::Absent
    );

    wait_until_ready(&docker, &spec, Duration::from_secs(60)).unwrap();
    let again = ensure_running(&docker, &spec, &image.id, &data_dir, user).unwrap();
    assert_eq!(
        again,
        StartOutcome::AlreadyRunning {
            id: started.id().to_string()
        }
    );
}
