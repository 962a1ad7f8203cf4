//! `cargo xtask dev`: from a fresh clone to the running, smoke-checked local stack (Temporal,
//! stigmer-server and the agent-runner container), and nothing more than a decision and a few
//! health probes when nothing changed.

use anyhow::{Context, Result};
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::ids::short;
use runner_container::lock::StackLock;
use runner_container::progress::{seconds, Progress};
use runner_container::stack::{self, UpRequest};
use runner_container::{lifecycle::StartOutcome, server_process};
use xshell::{cmd, Shell};

use crate::image;
use crate::{publish, smoke, Project};

#[derive(Args)]
pub struct Dev {}

impl Dev {
    pub fn run(self, sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        // Taken only once the engine answered: without one, nothing is written.
        let lock = StackLock::acquire(&project.stack.data_dir, "cargo xtask dev", |holder| {
            progress.note(&format!("waiting for {holder} to finish with this stack"));
        })?;
        let plan = image::plan(sh, &docker, project, &mut progress)?;
        eprintln!(
            "agent-runner image: {} (decided in {})",
            plan.reason(project),
            seconds(plan.decision_time)
        );
        let image = match (&plan.image, plan.decision.needs_build()) {
            (Some(current), false) => current.clone(),
            _ => match publish::pull_instead_of_building(&docker, project, &plan, &mut progress)? {
                Some(pulled) => pulled,
                None => image::build(sh, &docker, project, &engine, &plan, false, &mut progress)?,
            },
        };
        progress.phase("Building stigmer", |_| build_binaries(sh, project))?;
        // The in-image checks need only the running container: they overlap the service's start.
        let image_checks = std::cell::OnceCell::new();
        let request = UpRequest {
            engine: &engine,
            image: &image,
            program: project.stigmer_program()?,
            replace_outdated_server: true,
            host_user: project.host_user,
            on_runner_started: &|| {
                let _ = image_checks.set(smoke::start_image_checks(project));
            },
        };
        let report = stack::up(&project.stack, &docker, &request, &lock, &mut progress)?;
        if let Some(ready) = report.runner_ready_after {
            progress.note(&format!(
                "agent runner ready {} after start",
                seconds(ready)
            ));
            image::remove_replaced(&docker, plan.image.as_ref(), &image);
        }
        if let StartOutcome::AlreadyRunning { .. } = report.runner {
            progress.note(
                "container already running from the current image and configuration: left alone",
            );
        }
        // A run killed before its checks leaves a container nobody checked: check it now.
        if report.started_something() || !smoke::was_checked(project, report.runner.id()) {
            smoke::run_checks(&docker, project, &mut progress, image_checks.into_inner())?;
            smoke::mark_checked(project, report.runner.id())?;
        }
        progress.summary();
        println!(
            "✓ Temporal at {}; stigmer-server (pid {}) at {}; agent-runner {} from {} ({}), health at {}",
            project.stack.temporal.frontend_address(),
            report.server.pid().unwrap_or_default(),
            server_process::url(project.stack.server_port),
            short(report.runner.id()),
            project.stack.runner.image,
            short(&image.id),
            project.stack.runner.health_url()
        );
        Ok(())
    }
}

/// The server and the CLI come from this checkout; cargo decides whether they are current
/// (asked only when a source is newer than its last answer: see [`binaries_fresh`]).
fn build_binaries(sh: &Shell, project: &Project) -> Result<()> {
    if binaries_fresh(project) {
        return Ok(());
    }
    let _dir = sh.push_dir(&project.root);
    // Taken before the build, so a source saved while cargo runs is newer than the stamp.
    let stamp = binaries_stamp(project);
    let _ = std::fs::remove_file(&stamp);
    let started = std::time::SystemTime::now();
    cmd!(sh, "cargo build --quiet --package stigmer")
        .quiet()
        .run()
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
        "crates/runner-container/Cargo.toml",
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
