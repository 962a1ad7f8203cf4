//! Is a Docker engine there, and what can it do: the check every command runs first.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::docker::Docker;

/// The message the original printed, shown by default here and followed by a non-zero exit.
pub const DOCKER_NOT_RUNNING: &str = "Docker is not running. Agent-runner requires Docker.

Please start Docker Desktop or install Docker:
  - macOS:  brew install --cask docker
  - Linux:  curl -fsSL https://get.docker.com -o get-docker.sh && sudo sh get-docker.sh
  - Windows: Download from https://www.docker.com/products/docker-desktop

After installing Docker, restart Stigmer server.";

/// How long the engine may take to answer before it counts as not running.
pub const ENGINE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    pub server_version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    /// `Docker Desktop 4.x.y (…)` on Docker Desktop; empty or `Docker Engine - …` elsewhere.
    pub platform_name: String,
}

impl EngineInfo {
    /// Parses the output of `docker version --format` with [`version_args`].
    pub fn parse(line: &str) -> Option<EngineInfo> {
        let mut parts = line.trim().split('|');
        let info = EngineInfo {
            server_version: parts.next()?.to_string(),
            api_version: parts.next()?.to_string(),
            os: parts.next()?.to_string(),
            arch: parts.next()?.to_string(),
            platform_name: parts.next()?.to_string(),
        };
        if info.server_version.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(info)
    }

    /// Whether `--network host` puts the container on the machine the tools run on. On Docker
    /// Desktop the engine runs in a VM, and host networking is an opt-in setting of version
    /// 4.34 and later that the engine does not report, so Desktop gets bridge networking, as
    /// the original project did (https://docs.docker.com/engine/network/drivers/host/).
    pub fn supports_host_networking(&self) -> bool {
        !self.platform_name.contains("Docker Desktop")
    }

    /// The platform string docker uses for this engine's images, such as `linux/amd64`.
    pub fn platform(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }
}

pub fn version_args() -> Vec<String> {
    crate::docker::args([
        "version",
        "--format",
        "{{.Server.Version}}|{{.Server.APIVersion}}|{{.Server.Os}}|{{.Server.Arch}}|{{.Server.Platform.Name}}",
    ])
}

/// Checks that the `docker` binary runs and its daemon answers within [`ENGINE_DEADLINE`].
pub fn check_engine(docker: &Docker) -> Result<EngineInfo> {
    let answer = match docker.capture_within(&version_args(), ENGINE_DEADLINE) {
        Ok(answer) => answer,
        // The binary is missing from PATH (or cannot be executed).
        Err(err) => bail!(
            "{DOCKER_NOT_RUNNING}\n\n(`{}` could not be started: {err:#})",
            docker.program()
        ),
    };
    let Some(captured) = answer else {
        bail!(
            "{DOCKER_NOT_RUNNING}\n\n(the Docker engine did not answer within {} s)",
            ENGINE_DEADLINE.as_secs()
        );
    };
    match EngineInfo::parse(&captured.stdout) {
        Some(info) if captured.success => Ok(info),
        _ => bail!(
            "{DOCKER_NOT_RUNNING}\n\n(docker said: {})",
            captured.stderr_tail().trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_line() {
        let info = EngineInfo::parse("20.10.24+dfsg1|1.41|linux|amd64|\n").unwrap();
        assert_eq!(info.api_version, "1.41");
        assert_eq!(info.platform(), "linux/amd64");
        assert!(info.supports_host_networking());
        let desktop =
            EngineInfo::parse("28.3.2|1.51|linux|arm64|Docker Desktop 4.43.2 (199162)\n").unwrap();
        assert!(!desktop.supports_host_networking());
    }

    #[test]
    fn refuses_client_only_output() {
        // What `docker version --format` prints when the daemon does not answer.
        assert_eq!(EngineInfo::parse("||||\n"), None);
        assert_eq!(EngineInfo::parse("\n"), None);
    }
}
