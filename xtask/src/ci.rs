//! `cargo xtask ci`: every check CI runs, in the order that fails fastest. `.ci/run` calls
//! exactly this, so a pipeline is one line and a developer can run the same thing.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::check_engine;
use stigmer_stack::exec;
use stigmer_stack::runner::inputs::sha256_hex;
use stigmer_stack::ui::progress::{Phase, Progress};

use crate::{image, wheels, Project};

/// The tag the engine-backed tests of the CLI run (see client-apps/cli/tests).
pub const TEST_IMAGE: &str = "stigmer-agent-runner:test";

#[derive(Args)]
pub struct Ci {
    /// Only the set-up steps (the Python test environment, the Temporal CLI, docker-registry,
    /// the base and test images): what the tests need, made once, without running them.
    #[arg(long)]
    setup: bool,
}

impl Ci {
    pub fn run(self, project: &Project) -> Result<()> {
        let mut progress = Progress::new();
        let root = &project.root;
        if !self.setup {
            progress.phase("cargo fmt --check", |phase| {
                shown_run(phase, "cargo", &["fmt", "--all", "--check"], root, &[])
                    .context("formatting differs: run `cargo fmt --all`")
            })?;
            progress.phase("clippy, warnings denied", |phase| {
                shown_run(
                    phase,
                    "cargo",
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--quiet",
                        "--",
                        "--deny",
                        "warnings",
                    ],
                    root,
                    &[],
                )
                .context("clippy found problems")
            })?;
        }
        let python = progress.phase("Python test environment", |phase| {
            python_env(project, phase)
        })?;
        progress.phase("Temporal CLI for the tests", |phase| {
            stigmer_stack::temporal::binary(
                &project.stack.temporal,
                &project.stack.tools_dir,
                |url| phase.line(&format!("downloading {url}")),
            )
        })?;
        progress.phase("docker-registry for the registry tests", |phase| {
            ensure_docker_registry(phase)
        })?;
        test_image(project, &mut progress)?;
        if self.setup {
            progress.summary();
            println!("ci set-up done");
            return Ok(());
        }
        let runner_dir = &project.runner_dir;
        progress.phase("hadolint Dockerfile", |phase| {
            let hadolint = python.join("bin/hadolint");
            shown_run(
                phase,
                &hadolint.to_string_lossy(),
                &[runner_dir.join("Dockerfile")],
                root,
                &[],
            )
            .context("hadolint found problems in the Dockerfile")
        })?;
        progress.phase("actionlint the GitHub workflows", |phase| {
            let actionlint = python.join("bin/actionlint");
            let workflows: Vec<PathBuf> = fs::read_dir(root.join(".github/workflows"))
                .context("listing .github/workflows")?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| {
                    path.extension()
                        .is_some_and(|ext| ext == "yml" || ext == "yaml")
                })
                .collect();
            shown_run(phase, &actionlint.to_string_lossy(), &workflows, root, &[])
                .context("actionlint found problems in the GitHub workflows")
        })?;
        let docker = crate::docker()?;
        let compose = crate::builder::compose_v2(&docker, &project.stack.tools_dir, &mut progress)?;
        progress.phase("Compose v2 config", |phase| {
            // `docker compose` (the plugin) or the pinned binary.
            let command = compose.program();
            let (program, first) = command.split_first().context("Compose has a program")?;
            let mut command = first.to_vec();
            command.extend([
                "--file".to_string(),
                runner_dir.join("docker-compose.yml").display().to_string(),
                "config".to_string(),
                "--quiet".to_string(),
            ]);
            shown_run(phase, program, &command, root, &[])
                .context("Compose v2 rejects docker-compose.yml")
        })?;
        progress.phase("pytest (agent-runner)", |phase| {
            let pytest = python.join("bin/pytest");
            shown_run(
                phase,
                &pytest.to_string_lossy(),
                &[] as &[&str],
                runner_dir,
                &[],
            )
            .context("the agent-runner's tests failed")
        })?;
        // Each test binary's engine-backed tests share a container name and take turns.
        // --no-fail-fast: one run names every failing test binary, not only the first.
        progress.phase("cargo test (unit and engine-backed)", |phase| {
            shown_run(
                phase,
                "cargo",
                &["test", "--workspace", "--no-fail-fast", "--quiet"],
                root,
                &[("CI", "true")],
            )
            .context("tests failed")
        })?;
        progress.summary();
        println!("ci passed");
        Ok(())
    }
}

/// Runs one step's command in `dir`, its output shown as it comes, after the command itself
/// (`$ cargo fmt --all --check`), so that a CI log says exactly what ran.
fn shown_run(
    phase: &Phase,
    program: &str,
    args: &[impl AsRef<OsStr>],
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<()> {
    let words: Vec<String> = std::iter::once(program.to_string())
        .chain(
            args.iter()
                .map(|arg| arg.as_ref().to_string_lossy().into_owned()),
        )
        .collect();
    phase.line(&format!("$ {}", words.join(" ")));
    exec::run(program, args, dir, env)
}

/// The image the CLI's engine-backed tests start, built once here (and only when its
/// inputs changed) so that every test shares it.
fn test_image(project: &Project, progress: &mut Progress) -> Result<()> {
    let docker = crate::docker()?;
    let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
    let mut for_tests = project.clone();
    for_tests.stack.runner.image = TEST_IMAGE.to_string();
    let plan = image::plan(&docker, &for_tests, progress)?;
    progress.note(&format!("{TEST_IMAGE}: {}", plan.reason(&for_tests)));
    if plan.decision.needs_build() {
        let built = image::build(&docker, &for_tests, &engine, &plan, false, progress)?;
        image::remove_replaced(&docker, plan.image.as_ref(), &built);
    }
    Ok(())
}

/// xtask/tests/registry.rs runs Debian's `docker-registry` (the reference registry) on
/// loopback; root installs it, anyone else is told how.
fn ensure_docker_registry(phase: &Phase) -> Result<()> {
    if exec::succeeds("docker-registry", &["--version"]) {
        return Ok(());
    }
    // Where systemd runs, the package also starts a registry on port 5000; the tests start
    // their own on a free port and never use that one.
    crate::apt::install(&["docker-registry"], "the registry tests", phase)
}

/// A virtual environment under `target/` with the lock's main and dev groups, made again
/// only when the lock changes.
fn python_env(project: &Project, phase: &Phase) -> Result<PathBuf> {
    let venv = project.root.join("target/agent-runner-venv");
    wheels::check_lock_is_fresh(&project.runner_dir)?;
    let packages = wheels::read_lock(&project.runner_dir)?;
    let requirements = wheels::requirements(&packages, &["main", "dev"]);
    let stamp = venv.join("requirements.sha256");
    if fs::read_to_string(&stamp).ok().as_deref()
        == Some(sha256_hex(requirements.as_bytes()).as_str())
    {
        return Ok(venv);
    }
    let python = wheels::python_on_host()?;
    let _ = fs::remove_dir_all(&venv);
    let venv_args = [OsStr::new("-m"), OsStr::new("venv"), venv.as_os_str()];
    shown_run(phase, &python, &venv_args, &project.root, &[])
        .context("creating the Python test environment")?;
    let requirements_path = venv.join("requirements.txt");
    fs::write(&requirements_path, &requirements)
        .with_context(|| format!("writing {}", requirements_path.display()))?;
    let pip = venv.join("bin/pip");
    let install = [
        OsStr::new("install"),
        OsStr::new("--quiet"),
        OsStr::new("--disable-pip-version-check"),
        OsStr::new("--no-deps"),
        OsStr::new("--require-hashes"),
        OsStr::new("--requirement"),
        requirements_path.as_os_str(),
    ];
    shown_run(phase, &pip.to_string_lossy(), &install, &project.root, &[])
        .context("installing the locked dev dependencies")?;
    fs::write(&stamp, sha256_hex(requirements.as_bytes()))
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(venv)
}
