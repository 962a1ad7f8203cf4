//! `cargo xtask ci`: every check CI runs, in the order that fails fastest. `.ci/run` calls
//! exactly this, so a pipeline is one line and a developer can run the same thing.

use std::fs;

use anyhow::{Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::check_engine;
use stigmer_stack::runner::inputs::sha256_hex;
use xshell::{cmd, Shell};

use crate::{image, wheels, Project};
use stigmer_stack::ui::progress::Progress;

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
    pub fn run(self, sh: &Shell, project: &Project) -> Result<()> {
        let mut progress = Progress::new();
        sh.change_dir(&project.root);
        if !self.setup {
            progress.phase("cargo fmt --check", |_| {
                cmd!(sh, "cargo fmt --all --check")
                    .run()
                    .context("formatting differs: run `cargo fmt --all`")
            })?;
            progress.phase("clippy, warnings denied", |_| {
                cmd!(
                    sh,
                    "cargo clippy --workspace --all-targets --quiet -- --deny warnings"
                )
                .run()
                .context("clippy found problems")
            })?;
        }
        let python = progress.phase("Python test environment", |_| python_env(sh, project))?;
        progress.phase("Temporal CLI for the tests", |phase| {
            stigmer_stack::temporal::binary(
                &project.stack.temporal,
                &project.stack.tools_dir,
                |url| phase.line(&format!("downloading {url}")),
            )
        })?;
        progress.phase("docker-registry for the registry tests", |phase| {
            ensure_docker_registry(sh, phase)
        })?;
        test_image(sh, project, &mut progress)?;
        if self.setup {
            progress.summary();
            println!("ci set-up done");
            return Ok(());
        }
        let runner_dir = &project.runner_dir;
        progress.phase("hadolint Dockerfile", |_| {
            let hadolint = python.join("bin/hadolint");
            cmd!(sh, "{hadolint} {runner_dir}/Dockerfile")
                .run()
                .context("hadolint found problems in the Dockerfile")
        })?;
        progress.phase("actionlint the GitHub workflows", |_| {
            let actionlint = python.join("bin/actionlint");
            let workflows: Vec<std::path::PathBuf> =
                fs::read_dir(project.root.join(".github/workflows"))
                    .context("listing .github/workflows")?
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| {
                        path.extension()
                            .is_some_and(|ext| ext == "yml" || ext == "yaml")
                    })
                    .collect();
            cmd!(sh, "{actionlint} {workflows...}")
                .run()
                .context("actionlint found problems in the GitHub workflows")
        })?;
        let docker = crate::docker()?;
        let compose = crate::builder::compose_v2(&docker, &project.stack.tools_dir, &mut progress)?;
        progress.phase("Compose v2 config", |_| {
            let command = compose.program();
            let (program, first) = command.split_first().context("Compose has a program")?;
            cmd!(
                sh,
                "{program} {first...} --file {runner_dir}/docker-compose.yml config --quiet"
            )
            .run()
            .context("Compose v2 rejects docker-compose.yml")
        })?;
        progress.phase("pytest (agent-runner)", |_| {
            let _dir = sh.push_dir(runner_dir);
            let pytest = python.join("bin/pytest");
            cmd!(sh, "{pytest}")
                .run()
                .context("the agent-runner's tests failed")
        })?;
        // Each test binary's engine-backed tests share a container name and take turns.
        progress.phase("cargo test (unit and engine-backed)", |_| {
            cmd!(sh, "cargo test --workspace --quiet")
                .env("CI", "true")
                .run()
                .context("tests failed")
        })?;
        progress.summary();
        println!("ci passed");
        Ok(())
    }
}

/// The image the CLI's engine-backed tests start, built once here (and only when its
/// inputs changed) so that every test shares it.
fn test_image(sh: &Shell, project: &Project, progress: &mut Progress) -> Result<()> {
    let docker = crate::docker()?;
    let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
    let mut for_tests = project.clone();
    for_tests.stack.runner.image = TEST_IMAGE.to_string();
    let plan = image::plan(sh, &docker, &for_tests, progress)?;
    progress.note(&format!("{TEST_IMAGE}: {}", plan.reason(&for_tests)));
    if plan.decision.needs_build() {
        let built = image::build(sh, &docker, &for_tests, &engine, &plan, false, progress)?;
        image::remove_replaced(&docker, plan.image.as_ref(), &built);
    }
    Ok(())
}

/// xtask/tests/registry.rs runs Debian's `docker-registry` (the reference registry) on
/// loopback; root installs it, anyone else is told how.
fn ensure_docker_registry(sh: &Shell, phase: &stigmer_stack::ui::progress::Phase) -> Result<()> {
    let present = cmd!(sh, "docker-registry --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if present {
        return Ok(());
    }
    // Where systemd runs, the package also starts a registry on port 5000; the tests start
    // their own on a free port and never use that one.
    crate::apt::install(sh, &["docker-registry"], "the registry tests", phase)
}

/// A virtual environment under `target/` with the lock's main and dev groups, made again
/// only when the lock changes.
fn python_env(sh: &Shell, project: &Project) -> Result<std::path::PathBuf> {
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
    let python = wheels::python_on_host(sh)?;
    let _ = fs::remove_dir_all(&venv);
    cmd!(sh, "{python} -m venv {venv}")
        .run()
        .context("creating the Python test environment")?;
    let requirements_path = venv.join("requirements.txt");
    fs::write(&requirements_path, &requirements)
        .with_context(|| format!("writing {}", requirements_path.display()))?;
    let pip = venv.join("bin/pip");
    cmd!(sh, "{pip} install --quiet --disable-pip-version-check --no-deps --require-hashes --requirement {requirements_path}")
        .run()
        .context("installing the locked dev dependencies")?;
    fs::write(&stamp, sha256_hex(requirements.as_bytes()))
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(venv)
}
