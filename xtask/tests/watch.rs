//! `cargo xtask dev --watch` end to end against the real engine and a real stack: a source
//! change reloads the runner, a broken change keeps the previous runner serving (and says
//! why), a `poetry.lock` change rebuilds the image and replaces the container, and Ctrl-C
//! stops watching but leaves the stack up. Fails, never skips, without an engine.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use stigmer_stack::http::healthz;
use stigmer_stack::server::api::Api;
use support::{assert_success, docker, stderr, RunnerCopy, StackNames};

const IMAGE: &str = "stigmer-agent-runner:watch-test";
const CONTAINER: &str = "stigmer-agent-runner-watch-test";
const HEALTH_PORT: u16 = 7345;
const SERVER_PORT: u16 = 7348;
const NAMES: StackNames = StackNames {
    image: IMAGE,
    container: CONTAINER,
    health_port: HEALTH_PORT,
    server_port: SERVER_PORT,
    temporal_port: 17833,
};

/// A copy of the runner service and a data directory; the stack is stopped on drop.
struct Sandbox {
    copy: RunnerCopy,
}

impl Sandbox {
    fn new() -> Sandbox {
        let copy = RunnerCopy::new("xtask-watch", "stack");
        let _ = docker(&["rm", "--force", CONTAINER]);
        Sandbox { copy }
    }

    fn runner(&self) -> PathBuf {
        self.copy.runner()
    }

    fn command(&self, args: &[&str]) -> Command {
        self.copy.xtask(&NAMES, args)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).output();
    }
}

/// The lines a child writes on one of its pipes, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The next JSON reaction on stdout.
fn next_reaction(stdout: &Receiver<String>) -> serde_json::Value {
    loop {
        let line = stdout
            .recv_timeout(Duration::from_secs(300))
            .expect("no reaction within 300 s");
        if let Ok(reaction) = serde_json::from_str::<serde_json::Value>(&line) {
            return reaction;
        }
    }
}

fn generation() -> u64 {
    healthz(HEALTH_PORT, Duration::from_secs(2)).unwrap()["generation"]
        .as_u64()
        .unwrap()
}

fn container_id() -> String {
    let output = docker(&["inspect", "--format", "{{.Id}}", CONTAINER]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn echo_works() {
    let api = Api::new(SERVER_PORT);
    let created = api.create_execution("echo", "still here").unwrap();
    let done = api
        .wait_until_done(&created.id, Duration::from_secs(30))
        .unwrap();
    assert_eq!(done.result.as_deref(), Some("still here"), "{done:?}");
}

fn interrupt(child: &Child) {
    // SAFETY: kill only sends a signal to this test's own child.
    let sent = unsafe { libc_kill(i32::try_from(child.id()).unwrap(), 2) };
    assert_eq!(sent, 0);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

#[test]
fn watch_reloads_source_keeps_the_old_runner_on_a_broken_change_and_rebuilds_on_a_lock_change() {
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&["dev", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr_lines = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let line = stderr_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("`dev --watch` never started watching");
        if line.contains("watching") {
            break;
        }
    }
    let first = generation();
    let container = container_id();
    let echo = sandbox.runner().join("src/agent_runner/agents/echo.py");
    let original = fs::read_to_string(&echo).unwrap();

    // A source change: the runner reloads in place.
    fs::write(&echo, format!("{original}\n# watched change\n")).unwrap();
    let reaction = next_reaction(&stdout);
    assert_eq!(reaction["action"], "restart", "{reaction}");
    assert_eq!(reaction["ok"], true, "{reaction}");
    assert_eq!(reaction["changed"][0], "src/agent_runner/agents/echo.py");
    assert!(reaction["seconds"].as_f64().unwrap() < 5.0, "{reaction}");
    let reloaded = generation();
    assert!(reloaded > first);
    assert_eq!(
        container_id(),
        container,
        "a source change replaced the container"
    );
    echo_works();

    // A broken change: the new runner does not start, the old one goes on serving.
    fs::write(&echo, format!("{original}\nthis is not python (\n")).unwrap();
    let reaction = next_reaction(&stdout);
    assert_eq!(reaction["action"], "restart", "{reaction}");
    assert_eq!(reaction["ok"], false, "{reaction}");
    assert!(
        reaction["error"].as_str().unwrap().contains("SyntaxError"),
        "{reaction}"
    );
    assert_eq!(
        generation(),
        reloaded,
        "the previous runner stopped serving"
    );
    echo_works();

    // Fixed again.
    fs::write(&echo, &original).unwrap();
    let reaction = next_reaction(&stdout);
    assert_eq!(reaction["ok"], true, "{reaction}");
    assert!(generation() > reloaded);

    // A change in poetry.lock's bytes: a rebuild and a new container.
    let lock = sandbox.runner().join("poetry.lock");
    let mut text = fs::read_to_string(&lock).unwrap();
    text.push_str("\n# a change in the lock's bytes\n");
    fs::write(&lock, text).unwrap();
    let reaction = next_reaction(&stdout);
    assert_eq!(reaction["action"], "rebuild", "{reaction}");
    assert_eq!(reaction["ok"], true, "{reaction}");
    assert_ne!(container_id(), container, "the container was not replaced");
    echo_works();

    // Ctrl-C stops watching; the stack stays up.
    interrupt(&child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "watch did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(healthz(HEALTH_PORT, Duration::from_secs(2)).is_ok());
    let stop = sandbox.command(&["stop"]).output().unwrap();
    assert_success(&stop);
    let _ = stderr(&stop);
}
