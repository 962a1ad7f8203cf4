//! `cargo xtask`: the Stigmer developer loop.
//!
//! `dev` takes a fresh clone to a running, smoke-checked agent-runner container and costs
//! almost nothing when nothing changed; the other subcommands are its parts and the steps CI
//! pipelines call. Each subcommand lives in its own module with a `run` function.

mod apt;
mod base_image;
mod bench;
mod builder;
mod ci;
mod config;
mod dev;
mod image;
mod import_check;
mod logs;
mod publish;
mod size;
mod smoke;
mod status;
mod stop;
mod watch;
mod wheels;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stigmer_stack::docker::engine::EngineInfo;
use stigmer_stack::docker::Docker;
use stigmer_stack::runner::spec::{ContainerSpec, HostUser};
use stigmer_stack::stack::StackConfig;
use stigmer_stack::ui::interrupt;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The Stigmer dev loop", version)]
struct Cli {
    /// The agent-runner service directory (default: backend/services/agent-runner of this checkout).
    #[arg(long, global = true, value_name = "DIR")]
    runner_dir: Option<PathBuf>,
    /// The registry to pull runner images from and publish them to: HOST[:PORT]/PATH, or
    /// `none` (default: STIGMER_REGISTRY, then `runner.registry` in stigmer.toml).
    #[arg(long, global = true, value_name = "HOST[:PORT]/PATH")]
    registry: Option<String>,
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
    /// This dev loop against `docker-compose up -d --build`, side by side, and the targets.
    Bench(bench::Bench),
    /// Build the agent-runner image if needed and push it under its inputs digest and version.
    PublishRunner(publish::PublishRunner),
    /// Split the agent-runner image's size into base, dependencies, source and the rest.
    Size(size::Size),
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
    /// Where runner images are pulled from before building, and published to.
    pub registry: Option<stigmer_stack::docker::registry::Registry>,
    /// `STIGMER_BUILDER`: the image builder to use whatever else the engine offers.
    pub forced_builder: Option<builder::BuilderKind>,
}

impl Project {
    fn gather(runner_dir: Option<PathBuf>, registry: Option<String>) -> Result<Project> {
        let root = project_root()?;
        let file = config::FileConfig::read(&root)?;
        let runner_dir = match runner_dir {
            Some(dir) => dir
                .canonicalize()
                .with_context(|| format!("opening the runner directory {}", dir.display()))?,
            None => root.join("backend/services/agent-runner"),
        };
        Ok(Project {
            runner_dir,
            stack: StackConfig::from_process_env_or(|name| file.stack_setting(name))?,
            host_user: HostUser::current(),
            configured_base: std::env::var("STIGMER_BASE_IMAGE")
                .unwrap_or_else(|_| base_image::DEFAULT_BASE.to_string()),
            registry: config::resolve_registry(
                registry.as_deref(),
                std::env::var(stigmer_stack::docker::registry::REGISTRY_ENV)
                    .ok()
                    .as_deref(),
                file.runner.registry.as_deref(),
            )?,
            forced_builder: std::env::var(builder::BUILDER_ENV)
                .ok()
                .filter(|value| !value.trim().is_empty())
                .map(|value| builder::BuilderKind::parse(&value))
                .transpose()?,
            root,
        })
    }

    /// This project with the working tree's runner source mounted into the container (the dev
    /// loop's mode: a source change is a reload, never a build).
    pub fn with_mounted_source(&self) -> Project {
        let mut project = self.clone();
        project.stack.runner.source_mount = Some(self.runner_dir.join("src/agent_runner"));
        project
    }

    /// The container as this engine can run it (host networking, or a bridge on Docker Desktop).
    pub fn container_spec(&self, engine: &EngineInfo) -> ContainerSpec {
        ContainerSpec::agent_runner(
            &self.stack.runner.for_engine(engine),
            &self.stack.data_dir,
            self.host_user,
        )
    }

    /// The `stigmer` program `cargo build -p stigmer` makes: beside this xtask binary, in the
    /// same cargo target directory (wherever `CARGO_TARGET_DIR` put it).
    pub fn stigmer_program(&self) -> Result<PathBuf> {
        let xtask = std::env::current_exe().context("finding the xtask binary")?;
        let dir = xtask.parent().context("the xtask binary has a directory")?;
        Ok(dir.join("stigmer"))
    }

    /// Where xtask keeps its caches: beside cargo's own output, never inside an input.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("target/xtask")
    }
}

fn main() {
    if let Err(err) = run() {
        eprintln!("✗ {err:#}");
        let code = if interrupt::is_interrupted(&err) {
            130
        } else {
            1
        };
        std::process::exit(code);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    interrupt::install()?;
    let project = Project::gather(cli.runner_dir, cli.registry)?;
    match cli.command {
        Command::Dev(cmd) => cmd.run(&project),
        Command::RebuildRunner(cmd) => cmd.run(&project),
        Command::Smoke(cmd) => cmd.run(&project),
        Command::Status(cmd) => cmd.run(&project),
        Command::Logs(cmd) => cmd.run(&project),
        Command::Stop(cmd) => cmd.run(&project),
        Command::Ci(cmd) => cmd.run(&project),
        Command::Bench(cmd) => cmd.run(&project),
        Command::PublishRunner(cmd) => cmd.run(&project),
        Command::Size(cmd) => cmd.run(&project),
    }
}

/// The checkout this xtask serves, found at run time, never from the path it was compiled at:
/// two worktrees sharing one `CARGO_TARGET_DIR` run the same binary. `cargo run` (which
/// `cargo xtask` is) sets `CARGO_MANIFEST_DIR` to this checkout's `xtask/` in the environment;
/// without it (the binary run directly) the nearest ancestor of the current directory that is
/// the workspace root serves.
pub fn project_root() -> Result<PathBuf> {
    let from_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|xtask| xtask.parent().map(Path::to_path_buf))
        .filter(|dir| is_workspace_root(dir));
    if let Some(root) = from_cargo {
        return Ok(root);
    }
    let here = std::env::current_dir().context("reading the current directory")?;
    here.ancestors()
        .find(|dir| is_workspace_root(dir))
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside a Stigmer checkout (no Cargo.toml declaring the workspace with \
                 the xtask member above it): run `cargo xtask` from the checkout",
                here.display()
            )
        })
}

/// Whether `dir` holds this project's workspace manifest: `[workspace]` with `xtask` a member.
fn is_workspace_root(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = text.parse::<toml::Table>() else {
        return false;
    };
    manifest
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(toml::Value::as_array)
        .is_some_and(|members| {
            members
                .iter()
                .any(|member| member.as_str() == Some("xtask"))
        })
}

pub fn docker() -> Result<Docker> {
    Docker::new()
}
