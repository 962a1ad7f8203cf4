//! `cargo xtask bench`: this tool's dev loop against `docker-compose up -d --build`, side by
//! side, on the same Dockerfile and compose file, and the targets of issue 4 as a checklist.
//!
//! Both tools work on one temporary copy of the agent-runner service, so every change a
//! scenario makes applies to both; each runs under its own image, container, ports and data
//! directory, so a developer's stack is never touched. Runs alternate between the tools.
//! Ours runs as a child process of the built xtask binary (cargo's own start is measured
//! separately, as a floor). Every image the benchmark builds descends from a base image it
//! makes for itself (the configured base plus a unique label), so "first build" really
//! starts from an empty build cache, and cleaning up removes exactly what the benchmark
//! made. Results go to stdout (Markdown) and, with `--json`, to a file; progress to stderr.

mod decision;
mod report;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::{check_engine, EngineInfo};
use stigmer_stack::docker::inspect::Image;
use stigmer_stack::docker::{args, Docker};
use stigmer_stack::http::healthz;
use stigmer_stack::process;
use stigmer_stack::runner::inputs::RebuildDecision;
use stigmer_stack::runner::lifecycle;
use stigmer_stack::runner::spec::{ContainerSpec, HostUser, RunnerSettings};
use stigmer_stack::server::api::Api;
use stigmer_stack::server::{self, ServerConfig};
use stigmer_stack::stack::DataDir;
use stigmer_stack::ui::progress::{Phase, Progress};

use crate::base_image::{self, BaseImage};
use crate::{image, wheels, Project};
use report::{
    parse_memory_usage, parse_phase_timings, Floor, Machine, Report, Row, Stats, Target, Unit,
};

/// How long a container may take to answer, or to become `healthy`, before a run fails.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The echo executions run through each stack's server for the memory figure.
const ECHO_EXECUTIONS: usize = 100;
/// The compose project the benchmark's compose stack runs under.
const COMPOSE_PROJECT: &str = "stigmer-bench";
/// The file a source-change scenario edits (a comment appended: behaviour is unchanged).
const EDITED_SOURCE: &str = "src/agent_runner/agents/echo.py";

#[derive(Args)]
pub struct Bench {
    /// Three runs per scenario instead of five (finishes in under 10 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Runs per scenario and tool (default 5, or 3 with --quick).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Only this tool's correctness: no build and no restart when nothing changed or files
    /// were only touched. No compose, no timing targets: what CI runs.
    #[arg(long)]
    correctness_only: bool,
}

impl Bench {
    pub fn run(self, project: &Project) -> Result<()> {
        let runs = self.runs.unwrap_or(if self.quick { 3 } else { 5 }).max(1);
        let mut progress = Progress::new();
        let docker = crate::docker()?;
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let mut report = Report {
            command: self.command_line(),
            runs,
            machine: machine(&docker, &engine),
            ..Report::default()
        };
        let compose = if self.correctness_only {
            None
        } else {
            let compose = progress.phase("Finding docker-compose", |phase| {
                find_compose(&project.root, phase)
            })?;
            report.machine.compose = compose.version.clone();
            Some(compose)
        };
        let mut session = Session::new(docker, project, runs, compose, self.correctness_only)?;
        let result = session
            .set_up(project, &engine, &mut progress)
            .and_then(|()| {
                if self.correctness_only {
                    session.correctness(&mut report, &mut progress)
                } else {
                    session.everything(project, &mut report, &mut progress)
                }
            });
        report.machine.other_containers.1 = other_containers(&session.docker);
        progress.phase("Cleaning up what the benchmark made", |_| {
            session.tear_down();
            Ok(())
        })?;
        result?;
        if !self.correctness_only {
            report.targets = targets(&report);
        }
        progress.summary();
        println!("{}", report.markdown());
        if let Some(path) = &self.json {
            let json = serde_json::to_vec_pretty(&report).context("serializing the results")?;
            fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| check.name.as_str())
            .collect();
        if !failed.is_empty() {
            bail!("correctness checks failed: {}", failed.join("; "));
        }
        Ok(())
    }

    fn command_line(&self) -> String {
        let mut line = "cargo xtask bench".to_string();
        if self.quick {
            line.push_str(" --quick");
        }
        if let Some(runs) = self.runs {
            line.push_str(&format!(" --runs {runs}"));
        }
        if self.correctness_only {
            line.push_str(" --correctness-only");
        }
        if let Some(path) = &self.json {
            line.push_str(&format!(" --json {}", path.display()));
        }
        line
    }
}

/// One tool's stack: its names, ports and data directory.
struct Stack {
    image: String,
    container: String,
    health_port: u16,
    server_port: u16,
    home: PathBuf,
}

impl Stack {
    fn data_dir(&self) -> DataDir {
        DataDir::at(self.home.join("data"))
    }

    /// The settings `xtask dev` reads from the environment the benchmark gives it.
    fn settings(&self) -> Result<RunnerSettings> {
        let image = self.image.clone();
        let container = self.container.clone();
        let health_port = self.health_port.to_string();
        let endpoint = format!("localhost:{}", self.server_port);
        RunnerSettings::from_lookup(|name| match name {
            "STIGMER_RUNNER_IMAGE" => Some(image.clone()),
            "STIGMER_RUNNER_CONTAINER" => Some(container.clone()),
            "STIGMER_RUNNER_HEALTH_PORT" => Some(health_port.clone()),
            "STIGMER_BACKEND_ENDPOINT" => Some(endpoint.clone()),
            "STIGMER_LOG_LEVEL" => None,
            other => std::env::var(other).ok().filter(|value| !value.is_empty()),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    Compose,
}

/// The docker-compose program and the version it reports.
struct Compose {
    program: String,
    version: String,
}

/// One timed run of a tool and the state around it.
struct Outcome {
    seconds: f64,
    /// From the start of the command until the service answered on the host: the command's
    /// own time for ours (it returns ready), longer for compose (it returns before).
    until_answering: f64,
    stderr: String,
    image_before: Option<String>,
    image_after: Option<String>,
    layers_before: Vec<String>,
    layers_after: Vec<String>,
    container_before: Option<String>,
    container_after: Option<String>,
}

impl Outcome {
    fn image_changed(&self) -> bool {
        self.image_before != self.image_after
    }

    fn restarted(&self) -> bool {
        self.container_before != self.container_after
    }

    /// Every layer but the source's two (its COPY and its byte-code compile) is the same.
    fn dependency_layer_reused(&self) -> bool {
        let common = self
            .layers_before
            .iter()
            .zip(&self.layers_after)
            .take_while(|(before, after)| before == after)
            .count();
        !self.layers_after.is_empty() && common + 2 >= self.layers_after.len()
    }
}

struct Session {
    docker: Docker,
    runs: usize,
    correctness_only: bool,
    scratch: PathBuf,
    runner_dir: PathBuf,
    xtask: PathBuf,
    compose: Option<Compose>,
    /// The base image made for this run; every image the benchmark builds descends from it.
    base: Option<BaseImage>,
    ours: Stack,
    theirs: Stack,
    host_user: HostUser,
    edits: u64,
}

impl Session {
    fn new(
        docker: Docker,
        project: &Project,
        runs: usize,
        compose: Option<Compose>,
        correctness_only: bool,
    ) -> Result<Session> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let scratch =
            std::env::temp_dir().join(format!("stigmer-bench-{}-{nanos}", std::process::id()));
        // The correctness check (CI) has names of its own, so it can run beside a full benchmark.
        let (ours, theirs) = if correctness_only {
            (
                stack(
                    &scratch,
                    "check",
                    "stigmer-agent-runner:bench-check",
                    "stigmer-bench-check",
                    7345,
                    7346,
                ),
                stack(
                    &scratch,
                    "unused",
                    "stigmer-agent-runner:bench-check-unused",
                    "stigmer-bench-check-unused",
                    7347,
                    7348,
                ),
            )
        } else {
            (
                stack(
                    &scratch,
                    "xtask",
                    "stigmer-agent-runner:bench-xtask",
                    "stigmer-bench-xtask",
                    7341,
                    7343,
                ),
                stack(
                    &scratch,
                    "compose",
                    "stigmer-agent-runner:bench-compose",
                    "stigmer-bench-compose",
                    7342,
                    7344,
                ),
            )
        };
        Ok(Session {
            docker,
            runs,
            correctness_only,
            runner_dir: scratch.join("runner"),
            scratch,
            xtask: std::env::current_exe().context("finding the xtask binary")?,
            compose,
            base: None,
            ours,
            theirs,
            host_user: project.host_user,
            edits: 0,
        })
    }

    /// The copy of the service, the benchmark's own base image, the wheels, the binaries and
    /// both servers.
    fn set_up(
        &mut self,
        project: &Project,
        engine: &EngineInfo,
        progress: &mut Progress,
    ) -> Result<()> {
        progress.phase("Copying the agent-runner service", |_| {
            copy_tree(&project.runner_dir, &self.runner_dir)
        })?;
        let present = image::present_images(&self.docker, project)?;
        let configured = match base_image::find_present(project, &present) {
            Some(base) => base,
            None => base_image::obtain(&self.docker, project, progress)?,
        };
        let base = progress.phase("Making the benchmark's own base image", |phase| {
            self.make_base(&configured, phase)
        })?;
        progress.note(&format!(
            "base image {} ({}) from {}",
            base.reference,
            stigmer_stack::docker::short_id(&base.id),
            configured.reference
        ));
        progress.phase("Preparing locked wheels", |phase| {
            wheels::prepare(
                &self.docker,
                &project.cache_dir(),
                &self.runner_dir,
                &base.id,
                &engine.platform(),
                phase,
            )
        })?;
        self.base = Some(base);
        progress.phase("Building stigmer", |_| {
            stigmer_stack::exec::run(
                "cargo",
                &["build", "--quiet", "--package", "stigmer"],
                &project.root,
                &[],
            )
            .context("building the stigmer program")
        })?;
        let program = project.stigmer_program()?;
        let mut stacks = vec![&self.ours];
        if !self.correctness_only {
            stacks.push(&self.theirs);
        }
        progress.phase("Starting the benchmark's servers", |_| {
            for stack in stacks {
                let config = ServerConfig {
                    port: stack.server_port,
                    ..project.stack.server_config(program.clone())
                };
                process::start(&config.process_spec(&stack.data_dir()))?;
                lifecycle::prepare_workspace(&stack.data_dir().workspace(), self.host_user)?;
            }
            Ok(())
        })
    }

    /// `FROM <configured base>` plus a label unique to this run: a new image ID, so no
    /// build cache from any earlier build on this engine applies, and a root for cleaning up.
    fn make_base(&self, configured: &BaseImage, phase: &Phase) -> Result<BaseImage> {
        let dir = self.scratch.join("base");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let label = self
            .scratch
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {}\nLABEL dev.stigmer.bench-base=\"{label}\"\n",
                configured.reference
            ),
        )
        .context("writing the base image's Dockerfile")?;
        let reference = format!("stigmer-bench-base:{}", std::process::id());
        self.docker
            .stream(
                &args(["build", "--tag", &reference, &dir.display().to_string()]),
                &[],
                |line| phase.line(line),
            )
            .context("making the benchmark's base image")?;
        let made = lifecycle::inspect_image(&self.docker, &reference)?
            .context("the benchmark's base image is not there")?;
        Ok(BaseImage {
            reference,
            id: made.id,
        })
    }

    fn base_reference(&self) -> String {
        self.base
            .as_ref()
            .map(|base| base.reference.clone())
            .unwrap_or_default()
    }

    // ----- running the tools -----

    fn xtask_command(&self, stack: &Stack, subcommand: &[&str]) -> Command {
        let mut command = Command::new(&self.xtask);
        command
            .arg("--runner-dir")
            .arg(&self.runner_dir)
            .args(subcommand)
            .env("STIGMER_HOME", &stack.home)
            .env("STIGMER_RUNNER_IMAGE", &stack.image)
            .env("STIGMER_RUNNER_CONTAINER", &stack.container)
            .env("STIGMER_RUNNER_HEALTH_PORT", stack.health_port.to_string())
            .env("STIGMER_SERVER_PORT", stack.server_port.to_string())
            .env("STIGMER_BASE_IMAGE", self.base_reference())
            .env_remove("STIGMER_BACKEND_ENDPOINT")
            .env_remove("STIGMER_LOG_LEVEL")
            .env_remove("STIGMER_SERVER_LEASE_SECONDS");
        command
    }

    fn compose_command(&self, subcommand: &[&str]) -> Result<Command> {
        let compose = self
            .compose
            .as_ref()
            .context("docker-compose is not set up")?;
        let stack = &self.theirs;
        let (uid, gid) = self.host_user.container_user();
        let mut command = Command::new(&compose.program);
        command
            .arg("--file")
            .arg(self.runner_dir.join("docker-compose.yml"))
            .args(["--project-name", COMPOSE_PROJECT])
            .args(subcommand)
            .env("STIGMER_RUNNER_IMAGE", &stack.image)
            .env("STIGMER_RUNNER_CONTAINER", &stack.container)
            .env("STIGMER_RUNNER_HEALTH_PORT", stack.health_port.to_string())
            .env(
                "STIGMER_BACKEND_ENDPOINT",
                format!("localhost:{}", stack.server_port),
            )
            .env("STIGMER_BASE_IMAGE", self.base_reference())
            .env("STIGMER_UID", uid.to_string())
            .env("STIGMER_GID", gid.to_string())
            .env("STIGMER_WORKSPACE", stack.data_dir().workspace())
            .env_remove("LOG_LEVEL");
        Ok(command)
    }

    fn stack(&self, tool: Tool) -> &Stack {
        match tool {
            Tool::Ours => &self.ours,
            Tool::Compose => &self.theirs,
        }
    }

    /// `xtask dev` or `docker-compose up -d --build`, timed, with the image and container
    /// before and after (looked up outside the timed part).
    fn bring_up(&self, tool: Tool) -> Result<Outcome> {
        let mut command = match tool {
            Tool::Ours => self.xtask_command(&self.ours, &["dev"]),
            Tool::Compose => self.compose_command(&["up", "-d", "--build"])?,
        };
        let stack = self.stack(tool);
        let before = self.image(&stack.image);
        let container_before = self.container_id(&stack.container);
        let started = Instant::now();
        let output = command
            .output()
            .with_context(|| format!("running {command:?}"))?;
        let seconds = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        ensure!(
            output.status.success(),
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            stigmer_stack::exec::tail_lines(&stderr, 40)
        );
        // What a user waits for before the change can be tried: the service answering.
        while healthz(stack.health_port, Duration::from_millis(250)).is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "{command:?}: the service never answered"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        let until_answering = started.elapsed().as_secs_f64();
        let after = self.image(&stack.image);
        Ok(Outcome {
            seconds,
            until_answering,
            stderr,
            image_before: before.as_ref().map(|image| image.id.clone()),
            image_after: after.as_ref().map(|image| image.id.clone()),
            layers_before: before.map(|image| image.layers).unwrap_or_default(),
            layers_after: after.map(|image| image.layers).unwrap_or_default(),
            container_before,
            container_after: self.container_id(&stack.container),
        })
    }

    /// Runs both tools `runs` times, alternating, calling `prepare` before each run.
    fn alternate(
        &mut self,
        phase: &Phase,
        prepare: impl Fn(&mut Session, Tool) -> Result<()>,
    ) -> Result<(Vec<Outcome>, Vec<Outcome>)> {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for run in 1..=self.runs {
            for tool in [Tool::Ours, Tool::Compose] {
                prepare(self, tool)?;
                let outcome = self.bring_up(tool)?;
                phase.line(&format!(
                    "run {run} {}: {:.2} s (image {}, container {})",
                    if tool == Tool::Ours {
                        "xtask dev"
                    } else {
                        "docker-compose"
                    },
                    outcome.seconds,
                    if outcome.image_changed() {
                        "changed"
                    } else {
                        "same"
                    },
                    if outcome.restarted() { "new" } else { "same" },
                ));
                match tool {
                    Tool::Ours => ours.push(outcome),
                    Tool::Compose => theirs.push(outcome),
                }
            }
        }
        Ok((ours, theirs))
    }

    // ----- scenarios -----

    fn everything(
        &mut self,
        project: &Project,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<()> {
        self.first_build(report, progress)?;
        progress.phase("Bringing this tool's stack up again (not timed)", |_| {
            self.bring_up(Tool::Ours).map(|_| ())
        })?;
        self.start_to_ready(report, progress)?;
        // The container started above is ours as `docker run` makes it; one untimed `dev`
        // makes sure the no-change runs start from exactly what `dev` itself leaves.
        progress.phase("Bringing this tool's stack up to date (not timed)", |_| {
            self.bring_up(Tool::Ours).map(|_| ())
        })?;
        self.unchanged(report, progress)?;
        self.source_change(report, progress)?;
        self.lock_change(report, progress)?;
        self.image_and_memory(report, progress)?;
        self.decision_in_process(project, report, progress)?;
        let scratch = self.scratch.join("decision");
        let runner_dir = self.runner_dir.clone();
        let runs = self.runs;
        report.decision_scaling = progress
            .phase("Rebuild decision against tree size", |phase| {
                decision::scaling(&runner_dir, &scratch, runs, phase)
            })?;
        let _ = fs::remove_dir_all(&scratch);
        self.floors(project, report, progress)?;
        report.notes = notes(self);
        Ok(())
    }

    fn first_build(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        let (ours, theirs) = progress.phase("First build, base image present", |phase| {
            self.alternate(phase, |session, _| session.clean_slate())
        })?;
        report.rows.push(Row {
            scenario: "first build, base image present".to_string(),
            unit: Unit::Seconds,
            ours: stats(&ours),
            compose: stats(&theirs),
            note: "no container, no image, no build cache but the base (all removed before each run); \
                   ours: build, start, wait until ready, smoke checks; compose: build, start, no wait"
                .to_string(),
        });
        Ok(())
    }

    /// Removes both bench containers and every image descending from the bench base.
    fn clean_slate(&mut self) -> Result<()> {
        for name in [&self.ours.container, &self.theirs.container] {
            let _ = self.docker.capture(&args(["rm", "--force", name]));
        }
        self.remove_bench_images()
    }

    fn start_to_ready(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        let (mut ready, mut healthy) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        progress.phase("Start to ready, and to healthy", |phase| {
            for run in 1..=self.runs {
                for (index, tool) in [Tool::Ours, Tool::Compose].into_iter().enumerate() {
                    let (to_ready, to_healthy) = self.start_once(tool)?;
                    phase.line(&format!(
                        "run {run} {}: ready {to_ready:.2} s, healthy {to_healthy:.2} s",
                        if tool == Tool::Ours {
                            "ours"
                        } else {
                            "compose"
                        }
                    ));
                    ready[index].push(to_ready);
                    healthy[index].push(to_healthy);
                }
            }
            Ok(())
        })?;
        report.rows.push(Row {
            scenario: "start to ready".to_string(),
            unit: Unit::Seconds,
            ours: Stats::of(&ready[0]),
            compose: Stats::of(&ready[1]),
            note:
                "image present, container absent; until the health endpoint answers on the host. \
                   Ours: `docker run` as `xtask dev` does it; compose: `up -d --no-build`"
                    .to_string(),
        });
        report.rows.push(Row {
            scenario: "start to `healthy` (docker inspect)".to_string(),
            unit: Unit::Seconds,
            ours: Stats::of(&healthy[0]),
            compose: Stats::of(&healthy[1]),
            note: "the same starts, until Docker reports `healthy` (HEALTHCHECK --interval=5s)"
                .to_string(),
        });
        Ok(())
    }

    /// Removes the container, starts it again, and times ready and healthy.
    fn start_once(&self, tool: Tool) -> Result<(f64, f64)> {
        let stack = self.stack(tool);
        let _ = self
            .docker
            .capture(&args(["rm", "--force", &stack.container]));
        let started = Instant::now();
        match tool {
            Tool::Ours => {
                let spec = ContainerSpec::agent_runner(
                    &stack.settings()?,
                    &stack.data_dir(),
                    self.host_user,
                );
                lifecycle::start(&self.docker, &spec, &stack.data_dir(), self.host_user)?;
            }
            Tool::Compose => {
                let mut command = self.compose_command(&["up", "-d", "--no-build"])?;
                let output = command.output().context("running docker-compose up")?;
                ensure!(
                    output.status.success(),
                    "docker-compose up failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        while healthz(stack.health_port, Duration::from_millis(250)).is_err() {
            ensure!(
                started.elapsed() < READY_TIMEOUT,
                "{} did not answer within {} s",
                stack.container,
                READY_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let ready = started.elapsed().as_secs_f64();
        let format = "{{if .State.Health}}{{.State.Health.Status}}{{end}}";
        loop {
            let status = self.docker.capture(&args([
                "inspect",
                "--type",
                "container",
                "--format",
                format,
                &stack.container,
            ]))?;
            if status.stdout.trim() == "healthy" {
                break;
            }
            ensure!(
                started.elapsed() < READY_TIMEOUT,
                "{} was not healthy within {} s (it says `{}`)",
                stack.container,
                READY_TIMEOUT.as_secs(),
                status.stdout.trim()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((ready, started.elapsed().as_secs_f64()))
    }

    /// No change, then touched without a change.
    fn unchanged(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        let (ours, theirs) = progress.phase("No change, stack running", |phase| {
            self.alternate(phase, |_, _| Ok(()))
        })?;
        check_untouched(report, "no change", &ours, &theirs);
        report.no_change_phases = phase_medians(&ours);
        report.rows.push(Row {
            scenario: "no change, stack running".to_string(),
            unit: Unit::Seconds,
            ours: stats(&ours),
            compose: stats(&theirs),
            note: "the whole command; ours: engine check, decision, server and container checks, one health probe".to_string(),
        });
        let (ours, theirs) = progress.phase("Touched, not changed", |phase| {
            self.alternate(phase, |session, _| session.touch_everything())
        })?;
        check_untouched(report, "touched, not changed", &ours, &theirs);
        report.rows.push(Row {
            scenario: "touched, not changed".to_string(),
            unit: Unit::Seconds,
            ours: stats(&ours),
            compose: stats(&theirs),
            note: "every file of the service gets a new modification time, same bytes".to_string(),
        });
        Ok(())
    }

    fn touch_everything(&mut self) -> Result<()> {
        self.edits += 1;
        let when = SystemTime::now() + Duration::from_secs(60 * self.edits);
        touch_tree(&self.runner_dir, when)
    }

    fn append(&mut self, file: &str) -> Result<()> {
        self.edits += 1;
        let path = self.runner_dir.join(file);
        let mut text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        text.push_str(&format!(
            "# cargo xtask bench edit {} {nanos}\n",
            self.edits
        ));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn source_change(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        // A fresh edit before each run: neither tool can reuse the other's layers for it.
        let (ours, theirs) = progress.phase("One source file changed", |phase| {
            self.alternate(phase, |session, _| session.append(EDITED_SOURCE))
        })?;
        report.source_change_phases = phase_medians(&ours);
        for (tool, outcomes) in [("xtask dev", &ours), ("docker-compose", &theirs)] {
            let rebuilt = outcomes.iter().filter(|o| o.image_changed()).count();
            let reused = outcomes
                .iter()
                .filter(|o| o.dependency_layer_reused())
                .count();
            report.check(
                &format!("{tool}: one source file changed → rebuilt, dependency layer reused"),
                rebuilt == outcomes.len() && reused == outcomes.len(),
                format!(
                    "{rebuilt}/{} runs rebuilt, {reused}/{} reused every layer below the source",
                    outcomes.len(),
                    outcomes.len()
                ),
            );
        }
        report.rows.push(Row {
            scenario: "one source file changed".to_string(),
            unit: Unit::Seconds,
            ours: stats(&ours),
            compose: stats(&theirs),
            note: format!("a comment appended to {EDITED_SOURCE} before each run; ours also replaces the container, waits until ready and runs the smoke checks"),
        });
        report.rows.push(Row {
            scenario: "one source file changed, until the service answers".to_string(),
            unit: Unit::Seconds,
            ours: Stats::of(&ours.iter().map(|o| o.until_answering).collect::<Vec<_>>()),
            compose: Stats::of(&theirs.iter().map(|o| o.until_answering).collect::<Vec<_>>()),
            note: "the same runs, until the health endpoint answers on the host (compose returns before its new container does; ours returns after it answered and passed the smoke checks)".to_string(),
        });
        Ok(())
    }

    fn lock_change(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        let (ours, theirs) = progress.phase("poetry.lock changed", |phase| {
            self.alternate(phase, |session, tool| match tool {
                Tool::Ours => session.append("poetry.lock"),
                Tool::Compose => Ok(()),
            })
        })?;
        let ours_rebuilt = ours.iter().filter(|o| o.image_changed()).count();
        let theirs_rebuilt = theirs.iter().filter(|o| o.image_changed()).count();
        report.check(
            "xtask dev: poetry.lock's bytes changed → rebuilt",
            ours_rebuilt == ours.len(),
            format!("{ours_rebuilt}/{} runs made a new image (compose: {theirs_rebuilt}/{}; poetry.lock is not in its build context)", ours.len(), theirs.len()),
        );
        report.rows.push(Row {
            scenario: "poetry.lock changed (comment line)".to_string(),
            unit: Unit::Seconds,
            ours: stats(&ours),
            compose: stats(&theirs),
            note: "a comment line appended to poetry.lock before each pair: the bytes the decision hashes change, the locked packages do not (see notes)".to_string(),
        });
        Ok(())
    }

    fn image_and_memory(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        let sizes = [&self.ours.image, &self.theirs.image].map(|tag| {
            lifecycle::inspect_image(&self.docker, tag)
                .ok()
                .flatten()
                .map(|image| image.size as f64 / 1e6)
        });
        report.rows.push(Row {
            scenario: "image size".to_string(),
            unit: Unit::Megabytes,
            ours: sizes[0].and_then(|size| Stats::of(&[size])),
            compose: sizes[1].and_then(|size| Stats::of(&[size])),
            note: "`docker image inspect` Size (base image included)".to_string(),
        });
        let idle = progress.phase("Idle memory", |_| {
            for stack in [&self.ours, &self.theirs] {
                while healthz(stack.health_port, Duration::from_millis(500)).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            // Let start-up garbage settle before measuring.
            std::thread::sleep(Duration::from_secs(5));
            Ok([
                self.memory(&self.ours.container)?,
                self.memory(&self.theirs.container)?,
            ])
        })?;
        report.rows.push(Row {
            scenario: "idle memory".to_string(),
            unit: Unit::Megabytes,
            ours: Stats::of(&[idle[0]]),
            compose: Stats::of(&[idle[1]]),
            note: "`docker stats --no-stream` MemUsage (cgroup usage less page cache)".to_string(),
        });
        let (elapsed, after) = progress.phase(
            &format!("{ECHO_EXECUTIONS} echo executions through each stack's server"),
            |phase| {
                let mut elapsed = Vec::new();
                for stack in [&self.ours, &self.theirs] {
                    let api = Api::new(stack.server_port);
                    let started = Instant::now();
                    for n in 0..ECHO_EXECUTIONS {
                        echo(&api, n)?;
                    }
                    elapsed.push(started.elapsed().as_secs_f64());
                    phase.line(&format!(
                        "{}: {:.2} s",
                        stack.container,
                        started.elapsed().as_secs_f64()
                    ));
                }
                Ok((
                    elapsed,
                    [
                        self.memory(&self.ours.container)?,
                        self.memory(&self.theirs.container)?,
                    ],
                ))
            },
        )?;
        report.rows.push(Row {
            scenario: format!("memory after {ECHO_EXECUTIONS} echo executions"),
            unit: Unit::Megabytes,
            ours: Stats::of(&[after[0]]),
            compose: Stats::of(&[after[1]]),
            note: "the same figure after the executions ran one after another".to_string(),
        });
        report.rows.push(Row {
            scenario: format!("{ECHO_EXECUTIONS} echo executions, one after another"),
            unit: Unit::Seconds,
            ours: elapsed.first().and_then(|s| Stats::of(&[*s])),
            compose: elapsed.get(1).and_then(|s| Stats::of(&[*s])),
            note: "create, long-poll its events until done, read the result (the same runner code in both)".to_string(),
        });
        Ok(())
    }

    fn memory(&self, container: &str) -> Result<f64> {
        let text = self.docker.checked(&args([
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            container,
        ]))?;
        parse_memory_usage(&text)
            .with_context(|| format!("`docker stats` printed `{}`", text.trim()))
    }

    /// The decision exactly as `xtask dev` makes it (one `docker image inspect`, the hashes),
    /// in process, on the benchmark's up-to-date tree.
    fn decision_in_process(
        &self,
        project: &Project,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<()> {
        let mut bench_project = project.clone();
        bench_project.runner_dir = self.runner_dir.clone();
        bench_project.stack.runner = self.ours.settings()?;
        bench_project.configured_base = self.base_reference();
        let samples = progress.phase("Rebuild decision in process", |_| {
            let mut samples = Vec::new();
            for _ in 0..20 {
                let started = Instant::now();
                let present = image::present_images(&self.docker, &bench_project)?;
                let base = base_image::find_present(&bench_project, &present)
                    .context("the benchmark's base image is gone")?;
                let plan = image::decide(&bench_project, base, present)?;
                samples.push(started.elapsed().as_secs_f64());
                ensure!(
                    plan.decision == RebuildDecision::UpToDate,
                    "the decision on the benchmark's tree said {}",
                    plan.decision
                );
            }
            Ok(samples)
        })?;
        report.decision_in_process = Stats::of(&samples);
        Ok(())
    }

    fn floors(
        &self,
        project: &Project,
        report: &mut Report,
        progress: &mut Progress,
    ) -> Result<()> {
        let container = self.ours.container.clone();
        let xtask = self.xtask.display().to_string();
        let compose = self
            .compose
            .as_ref()
            .map(|c| c.program.clone())
            .unwrap_or_default();
        let base = self.base_reference();
        let python_imports = "import time; t = time.perf_counter(); import agent_runner.__main__; print(time.perf_counter() - t)";
        let steps: Vec<(String, Vec<String>, usize)> = vec![
            (
                "`docker version` (the engine check)".into(),
                vec![
                    "docker".into(),
                    "version".into(),
                    "--format".into(),
                    "{{.Server.Version}}".into(),
                ],
                10,
            ),
            (
                "one `docker image inspect`".into(),
                vec!["docker".into(), "image".into(), "inspect".into(), base],
                10,
            ),
            (
                "one `docker inspect` of a container".into(),
                vec![
                    "docker".into(),
                    "inspect".into(),
                    "--type".into(),
                    "container".into(),
                    container.clone(),
                ],
                10,
            ),
            (
                "`cargo xtask --help` (cargo's start, freshness check, xtask)".into(),
                vec!["cargo".into(), "xtask".into(), "--help".into()],
                5,
            ),
            (
                "`xtask --help` (the binary alone)".into(),
                vec![xtask, "--help".into()],
                5,
            ),
            (
                "`cargo build` of stigmer-server and stigmer, nothing to do".into(),
                vec![
                    "cargo".into(),
                    "build".into(),
                    "--quiet".into(),
                    "--package".into(),
                    "stigmer-server".into(),
                    "--package".into(),
                    "stigmer".into(),
                ],
                3,
            ),
            (
                "`docker-compose version` (compose's own start)".into(),
                vec![compose, "version".into(), "--short".into()],
                5,
            ),
            (
                "`docker exec <runner> true`".into(),
                vec![
                    "docker".into(),
                    "exec".into(),
                    container.clone(),
                    "true".into(),
                ],
                5,
            ),
            (
                "`docker exec <runner> python -c pass`".into(),
                vec![
                    "docker".into(),
                    "exec".into(),
                    container.clone(),
                    "python".into(),
                    "-c".into(),
                    "pass".into(),
                ],
                5,
            ),
        ];
        let mut floors = Vec::new();
        progress.phase("Floors", |phase| {
            for (what, argv, runs) in steps {
                let mut samples = Vec::new();
                for _ in 0..runs {
                    let started = Instant::now();
                    let output = Command::new(&argv[0])
                        .args(&argv[1..])
                        .current_dir(&project.root)
                        .output()
                        .with_context(|| format!("running {}", argv.join(" ")))?;
                    samples.push(started.elapsed().as_secs_f64());
                    ensure!(
                        output.status.success(),
                        "{} failed: {}",
                        argv.join(" "),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                phase.line(&format!(
                    "{what}: {:.1} ms",
                    Stats::of(&samples).map_or(0.0, |s| s.median * 1000.0)
                ));
                floors.push(Floor {
                    what,
                    seconds: Stats::of(&samples).context("no samples")?,
                });
            }
            // The service's imports, timed inside the interpreter (no exec, no interpreter start).
            let mut samples = Vec::new();
            for _ in 0..5 {
                let printed = self.docker.checked(&args([
                    "exec",
                    &container,
                    "python",
                    "-c",
                    python_imports,
                ]))?;
                samples.push(
                    printed
                        .trim()
                        .parse::<f64>()
                        .with_context(|| format!("python printed `{}`", printed.trim()))?,
                );
            }
            floors.push(Floor {
                what: "importing the service (`import agent_runner.__main__`, inside Python)"
                    .into(),
                seconds: Stats::of(&samples).context("no samples")?,
            });
            Ok(())
        })?;
        report.floors = floors;
        Ok(())
    }

    /// What CI runs: this tool only, no change and touched, no build and no restart.
    fn correctness(&mut self, report: &mut Report, progress: &mut Progress) -> Result<()> {
        progress.phase("First `xtask dev` (builds the image)", |_| {
            self.bring_up(Tool::Ours).map(|_| ())
        })?;
        for (scenario, touch) in [("no change", false), ("touched, not changed", true)] {
            let outcomes = progress.phase(&format!("`xtask dev`: {scenario}"), |phase| {
                let mut outcomes = Vec::new();
                for run in 1..=self.runs {
                    if touch {
                        self.touch_everything()?;
                    }
                    let outcome = self.bring_up(Tool::Ours)?;
                    phase.line(&format!("run {run}: {:.2} s", outcome.seconds));
                    outcomes.push(outcome);
                }
                Ok(outcomes)
            })?;
            check_untouched(report, scenario, &outcomes, &[]);
            report.rows.push(Row {
                scenario: scenario.to_string(),
                unit: Unit::Seconds,
                ours: stats(&outcomes),
                compose: None,
                note: "correctness run: figures for information only".to_string(),
            });
        }
        Ok(())
    }

    // ----- docker state -----

    fn image(&self, reference: &str) -> Option<Image> {
        lifecycle::inspect_image(&self.docker, reference)
            .ok()
            .flatten()
    }

    fn container_id(&self, name: &str) -> Option<String> {
        match lifecycle::inspect_container(&self.docker, name) {
            Ok(stigmer_stack::docker::inspect::ContainerState::Ours(container))
            | Ok(stigmer_stack::docker::inspect::ContainerState::Foreign(container)) => {
                Some(container.id)
            }
            _ => None,
        }
    }

    /// Removes every image (tagged or intermediate, either stage) that descends from the
    /// benchmark's base image, deepest first: exactly the images and build cache it made.
    fn remove_bench_images(&self) -> Result<()> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        let listing = self
            .docker
            .checked(&args(["images", "--all", "--quiet", "--no-trunc"]))?;
        let mut ids: Vec<String> = listing.lines().map(str::to_string).collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let mut inspect = args(["image", "inspect", "--format", "{{.Id}} {{.Parent}}"]);
        inspect.extend(ids);
        let captured = self.docker.capture(&inspect)?;
        let parents: Vec<(String, String)> = captured
            .stdout
            .lines()
            .filter_map(|line| {
                let (id, parent) = line.split_once(' ')?;
                Some((id.to_string(), parent.trim().to_string()))
            })
            .collect();
        let levels = descendants_by_depth(&base.id, &parents);
        for level in levels.iter().rev() {
            let mut remove = args(["rmi", "--force"]);
            remove.extend(level.iter().cloned());
            let _ = self.docker.capture(&remove);
        }
        Ok(())
    }

    fn tear_down(&mut self) {
        let stop = self.xtask_command(&self.ours, &["stop"]).output();
        if !matches!(&stop, Ok(output) if output.status.success()) {
            eprintln!("⚠ stopping the benchmark's own stack failed: {stop:?}");
        }
        if !self.correctness_only {
            match self
                .compose_command(&["down"])
                .map(|mut command| command.output())
            {
                Ok(Ok(output)) if output.status.success() => {}
                other => eprintln!("⚠ docker-compose down failed: {other:?}"),
            }
            let _ = process::stop(
                &self.theirs.data_dir().server_pid_file(),
                server::COMPONENT,
                server::STOP_GRACE,
            );
        }
        for name in [&self.ours.container, &self.theirs.container] {
            let _ = self.docker.capture(&args(["rm", "--force", name]));
        }
        if let Err(err) = self.remove_bench_images() {
            eprintln!("⚠ removing the benchmark's images failed: {err:#}");
        }
        if let Some(base) = self.base.take() {
            let _ = self.docker.capture(&args(["rmi", &base.reference]));
        }
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

fn stack(
    scratch: &Path,
    name: &str,
    image: &str,
    container: &str,
    health_port: u16,
    server_port: u16,
) -> Stack {
    Stack {
        image: image.to_string(),
        container: container.to_string(),
        health_port,
        server_port,
        home: scratch.join(format!("home-{name}")),
    }
}

/// Image IDs descending from `root`, grouped by depth (children of `root` first).
fn descendants_by_depth(root: &str, parents: &[(String, String)]) -> Vec<Vec<String>> {
    let mut levels: Vec<Vec<String>> = Vec::new();
    let mut frontier = vec![root.to_string()];
    while !frontier.is_empty() {
        let next: Vec<String> = parents
            .iter()
            .filter(|(_, parent)| frontier.contains(parent))
            .map(|(id, _)| id.clone())
            .collect();
        if next.is_empty() {
            break;
        }
        levels.push(next.clone());
        frontier = next;
    }
    levels
}

fn stats(outcomes: &[Outcome]) -> Option<Stats> {
    Stats::of(&outcomes.iter().map(|o| o.seconds).collect::<Vec<_>>())
}

/// No build and no restart for ours; what compose did is reported, not asserted.
fn check_untouched(report: &mut Report, scenario: &str, ours: &[Outcome], theirs: &[Outcome]) {
    let built = ours
        .iter()
        .filter(|o| o.stderr.contains("Building the agent-runner image") || o.image_changed())
        .count();
    let restarted = ours.iter().filter(|o| o.restarted()).count();
    let up_to_date = ours
        .iter()
        .filter(|o| o.stderr.contains("agent-runner image: up to date"))
        .count();
    report.check(
        &format!("xtask dev, {scenario}: no build, no restart"),
        built == 0 && restarted == 0 && up_to_date == ours.len() && !ours.is_empty(),
        format!(
            "{} runs: {up_to_date} said `up to date`, {built} built, {restarted} restarted the container",
            ours.len()
        ),
    );
    if !theirs.is_empty() {
        let new_images = theirs.iter().filter(|o| o.image_changed()).count();
        let recreated = theirs.iter().filter(|o| o.restarted()).count();
        report.check(
            &format!("docker-compose, {scenario} (reported, not a target)"),
            true,
            format!(
                "{} runs: {new_images} made a new image, {recreated} recreated the container",
                theirs.len()
            ),
        );
    }
}

/// Medians of each phase `xtask dev` printed, and the time outside them (process start,
/// reading the environment, exit).
fn phase_medians(outcomes: &[Outcome]) -> Vec<(String, f64)> {
    let parsed: Vec<Vec<(String, f64)>> = outcomes
        .iter()
        .map(|o| parse_phase_timings(&o.stderr))
        .collect();
    let Some(first) = parsed.first() else {
        return Vec::new();
    };
    let mut medians: Vec<(String, f64)> = first
        .iter()
        .filter_map(|(name, _)| {
            let samples: Vec<f64> = parsed
                .iter()
                .filter_map(|phases| phases.iter().find(|(n, _)| n == name).map(|(_, s)| *s))
                .collect();
            Stats::of(&samples).map(|s| (name.clone(), s.median))
        })
        .collect();
    let outside: Vec<f64> = outcomes
        .iter()
        .zip(&parsed)
        .filter_map(|(outcome, phases)| {
            let total = phases.iter().find(|(n, _)| n == "total")?.1;
            Some((outcome.seconds - total).max(0.0))
        })
        .collect();
    if let Some(outside) = Stats::of(&outside) {
        medians.push((
            "outside the phases (process start, exit, report)".to_string(),
            outside.median,
        ));
    }
    medians
}

fn echo(api: &Api, n: usize) -> Result<()> {
    let input = format!("bench {n}");
    let created = api.create_execution("echo", &input)?;
    let execution = api.wait_until_done(&created.id, Duration::from_secs(30))?;
    ensure!(
        execution.status == "succeeded" && execution.result.as_deref() == Some(input.as_str()),
        "{} ended {} with {:?}",
        created.id,
        execution.status,
        execution.result
    );
    Ok(())
}

/// The targets of issue 4, with what was measured.
fn targets(report: &Report) -> Vec<Target> {
    let median = |scenario: &str, tool: Tool| {
        report.row(scenario).and_then(|row| match tool {
            Tool::Ours => row.ours.as_ref().map(|s| s.median),
            Tool::Compose => row.compose.as_ref().map(|s| s.median),
        })
    };
    let check_ok = |prefix: &str| {
        report
            .checks
            .iter()
            .any(|c| c.name.starts_with(prefix) && c.ok)
    };
    let mut targets = Vec::new();
    let (ours, compose) = (
        median("no change, stack running", Tool::Ours),
        median("no change, stack running", Tool::Compose),
    );
    let decision = report.decision_in_process.as_ref().map(|s| s.median);
    if let (Some(ours), Some(compose), Some(decision)) = (ours, compose, decision) {
        targets.push(Target {
            scenario: "no change, stack running".into(),
            target: "at most 1/5 of docker-compose's median; the rebuild decision under 50 ms"
                .into(),
            measured: format!(
                "{:.0} ms vs {:.0} ms (1/{:.1}); decision {:.1} ms",
                ours * 1e3,
                compose * 1e3,
                compose / ours,
                decision * 1e3
            ),
            met: ours * 5.0 <= compose && decision < 0.050,
        });
    }
    targets.push(Target {
        scenario: "touched but unchanged".into(),
        target: "no build, no restart".into(),
        measured: report
            .checks
            .iter()
            .find(|c| c.name.starts_with("xtask dev, touched"))
            .map_or_else(String::new, |c| c.detail.clone()),
        met: check_ok("xtask dev, touched"),
    });
    if let (Some(ours), Some(compose)) = (
        median("one source file changed", Tool::Ours),
        median("one source file changed", Tool::Compose),
    ) {
        targets.push(Target {
            scenario: "one source file changed".into(),
            target: "dependency layer reused; at most the compose time for the same change".into(),
            measured: format!(
                "{ours:.2} s vs {compose:.2} s (until the service answers: {}); dependency layer reused: {}",
                match (
                    median("one source file changed, until the service answers", Tool::Ours),
                    median("one source file changed, until the service answers", Tool::Compose),
                ) {
                    (Some(ours), Some(compose)) => format!("{ours:.2} s vs {compose:.2} s"),
                    _ => "not measured".to_string(),
                },
                check_ok("xtask dev: one source file")
            ),
            met: ours <= compose && check_ok("xtask dev: one source file"),
        });
    }
    if let Some(ready) = median("start to ready", Tool::Ours) {
        targets.push(Target {
            scenario: "start to ready".into(),
            target: "at most 2 s".into(),
            measured: format!("{ready:.2} s"),
            met: ready <= 2.0,
        });
    }
    if let Some(size) = median("image size", Tool::Ours) {
        targets.push(Target {
            scenario: "image size".into(),
            target: "at most 250 MB".into(),
            measured: format!("{size:.1} MB"),
            met: size <= 250.0,
        });
    }
    if let Some(memory) = median("idle memory", Tool::Ours) {
        targets.push(Target {
            scenario: "idle memory".into(),
            target: "at most 80 MB".into(),
            measured: format!("{memory:.1} MB"),
            met: memory <= 80.0,
        });
    }
    let none = report
        .decision_scaling
        .iter()
        .find(|row| row.tree == "as shipped");
    let ignored = report
        .decision_scaling
        .iter()
        .find(|row| row.ignored_files > 0);
    if let (Some(none), Some(ignored)) = (none, ignored) {
        targets.push(Target {
            scenario: format!(
                "rebuild decision with {} ignored files beside the inputs",
                ignored.ignored_files
            ),
            target: "within 2x of the decision with none".into(),
            measured: format!(
                "{:.2} ms vs {:.2} ms ({:.2}x)",
                ignored.seconds.median * 1e3,
                none.seconds.median * 1e3,
                ignored.seconds.median / none.seconds.median
            ),
            met: ignored.seconds.median <= 2.0 * none.seconds.median,
        });
    }
    targets
}

fn notes(session: &Session) -> Vec<String> {
    vec![
        "Ours is the built xtask binary run as a child process (`xtask --runner-dir <copy> dev`); cargo's own start is not in these figures: see the floors for what `cargo xtask` adds.".to_string(),
        "docker-compose runs `up -d --build` on the same Dockerfile, compose file and copy of the service, with the same base image (STIGMER_BASE_IMAGE) and wheels/ prepared by xtask; it builds with its default (legacy) builder.".to_string(),
        "poetry.lock changed: a real change made by Poetry is not available here (the locked wheels come from PyPI through the host), so a comment line is appended: the bytes the rebuild decision hashes change, the locked packages do not. Ours therefore rebuilds (every step from the build cache, new labels) and restarts; compose does not see poetry.lock at all (.dockerignore keeps it out of the context) and changes nothing. A real bump changes wheels/index/requirements.txt, which both tools see, and reinstalls the dependency layer in both.".to_string(),
        format!("Each tool has its own image, container, ports and data directory ({} / {}); the benchmark's own base image makes every first build start from an empty build cache, and everything descending from it is removed at the end.", session.ours.container, session.theirs.container),
    ]
}

// ----- the machine and docker-compose -----

fn machine(docker: &Docker, engine: &EngineInfo) -> Machine {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_default();
    let memory_mb = read("/proc/meminfo")
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024);
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        memory_mb,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        docker_engine: engine.server_version.clone(),
        storage_driver: docker
            .checked(&args(["info", "--format", "{{.Driver}}"]))
            .map(|driver| driver.trim().to_string())
            .unwrap_or_default(),
        compose: String::new(),
        other_containers: (other_containers(docker), 0),
    }
}

/// Running containers whose names are not the benchmark's.
fn other_containers(docker: &Docker) -> usize {
    docker
        .checked(&args(["ps", "--format", "{{.Names}}"]))
        .map(|names| {
            names
                .lines()
                .filter(|name| !name.starts_with("stigmer-bench-"))
                .count()
        })
        .unwrap_or(0)
}

/// Debian's `docker-compose` package, installed when missing and we are root.
fn find_compose(root: &Path, phase: &Phase) -> Result<Compose> {
    let version =
        || stigmer_stack::exec::read("docker-compose", &["version", "--short"], root).ok();
    if version().is_none() {
        crate::apt::install(
            &["docker-compose"],
            "the benchmark's Compose v1 side",
            phase,
        )?;
    }
    let short = version().context("docker-compose does not run")?;
    Ok(Compose {
        program: "docker-compose".to_string(),
        version: format!("docker-compose {}", short.trim()),
    })
}

// ----- files -----

/// Copies the service, without virtual environments and caches.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let name = entry.file_name();
        if [".venv", "__pycache__", ".pytest_cache"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().context("reading a file type")?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Gives every file under `dir` the modification time `when`, leaving its bytes alone.
fn touch_tree(dir: &Path, when: SystemTime) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if entry.file_type().context("reading a file type")?.is_dir() {
            touch_tree(&path, when)?;
        } else {
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(when))
                .with_context(|| format!("touching {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_come_level_by_level() {
        let parents = [
            ("a", "base"),
            ("b", "a"),
            ("c", "b"),
            ("x", "other"),
            ("d", "a"),
        ]
        .map(|(id, parent)| (id.to_string(), parent.to_string()));
        assert_eq!(
            descendants_by_depth("base", &parents),
            vec![
                vec!["a".to_string()],
                vec!["b".to_string(), "d".to_string()],
                vec!["c".to_string()]
            ]
        );
    }
}
