//! One benchmark run's state: its scratch directory, the copy of the service, the base image
//! it made, `dev`'s stacks and the compose projects; and the one way `xtask dev` is run,
//! as a child process with `--json`, its answer read from stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use stigmer_stack::docker::Docker;
use stigmer_stack::exec::{self, Surroundings};
use stigmer_stack::runner::spec::HostUser;

use super::measure::{self, Outcome};
use super::peer::ComposeSide;
use crate::base_image::BaseImage;

/// How long one `xtask dev` may take (the realistic fixture's first build included).
const DEV_DEADLINE: Duration = Duration::from_secs(900);
/// Settings of the caller that must not reach the benchmark's own stacks.
pub const UNSET: [&str; 7] = [
    "STIGMER_BACKEND_ENDPOINT",
    "STIGMER_LOG_LEVEL",
    "STIGMER_TEMPORAL_ADDRESS",
    "STIGMER_TEMPORAL_HTTP",
    "STIGMER_TEMPORAL_UI",
    "STIGMER_REGISTRY",
    "STIGMER_BUILDER",
];

/// One stack `xtask dev` brings up for the benchmark: its own data directory, names and
/// ports (server `port`, runner health `port + 1`, Temporal `port + 2`, whose HTTP and
/// metrics ports are that + 10 and + 11), so the developer's stack is never touched.
#[derive(Debug, Clone)]
pub struct DevStack {
    pub home: PathBuf,
    pub image: String,
    pub container: String,
    pub server_port: u16,
    pub health_port: u16,
    pub temporal_port: u16,
}

impl DevStack {
    pub fn new(scratch: &Path, name: &str, port: u16) -> DevStack {
        DevStack {
            home: scratch.join(format!("home-{name}")),
            image: format!("stigmer-agent-runner:bench-{name}"),
            container: format!("stigmer-bench-{name}"),
            server_port: port,
            health_port: port + 1,
            temporal_port: port + 2,
        }
    }

    /// The environment `xtask dev` and `stigmer` read this stack's settings from.
    pub fn env(&self, base_image: &str) -> Vec<(String, String)> {
        [
            ("STIGMER_HOME", self.home.display().to_string()),
            ("STIGMER_RUNNER_IMAGE", self.image.clone()),
            ("STIGMER_RUNNER_CONTAINER", self.container.clone()),
            ("STIGMER_RUNNER_HEALTH_PORT", self.health_port.to_string()),
            ("STIGMER_SERVER_PORT", self.server_port.to_string()),
            ("STIGMER_TEMPORAL_PORT", self.temporal_port.to_string()),
            ("STIGMER_BASE_IMAGE", base_image.to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }

    pub fn data_dir(&self) -> stigmer_stack::stack::DataDir {
        stigmer_stack::stack::DataDir::at(self.home.join("data"))
    }
}

/// The parts of `xtask dev --json`'s one object the benchmark reads (see `Summary` in
/// `xtask/src/dev.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct DevSummary {
    pub built: bool,
    /// Temporal, the server or the runner was started or replaced.
    pub started: bool,
    pub reloaded_generation: Option<u64>,
    pub reload_seconds: Option<f64>,
    pub phases: Vec<PhaseTime>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhaseTime {
    pub name: String,
    pub seconds: f64,
}

pub struct Session {
    pub docker: Docker,
    pub root: PathBuf,
    pub scratch: PathBuf,
    pub service_dir: PathBuf,
    pub xtask: PathBuf,
    pub host_user: HostUser,
    pub base: Option<BaseImage>,
    pub dev: DevStack,
    pub compose: Vec<ComposeSide>,
    /// The realistic fixture's stack and service, once assembled.
    pub realistic: Option<(DevStack, PathBuf)>,
    pub edits: u64,
    /// The engine's platform, for the wheels.
    pub platform: String,
}

impl Session {
    pub fn base_reference(&self) -> String {
        self.base
            .as_ref()
            .map(|base| base.reference.clone())
            .unwrap_or_default()
    }

    /// Fetches and lays out the wheels of the copy's lock into its build context, as `dev`
    /// does before a build (for the compose sides, which cannot read the lock).
    pub fn prepare_wheels(&self, phase: &stigmer_stack::ui::progress::Phase) -> Result<()> {
        let base = self.base.as_ref().context("the base image is made first")?;
        crate::wheels::prepare(
            &self.docker,
            &self.root.join("target/xtask"),
            &self.service_dir,
            &base.id,
            &self.platform,
            phase,
        )
    }

    pub fn next_edit(&mut self) -> u64 {
        self.edits += 1;
        self.edits
    }

    /// `xtask --runner-dir <service> <args>` under `stack`'s settings: what it printed.
    pub fn xtask(&self, stack: &DevStack, service: &Path, args: &[&str]) -> Result<exec::Captured> {
        let mut argv = vec![
            "--registry".to_string(),
            "none".to_string(),
            "--runner-dir".to_string(),
            service.display().to_string(),
        ];
        argv.extend(args.iter().map(|arg| arg.to_string()));
        let env = stack.env(&self.base_reference());
        let around = Surroundings {
            env: &env,
            unset: &UNSET,
            dir: Some(&self.root),
        };
        let program = self.xtask.display().to_string();
        let Some(captured) = exec::capture_in(&program, &argv, &around, DEV_DEADLINE)? else {
            bail!(
                "`xtask {}` did not finish within {} s",
                args.join(" "),
                DEV_DEADLINE.as_secs()
            );
        };
        if !captured.success {
            bail!(
                "`xtask {}` failed ({}):\n{}",
                args.join(" "),
                exec::exit_text(captured.code),
                exec::tail_lines(&captured.stderr, 40)
            );
        }
        Ok(captured)
    }

    /// `xtask dev --json [extra]`, timed, with the image and container around it; with
    /// `new_process`, also until a new runner process answered.
    pub fn dev(
        &self,
        stack: &DevStack,
        service: &Path,
        extra: &[&str],
        new_process: bool,
    ) -> Result<Outcome> {
        let mut args = vec!["dev", "--json"];
        args.extend(extra);
        // `dev` returns once the runner answers; without a new process this only confirms it
        // from outside.
        let (captured, mut outcome) = self.measured(
            (&stack.image, &stack.container, stack.health_port),
            new_process,
            Duration::from_secs(30),
            || self.xtask(stack, service, &args),
        )?;
        let summary: DevSummary = captured
            .stdout
            .lines()
            .rev()
            .find(|line| line.trim_start().starts_with('{'))
            .context("`xtask dev --json` printed no JSON object")
            .and_then(|line| {
                serde_json::from_str(line).context("reading `xtask dev --json`'s object")
            })?;
        outcome.summary = Some(summary);
        Ok(outcome)
    }

    /// `compose <subcommand>`, timed, then until the runner answers on the host (with
    /// `new_process`, until a new runner process answers).
    pub fn compose(
        &self,
        side: &ComposeSide,
        subcommand: &[&str],
        new_process: bool,
    ) -> Result<Outcome> {
        let (_, outcome) = self.measured(
            (&side.image, &side.container, side.health_port),
            new_process,
            Duration::from_secs(90),
            || side.run(subcommand),
        )?;
        Ok(outcome)
    }

    /// `run`, timed, with the image and container (`watched`: image, container, health port)
    /// before and after it.
    fn measured(
        &self,
        watched: (&str, &str, u16),
        new_process: bool,
        answer_within: Duration,
        run: impl FnOnce() -> Result<exec::Captured>,
    ) -> Result<(exec::Captured, Outcome)> {
        let (image, container, health_port) = watched;
        let before = measure::state(&self.docker, image, container);
        let (captured, seconds, until_answering) = measure::timed(
            &self.docker,
            health_port,
            container,
            new_process,
            answer_within,
            run,
        )?;
        let after = measure::state(&self.docker, image, container);
        let outcome = Outcome {
            seconds,
            until_answering,
            dependency_layer: measure::layer_verdict(&self.docker, &before, &after),
            after,
            before,
            summary: None,
        };
        Ok((captured, outcome))
    }
}
