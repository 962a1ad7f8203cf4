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
    /// The daemon's ID (`docker info`'s `ID`): which engine a container or an ID file came
    /// from, when several are in use (`DOCKER_HOST`, docker contexts).
    pub id: String,
    pub server_version: String,
    pub os: String,
    /// Docker's platform name for it: `amd64`, `arm64`.
    pub arch: String,
    /// `Docker Desktop` on Docker Desktop; the host's distribution elsewhere.
    pub operating_system: String,
}

impl EngineInfo {
    /// Parses the output of `docker info --format` with [`info_args`].
    pub fn parse(line: &str) -> Option<EngineInfo> {
        let mut parts = line.trim().split('|');
        let info = EngineInfo {
            id: parts.next()?.to_string(),
            server_version: parts.next()?.to_string(),
            os: parts.next()?.to_string(),
            // `docker info` reports the kernel's name for the machine; images use Go's.
            arch: match parts.next()? {
                "x86_64" => "amd64".to_string(),
                "aarch64" => "arm64".to_string(),
                other => other.to_string(),
            },
            operating_system: parts.next()?.to_string(),
        };
        if info.id.is_empty() || info.server_version.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(info)
    }

    /// Whether `--network host` puts the container on the machine the tools run on. On Docker
    /// Desktop the engine runs in a VM, and host networking is an opt-in setting of version
    /// 4.34 and later that the engine does not report, so Desktop gets bridge networking, as
    /// the original project did (https://docs.docker.com/engine/network/drivers/host/).
    pub fn supports_host_networking(&self) -> bool {
        !self.operating_system.contains("Docker Desktop")
    }

    /// The platform string docker uses for this engine's images, such as `linux/amd64`.
    pub fn platform(&self) -> String {
        format!("{}/{}", self.os, self.arch)
    }
}

/// `docker info` restricted to what the tools need: as quick as `docker version` (about 20 ms
/// here), and it carries the daemon's ID.
pub fn info_args() -> Vec<String> {
    crate::docker::args([
        "info",
        "--format",
        "{{.ID}}|{{.ServerVersion}}|{{.OSType}}|{{.Architecture}}|{{.OperatingSystem}}",
    ])
}

/// Checks that the `docker` binary runs and its daemon answers within [`ENGINE_DEADLINE`].
pub fn check_engine(docker: &Docker) -> Result<EngineInfo> {
    let answer = match docker.capture_within(&info_args(), ENGINE_DEADLINE) {
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
        Some(info) if captured.success => {
            docker.remember_engine_id(&info.id);
            Ok(info)
        }
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
    fn parses_the_info_line() {
        // Captured from this project's Linux engine and from Docker Desktop 4.43 on a Mac.
        let info = EngineInfo::parse(
            "KO7T:VFQZ:VJIN:JK2O:EDHA:J2VX:6HLJ:LRBM:D6DC:IVDE:MN2Y:ZZCT|20.10.24+dfsg1|linux|x86_64|Debian GNU/Linux 12 (bookworm)\n",
        )
        .unwrap();
        assert_eq!(
            info.id,
            "KO7T:VFQZ:VJIN:JK2O:EDHA:J2VX:6HLJ:LRBM:D6DC:IVDE:MN2Y:ZZCT"
        );
        assert_eq!(info.platform(), "linux/amd64");
        assert!(info.supports_host_networking());
        let desktop = EngineInfo::parse(
            "a7d4a7c2-1c3e-4f1a-9b0e-000000000000|28.3.2|linux|aarch64|Docker Desktop\n",
        )
        .unwrap();
        assert_eq!(desktop.platform(), "linux/arm64");
        assert!(!desktop.supports_host_networking());
    }

    #[test]
    fn refuses_client_only_output() {
        // What `docker info --format` prints when the daemon does not answer.
        assert_eq!(EngineInfo::parse("||||\n"), None);
        assert_eq!(EngineInfo::parse("\n"), None);
    }
}
