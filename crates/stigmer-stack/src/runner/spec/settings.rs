//! What a user or a test may change about the agent-runner, read once from the environment
//! ([`RunnerSettings`]), and the host user the container runs as ([`HostUser`]).
//!
//! Apart from the container spec because this is the only side that reads the environment
//! (through a `lookup` function, so tests never change their own) and checks what it reads;
//! the spec only turns the result into arguments.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

pub const DEFAULT_IMAGE: &str = "stigmer-agent-runner:local";
pub const DEFAULT_CONTAINER_NAME: &str = "stigmer-agent-runner";
pub const DEFAULT_HEALTH_PORT: u16 = 7235;
pub const DEFAULT_BACKEND_ENDPOINT: &str = "localhost:7234";
pub const DEFAULT_TEMPORAL_ADDRESS: &str = "localhost:7233";
/// The image's own unprivileged user, used when the host user is root.
pub const IMAGE_USER_ID: u32 = 10001;

const LOG_LEVELS: [&str; 5] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/// The user the tool runs as on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
}

impl HostUser {
    pub fn current() -> HostUser {
        // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
        unsafe {
            HostUser {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        }
    }

    /// The container runs as the host user so that files it writes in the workspace are the
    /// user's own. Root on the host gets the image's unprivileged user instead: the process
    /// must never run as root, and host root can still read and delete everything it writes.
    pub fn container_user(self) -> (u32, u32) {
        if self.uid == 0 {
            (IMAGE_USER_ID, IMAGE_USER_ID)
        } else {
            (self.uid, self.gid)
        }
    }
}

/// What a user or a test may change about the runner, read once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSettings {
    pub image: String,
    pub container_name: String,
    pub health_port: u16,
    pub backend_endpoint: String,
    /// The Temporal frontend the worker polls (`host:port` as the host sees it).
    pub temporal_address: String,
    pub temporal_namespace: String,
    pub log_level: String,
    /// Settings of the pr-reviewer's optional Ollama model, passed through when set.
    pub passthrough: Vec<(String, String)>,
    /// API keys and the like: they reach the container through the docker client's
    /// environment, never on a command line (see
    /// [`ContainerSpec::run_args`](super::ContainerSpec::run_args)).
    pub secrets: Vec<(String, Secret)>,
    /// `STIGMER_NETWORK`, or what the engine supports (see [`RunnerSettings::for_engine`]).
    pub network: Option<Network>,
    /// The engine the container is for, set by [`RunnerSettings::for_engine`].
    pub engine_id: Option<String>,
    /// The runner's package on the host (`src/agent_runner` of the working tree), mounted
    /// read-only over the image's copy: the dev loop's mode, where a source change needs no
    /// build. `None`: the image's own source runs.
    pub source_mount: Option<PathBuf>,
}

/// How the container reaches the host and the host reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// `--network host`: the container shares the host's loopback (Linux engines).
    Host,
    /// The default bridge with the health port published on the host's 127.0.0.1, and the
    /// host reached as `host.docker.internal` (Docker Desktop).
    Bridge,
}

/// The name a bridge-networked container reaches the host by.
pub const HOST_FROM_CONTAINER: &str = "host.docker.internal";

/// `localhost` and `127.0.0.1` in an endpoint or URL, as a bridge-networked container must
/// write them to reach the host.
pub fn host_from_container(value: &str) -> String {
    value
        .replace("localhost", HOST_FROM_CONTAINER)
        .replace("127.0.0.1", HOST_FROM_CONTAINER)
}

/// Variables passed to the container as they are when set on the host.
pub const PASSTHROUGH_NAMES: [&str; 2] = ["OLLAMA_BASE_URL", "OLLAMA_MODEL"];
/// Variables passed to the container as secrets when set on the host or in `.env`.
pub const SECRET_NAMES: [&str; 4] = [
    "STIGMER_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OLLAMA_API_KEY",
];

/// A secret value: compared and hashed, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(…)")
    }
}

impl Default for RunnerSettings {
    fn default() -> RunnerSettings {
        RunnerSettings {
            image: DEFAULT_IMAGE.to_string(),
            container_name: DEFAULT_CONTAINER_NAME.to_string(),
            health_port: DEFAULT_HEALTH_PORT,
            backend_endpoint: DEFAULT_BACKEND_ENDPOINT.to_string(),
            temporal_address: DEFAULT_TEMPORAL_ADDRESS.to_string(),
            temporal_namespace: crate::temporal::DEFAULT_NAMESPACE.to_string(),
            log_level: "INFO".to_string(),
            passthrough: Vec::new(),
            secrets: Vec::new(),
            network: None,
            engine_id: None,
            source_mount: None,
        }
    }
}

impl RunnerSettings {
    /// Reads `STIGMER_RUNNER_IMAGE`, `STIGMER_RUNNER_CONTAINER`, `STIGMER_RUNNER_HEALTH_PORT`,
    /// `STIGMER_BACKEND_ENDPOINT` and `STIGMER_LOG_LEVEL` through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<RunnerSettings> {
        let mut settings = RunnerSettings::default();
        if let Some(image) = lookup("STIGMER_RUNNER_IMAGE") {
            settings.image = checked_name("STIGMER_RUNNER_IMAGE", image)?;
        }
        if let Some(name) = lookup("STIGMER_RUNNER_CONTAINER") {
            settings.container_name = checked_name("STIGMER_RUNNER_CONTAINER", name)?;
        }
        if let Some(port) = lookup("STIGMER_RUNNER_HEALTH_PORT") {
            settings.health_port = parse_port("STIGMER_RUNNER_HEALTH_PORT", &port)?;
        }
        if let Some(endpoint) = lookup("STIGMER_BACKEND_ENDPOINT") {
            let (_, port) = endpoint.rsplit_once(':').with_context(|| {
                format!("STIGMER_BACKEND_ENDPOINT must be host:port, got `{endpoint}`")
            })?;
            parse_port("STIGMER_BACKEND_ENDPOINT", port)?;
            settings.backend_endpoint = endpoint;
        }
        if let Some(level) = lookup("STIGMER_LOG_LEVEL") {
            let level = level.to_ascii_uppercase();
            if !LOG_LEVELS.contains(&level.as_str()) {
                bail!(
                    "STIGMER_LOG_LEVEL must be one of {}, got `{level}`",
                    LOG_LEVELS.join(", ")
                );
            }
            settings.log_level = level;
        }
        for name in PASSTHROUGH_NAMES {
            if let Some(value) = lookup(name) {
                settings.passthrough.push((name.to_string(), value));
            }
        }
        for name in SECRET_NAMES {
            if let Some(value) = lookup(name).filter(|value| !value.is_empty()) {
                settings.secrets.push((name.to_string(), Secret(value)));
            }
        }
        if let Some(network) = lookup("STIGMER_NETWORK") {
            settings.network = Some(match network.as_str() {
                "host" => Network::Host,
                "bridge" => Network::Bridge,
                other => bail!("STIGMER_NETWORK must be `host` or `bridge`, got `{other}`"),
            });
        }
        Ok(settings)
    }

    pub fn from_process_env() -> Result<RunnerSettings> {
        RunnerSettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// These settings for `engine`: its ID, and the network it supports unless one was chosen.
    pub fn for_engine(&self, engine: &crate::docker::engine::EngineInfo) -> RunnerSettings {
        let mut settings = self.clone();
        settings.engine_id = Some(engine.id.clone());
        settings
            .network
            .get_or_insert(if engine.supports_host_networking() {
                Network::Host
            } else {
                Network::Bridge
            });
        settings
    }

    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/healthz", self.health_port)
    }
}

fn parse_port(variable: &str, value: &str) -> Result<u16> {
    match value.trim().parse::<u16>() {
        Ok(port) if port >= 1 => Ok(port),
        _ => bail!("{variable} must be a port number from 1 to 65535, got `{value}`"),
    }
}

fn checked_name(variable: &str, value: String) -> Result<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-:/@".contains(c);
    if value.is_empty() || value.starts_with('-') || !value.chars().all(allowed) {
        bail!("{variable} must be a docker name (letters, digits, `._-:/@`), got `{value}`");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::spec::{ContainerSpec, ENGINE_LABEL};
    use crate::stack::DataDir;

    #[test]
    fn the_engine_decides_the_network_unless_it_was_chosen() {
        let desktop =
            crate::docker::engine::EngineInfo::parse("d-1|28.3.2|linux|aarch64|Docker Desktop")
                .unwrap();
        let linux =
            crate::docker::engine::EngineInfo::parse("l-1|20.10.24|linux|x86_64|Debian").unwrap();
        let labelled = ContainerSpec::agent_runner(
            &RunnerSettings::default().for_engine(&linux),
            &DataDir::at(PathBuf::from("/d")),
            HostUser { uid: 1, gid: 1 },
        );
        assert_eq!(labelled.labels[ENGINE_LABEL], "l-1");
        let settings = RunnerSettings::default();
        assert_eq!(settings.for_engine(&desktop).network, Some(Network::Bridge));
        assert_eq!(settings.for_engine(&linux).network, Some(Network::Host));
        let chosen = RunnerSettings::from_lookup(|name| {
            (name == "STIGMER_NETWORK").then(|| "host".to_string())
        })
        .unwrap();
        assert_eq!(chosen.for_engine(&desktop).network, Some(Network::Host));
        assert!(RunnerSettings::from_lookup(
            |name| (name == "STIGMER_NETWORK").then(|| "macvlan".to_string())
        )
        .is_err());
    }

    #[test]
    fn settings_are_validated() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let settings = RunnerSettings::from_lookup(lookup(&[
            ("STIGMER_RUNNER_HEALTH_PORT", "7300"),
            ("STIGMER_LOG_LEVEL", "debug"),
        ]))
        .unwrap();
        assert_eq!(settings.health_port, 7300);
        assert_eq!(settings.log_level, "DEBUG");
        for bad in [
            &[("STIGMER_RUNNER_HEALTH_PORT", "0")][..],
            &[("STIGMER_RUNNER_HEALTH_PORT", "70000")],
            &[("STIGMER_LOG_LEVEL", "loud")],
            &[("STIGMER_BACKEND_ENDPOINT", "localhost")],
            &[("STIGMER_RUNNER_CONTAINER", "--privileged")],
        ] {
            let err = RunnerSettings::from_lookup(lookup(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad[0].0), "{err}");
        }
    }
}
