//! Engine-backed tests of `stigmer server` and `stigmer run` against the real Docker engine,
//! the built stigmer-server and the image `stigmer-agent-runner:test` (built by
//! `cargo xtask ci`). They fail, never skip, when the engine or the image is missing.
//!
//! Every test runs the `stigmer` binary as a child process with its own temporary
//! `STIGMER_HOME`, test ports and container name set on that child only; the test process's
//! environment is never changed. All tests share one container name, so they hold [`LOCK`].
//! A [`Stack`] guard stops whatever a test started, even when it panics.

// The whole file is test code: its helpers panic on purpose (clippy's allow-unwrap-in-tests
// only covers `#[test]` functions and `#[cfg(test)]` modules, not an integration test's helpers).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use runner_container::http;

const IMAGE: &str = "stigmer-agent-runner:test";
const CONTAINER: &str = "stigmer-agent-runner-cli-test";
const HEALTH_PORT: &str = "7336";
const SERVER_PORT: u16 = 7337;

static LOCK: Mutex<()> = Mutex::new(());

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the `docker` program must be installed for these tests")
}

/// The engine and the test image must be there: a missing one is a failure, not a skip.
fn require_engine_and_image() {
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "these tests need a running Docker engine: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let image = docker(&["image", "inspect", IMAGE]);
    assert!(
        image.status.success(),
        "the image {IMAGE} is missing: build it with \
         `STIGMER_RUNNER_IMAGE={IMAGE} cargo xtask rebuild-runner` (cargo xtask ci does)"
    );
}

/// The workspace's stigmer-server, built once per test run (a no-op when it is fresh).
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "stigmer-server", "--quiet"])
            .current_dir(&workspace)
            .status()
            .expect("running cargo build -p stigmer-server");
        assert!(status.success(), "cargo build -p stigmer-server failed");
        // stigmer-server lands beside this package's own binary.
        let binary = Path::new(env!("CARGO_BIN_EXE_stigmer")).with_file_name("stigmer-server");
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// One test's stack: its data directory and the environment its `stigmer` children get.
struct Stack {
    home: PathBuf,
    env: Vec<(&'static str, String)>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Stack {
    fn new(name: &str) -> Stack {
        let lock = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        require_engine_and_image();
        let home =
            std::env::temp_dir().join(format!("stigmer-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let env = vec![
            ("STIGMER_HOME", home.display().to_string()),
            ("STIGMER_RUNNER_IMAGE", IMAGE.to_string()),
            ("STIGMER_RUNNER_CONTAINER", CONTAINER.to_string()),
            ("STIGMER_RUNNER_HEALTH_PORT", HEALTH_PORT.to_string()),
            ("STIGMER_SERVER_PORT", SERVER_PORT.to_string()),
            ("STIGMER_SERVER_BIN", server_binary().display().to_string()),
        ];
        let stack = Stack {
            home,
            env,
            _lock: lock,
        };
        // A previous run that crashed may have left our test container behind.
        stack.stigmer(&["server", "stop"]);
        stack
    }

    fn with(mut self, key: &'static str, value: &str) -> Stack {
        self.env.push((key, value.to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stigmer"));
        command.args(args).stdin(Stdio::null());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    fn stigmer(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Like [`Stack::stigmer`], with extra variables for this one child.
    fn stigmer_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        for (key, value) in extra {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    fn pid_file(&self) -> PathBuf {
        self.data().join("daemon.pid")
    }

    fn id_file(&self) -> PathBuf {
        self.data().join("agent-runner-container.id")
    }

    fn server_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.pid_file()).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Processes whose command line mentions this test's data directory (our server).
    fn processes(&self) -> Vec<String> {
        let needle = self.data().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let state = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let zombie = state.rsplit(')').next()?.trim_start().starts_with('Z');
                (!zombie && cmdline.contains(&needle)).then_some(cmdline)
            })
            .collect()
    }

    fn assert_nothing_left(&self) {
        assert_eq!(container_state(CONTAINER), None, "the container is left");
        assert_eq!(self.processes(), Vec::<String>::new(), "processes are left");
        assert!(!self.pid_file().exists(), "daemon.pid is left");
        assert!(!self.id_file().exists(), "the container ID file is left");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stigmer(&["server", "stop"]);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `docker inspect`'s status of a container, `None` when it does not exist.
fn container_state(name: &str) -> Option<String> {
    let output = docker(&[
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Status}}",
        name,
    ]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A process exists and has not exited; a zombie waiting for init to reap it counts as gone.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn stack_start_run_and_stop() {
    let stack = Stack::new("lifecycle");

    let started = Instant::now();
    let start = stack.stigmer(&["server", "start"]);
    let start_time = started.elapsed();
    assert_success(&start);
    assert!(
        text(&start.stdout).contains("✓ Stigmer is running"),
        "{}",
        text(&start.stdout)
    );

    let status = stack.stigmer(&["server", "status", "--json"]);
    assert_success(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["server"]["state"], "running", "{status:#}");
    assert_eq!(status["server"]["healthy"], true, "{status:#}");
    assert_eq!(status["agent_runner"]["state"], "running", "{status:#}");
    assert_eq!(
        status["agent_runner"]["health_endpoint"], true,
        "{status:#}"
    );
    assert_eq!(status["agent_runner"]["image_current"], true, "{status:#}");

    let echo = stack.stigmer(&["run", "echo", "--input", "hello"]);
    assert_success(&echo);
    assert_eq!(text(&echo.stdout), "hello\n");
    assert!(
        text(&echo.stderr).contains("Execution ID: exec-"),
        "{}",
        text(&echo.stderr)
    );

    let diff = stack.home.join("some.diff");
    std::fs::write(
        &diff,
        "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,4 @@\n import os\n+password = \"hunter2\"\n+print(eval(input()))\n x = 1\n",
    )
    .unwrap();
    let review = stack.stigmer(&["run", "pr-reviewer", "--input-file", diff.to_str().unwrap()]);
    assert_success(&review);
    assert!(!text(&review.stdout).trim().is_empty(), "no findings");
    eprintln!("pr-reviewer said:\n{}", text(&review.stdout));

    let unknown = stack.stigmer(&["run", "no-such-agent", "--input", "x"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("unknown agent"),
        "{}",
        text(&unknown.stderr)
    );
    assert!(text(&unknown.stdout).is_empty());

    let mut latencies = Vec::new();
    for _ in 0..20 {
        let run_started = Instant::now();
        let run = stack.stigmer(&["run", "echo", "--input", "hello"]);
        latencies.push(run_started.elapsed());
        assert_success(&run);
    }
    eprintln!(
        "FIGURES: `stigmer server start` (image present, stack stopped): {start_time:?}; \
         `stigmer run echo --input hello` median of 20: {:?} (min {:?}, max {:?})",
        median(latencies.clone()),
        latencies.iter().min().unwrap(),
        latencies.iter().max().unwrap()
    );

    let again = stack.stigmer(&["server", "start"]);
    assert_success(&again);
    assert!(
        text(&again.stdout).contains("already running"),
        "{}",
        text(&again.stdout)
    );

    let logs = stack.stigmer(&["server", "logs", "-n", "5"]);
    assert_success(&logs);
    assert!(
        text(&logs.stdout).contains("/v1/executions"),
        "{}",
        text(&logs.stdout)
    );
    let runner_logs = stack.stigmer(&["server", "logs", "--component", "agent-runner"]);
    assert_success(&runner_logs);

    let pid = stack.server_pid();
    let container_id = std::fs::read_to_string(stack.id_file()).unwrap();
    let restart = stack.stigmer(&["server", "start", "--restart"]);
    assert_success(&restart);
    assert!(text(&restart.stdout).contains("✓ Stigmer is running"));
    assert!(!alive(pid), "--restart left the old server running");
    assert_ne!(
        std::fs::read_to_string(stack.id_file()).unwrap(),
        container_id
    );

    let pid = stack.server_pid();
    let stop = stack.stigmer(&["server", "stop"]);
    assert_success(&stop);
    assert!(!alive(pid), "the server still runs");
    stack.assert_nothing_left();

    let stop_again = stack.stigmer(&["server", "stop"]);
    assert_success(&stop_again);
    assert!(
        text(&stop_again.stderr).contains("was not running"),
        "{}",
        text(&stop_again.stderr)
    );
}

#[test]
fn missing_image_names_the_build_command_and_leaves_nothing() {
    let stack = Stack::new("no-image");
    let start = stack.stigmer_env(
        &["server", "start"],
        &[(
            "STIGMER_RUNNER_IMAGE",
            "stigmer-agent-runner:does-not-exist",
        )],
    );
    assert!(!start.status.success());
    let stderr = text(&start.stderr);
    assert!(
        stderr.contains("Docker image not found. Please build it first:"),
        "{stderr}"
    );
    assert!(stderr.contains("cargo xtask rebuild-runner"), "{stderr}");
    stack.assert_nothing_left();

    let run = stack.stigmer(&["run", "echo", "--input", "hello"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        text(&run.stderr).contains("`stigmer server start`"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn unreachable_docker_is_reported_quickly() {
    let stack = Stack::new("no-docker");
    let started = Instant::now();
    let start = stack.stigmer_env(
        &["server", "start"],
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
    );
    let elapsed = started.elapsed();
    assert!(!start.status.success());
    let stderr = text(&start.stderr);
    assert!(
        stderr.contains("Docker is not running. Agent-runner requires Docker."),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    stack.assert_nothing_left();
}

/// Removes the foreign container even when the test fails.
struct ForeignContainer;

impl Drop for ForeignContainer {
    fn drop(&mut self) {
        docker(&["rm", "--force", CONTAINER]);
    }
}

#[test]
fn foreign_container_with_our_name_is_left_alone() {
    let stack = Stack::new("foreign");
    let created = docker(&["create", "--name", CONTAINER, IMAGE]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let _foreign = ForeignContainer;

    let start = stack.stigmer(&["server", "start"]);
    assert!(!start.status.success());
    assert!(
        text(&start.stderr).contains("not created by Stigmer"),
        "{}",
        text(&start.stderr)
    );
    assert_eq!(container_state(CONTAINER).as_deref(), Some("created"));
    assert_eq!(stack.processes(), Vec::<String>::new());
    assert!(!stack.pid_file().exists());

    let stop = stack.stigmer(&["server", "stop"]);
    assert_success(&stop);
    assert!(
        text(&stop.stderr).contains("not created by Stigmer"),
        "{}",
        text(&stop.stderr)
    );
    assert_eq!(container_state(CONTAINER).as_deref(), Some("created"));
}

#[test]
fn execution_survives_a_server_killed_mid_execution() {
    // A short lease so that the task held by the frozen runner comes back quickly.
    let stack = Stack::new("sigkill").with("STIGMER_SERVER_LEASE_SECONDS", "3");
    assert_success(&stack.stigmer(&["server", "start"]));

    // Freeze the runner: the server hands it the task (the poll is already waiting), but it
    // cannot run it before the server dies.
    assert!(docker(&["pause", CONTAINER]).status.success());
    // `stigmer run` creates the execution; Ctrl-C (SIGINT) stops following, not the execution.
    let mut run = stack
        .command(&["run", "echo", "--input", "survived"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(run.stderr.take().unwrap());
    let (lines_sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_sender.send(line);
        }
    });
    let id = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("`stigmer run` printed no execution ID");
        if let Some(id) = line.strip_prefix("Execution ID: ") {
            break id.to_string();
        }
    };
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, SERVER_PORT));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let execution = http::get(
            server,
            &format!("/v1/executions/{id}"),
            Duration::from_secs(5),
        )
        .unwrap()
        .json()
        .unwrap();
        if execution["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never handed out: {execution}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // SAFETY: the child is the `stigmer run` this test started and has not waited for.
    assert_eq!(unsafe { libc_kill(i32::try_from(run.id()).unwrap(), 2) }, 0);
    let interrupted = wait_with_deadline(run, Duration::from_secs(10));
    assert_eq!(interrupted.status.code(), Some(130));
    assert!(interrupted.stdout.is_empty());
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.join("\n")
            .contains(&format!("stigmer run --follow {id}")),
        "{rest:?}"
    );

    let pid = stack.server_pid();
    // SAFETY: the PID comes from this test's own PID file, written for the server it started.
    assert_eq!(unsafe { libc_kill(pid, 9) }, 0);
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(docker(&["unpause", CONTAINER]).status.success());

    let restart = stack.stigmer(&["server", "start"]);
    assert_success(&restart);
    assert!(
        text(&restart.stderr).contains("stale server PID file"),
        "{}",
        text(&restart.stderr)
    );

    let mut follow = stack.command(&["run", "--follow", &id]);
    let child = follow
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_with_deadline(child, Duration::from_secs(90));
    assert_success(&output);
    assert_eq!(text(&output.stdout), "survived\n");
    eprintln!("follow after the restart:\n{}", text(&output.stderr));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn wait_with_deadline(mut child: std::process::Child, deadline: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "not finished within {deadline:?}; stderr:\n{}",
                text(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

// ---- Faults and bad input (issue 5) ----

/// Starts `command` and returns once a line of its stderr contains `needle`, with the child
/// and the lines seen so far; the rest of its stderr keeps flowing into the returned channel.
fn spawn_until(
    mut command: Command,
    needle: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return (child, lines),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{needle}` never appeared");
            }
        }
    }
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: the child is this test's own, not yet waited for.
    assert_eq!(
        unsafe { libc_kill(i32::try_from(child.id()).unwrap(), signal) },
        0
    );
}

/// Containers of this test's data directory, whatever their name or state.
fn our_containers(stack: &Stack) -> Vec<String> {
    let filter = format!("label=dev.stigmer.data-dir={}", stack.data().display());
    let output = docker(&["ps", "--all", "--quiet", "--filter", &filter]);
    text(&output.stdout).lines().map(String::from).collect()
}

#[test]
fn without_docker_nothing_is_written() {
    let stack = Stack::new("docker-missing");
    for (key, value) in [
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        // No `docker` program at all.
        ("PATH", "/nonexistent"),
    ] {
        let started = Instant::now();
        let start = stack.stigmer_env(&["server", "start"], &[(key, value)]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{key}: {:?}",
            started.elapsed()
        );
        assert!(!start.status.success(), "{key}");
        assert!(
            text(&start.stderr).contains("Docker is not running. Agent-runner requires Docker."),
            "{key}: {}",
            text(&start.stderr)
        );
        assert!(
            !stack.data().exists(),
            "{key}: the data directory was written"
        );
    }
}

#[test]
fn a_runner_that_exits_at_start_is_reported_with_its_exit_code_and_logs() {
    let stack = Stack::new("crash");
    let started = Instant::now();
    // The runner refuses this setting and exits with code 2 while starting.
    let start = stack.stigmer_env(&["server", "start"], &[("OLLAMA_BASE_URL", "not a url")]);
    assert!(!start.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let stderr = text(&start.stderr);
    assert!(stderr.contains("exit code 2"), "{stderr}");
    assert!(
        stderr.contains("OLLAMA_BASE_URL"),
        "the runner's own log line is missing: {stderr}"
    );
    // No restart loop, no half-started stack.
    stack.assert_nothing_left();
}

#[test]
fn concurrent_starts_make_one_stack() {
    let stack = Stack::new("concurrent");
    let first = stack
        .command(&["server", "start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = stack
        .command(&["server", "start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = wait_with_deadline(first, Duration::from_secs(90));
    let second = wait_with_deadline(second, Duration::from_secs(90));
    assert_success(&first);
    assert_success(&second);
    let both = format!("{}{}", text(&first.stdout), text(&second.stdout));
    assert!(
        both.contains("already running"),
        "one of them must find the other's stack: {both}"
    );
    assert_eq!(our_containers(&stack).len(), 1);
    assert_eq!(stack.processes().len(), 1, "{:?}", stack.processes());
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}

#[test]
fn killed_starts_and_stale_files_are_recovered() {
    let stack = Stack::new("recover");
    // SIGKILL while waiting for the runner: server and container are left running.
    let (child, _) = spawn_until(
        stack.command(&["server", "start"]),
        "Waiting for agent runner",
    );
    signal(&child, 9);
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    let again = stack.stigmer(&["server", "start"]);
    assert_success(&again);
    assert_eq!(our_containers(&stack).len(), 1);
    assert_eq!(stack.processes().len(), 1);

    // A container created but never started (a crash between create and start) is replaced.
    assert_success(&stack.stigmer(&["server", "stop"]));
    let mut create = vec!["create".to_string()];
    let data_dir = runner_container::paths::DataDir::at(stack.data());
    let settings = runner_container::spec::RunnerSettings {
        image: IMAGE.to_string(),
        container_name: CONTAINER.to_string(),
        health_port: HEALTH_PORT.parse().unwrap(),
        backend_endpoint: format!("localhost:{SERVER_PORT}"),
        ..Default::default()
    };
    let spec = runner_container::spec::ContainerSpec::agent_runner(
        &settings,
        &data_dir,
        runner_container::spec::HostUser::current(),
    );
    create.extend(spec.run_args().into_iter().skip(2));
    let created = Command::new("docker").args(&create).output().unwrap();
    assert_success(&created);
    assert_eq!(container_state(CONTAINER).as_deref(), Some("created"));
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(container_state(CONTAINER).as_deref(), Some("running"));

    // Corrupt and stale files, and a container removed behind the tool's back.
    assert_success(&stack.stigmer(&["server", "stop"]));
    std::fs::write(stack.pid_file(), "not a pid\n").unwrap();
    std::fs::write(stack.id_file(), "../../etc/passwd\n").unwrap();
    assert_success(&stack.stigmer(&["server", "start"]));
    // PID 1 with a made-up start time: another program's PID, never signalled.
    let pid = stack.server_pid();
    let status = stack.stigmer(&["server", "stop"]);
    assert_success(&status);
    std::fs::write(stack.pid_file(), "1 12345\n").unwrap();
    assert!(
        docker(&["rm", "--force", CONTAINER]).status.success()
            || container_state(CONTAINER).is_none()
    );
    let start = stack.stigmer(&["server", "start"]);
    assert_success(&start);
    assert!(
        text(&start.stderr).contains("stale server PID file"),
        "{}",
        text(&start.stderr)
    );
    assert!(alive(1));
    assert_ne!(stack.server_pid(), pid);
    let id = std::fs::read_to_string(stack.id_file()).unwrap();
    assert!(docker(&["rm", "--force", id.trim()]).status.success());
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(container_state(CONTAINER).as_deref(), Some("running"));
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}

#[test]
fn ctrl_c_during_start_stops_cleanly_and_twice_forces() {
    let stack = Stack::new("ctrl-c");
    let (child, _) = spawn_until(
        stack.command(&["server", "start"]),
        "Waiting for agent runner",
    );
    signal(&child, 2);
    let stopped = wait_with_deadline(child, Duration::from_secs(15));
    assert_eq!(stopped.status.code(), Some(130));
    // A start that did not finish leaves nothing running.
    stack.assert_nothing_left();

    let (child, _) = spawn_until(
        stack.command(&["server", "start"]),
        "Starting Stigmer server",
    );
    signal(&child, 2);
    signal(&child, 2);
    let forced = wait_with_deadline(child, Duration::from_secs(5));
    assert_eq!(forced.status.code(), Some(130));
    // The next plain run recovers from whatever the forced stop left.
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(our_containers(&stack).len(), 1);
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}

#[test]
fn a_hundred_start_stop_cycles_leak_nothing() {
    let stack = Stack::new("cycles");
    let cycles: u32 = std::env::var("STIGMER_TEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let started = Instant::now();
    for cycle in 0..cycles {
        let start = stack.stigmer(&["server", "start"]);
        assert!(
            start.status.success(),
            "cycle {cycle}: {}",
            text(&start.stderr)
        );
        let stop = stack.stigmer(&["server", "stop"]);
        assert!(
            stop.status.success(),
            "cycle {cycle}: {}",
            text(&stop.stderr)
        );
    }
    let per_cycle = started.elapsed() / cycles;
    eprintln!("FIGURES: {cycles} start/stop cycles, {per_cycle:?} per cycle");
    stack.assert_nothing_left();
    assert_eq!(our_containers(&stack), Vec::<String>::new());
    let mut left: Vec<String> = std::fs::read_dir(stack.data())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // What a stack keeps on purpose: its database, logs, workspace and lock file.
    let kept = [
        "logs",
        "stack.lock",
        "stigmer.db",
        "stigmer.db-shm",
        "stigmer.db-wal",
        "workspace",
    ];
    assert!(
        left.iter().all(|name| kept.contains(&name.as_str())),
        "{left:?}"
    );
}

#[test]
fn workspace_and_database_survive_restarts_and_crashes() {
    let stack = Stack::new("persistence");
    assert_success(&stack.stigmer(&["server", "start"]));
    let echo = stack.stigmer(&["run", "echo", "--input", "kept"]);
    assert_success(&echo);
    let id = text(&echo.stderr)
        .lines()
        .find_map(|line| line.strip_prefix("Execution ID: ").map(String::from))
        .unwrap();
    let kept_file = stack.data().join("workspace/notes.txt");
    std::fs::write(&kept_file, "mine").unwrap();

    assert_success(&stack.stigmer(&["server", "start", "--restart"]));
    // SAFETY: the PID is this test's own server.
    assert_eq!(unsafe { libc_kill(stack.server_pid(), 9) }, 0);
    assert!(docker(&["kill", CONTAINER]).status.success());
    assert_success(&stack.stigmer(&["server", "start"]));

    assert_eq!(std::fs::read_to_string(&kept_file).unwrap(), "mine");
    assert!(stack
        .data()
        .join("workspace")
        .join(&id)
        .join("input.txt")
        .exists());
    let follow = stack.stigmer(&["run", "--follow", &id]);
    assert_success(&follow);
    assert_eq!(text(&follow.stdout), "kept\n");
    assert_success(&stack.stigmer(&["server", "stop"]));
}

#[test]
fn the_stack_listens_on_loopback_only_and_runs_unprivileged() {
    let stack = Stack::new("security");
    let secret = "sk-test-not-for-any-process-list";
    assert_success(&stack.stigmer_env(&["server", "start"], &[("OPENAI_API_KEY", secret)]));
    // The secret reaches the process, and no label or image layer carries it.
    let printed = docker(&["exec", CONTAINER, "printenv", "OPENAI_API_KEY"]);
    assert_eq!(text(&printed.stdout).trim(), secret);
    let labels =
        text(&docker(&["inspect", "--format", "{{json .Config.Labels}}", CONTAINER]).stdout);
    assert!(!labels.contains(secret), "{labels}");
    let history = text(&docker(&["history", "--no-trunc", IMAGE]).stdout);
    assert!(!history.contains(secret));
    let inspect = |format: &str| {
        text(&docker(&["inspect", "--format", format, CONTAINER]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), "[\"ALL\"]");
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert!(inspect("{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_ne!(inspect("{{.Config.User}}").split(':').next(), Some("0"));
    // Every non-loopback address of this machine refuses both ports.
    let addresses = text(&Command::new("hostname").arg("-I").output().unwrap().stdout);
    let ports = [SERVER_PORT, HEALTH_PORT.parse::<u16>().unwrap()];
    for address in addresses
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
    {
        for port in ports {
            let reached = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(address, port),
                Duration::from_secs(1),
            );
            assert!(reached.is_err(), "{address}:{port} answers");
        }
    }
    assert_success(&stack.stigmer(&["server", "stop"]));
}
