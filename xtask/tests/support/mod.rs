//! Helpers shared by the engine-backed test binaries of xtask; each binary uses a part.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

static ENGINE: Mutex<()> = Mutex::new(());

/// The tests of one binary share container names and ports, so they take turns.
pub fn take_turn() -> MutexGuard<'static, ()> {
    ENGINE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A directory name under the temporary directory that no other test or run uses.
pub fn unique_dir(prefix: &str, name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("{prefix}-{name}-{}-{nanos}", std::process::id()))
}

/// Copies the agent-runner service for a test, without Python's caches.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == ".pytest_cache" || name == ".venv" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker client runs")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}

/// The names a test binary gives its stack, set on the child only, so that it never touches a
/// developer's stack or another test binary's.
pub struct StackNames {
    pub image: &'static str,
    pub container: &'static str,
    pub health_port: u16,
    pub server_port: u16,
    pub temporal_port: u16,
}

/// A copy of the agent-runner service and a home directory of its own, under a temporary
/// directory no other test uses; removed on drop.
pub struct RunnerCopy {
    pub root: PathBuf,
}

impl RunnerCopy {
    pub fn new(prefix: &str, name: &str) -> RunnerCopy {
        let root = unique_dir(prefix, name);
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend/services/agent-runner");
        copy_tree(&source, &root.join("runner"));
        fs::create_dir_all(root.join("home")).unwrap();
        RunnerCopy { root }
    }

    pub fn runner(&self) -> PathBuf {
        self.root.join("runner")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("home/data")
    }

    /// The built xtask on this copy.
    pub fn xtask(&self, names: &StackNames, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.arg("--runner-dir").arg(self.runner()).args(args);
        self.stack_env(names, &mut command);
        command
    }

    /// The stack's names and this copy's home on `command`, and none of the caller's settings
    /// that would change what the test sees.
    pub fn stack_env(&self, names: &StackNames, command: &mut Command) {
        command
            .env("STIGMER_HOME", self.root.join("home"))
            .env("STIGMER_RUNNER_IMAGE", names.image)
            .env("STIGMER_RUNNER_CONTAINER", names.container)
            .env("STIGMER_RUNNER_HEALTH_PORT", names.health_port.to_string())
            .env("STIGMER_SERVER_PORT", names.server_port.to_string())
            .env("STIGMER_TEMPORAL_PORT", names.temporal_port.to_string());
        for setting in [
            "STIGMER_LOG_LEVEL",
            "STIGMER_TEMPORAL_ADDRESS",
            "STIGMER_REGISTRY",
            "STIGMER_BUILDER",
        ] {
            command.env_remove(setting);
        }
    }
}

impl Drop for RunnerCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}
