//! `cargo xtask dev --watch`: after `dev` brought the stack up, keep it current as files change.
//!
//! The `notify` crate watches the runner's service directory, its path dependencies and the
//! Rust crates of the server and CLI (inotify on Linux, FSEvents on macOS). Events are
//! debounced; editors' temporary files, byte-code caches and everything that is not an input
//! are ignored, and a file touched without a change causes nothing (inputs are compared by
//! content). Then, by what changed:
//! - the runner's source: the runner process is reloaded inside its container (no build, no
//!   new container); a new runner that does not start leaves the old one serving, and says why;
//! - `poetry.lock`, `pyproject.toml`, the Dockerfile, `.dockerignore` or a path dependency: the
//!   image is rebuilt and the container replaced (`dev` again); a failing build leaves the
//!   running container alone;
//! - the server's or the CLI's Rust: `stigmer` is rebuilt and the server restarted.
//!
//! One line per reaction names what changed and how long it took (`--json`: one JSON object per
//! line on stdout). Ctrl-C stops watching and leaves the stack up, as `compose watch` does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher};
use serde::Serialize;
use stigmer_stack::docker::engine::EngineInfo;
use stigmer_stack::docker::Docker;
use stigmer_stack::runner::inputs::hash_source_tree;
use stigmer_stack::runner::inputs::{InputKind, REBUILD_INPUTS};
use stigmer_stack::runner::lifecycle;
use stigmer_stack::stack::StackLock;
use stigmer_stack::ui::interrupt;
use stigmer_stack::ui::progress::Progress;

use crate::dev::{self, DevOutcome, RELOAD_TIMEOUT};
use crate::Project;

/// Quiet time that ends a burst of events (an editor's save, a `git checkout`).
const SETTLE: Duration = Duration::from_millis(25);
/// The longest a burst may keep a reaction waiting.
const SETTLE_AT_MOST: Duration = Duration::from_millis(300);

/// What a changed path asks for, in increasing weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The runner's source: reload the runner process.
    Restart,
    /// The server's or the CLI's Rust: rebuild `stigmer`, restart the server.
    Server,
    /// An input of the image: rebuild it, replace the container.
    Rebuild,
}

/// The files a reaction answers to, by root.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub runner_dir: PathBuf,
    pub path_dependencies: Vec<PathBuf>,
    pub root: PathBuf,
}

/// The Rust that goes into `stigmer`: these directories and the workspace manifests.
const RUST_DIRS: [&str; 3] = [
    "crates",
    "backend/services/stigmer-server",
    "client-apps/cli",
];
const RUST_MANIFESTS: [&str; 2] = ["Cargo.toml", "Cargo.lock"];

impl Inputs {
    /// What `path` asks for; `None` for a path that is not an input (a test, a cache, an
    /// editor's temporary file, what the tools write themselves).
    pub fn classify(&self, path: &Path) -> Option<Action> {
        let name = path.file_name()?.to_string_lossy();
        if is_scratch(&name)
            || path
                .components()
                .any(|part| part.as_os_str() == "__pycache__")
        {
            return None;
        }
        if let Ok(relative) = path.strip_prefix(&self.runner_dir) {
            return if relative.starts_with("src") {
                Some(Action::Restart)
            } else if REBUILD_INPUTS
                .iter()
                .any(|input| input.kind == InputKind::File && relative == Path::new(input.name))
            {
                Some(Action::Rebuild)
            } else {
                None
            };
        }
        if self
            .path_dependencies
            .iter()
            .any(|dir| path.starts_with(dir))
        {
            let skipped = [".venv", "dist", "build", ".git"];
            let inside = path
                .components()
                .any(|part| skipped.contains(&part.as_os_str().to_string_lossy().as_ref()));
            return (!inside && !name.ends_with(".egg-info")).then_some(Action::Rebuild);
        }
        let relative = path.strip_prefix(&self.root).ok()?;
        let rust_source = RUST_DIRS.iter().any(|dir| relative.starts_with(dir))
            && (name.ends_with(".rs") || name == "Cargo.toml");
        let manifest = RUST_MANIFESTS
            .iter()
            .any(|file| relative == Path::new(file));
        (rust_source || manifest).then_some(Action::Server)
    }

    /// Directories to watch, with whether to descend into them.
    fn roots(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut roots = vec![(self.runner_dir.clone(), RecursiveMode::Recursive)];
        roots.extend(
            self.path_dependencies
                .iter()
                .map(|dir| (dir.clone(), RecursiveMode::Recursive)),
        );
        roots.extend(
            RUST_DIRS
                .iter()
                .map(|dir| (self.root.join(dir), RecursiveMode::Recursive)),
        );
        roots.push((self.root.clone(), RecursiveMode::NonRecursive));
        roots
    }
}

/// Editors' swap, backup and lock files, written beside the real one and never an input.
fn is_scratch(name: &str) -> bool {
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with(".tmp")
        || name.ends_with(".pyc")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
        || name.contains("___jb_")
}

/// One reaction, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Reaction {
    changed: Vec<String>,
    action: Action,
    seconds: f64,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Watches until Ctrl-C; the stack stays up.
pub fn run(
    docker: &Docker,
    engine: &EngineInfo,
    project: &Project,
    first: DevOutcome,
    json: bool,
) -> Result<()> {
    let inputs = Inputs {
        runner_dir: project.runner_dir.clone(),
        path_dependencies: crate::wheels::lock::path_dependencies(&project.runner_dir)?
            .into_iter()
            .map(|(_, dir)| dir.canonicalize().unwrap_or(dir))
            .collect(),
        root: project.root.clone(),
    };
    let (sender, events) = std::sync::mpsc::channel();
    let mut watcher =
        notify::recommended_watcher(sender).context("starting the file watcher (inotify)")?;
    for (dir, mode) in inputs.roots() {
        if dir.exists() {
            watcher
                .watch(&dir, mode)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
    }
    eprintln!(
        "ℹ watching {} and the Rust of stigmer; Ctrl-C stops watching and leaves the stack up",
        project.runner_dir.display()
    );
    let mut container = first.report.runner.id().to_string();
    let mut spec = first.report.spec.clone();
    // A source that failed to load is not tried again until it changes.
    let mut failed_source: Option<String> = None;
    loop {
        let Some(changed) = next_burst(&events, &inputs)? else {
            eprintln!("ℹ stopped watching; the stack is still up (`cargo xtask stop` stops it)");
            return Ok(());
        };
        let action = changed
            .iter()
            .map(|(_, action)| *action)
            .max()
            .context("a burst has at least one change")?;
        let started = Instant::now();
        let names: Vec<String> = changed
            .iter()
            .map(|(path, _)| display_path(path, project))
            .collect();
        let outcome = match action {
            Action::Restart => {
                reload_if_changed(docker, project, &container, &spec, &mut failed_source)
            }
            Action::Server | Action::Rebuild => rebuild(docker, engine, project)
                .map(|outcome| {
                    container = outcome.report.runner.id().to_string();
                    spec = outcome.report.spec.clone();
                    outcome.reloaded.map(|reloaded| reloaded.generation)
                })
                .map(Some),
        };
        let reaction = match outcome {
            // Touched, not changed: nothing to say.
            Ok(None) => continue,
            Ok(Some(generation)) => Reaction {
                changed: names,
                action,
                seconds: started.elapsed().as_secs_f64(),
                ok: true,
                generation,
                error: None,
            },
            Err(err) if interrupt::is_interrupted(&err) => return Err(err),
            Err(err) => Reaction {
                changed: names,
                action,
                seconds: started.elapsed().as_secs_f64(),
                ok: false,
                generation: None,
                error: Some(format!("{err:#}")),
            },
        };
        report(&reaction, json)?;
    }
}

/// The next burst of changes to inputs, with what each asks for; `None` on Ctrl-C.
fn next_burst(
    events: &Receiver<notify::Result<notify::Event>>,
    inputs: &Inputs,
) -> Result<Option<Vec<(PathBuf, Action)>>> {
    let mut changed: BTreeSet<(PathBuf, Action)> = BTreeSet::new();
    let mut first: Option<Instant> = None;
    loop {
        if interrupt::requested() {
            return Ok(None);
        }
        let wait = match first {
            None => Duration::from_millis(100),
            Some(_) => SETTLE,
        };
        match events.recv_timeout(wait) {
            Ok(event) => {
                let event = event.context("the file watcher failed")?;
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    continue;
                }
                for path in event.paths {
                    if let Some(action) = inputs.classify(&path) {
                        changed.insert((path, action));
                        first.get_or_insert_with(Instant::now);
                    }
                }
                if first.is_some_and(|at| at.elapsed() >= SETTLE_AT_MOST) {
                    return Ok(Some(changed.into_iter().collect()));
                }
            }
            Err(RecvTimeoutError::Timeout) if first.is_some() => {
                return Ok(Some(changed.into_iter().collect()))
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the file watcher stopped: run `cargo xtask dev --watch` again")
            }
        }
    }
}

/// Reloads the runner when its source's content changed since it last loaded; `Ok(None)` when
/// it did not (a touch, a save without an edit).
fn reload_if_changed(
    docker: &Docker,
    project: &Project,
    container: &str,
    spec: &stigmer_stack::runner::spec::ContainerSpec,
    failed_source: &mut Option<String>,
) -> Result<Option<Option<u64>>> {
    let digest = hash_source_tree(&project.runner_dir.join("src"))?.digest;
    if dev::loaded_source(project, container).as_deref() == Some(digest.as_str())
        || failed_source.as_deref() == Some(digest.as_str())
    {
        return Ok(None);
    }
    let _lock = StackLock::acquire(&project.stack.data_dir, "cargo xtask dev --watch", |_| {})?;
    // A failed reload leaves the old runner, with the old source: record only a success.
    match lifecycle::reload(docker, spec, RELOAD_TIMEOUT) {
        Ok(reloaded) => {
            *failed_source = None;
            dev::record_loaded_source(project, container, &digest)?;
            Ok(Some(Some(reloaded.generation)))
        }
        Err(err) => {
            *failed_source = Some(digest);
            Err(err)
        }
    }
}

/// `dev` again: the image decision (and build), the server, the container, the checks.
fn rebuild(docker: &Docker, engine: &EngineInfo, project: &Project) -> Result<DevOutcome> {
    let mut progress = Progress::new();
    let lock = StackLock::acquire(&project.stack.data_dir, "cargo xtask dev --watch", |_| {})?;
    dev::bring_up(docker, engine, project, &lock, &mut progress)
}

fn report(reaction: &Reaction, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(reaction).context("writing a reaction as JSON")?
        );
        return Ok(());
    }
    let what = match reaction.action {
        Action::Restart => "runner reloaded",
        Action::Server => "stigmer rebuilt, stack current",
        Action::Rebuild => "image rebuilt, stack current",
    };
    let changed = reaction.changed.join(", ");
    match &reaction.error {
        None => println!(
            "↻ {changed}: {what} in {:.2} s{}",
            reaction.seconds,
            reaction
                .generation
                .map(|generation| format!(" (generation {generation})"))
                .unwrap_or_default()
        ),
        Some(error) => println!(
            "✗ {changed}: failed after {:.2} s; what ran before goes on running: {error}",
            reaction.seconds
        ),
    }
    Ok(())
}

fn display_path(path: &Path, project: &Project) -> String {
    path.strip_prefix(&project.runner_dir)
        .or_else(|_| path.strip_prefix(&project.root))
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            runner_dir: PathBuf::from("/repo/backend/services/agent-runner"),
            path_dependencies: vec![PathBuf::from("/repo/backend/libs/python/graphton")],
            root: PathBuf::from("/repo"),
        }
    }

    #[test]
    fn changes_are_classified_by_what_they_feed() {
        let inputs = inputs();
        let runner = |relative: &str| inputs.classify(&inputs.runner_dir.join(relative));
        assert_eq!(
            runner("src/agent_runner/agents/echo.py"),
            Some(Action::Restart)
        );
        assert_eq!(runner("poetry.lock"), Some(Action::Rebuild));
        assert_eq!(runner("Dockerfile"), Some(Action::Rebuild));
        assert_eq!(runner(".dockerignore"), Some(Action::Rebuild));
        assert_eq!(runner("pyproject.toml"), Some(Action::Rebuild));
        // Not inputs: tests, what xtask writes itself, caches, editors' scratch files.
        for ignored in [
            "tests/test_echo.py",
            "wheels/index/requirements.txt",
            "src/agent_runner/__pycache__/echo.cpython-311.pyc",
            "src/agent_runner/.echo.py.swp",
            "src/agent_runner/echo.py~",
            "src/agent_runner/.#echo.py",
            "src/agent_runner/4913",
            "README.md",
        ] {
            assert_eq!(runner(ignored), None, "{ignored}");
        }
        let graphton = PathBuf::from("/repo/backend/libs/python/graphton");
        assert_eq!(
            inputs.classify(&graphton.join("graphton/core.py")),
            Some(Action::Rebuild)
        );
        assert_eq!(inputs.classify(&graphton.join(".venv/lib/x.py")), None);
        let root = |relative: &str| inputs.classify(&inputs.root.join(relative));
        assert_eq!(
            root("backend/services/stigmer-server/src/http.rs"),
            Some(Action::Server)
        );
        assert_eq!(
            root("crates/stigmer-stack/src/spec.rs"),
            Some(Action::Server)
        );
        assert_eq!(root("client-apps/cli/Cargo.toml"), Some(Action::Server));
        assert_eq!(root("Cargo.lock"), Some(Action::Server));
        assert_eq!(root("xtask/src/dev.rs"), None);
        assert_eq!(root("target/debug/stigmer"), None);
        assert_eq!(root("README.md"), None);
    }

    #[test]
    fn the_heaviest_change_decides() {
        let mut actions = vec![Action::Restart, Action::Rebuild, Action::Server];
        actions.sort();
        assert_eq!(actions, [Action::Restart, Action::Server, Action::Rebuild]);
    }

    #[test]
    fn a_reaction_is_one_json_line() {
        let reaction = Reaction {
            changed: vec!["src/agent_runner/x.py".to_string()],
            action: Action::Restart,
            seconds: 0.21,
            ok: true,
            generation: Some(4),
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&reaction).unwrap(),
            r#"{"changed":["src/agent_runner/x.py"],"action":"restart","seconds":0.21,"ok":true,"generation":4}"#
        );
    }
}
