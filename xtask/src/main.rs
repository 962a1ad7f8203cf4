//! `cargo xtask`: the Stigmer developer loop.
//!
//! `dev` takes a fresh clone to a running, smoke-checked agent-runner container and costs
//! almost nothing when nothing changed; the other subcommands are its parts and the steps CI
//! pipelines call. Each subcommand lives in its own module with a `run` function.

mod base_image;
mod ci;
mod dev;
mod image;
mod logs;
mod smoke;
mod status;
mod stop;
mod wheels;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use runner_container::docker::Docker;
use runner_container::spec::{ContainerSpec, HostUser};
use runner_container::stack::StackConfig;
use xshell::Shell;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The Stigmer dev loop", version)]
struct Cli {
    /// The agent-runner service directory (default: backend/services/agent-runner of this checkout).
    #[arg(long, global = true, value_name = "DIR")]
    runner_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rebuild the agent-runner image if its inputs changed, start it, smoke-check it.
    Dev(dev::Dev),
    /// Rebuild the agent-runner image whatever its inputs say.
    RebuildRunner(image::RebuildRunner),
    /// Run the smoke checks against the running container.
    Smoke(smoke::Smoke),
    /// Show the image, why it is or is not current, and the container's state.
    Status(status::Status),
    /// Show the agent-runner container's logs.
    Logs(logs::Logs),
    /// Stop and remove the agent-runner container (30 s grace period).
    Stop(stop::Stop),
    /// Everything CI checks: formatting, lints, unit and engine-backed tests.
    Ci(ci::Ci),
}

/// What every subcommand needs, gathered once from the environment before anything runs.
#[derive(Clone)]
pub struct Project {
    pub root: PathBuf,
    pub runner_dir: PathBuf,
    pub stack: StackConfig,
    pub host_user: HostUser,
    /// The base image the Dockerfile starts from, unless it must be made here.
    pub configured_base: String,
}

impl Project {
    fn gather(runner_dir: Option<PathBuf>) -> Result<Project> {
        let root = project_root();
        let runner_dir = match runner_dir {
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("opening the runner directory {}", dir.display()))?,
            None => root.join("backend/services/agent-runner"),
        };
        Ok(Project {
            runner_dir,
            stack: StackConfig::from_process_env()?,
            host_user: HostUser::current(),
            configured_base: std::env::var("STIGMER_BASE_IMAGE")
                .unwrap_or_else(|_| base_image::DEFAULT_BASE.to_string()),
            root,
        })
    }

    pub fn container_spec(&self) -> ContainerSpec {
        ContainerSpec::agent_runner(&self.stack.runner, &self.stack.data_dir, self.host_user)
    }

    /// Where xtask keeps its caches: beside cargo's own output, never inside an input.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("target/xtask")
    }
}

fn main() {
    if let Err(err) = run() {
        eprintln!("✗ {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new().context("creating a shell")?;
    let project = Project::gather(cli.runner_dir)?;
    match cli.command {
        Command::Dev(cmd) => cmd.run(&sh, &project),
        Command::RebuildRunner(cmd) => cmd.run(&sh, &project),
        Command::Smoke(cmd) => cmd.run(&sh, &project),
        Command::Status(cmd) => cmd.run(&sh, &project),
        Command::Logs(cmd) => cmd.run(&sh, &project),
        Command::Stop(cmd) => cmd.run(&sh, &project),
        Command::Ci(cmd) => cmd.run(&sh, &project),
    }
}

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn docker() -> Result<Docker> {
    Docker::new()
}
