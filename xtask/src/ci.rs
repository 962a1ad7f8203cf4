//! `cargo xtask ci`: every check CI runs, in the order that fails fastest. `.ci/run` calls
//! exactly this, so a pipeline is one line and a developer can run the same thing.

use std::fs;

use anyhow::{Context, Result};
use clap::Args;
use runner_container::inputs::sha256_hex;
use xshell::{cmd, Shell};

use runner_container::progress::Progress;
use crate::{wheels, Project};

#[derive(Args)]
pub struct Ci {}

impl Ci {
    pub fn run(self, sh: &Shell, project: &Project) -> Result<()> {
        let mut progress = Progress::new();
        sh.change_dir(&project.root);
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
        let python = progress.phase("Python test environment", |_| python_env(sh, project))?;
        let runner_dir = &project.runner_dir;
        progress.phase("hadolint Dockerfile", |_| {
            let hadolint = python.join("bin/hadolint");
            cmd!(sh, "{hadolint} {runner_dir}/Dockerfile")
                .run()
                .context("hadolint found problems in the Dockerfile")
        })?;
        progress.phase("docker-compose config", |_| {
            cmd!(
                sh,
                "docker-compose --file {runner_dir}/docker-compose.yml config --quiet"
            )
            .run()
            .context("docker-compose rejects docker-compose.yml")
        })?;
        progress.phase("pytest (agent-runner)", |_| {
            let _dir = sh.push_dir(runner_dir);
            let pytest = python.join("bin/pytest");
            cmd!(sh, "{pytest}")
                .run()
                .context("the agent-runner's tests failed")
        })?;
        // Engine-backed tests share one image and one container name, so they run in one
        // test binary whose tests take turns (see xtask/tests/dev_loop.rs).
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

/// A virtual environment under `target/` with the lock's main and dev groups, made again
/// only when the lock changes.
fn python_env(sh: &Shell, project: &Project) -> Result<std::path::PathBuf> {
    let venv = project.root.join("target/agent-runner-venv");
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
