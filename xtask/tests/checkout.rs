//! One xtask binary, two checkouts: the case of two git worktrees sharing a `CARGO_TARGET_DIR`
//! (cargo keeps one binary for both when their sources agree). The checkout a run serves must
//! come from where it runs, never from the path the binary was compiled at.
//!
//! The second checkout is a copy of this one's workspace manifest, settings and runner service,
//! with a source file of its own, so its rebuild inputs differ. `status --json` says which
//! checkout and runner directory it looked at; it needs the Docker engine and fails without it.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{assert_success, copy_tree, stderr, unique_dir};

fn this_checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .canonicalize()
        .unwrap()
}

/// A second checkout: the workspace manifest, `stigmer.toml` and the runner service.
fn other_checkout() -> PathBuf {
    let root = unique_dir("xtask-checkout", "other");
    let here = this_checkout();
    fs::create_dir_all(root.join("xtask")).unwrap();
    for file in ["Cargo.toml", "stigmer.toml"] {
        fs::copy(here.join(file), root.join(file)).unwrap();
    }
    copy_tree(
        &here.join("backend/services/agent-runner"),
        &root.join("backend/services/agent-runner"),
    );
    fs::write(
        root.join("backend/services/agent-runner/src/agent_runner/only_in_the_other_checkout.py"),
        "MARKER = 1\n",
    )
    .unwrap();
    root.canonicalize().unwrap()
}

fn status(cwd: &Path, manifest_dir: Option<&Path>, home: &Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(["status", "--json"])
        .current_dir(cwd)
        .env("STIGMER_HOME", home)
        .env("STIGMER_RUNNER_IMAGE", "stigmer-agent-runner:checkout-test")
        .env(
            "STIGMER_RUNNER_CONTAINER",
            "stigmer-agent-runner-checkout-test",
        );
    match manifest_dir {
        Some(dir) => command.env("CARGO_MANIFEST_DIR", dir),
        None => command.env_remove("CARGO_MANIFEST_DIR"),
    };
    command.output().unwrap()
}

fn checkout_of(output: &std::process::Output) -> (PathBuf, PathBuf) {
    assert_success(output);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        PathBuf::from(report["checkout"].as_str().unwrap()),
        PathBuf::from(report["runner_dir"].as_str().unwrap()),
    )
}

#[test]
fn the_binary_serves_the_checkout_it_runs_in() {
    let other = other_checkout();
    let home = unique_dir("xtask-checkout", "home");
    fs::create_dir_all(&home).unwrap();
    let runner = other.join("backend/services/agent-runner");

    // As `cargo xtask` runs it in the other worktree: cargo sets CARGO_MANIFEST_DIR there.
    let (checkout, runner_dir) = checkout_of(&status(&other, Some(&other.join("xtask")), &home));
    assert_eq!((checkout, runner_dir), (other.clone(), runner.clone()));

    // The binary run directly from a subdirectory of the other worktree.
    let (checkout, runner_dir) = checkout_of(&status(&runner.join("src"), None, &home));
    assert_eq!((checkout, runner_dir), (other.clone(), runner));

    // The same binary in this checkout still serves this one.
    let here = this_checkout();
    let (checkout, _) = checkout_of(&status(&here, None, &home));
    assert_eq!(checkout, here);

    // Outside any checkout it says so instead of guessing.
    let outside = status(&home, None, &home);
    assert!(!outside.status.success());
    assert!(
        stderr(&outside).contains("not inside a Stigmer checkout"),
        "{}",
        stderr(&outside)
    );

    fs::remove_dir_all(&other).unwrap();
    let _ = fs::remove_dir_all(&home);
}
