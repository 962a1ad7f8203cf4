//! The agent-runner container as plain data ([`ContainerSpec`]), made from the settings, and
//! the `docker run` argument list made from it, with the labels that mark the container as
//! ours and the digest that tells an outdated one.
//!
//! Apart from the settings because everything here is pure: data in, an argument list out,
//! compared exactly in the tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::settings::{
    host_from_container, HostUser, Network, RunnerSettings, Secret, HOST_FROM_CONTAINER,
};
use crate::runner::inputs::hex;
use crate::stack::DataDir;

pub const TASK_QUEUE: &str = "agent_execution_runner";

/// Set at run time (never baked into the image): only containers carrying it are ours.
pub const MANAGED_LABEL: &str = "dev.stigmer.managed";
/// The data directory a container belongs to, so one checkout's tests never touch another's stack.
pub const DATA_DIR_LABEL: &str = "dev.stigmer.data-dir";
/// How the runner's source reaches the container: `image` (baked in) or `mounted` (the
/// working tree's, read-only, reloaded in place by the dev loop).
pub const MODE_LABEL: &str = "dev.stigmer.mode";
/// Where the image keeps the runner's package; a mounted source goes there.
pub const SOURCE_IN_CONTAINER: &str = "/app/agent_runner";
/// The ID of the engine the container was created on (see [`crate::docker::engine::EngineInfo::id`]).
pub const ENGINE_LABEL: &str = "dev.stigmer.engine";
/// The digest of everything else in the spec: a container whose label differs is outdated.
pub const CONFIG_LABEL: &str = "dev.stigmer.config.sha256";

/// `docker stop` waits this long after SIGTERM before it kills (the seed's 30 s).
pub const STOP_GRACE_SECONDS: u32 = 30;
/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// Everything `docker run` needs to start the agent-runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub user: (u32, u32),
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub health_port: u16,
    pub secrets: Vec<(String, Secret)>,
    pub network: Network,
}

impl ContainerSpec {
    /// The agent-runner as this project runs it: host networking, the data directory's
    /// workspace at `/workspace`, the host user, and our labels.
    pub fn agent_runner(
        settings: &RunnerSettings,
        data_dir: &DataDir,
        host_user: HostUser,
    ) -> ContainerSpec {
        let network = settings.network.unwrap_or(Network::Host);
        // Through a bridge, the host's loopback is `host.docker.internal`.
        let from_container = |value: &str| match network {
            Network::Host => value.to_string(),
            Network::Bridge => host_from_container(value),
        };
        let mut env = vec![
            ("MODE", "local".to_string()),
            (
                "STIGMER_BACKEND_ENDPOINT",
                from_container(&settings.backend_endpoint),
            ),
            (
                "TEMPORAL_SERVICE_ADDRESS",
                from_container(&settings.temporal_address),
            ),
            ("TEMPORAL_NAMESPACE", settings.temporal_namespace.clone()),
            ("STIGMER_TASK_QUEUE", TASK_QUEUE.to_string()),
            ("SANDBOX_TYPE", "filesystem".to_string()),
            ("WORKSPACE_ROOT", "/workspace".to_string()),
            ("LOG_LEVEL", settings.log_level.clone()),
            (
                "STIGMER_RUNNER_HEALTH_PORT",
                settings.health_port.to_string(),
            ),
        ];
        if network == Network::Bridge {
            // Inside its own network namespace the service must listen on every interface for
            // the published port to reach it; the host side stays on 127.0.0.1.
            env.push(("STIGMER_RUNNER_BIND_HOST", "0.0.0.0".to_string()));
        }
        let mut spec = ContainerSpec {
            name: settings.container_name.clone(),
            image: settings.image.clone(),
            user: host_user.container_user(),
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(
                    settings
                        .passthrough
                        .iter()
                        .map(|(k, v)| (k.clone(), from_container(v))),
                )
                .collect(),
            mounts: std::iter::once(Mount {
                host: data_dir.workspace(),
                container: "/workspace".to_string(),
                read_only: false,
            })
            .chain(settings.source_mount.iter().map(|source| Mount {
                host: source.clone(),
                container: SOURCE_IN_CONTAINER.to_string(),
                read_only: true,
            }))
            .collect(),
            labels: BTreeMap::from([
                (MANAGED_LABEL.to_string(), "true".to_string()),
                (
                    DATA_DIR_LABEL.to_string(),
                    data_dir.root().display().to_string(),
                ),
            ]),
            health_port: settings.health_port,
            secrets: settings.secrets.clone(),
            network,
        };
        if let Some(engine) = &settings.engine_id {
            spec.labels.insert(ENGINE_LABEL.to_string(), engine.clone());
        }
        let mode = if settings.source_mount.is_some() {
            "mounted"
        } else {
            "image"
        };
        spec.labels.insert(MODE_LABEL.to_string(), mode.to_string());
        let digest = spec.config_digest();
        spec.labels.insert(CONFIG_LABEL.to_string(), digest);
        spec
    }

    /// The SHA-256 of the run arguments without the config label itself.
    pub fn config_digest(&self) -> String {
        let mut without_digest = self.clone();
        without_digest.labels.remove(CONFIG_LABEL);
        let mut hasher = Sha256::new();
        for arg in without_digest.run_args() {
            hasher.update(arg.as_bytes());
            hasher.update([0]);
        }
        // A changed key must restart the container; only its hash enters the label.
        for (name, Secret(value)) in &self.secrets {
            hasher.update(name.as_bytes());
            hasher.update(Sha256::digest(value.as_bytes()));
        }
        hex(&hasher.finalize())
    }

    /// `docker run` arguments. The process runs without capabilities or privilege
    /// escalation, on a read-only root file system with a private `/tmp`: it writes only to
    /// the workspace.
    pub fn run_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["run", "--detach", "--name", &self.name]
            .map(String::from)
            .to_vec();
        match self.network {
            Network::Host => args.extend(["--network".to_string(), "host".to_string()]),
            Network::Bridge => args.extend([
                "--publish".to_string(),
                format!("127.0.0.1:{port}:{port}", port = self.health_port),
                // Docker Desktop provides this name itself; Linux engines (20.10+) map it here.
                "--add-host".to_string(),
                format!("{HOST_FROM_CONTAINER}:host-gateway"),
            ]),
        }
        args.extend([
            "--user".to_string(),
            format!("{}:{}", self.user.0, self.user.1),
        ]);
        for (key, value) in &self.labels {
            args.extend(["--label".to_string(), format!("{key}={value}")]);
        }
        // Log rotation as the seed's compose file had it (json-file, 10 MB, 3 files).
        for option in [
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=10m",
            "--log-opt",
            "max-file=3",
        ] {
            args.push(option.to_string());
        }
        args.extend(["--stop-timeout".to_string(), STOP_GRACE_SECONDS.to_string()]);
        // docker-init as PID 1: a SIGTERM that arrives before Python installed its handler
        // still ends the process (PID 1 ignores signals it has no handler for), and it reaps
        // whatever the agents spawn.
        args.push("--init".to_string());
        for option in [
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,size=64m",
        ] {
            args.push(option.to_string());
        }
        for mount in &self.mounts {
            let options = if mount.read_only { ":ro" } else { "" };
            args.extend([
                "--volume".to_string(),
                format!("{}:{}{options}", mount.host.display(), mount.container),
            ]);
        }
        for (key, value) in &self.env {
            args.extend(["--env".to_string(), format!("{key}={value}")]);
        }
        // `--env NAME` without a value makes docker take it from its own environment, so the
        // value never shows in a process list (docker run reference, "--env").
        for (name, _) in &self.secrets {
            args.extend(["--env".to_string(), name.clone()]);
        }
        args.push(self.image.clone());
        args
    }
}

impl ContainerSpec {
    /// The environment the docker client needs for [`ContainerSpec::run_args`]: the secrets.
    pub fn client_env(&self) -> Vec<(String, String)> {
        self.secrets
            .iter()
            .map(|(name, Secret(value))| (name.clone(), value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::spec::IMAGE_USER_ID;

    fn spec_for(uid: u32) -> ContainerSpec {
        let data_dir = DataDir::at(PathBuf::from("/home/u/.stigmer/data"));
        ContainerSpec::agent_runner(
            &RunnerSettings::default(),
            &data_dir,
            HostUser { uid, gid: uid },
        )
    }

    #[test]
    fn run_args_are_exact() {
        let spec = spec_for(1000);
        let digest = spec.config_digest();
        let expected: Vec<String> = [
            "run",
            "--detach",
            "--name",
            "stigmer-agent-runner",
            "--network",
            "host",
            "--user",
            "1000:1000",
            "--label",
            &format!("dev.stigmer.config.sha256={digest}"),
            "--label",
            "dev.stigmer.data-dir=/home/u/.stigmer/data",
            "--label",
            "dev.stigmer.managed=true",
            "--label",
            "dev.stigmer.mode=image",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=10m",
            "--log-opt",
            "max-file=3",
            "--stop-timeout",
            "30",
            "--init",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,size=64m",
            "--volume",
            "/home/u/.stigmer/data/workspace:/workspace",
            "--env",
            "MODE=local",
            "--env",
            "STIGMER_BACKEND_ENDPOINT=localhost:7234",
            "--env",
            "TEMPORAL_SERVICE_ADDRESS=localhost:7233",
            "--env",
            "TEMPORAL_NAMESPACE=default",
            "--env",
            "STIGMER_TASK_QUEUE=agent_execution_runner",
            "--env",
            "SANDBOX_TYPE=filesystem",
            "--env",
            "WORKSPACE_ROOT=/workspace",
            "--env",
            "LOG_LEVEL=INFO",
            "--env",
            "STIGMER_RUNNER_HEALTH_PORT=7235",
            "stigmer-agent-runner:local",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(spec.run_args(), expected);
    }

    #[test]
    fn a_mounted_source_is_read_only_over_the_image_copy_and_labelled() {
        let settings = RunnerSettings {
            source_mount: Some(PathBuf::from("/tree/src/agent_runner")),
            ..RunnerSettings::default()
        };
        let spec = ContainerSpec::agent_runner(
            &settings,
            &DataDir::at(PathBuf::from("/d")),
            HostUser { uid: 1, gid: 1 },
        );
        let args = spec.run_args();
        assert!(
            args.windows(2)
                .any(|pair| pair == ["--volume", "/tree/src/agent_runner:/app/agent_runner:ro"]),
            "{args:?}"
        );
        assert!(
            args.contains(&"dev.stigmer.mode=mounted".to_string()),
            "{args:?}"
        );
        assert_ne!(spec.config_digest(), spec_for(1).config_digest());
    }

    #[test]
    fn secrets_stay_off_the_command_line() {
        let data_dir = DataDir::at(PathBuf::from("/d"));
        let settings = RunnerSettings::from_lookup(|name| {
            (name == "OPENAI_API_KEY").then(|| "sk-very-secret".to_string())
        })
        .unwrap();
        let spec = ContainerSpec::agent_runner(
            &settings,
            &data_dir,
            HostUser {
                uid: 1000,
                gid: 1000,
            },
        );
        let args = spec.run_args();
        assert!(
            args.windows(2)
                .any(|pair| pair == ["--env", "OPENAI_API_KEY"]),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|arg| arg.contains("sk-very-secret")),
            "{args:?}"
        );
        assert!(!spec
            .labels
            .values()
            .any(|value| value.contains("sk-very-secret")));
        assert!(!format!("{spec:?}").contains("sk-very-secret"));
        assert_eq!(
            spec.client_env(),
            vec![("OPENAI_API_KEY".to_string(), "sk-very-secret".to_string())]
        );
        let rotated = RunnerSettings::from_lookup(|name| {
            (name == "OPENAI_API_KEY").then(|| "sk-other".to_string())
        })
        .unwrap();
        let rotated = ContainerSpec::agent_runner(
            &rotated,
            &data_dir,
            HostUser {
                uid: 1000,
                gid: 1000,
            },
        );
        assert_ne!(spec.config_digest(), rotated.config_digest());
    }

    #[test]
    fn bridge_networking_publishes_on_loopback_and_rewrites_the_host() {
        let data_dir = DataDir::at(PathBuf::from("/d"));
        let settings = RunnerSettings {
            network: Some(Network::Bridge),
            passthrough: vec![(
                "OLLAMA_BASE_URL".to_string(),
                "http://127.0.0.1:11434".to_string(),
            )],
            ..RunnerSettings::default()
        };
        let spec =
            ContainerSpec::agent_runner(&settings, &data_dir, HostUser { uid: 501, gid: 20 });
        let args = spec.run_args();
        assert_eq!(
            args[4..8],
            [
                "--publish",
                "127.0.0.1:7235:7235",
                "--add-host",
                "host.docker.internal:host-gateway"
            ]
            .map(String::from)
        );
        assert!(!args.contains(&"host".to_string()));
        for expected in [
            "STIGMER_BACKEND_ENDPOINT=host.docker.internal:7234",
            "TEMPORAL_SERVICE_ADDRESS=host.docker.internal:7233",
            "OLLAMA_BASE_URL=http://host.docker.internal:11434",
            "STIGMER_RUNNER_BIND_HOST=0.0.0.0",
        ] {
            assert!(
                args.contains(&expected.to_string()),
                "{expected} in {args:?}"
            );
        }
        let host = ContainerSpec::agent_runner(
            &RunnerSettings::default(),
            &data_dir,
            HostUser { uid: 501, gid: 20 },
        );
        assert_ne!(spec.config_digest(), host.config_digest());
    }

    #[test]
    fn root_runs_as_the_image_user() {
        assert_eq!(spec_for(0).user, (IMAGE_USER_ID, IMAGE_USER_ID));
        assert!(spec_for(0).run_args().contains(&"10001:10001".to_string()));
    }

    #[test]
    fn config_digest_follows_every_setting() {
        let base = spec_for(1000);
        assert_eq!(base.config_digest(), spec_for(1000).config_digest());
        assert_ne!(base.config_digest(), spec_for(1001).config_digest());
        let data_dir = DataDir::at(PathBuf::from("/home/u/.stigmer/data"));
        let settings = RunnerSettings {
            log_level: "DEBUG".to_string(),
            ..RunnerSettings::default()
        };
        let debug = ContainerSpec::agent_runner(
            &settings,
            &data_dir,
            HostUser {
                uid: 1000,
                gid: 1000,
            },
        );
        assert_ne!(base.labels[CONFIG_LABEL], debug.labels[CONFIG_LABEL]);
    }
}
