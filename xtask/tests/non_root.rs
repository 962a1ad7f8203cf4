//! The CI path as hosted runners run it: a non-root user in the `docker` group with
//! passwordless sudo, its own checkout and cargo home, runs `cargo xtask ci --setup` (the
//! set-up steps: the Python test environment, the Temporal CLI, docker-registry through
//! `sudo -n apt-get` when missing, the images) and one `cargo xtask dev`, which must pass and
//! leave a workspace the user owns.
//!
//! It runs as root to make that user (CI runs as root): it creates the user, a sudoers entry,
//! and lets it traverse `/root` to reach the toolchain in `/root/.rustup` (read-only). Without
//! root, or without the engine, it fails with what to do: it is never skipped.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use support::{assert_success, docker};

const USER: &str = "stigmer-ci";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"))
}

/// The user, its sudo rule and its way to the toolchain, made once.
fn prepare_user() -> PathBuf {
    assert_eq!(
        stigmer_stack::runner::spec::HostUser::current().uid,
        0,
        "this test makes a non-root user and needs root (CI runs as root)"
    );
    let sudo_present = Command::new("sudo")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !sudo_present {
        assert_success(&run("apt-get", &["update", "-qq"]));
        assert_success(&run("apt-get", &["install", "-y", "-qq", "sudo"]));
    }
    if !run("id", &[USER]).status.success() {
        assert_success(&run(
            "useradd",
            &[
                "--create-home",
                "--shell",
                "/bin/bash",
                "--groups",
                "docker",
                USER,
            ],
        ));
    }
    let rule = Path::new("/etc/sudoers.d").join(USER);
    fs::write(&rule, format!("{USER} ALL=(ALL) NOPASSWD:ALL\n")).unwrap();
    fs::set_permissions(&rule, fs::Permissions::from_mode(0o440)).unwrap();
    // Traverse only (no listing): the toolchain below is world-readable already.
    let root_home = fs::metadata("/root").unwrap().permissions().mode();
    fs::set_permissions("/root", fs::Permissions::from_mode(root_home | 0o001)).unwrap();
    PathBuf::from(format!("/home/{USER}"))
}

/// This checkout's tracked files, copied for the user and handed to it.
fn checkout_for(home: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let checkout = home.join("checkout");
    let _ = fs::remove_dir_all(&checkout);
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(source)
        .output()
        .unwrap();
    assert_success(&listed);
    for file in listed
        .stdout
        .split(|byte| *byte == 0)
        .filter(|f| !f.is_empty())
    {
        let relative = Path::new(std::str::from_utf8(file).unwrap());
        let from = source.join(relative);
        if !from.exists() {
            continue; // deleted in the working tree, not yet committed
        }
        let to = checkout.join(relative);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap();
    }
    assert_success(&run(
        "chown",
        &["-R", &format!("{USER}:{USER}"), checkout.to_str().unwrap()],
    ));
    checkout
}

/// `cargo xtask <args>` as the user, in its checkout, with its own cargo home and stack.
fn xtask_as_user(home: &Path, checkout: &Path, args: &[&str]) -> Output {
    let home_text = home.display().to_string();
    let environment = [
        format!("HOME={home_text}"),
        "PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            .to_string(),
        "RUSTUP_HOME=/root/.rustup".to_string(),
        format!("CARGO_HOME={home_text}/.cargo"),
        format!("STIGMER_HOME={home_text}/stigmer-home"),
        "STIGMER_RUNNER_IMAGE=stigmer-agent-runner:non-root-test".to_string(),
        "STIGMER_RUNNER_CONTAINER=stigmer-agent-runner-non-root-test".to_string(),
        "STIGMER_RUNNER_HEALTH_PORT=7355".to_string(),
        "STIGMER_SERVER_PORT=7356".to_string(),
        "STIGMER_TEMPORAL_PORT=17933".to_string(),
    ];
    let mut command = Command::new("runuser");
    command
        .args(["-u", USER, "--", "env", "-i"])
        .args(&environment)
        .args(["cargo", "xtask"])
        .args(args)
        .current_dir(checkout);
    command.output().unwrap()
}

#[test]
fn the_ci_set_up_and_dev_pass_as_a_non_root_user_with_sudo() {
    let home = prepare_user();
    let checkout = checkout_for(&home);
    let sudo = Command::new("runuser")
        .args(["-u", USER, "--", "sudo", "-n", "true"])
        .output()
        .unwrap();
    assert_success(&sudo);

    let started = Instant::now();
    let setup = xtask_as_user(&home, &checkout, &["ci", "--setup"]);
    assert_success(&setup);
    let setup_time = started.elapsed();
    let started = Instant::now();
    let dev = xtask_as_user(&home, &checkout, &["dev"]);
    assert_success(&dev);
    let dev_time = started.elapsed();

    // The runner ran as the user, and what it wrote is the user's to delete.
    let uid = String::from_utf8(run("id", &["-u", USER]).stdout).unwrap();
    let user = docker(&[
        "inspect",
        "--format",
        "{{.Config.User}}",
        "stigmer-agent-runner-non-root-test",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&user.stdout)
            .trim()
            .split(':')
            .next(),
        Some(uid.trim())
    );
    assert!(
        String::from_utf8_lossy(&dev.stderr).contains("owned by uid"),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    assert_success(&xtask_as_user(&home, &checkout, &["stop"]));
    eprintln!(
        "FIGURES: as a non-root user: `cargo xtask ci --setup` {:.0}s (cold cargo home and \
         target), `cargo xtask dev` {:.0}s",
        setup_time.as_secs_f64(),
        dev_time.as_secs_f64()
    );
}
