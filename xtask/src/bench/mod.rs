//! `cargo xtask bench`: this tool's dev loop against Docker Compose v2, Compose v1 (where
//! installed) and `compose watch`, side by side in one run, plus the realistic fixture's
//! figures and the stack's; the targets of issues 9, 10 and 11 as a checklist, and
//! correctness checks measured on every side.
//!
//! Every tool works on one temporary copy of the agent-runner service, under its own image,
//! container, ports and data directory, so the developer's stack is never touched; runs
//! alternate between the tools. `dev` runs as a child process of the built xtask binary with
//! `--json`, and its answer is read from stdout. Every image descends from a base image the
//! benchmark makes for itself (the configured base plus a unique label), and cleaning up
//! removes exactly what the benchmark made. Results go to stdout (Markdown) and, with
//! `--json`, to a file; progress to stderr.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`scenario`] | the tools, scenarios and checks as enums, with their labels |
//! | [`session`] | one run's state, `dev`'s stacks, and running `xtask dev --json` |
//! | [`peer`] | the compose sides: finding Compose, their projects, commands and environments |
//! | [`fixture`] | the trees and the edits: copies, appended comments, touches, lock changes |
//! | [`measure`] | image and container state, waits for an answer, memory, layer reuse |
//! | [`edit_loop`] | the edit-loop scenarios, alternating between the tools |
//! | [`watch`] | `dev --watch` and `compose watch` reactions |
//! | [`realistic`] | the realistic fixture's figures |
//! | [`figures`] | the stack's figures with a release `stigmer` |
//! | [`check`] | the checks, judged from the measurements |
//! | [`target`] | the issues' targets |
//! | [`report`], [`markdown`] | the results as data, and as Markdown |
//! | [`cleanup`] | removing what the benchmark made, and checking that it is gone |

mod check;
mod cleanup;
mod edit_loop;
mod figures;
mod fixture;
mod markdown;
mod measure;
mod peer;
mod realistic;
mod report;
mod scenario;
mod session;
mod target;
mod watch;

use std::fs;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::{check_engine, EngineInfo};
use stigmer_stack::docker::{args, Docker};
use stigmer_stack::runner::lifecycle;
use stigmer_stack::ui::progress::{Phase, Progress};

use crate::base_image::{self, BaseImage};
use crate::{image, Project};
use peer::{ComposeSetting, ComposeSide};
use report::{Machine, Report};
use scenario::Peer;
use session::{DevStack, Session};

#[derive(Args)]
pub struct Bench {
    /// Three runs per scenario instead of five, ten `stigmer run echo` instead of fifty.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario and tool (default 5, or 3 with --quick).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Only the correctness checks, `dev` against Compose v2: no change, touched, a source
    /// change (mounted and `--image`). What CI runs; figures for information only.
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
            machine: machine(&docker, &engine, project),
            ..Report::default()
        };
        let mut session = self.new_session(docker, project)?;
        let mut failures = Vec::new();
        match set_up(
            &mut session,
            project,
            &engine,
            &mut report,
            self.correctness_only,
            &mut progress,
        ) {
            Ok(()) => {
                if self.correctness_only {
                    if let Err(err) = correctness(&mut session, &mut report, runs, &mut progress) {
                        failures.push(format!("{err:#}"));
                    }
                } else {
                    failures =
                        everything(&mut session, &mut report, runs, self.quick, &mut progress);
                }
            }
            Err(err) => failures.push(format!("setting up: {err:#}")),
        }
        report.machine.other_containers.1 = other_containers(&session.docker);
        progress.phase("Cleaning up what the benchmark made", |_| {
            let problems = cleanup::tear_down(&mut session);
            cleanup::check_nothing_left(&session, &mut report, problems);
            Ok(())
        })?;
        if !self.correctness_only {
            report.targets = target::targets(&report);
        }
        report.notes.extend(notes(&session));
        report.notes.extend(
            failures
                .iter()
                .map(|failure| format!("Not measured: {failure}")),
        );
        progress.summary();
        println!("{}", report.markdown());
        if let Some(path) = &self.json {
            let json = serde_json::to_vec_pretty(&report).context("serializing the results")?;
            fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        let mut failed = failures;
        failed.extend(report.failed_checks());
        if !failed.is_empty() {
            bail!("the benchmark failed:\n{}", failed.join("\n"));
        }
        Ok(())
    }

    fn new_session(&self, docker: Docker, project: &Project) -> Result<Session> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let scratch =
            std::env::temp_dir().join(format!("stigmer-bench-{}-{nanos}", std::process::id()));
        // The correctness run (CI) has names and ports of its own, so it can run beside a
        // full benchmark.
        let (name, port) = if self.correctness_only {
            ("ci", 7541)
        } else {
            ("dev", 7441)
        };
        Ok(Session {
            docker,
            root: project.root.clone(),
            service_dir: scratch.join("runner"),
            dev: DevStack::new(&scratch, name, port),
            scratch,
            xtask: std::env::current_exe().context("finding the xtask binary")?,
            host_user: project.host_user,
            base: None,
            compose: Vec::new(),
            realistic: None,
            edits: 0,
            platform: String::new(),
        })
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

/// The copy of the service, the benchmark's own base image, the wheels and the compose sides.
fn set_up(
    session: &mut Session,
    project: &Project,
    engine: &EngineInfo,
    report: &mut Report,
    correctness_only: bool,
    progress: &mut Progress,
) -> Result<()> {
    progress.phase("Copying the agent-runner service", |_| {
        fixture::copy_tree(&project.runner_dir, &session.service_dir)
    })?;
    let present = image::present_images(&session.docker, project)?;
    let configured = match base_image::find_present(project, &present) {
        Some(base) => base,
        None => base_image::obtain(&session.docker, project, progress)?,
    };
    let base = progress.phase("Making the benchmark's own base image", |phase| {
        make_base(session, &configured, phase)
    })?;
    session.base = Some(base.clone());
    session.platform = engine.platform();
    progress.phase("Preparing locked wheels", |phase| {
        session.prepare_wheels(phase)
    })?;
    fixture::write_legacy_dockerfile(&session.service_dir)?;
    fixture::write_v1_compose_file(&session.service_dir)?;
    let (v2_program, v2_version) =
        peer::find_compose_v2(&session.docker, &project.stack.tools_dir, progress)?;
    report.machine.peers.compose_v2 = v2_version;
    let v1 = peer::find_compose_v1();
    report.machine.peers.compose_v1 = v1.as_ref().map(|(_, version)| version.clone());
    let reference = base.reference.clone();
    let setting = ComposeSetting {
        base_image: &reference,
        backend: &session.dev,
        host_user: session.host_user,
        scratch: &session.scratch,
        service_dir: &session.service_dir,
    };
    let mut sides = Vec::new();
    let (v2_name, v2_port) = if correctness_only {
        ("ci-v2", 7562)
    } else {
        ("v2", 7462)
    };
    sides.push(ComposeSide::new(
        Peer::ComposeV2,
        v2_program,
        v2_name,
        v2_port,
        &setting,
    ));
    if let (Some((program, _)), false) = (v1, correctness_only) {
        sides.push(ComposeSide::new(
            Peer::ComposeV1,
            program,
            "v1",
            7472,
            &setting,
        ));
    }
    for side in &sides {
        lifecycle::prepare_workspace(&side.workspace, session.host_user)?;
    }
    session.compose = sides;
    Ok(())
}

/// `FROM <configured base>` plus a label unique to this run: a new image ID, so no build
/// cache from any earlier build on this engine applies, and a root for cleaning up.
fn make_base(session: &Session, configured: &BaseImage, phase: &Phase) -> Result<BaseImage> {
    let dir = session.scratch.join("base");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let label = session
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
    session
        .docker
        .stream(
            &args(["build", "--tag", &reference, &dir.display().to_string()]),
            &[],
            |line| phase.line(line),
        )
        .context("making the benchmark's base image")?;
    let made = lifecycle::inspect_image(&session.docker, &reference)?
        .context("the benchmark's base image is not there")?;
    Ok(BaseImage {
        reference,
        id: made.id,
    })
}

/// What CI runs: `dev` and Compose v2, each check measured on both.
fn correctness(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    progress: &mut Progress,
) -> Result<()> {
    let peers = [Peer::Dev, Peer::ComposeV2];
    progress.phase("First build", |phase| {
        edit_loop::first_build(session, report, &peers, phase)
    })?;
    progress.phase("No change, then touched", |phase| {
        edit_loop::unchanged(session, report, &peers, runs, phase)
    })?;
    progress.phase("One source file changed", |phase| {
        edit_loop::source_change(session, report, &peers, runs.min(2), phase)
    })?;
    progress.phase("One source file changed, `dev --image`", |phase| {
        edit_loop::source_change_image(session, report, 1, phase)
    })
}

/// The whole benchmark; a section that fails is reported and the rest still runs.
fn everything(
    session: &mut Session,
    report: &mut Report,
    runs: usize,
    quick: bool,
    progress: &mut Progress,
) -> Vec<String> {
    let mut peers = vec![Peer::Dev];
    peers.extend(session.compose.iter().map(|side| side.peer));
    let few = runs.min(3);
    let mut failures = Vec::new();
    let mut section =
        |name: &str,
         progress: &mut Progress,
         work: &mut dyn FnMut(&mut Session, &mut Report, &Phase) -> Result<()>| {
            if let Err(err) = progress.phase(name, |phase| work(session, report, phase)) {
                progress.warn(&format!("{name}: {err:#}"));
                failures.push(format!("{name}: {err:#}"));
            }
        };
    section(
        "First build, base image present",
        progress,
        &mut |s, r, p| edit_loop::first_build(s, r, &peers, p),
    );
    section("No change, then touched", progress, &mut |s, r, p| {
        edit_loop::unchanged(s, r, &peers, runs, p)
    });
    section("One source file changed", progress, &mut |s, r, p| {
        edit_loop::source_change(s, r, &peers, runs, p)
    });
    section(
        "One source file changed, `dev --image`",
        progress,
        &mut |s, r, p| edit_loop::source_change_image(s, r, few, p),
    );
    section("Watch reactions", progress, &mut |s, r, p| {
        edit_loop::watch_reaction(s, r, runs, p)
    });
    section("poetry.lock changed", progress, &mut |s, r, p| {
        edit_loop::lock_change(s, r, &peers, few, p)
    });
    section("Image size and idle memory", progress, &mut |s, r, _| {
        edit_loop::size_and_memory(s, r, &peers)
    });
    section("Stopping the compose sides", progress, &mut |s, _, _| {
        for side in &s.compose {
            side.run(&["down", "--timeout", "5"])?;
        }
        Ok(())
    });
    let echo_runs = if quick { 10 } else { 50 };
    section("The stack's figures", progress, &mut |s, r, p| {
        figures::stack_figures(s, r, echo_runs, 3, p)
    });
    section("The realistic fixture", progress, &mut |s, r, p| {
        realistic::realistic(s, r, few, p)
    });
    failures
}

fn notes(session: &Session) -> Vec<String> {
    vec![
        "`dev` is the built xtask binary run as a child process (`xtask --runner-dir <copy> dev --json`), so cargo's own start is not in its figures.".to_string(),
        format!(
            "Each tool has its own image, container, health port and workspace ({}{}); the compose runners are workers of the Temporal and stigmer-server of `dev`'s benchmark stack (ports {} and {}), so all sides run the same service against the same backend.",
            session.dev.container,
            session
                .compose
                .iter()
                .map(|side| format!(", {}", side.container))
                .collect::<String>(),
            session.dev.temporal_port,
            session.dev.server_port
        ),
        "Compose builds from the same copy, Dockerfile and compose file, with the same base image (STIGMER_BASE_IMAGE) and the wheels xtask prepared into the build context: compose cannot read poetry.lock itself. Compose v1 has no BuildKit here (no buildx), so it gets the Dockerfile without its cache mount (`Dockerfile.legacy`, as xtask's legacy builder does).".to_string(),
        "`compose watch` runs its runner as root (a compose override): its sync copies files with the container's user, which this Docker 20.10 engine resolves with `getent` and fails for any other user (`getent unable to find entry \"10001:10001\" in passwd database`, also with a bare uid or the user's name), so with the runner's own user no edit ever reached the container.".to_string(),
        "First builds: each tool's own image and container are removed and the Dockerfile's venv cache mount gets an ID of its own, so the dependency install starts from nothing; BuildKit keeps those cache mounts until `docker builder prune`.".to_string(),
    ]
}

fn machine(docker: &Docker, engine: &EngineInfo, project: &Project) -> Machine {
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
        builder: crate::builder::detect(docker, project.forced_builder, &project.stack.tools_dir)
            .map(|builder| builder.describe())
            .unwrap_or_else(|err| format!("unknown ({err:#})")),
        peers: report::PeerVersions::default(),
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
