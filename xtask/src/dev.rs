//! `cargo xtask dev`: from a fresh clone to the running, smoke-checked local stack (Temporal,
//! stigmer-server and the agent-runner container), and nothing more than a decision and a few
//! health probes when nothing changed.
//!
//! By default the working tree's runner source is mounted read-only into the container, so a
//! source change is a reload of the runner process inside it (its supervisor forks a new one
//! from the dependencies it imported once), never an image build; `--image` runs the image's
//! own copy, as CI and `stigmer server start` do. `--watch` then keeps the stack current.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::{check_engine, EngineInfo};
use stigmer_stack::docker::inspect::Image;
use stigmer_stack::docker::short_id;
use stigmer_stack::docker::Docker;
use stigmer_stack::exec;
use stigmer_stack::runner::lifecycle::{self, Reloaded, StartOutcome};
use stigmer_stack::server;
use stigmer_stack::stack::StackLock;
use stigmer_stack::stack::{self, UpReport, UpRequest};
use stigmer_stack::ui::progress::{seconds, Progress};

use crate::image;
use crate::{publish, smoke, watch, Project};

/// How long a new runner process may take to answer after a reload (its supervisor gives up on
/// one after 10 s and keeps the old one).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct Dev {
    /// Run the complete image with the source inside (as CI and `stigmer server start` do),
    /// instead of the working tree's source mounted into the container.
    #[arg(long)]
    image: bool,
    /// Then keep the stack current as files change: a source change reloads the runner, a
    /// lock or Dockerfile change rebuilds the image, a Rust change rebuilds the server.
    #[arg(long)]
    watch: bool,
    /// Print one JSON object on stdout for programs (the benchmark): what was decided and
    /// done, and how long each phase took; with --watch, one JSON object per reaction.
    #[arg(long)]
    json: bool,
}

/// `dev --json`: what one run decided and did.
#[derive(serde::Serialize)]
struct Summary<'a> {
    /// The rebuild decision's one-line reason.
    decision: String,
    built: bool,
    image_id: &'a str,
    mode: &'static str,
    /// Temporal, the server or the runner was started or replaced.
    started: bool,
    runner_ready_seconds: Option<f64>,
    reloaded_generation: Option<u64>,
    reload_seconds: Option<f64>,
    container: &'a str,
    phases: Vec<PhaseTime<'a>>,
    total_seconds: f64,
}

#[derive(serde::Serialize)]
struct PhaseTime<'a> {
    name: &'a str,
    seconds: f64,
}

/// What one bring-up did, for the summary line and for `--watch`.
pub struct DevOutcome {
    /// The rebuild decision's one-line reason.
    pub decision: String,
    /// The image was built (not reused or pulled).
    pub built: bool,
    pub report: UpReport,
    pub image: Image,
    pub reloaded: Option<Reloaded>,
}

impl Dev {
    pub fn run(self, project: &Project) -> Result<()> {
        let project = if self.image {
            project.clone()
        } else {
            project.with_mounted_source()
        };
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let outcome = {
            // Taken only once the engine answered: without one, nothing is written.
            let lock = StackLock::acquire(&project.stack.data_dir, "cargo xtask dev", |holder| {
                progress.note(&format!("waiting for {holder} to finish with this stack"));
            })?;
            bring_up(&docker, &engine, &project, &lock, &mut progress)?
        };
        progress.summary();
        let mode = if self.image {
            "its image's source"
        } else {
            "the working tree's source mounted"
        };
        if self.json && !self.watch {
            let phases: Vec<PhaseTime> = progress
                .phases()
                .iter()
                .map(|(name, elapsed)| PhaseTime {
                    name,
                    seconds: elapsed.as_secs_f64(),
                })
                .collect();
            let summary = Summary {
                decision: outcome.decision.clone(),
                built: outcome.built,
                image_id: &outcome.image.id,
                mode: if self.image { "image" } else { "mounted" },
                started: outcome.report.started_something(),
                runner_ready_seconds: outcome.report.runner_ready_after.map(|d| d.as_secs_f64()),
                reloaded_generation: outcome.reloaded.map(|r| r.generation),
                reload_seconds: outcome.reloaded.map(|r| r.after.as_secs_f64()),
                container: outcome.report.runner.id(),
                total_seconds: phases.iter().map(|phase| phase.seconds).sum(),
                phases,
            };
            println!(
                "{}",
                serde_json::to_string(&summary).context("writing the summary")?
            );
            return Ok(());
        }
        println!(
            "✓ Temporal at {}; stigmer-server (pid {}) at {}; agent-runner {} from {} ({}) with {mode}, health at {}",
            project.stack.temporal.frontend_address(),
            outcome.report.server.pid().unwrap_or_default(),
            server::url(project.stack.server_port),
            short_id(outcome.report.runner.id()),
            project.stack.runner.image,
            short_id(&outcome.image.id),
            project.stack.runner.health_url()
        );
        if self.watch {
            return watch::run(&docker, &engine, &project, outcome, self.json);
        }
        Ok(())
    }
}

/// Decides, builds or pulls the image, brings the stack up, reloads a runner whose mounted
/// source changed, and runs the smoke checks when anything changed. The caller holds the lock.
pub fn bring_up(
    docker: &Docker,
    engine: &EngineInfo,
    project: &Project,
    lock: &StackLock,
    progress: &mut Progress,
) -> Result<DevOutcome> {
    let plan = image::plan(docker, project, progress)?;
    let decision = plan.reason(project);
    eprintln!(
        "agent-runner image: {decision} (decided in {})",
        seconds(plan.decision_time)
    );
    let mut built = false;
    let image = match (&plan.image, plan.decision.needs_build()) {
        (Some(current), false) => current.clone(),
        _ => match publish::pull_instead_of_building(docker, project, &plan, progress)? {
            Some(pulled) => pulled,
            None => {
                built = true;
                image::build(docker, project, engine, &plan, false, progress)?
            }
        },
    };
    progress.phase("Building stigmer", |_| build_binaries(project))?;
    // The in-image checks need only the running container: they overlap the service's start.
    let image_checks = std::cell::OnceCell::new();
    let request = UpRequest {
        engine,
        image: &image,
        program: project.stigmer_program()?,
        replace_outdated_server: true,
        host_user: project.host_user,
        on_runner_started: &|| {
            let _ = image_checks.set(smoke::start_image_checks(project));
        },
    };
    let report = stack::up(&project.stack, docker, &request, lock, progress)?;
    if let Some(ready) = report.runner_ready_after {
        progress.note(&format!(
            "agent runner ready {} after start",
            seconds(ready)
        ));
        image::remove_replaced(docker, plan.image.as_ref(), &image);
    }
    let id = report.runner.id().to_string();
    let mut reloaded = None;
    if let StartOutcome::AlreadyRunning { .. } = report.runner {
        let mounted = project.stack.runner.source_mount.is_some();
        if mounted && loaded_source(project, &id).as_deref() != Some(plan.sources.digest.as_str()) {
            let done = progress.phase("Reloading the runner with the changed source", |_| {
                lifecycle::reload(docker, &report.spec, RELOAD_TIMEOUT)
            })?;
            progress.note(&format!(
                "runner generation {} answers, {} after the reload began",
                done.generation,
                seconds(done.after)
            ));
            reloaded = Some(done);
        } else {
            progress.note(
                "container already running from the current image and configuration: left alone",
            );
        }
    }
    if project.stack.runner.source_mount.is_some() {
        record_loaded_source(project, &id, &plan.sources.digest)?;
    }
    // A run killed before its checks leaves a container nobody checked: check it now.
    if report.started_something() || reloaded.is_some() || !smoke::was_checked(project, &id) {
        smoke::run_checks(docker, project, progress, image_checks.into_inner())?;
        smoke::mark_checked(project, &id)?;
    }
    Ok(DevOutcome {
        decision,
        built,
        report,
        image,
        reloaded,
    })
}

/// Which source a mounted runner last loaded: recorded at each start and reload, so that a
/// `dev` after an edit made without `--watch` reloads it. Only a cache: without it the runner
/// is reloaded once more than needed.
fn loaded_source_path(project: &Project, container: &str) -> std::path::PathBuf {
    project
        .cache_dir()
        .join("loaded-source")
        .join(short_id(container))
}

pub fn loaded_source(project: &Project, container: &str) -> Option<String> {
    std::fs::read_to_string(loaded_source_path(project, container))
        .ok()
        .map(|text| text.trim().to_string())
}

pub fn record_loaded_source(project: &Project, container: &str, digest: &str) -> Result<()> {
    let path = loaded_source_path(project, container);
    if loaded_source(project, container).as_deref() == Some(digest) {
        return Ok(());
    }
    let dir = path.parent().context("the record has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    stigmer_stack::files::write_atomically(&path, format!("{digest}\n").as_bytes())
}

/// The server and the CLI come from this checkout; cargo decides whether they are current
/// (asked only when a source is newer than its last answer: see [`binaries_fresh`]).
fn build_binaries(project: &Project) -> Result<()> {
    if binaries_fresh(project) {
        return Ok(());
    }
    // Taken before the build, so a source saved while cargo runs is newer than the stamp.
    let stamp = binaries_stamp(project);
    let _ = std::fs::remove_file(&stamp);
    let started = std::time::SystemTime::now();
    exec::run(
        "cargo",
        &["build", "--quiet", "--package", "stigmer"],
        &project.root,
        &[],
    )
    .context("building the stigmer program (CLI and embedded server)")?;
    // Only a cache: without it cargo is simply asked next time.
    let _ = std::fs::create_dir_all(project.cache_dir())
        .and_then(|()| std::fs::File::create(&stamp).and_then(|file| file.set_modified(started)));
    Ok(())
}

/// Cargo's own no-op check costs about 100 ms (it loads the workspace and fingerprints every
/// unit), more than the whole rest of a no-change `dev` (see BENCHMARKS.md). So a stamp is
/// written each time cargo has made the binaries current, and cargo is asked again only when
/// a source the binaries were built from (the dep-info files cargo writes beside them), a
/// manifest or `Cargo.lock` is newer than that stamp. Anything unreadable (a path with
/// spaces, another target directory) asks cargo. Not seen: a changed toolchain or RUSTFLAGS.
fn binaries_fresh(project: &Project) -> bool {
    let Some(dir) = project
        .stigmer_program()
        .ok()
        .and_then(|program| program.parent().map(std::path::Path::to_path_buf))
    else {
        return false;
    };
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified());
    let Ok(confirmed) = modified(&binaries_stamp(project)) else {
        return false;
    };
    let manifests: Vec<std::path::PathBuf> = [
        "Cargo.lock",
        "Cargo.toml",
        ".cargo/config.toml",
        "backend/services/stigmer-server/Cargo.toml",
        "client-apps/cli/Cargo.toml",
        "crates/stigmer-stack/Cargo.toml",
    ]
    .iter()
    .map(|path| project.root.join(path))
    .filter(|path| path.exists())
    .collect();
    ["stigmer"].iter().all(|name| {
        let (Ok(_), Ok(dep_info)) = (
            modified(&dir.join(name)),
            std::fs::read_to_string(dir.join(format!("{name}.d"))),
        ) else {
            return false;
        };
        let Some((_, sources)) = dep_info
            .lines()
            .next()
            .and_then(|line| line.split_once(": "))
        else {
            return false;
        };
        // A binary built from another checkout (two worktrees sharing a target directory)
        // lists that checkout's sources: it is not this one's.
        let own_main = project.root.join("client-apps/cli/src/main.rs");
        let mut sources = sources.split_whitespace().map(std::path::PathBuf::from);
        sources.clone().any(|source| source == own_main)
            && sources
                .by_ref()
                .chain(manifests.iter().cloned())
                .all(|source| modified(&source).is_ok_and(|time| time <= confirmed))
    })
}

fn binaries_stamp(project: &Project) -> std::path::PathBuf {
    project.cache_dir().join("binaries-current.stamp")
}
