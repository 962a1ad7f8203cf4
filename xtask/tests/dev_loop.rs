//! Engine-backed tests of `cargo xtask dev` and its parts, against the real Docker engine.
//!
//! They run the built `xtask` binary on a copy of the agent-runner service in a temporary
//! directory, with a data directory, image tag, container name and health port of their own,
//! so they never touch a developer's stack. They share that container name, so they take
//! turns through one lock. Without an engine they fail: nothing here is skipped.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use support::{assert_success, docker, stderr, take_turn, RunnerCopy, StackNames};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

const IMAGE: &str = "stigmer-agent-runner:xtask-test";
const CONTAINER: &str = "stigmer-agent-runner-xtask-test";
const HEALTH_PORT: u16 = 7335;
const NAMES: StackNames = StackNames {
    image: IMAGE,
    container: CONTAINER,
    health_port: HEALTH_PORT,
    server_port: 7338,
    temporal_port: 17633,
};

/// A copy of the runner service and a data directory; the stack is stopped on drop.
struct Sandbox {
    copy: RunnerCopy,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let copy = RunnerCopy::new("xtask-test", name);
        // A container left by an earlier, interrupted test run would make every test here fail.
        let _ = docker(&["rm", "--force", CONTAINER]);
        Sandbox { copy }
    }

    fn runner(&self) -> PathBuf {
        self.copy.runner()
    }

    fn data_dir(&self) -> PathBuf {
        self.copy.data_dir()
    }

    fn xtask(&self, args: &[&str]) -> Output {
        self.xtask_with(args, &[])
    }

    fn xtask_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("xtask runs")
    }

    fn command(&self, args: &[&str]) -> Command {
        self.copy.xtask(&NAMES, args)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.xtask(&["stop"]);
    }
}

fn inspect(reference: &str, format: &str) -> Option<String> {
    let output = docker(&["inspect", "--format", format, reference]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn container_id() -> Option<String> {
    inspect(CONTAINER, "{{.Id}}")
}

fn image_layers() -> Vec<String> {
    let json = inspect(IMAGE, "{{json .RootFS.Layers}}").expect("the image exists");
    serde_json::from_str(&json).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn dev_from_nothing_then_no_change_touch_status_smoke_and_stop() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("fresh");

    let first = sandbox.xtask(&["dev"]);
    assert_success(&first);
    assert!(
        stderr(&first).contains("Smoke checks"),
        "{}",
        stderr(&first)
    );
    let id = container_id().expect("the container runs");
    assert_eq!(
        inspect(
            CONTAINER,
            "{{index .Config.Labels \"dev.stigmer.managed\"}}"
        )
        .as_deref(),
        Some("true")
    );
    assert_eq!(
        inspect(CONTAINER, "{{.HostConfig.NetworkMode}}").as_deref(),
        Some("host")
    );

    let second = sandbox.xtask(&["dev"]);
    assert_success(&second);
    let text = stderr(&second);
    assert!(text.contains("agent-runner image: up to date"), "{text}");
    assert!(text.contains("left alone"), "{text}");
    assert!(!text.contains("Building the agent-runner image"), "{text}");
    assert_eq!(
        container_id().as_deref(),
        Some(id.as_str()),
        "the container was restarted"
    );

    // Touched without a change in content: new modification times, same bytes.
    let later = SystemTime::now() + Duration::from_secs(60);
    for file in [
        "poetry.lock",
        "pyproject.toml",
        "Dockerfile",
        "src/agent_runner/__init__.py",
    ] {
        fs::File::options()
            .write(true)
            .open(sandbox.runner().join(file))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
    let touched = sandbox.xtask(&["dev"]);
    assert_success(&touched);
    assert!(
        stderr(&touched).contains("up to date"),
        "{}",
        stderr(&touched)
    );
    assert!(
        !stderr(&touched).contains("Building the agent-runner image"),
        "{}",
        stderr(&touched)
    );
    assert_eq!(
        container_id().as_deref(),
        Some(id.as_str()),
        "a touch restarted the container"
    );

    let status = sandbox.xtask(&["status", "--json"]);
    assert_success(&status);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["image"]["current"], true, "{report}");
    assert_eq!(report["agent_runner"]["state"], "running", "{report}");
    assert_eq!(report["agent_runner"]["healthy"], true, "{report}");
    assert_eq!(report["agent_runner"]["image_current"], true, "{report}");
    assert_eq!(report["temporal"]["healthy"], true, "{report}");
    assert_eq!(report["server"]["healthy"], true, "{report}");

    assert_success(&sandbox.xtask(&["smoke"]));
    let logs = sandbox.xtask(&["logs", "--tail", "20"]);
    assert_success(&logs);
    // docker logs keeps the container's streams apart; the runner logs to stderr.
    let both = format!("{}{}", String::from_utf8_lossy(&logs.stdout), stderr(&logs));
    assert!(both.contains("Stigmer Agent Runner"), "{both}");

    let stop = sandbox.xtask(&["stop"]);
    assert_success(&stop);
    assert_eq!(
        container_id(),
        None,
        "the container is still there after stop"
    );
    assert!(!sandbox
        .data_dir()
        .join("agent-runner-container.id")
        .exists());
    let again = sandbox.xtask(&["stop"]);
    assert_success(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("was not running"));
}

#[test]
fn a_mounted_source_change_reloads_the_runner_without_a_build() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("mounted");
    assert_success(&sandbox.xtask(&["dev"]));
    let container = container_id().unwrap();
    let image = inspect(CONTAINER, "{{.Image}}").unwrap();
    assert_eq!(
        inspect(CONTAINER, "{{index .Config.Labels \"dev.stigmer.mode\"}}").as_deref(),
        Some("mounted")
    );
    let health = || stigmer_stack::http::healthz(HEALTH_PORT, Duration::from_secs(2)).unwrap();
    let before = health()["generation"].as_u64().unwrap();

    let file = sandbox.runner().join("src/agent_runner/agents/echo.py");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("\n# a source-only change\n");
    fs::write(&file, text).unwrap();
    let reloaded = sandbox.xtask(&["dev"]);
    assert_success(&reloaded);
    let said = stderr(&reloaded);
    assert!(said.contains("agent-runner image: up to date"), "{said}");
    assert!(said.contains("Reloading the runner"), "{said}");
    assert!(!said.contains("Building the agent-runner image"), "{said}");
    assert_eq!(
        container_id().unwrap(),
        container,
        "the container was replaced"
    );
    assert_eq!(inspect(CONTAINER, "{{.Image}}").unwrap(), image);
    assert!(health()["generation"].as_u64().unwrap() > before);
    // The source in the container is the working tree's, read-only.
    let seen = docker(&[
        "exec",
        CONTAINER,
        "tail",
        "-n",
        "1",
        "/app/agent_runner/agents/echo.py",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        "# a source-only change"
    );
    let written = docker(&["exec", CONTAINER, "touch", "/app/agent_runner/x"]);
    assert!(!written.status.success(), "the mounted source is writable");

    // Nothing changed since: left alone, no second reload.
    let again = sandbox.xtask(&["dev"]);
    assert_success(&again);
    assert!(!stderr(&again).contains("Reloading"), "{}", stderr(&again));
}

#[test]
fn source_change_rebuilds_the_image_without_reinstalling_dependencies() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("source");
    assert_success(&sandbox.xtask(&["dev", "--image"]));
    let old_id = container_id().unwrap();
    let old_layers = image_layers();

    let file = sandbox.runner().join("src/agent_runner/__init__.py");
    let mut text = fs::read_to_string(&file).unwrap();
    // Unique to this run: BuildKit keys its cache by content, so an edit made before (by an
    // earlier run) could come back from that cache on top of other layers than today's.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    text.push_str(&format!("\n# a source-only change {nanos}\n"));
    fs::write(&file, text).unwrap();
    let rebuilt = sandbox.xtask(&["dev", "--image"]);
    assert_success(&rebuilt);
    let text = stderr(&rebuilt);
    assert!(text.contains("src/ changed:"), "{text}");
    assert!(
        text.contains("replaced the agent-runner container"),
        "{text}"
    );
    assert_ne!(container_id().unwrap(), old_id);

    // Every file-system layer but the source's is reused: the source is the last one
    // (metadata instructions add no layer).
    let new_layers = image_layers();
    assert_eq!(new_layers.len(), old_layers.len());
    let shared = new_layers
        .iter()
        .zip(&old_layers)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        shared,
        new_layers.len() - 1,
        "only {shared} of {} layers reused: {old_layers:?} then {new_layers:?}\n{text}",
        new_layers.len()
    );
    assert_ne!(
        new_layers.last(),
        old_layers.last(),
        "the source layer is new"
    );
    // The dependency install step itself came from the cache (the legacy builder says
    // `Using cache` on the line after the step, BuildKit `CACHED`).
    let lines: Vec<&str> = text.lines().collect();
    let install = lines
        .iter()
        .position(|line| line.contains("pip") && line.contains("--require-hashes"))
        .expect("the build output names the dependency install step");
    let answer = lines[install + 1..]
        .iter()
        .find(|line| !line.trim().is_empty())
        .expect("a line follows the dependency install step");
    assert!(
        answer.contains("Using cache") || answer.contains("CACHED"),
        "the dependency install ran again: {answer}\n{text}"
    );
}

#[test]
fn poetry_lock_change_rebuilds_and_relabels() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("lock");
    assert_success(&sandbox.xtask(&["dev"]));
    let lock = sandbox.runner().join("poetry.lock");
    let before = fs::read(&lock).unwrap();
    let mut after = before.clone();
    after.extend_from_slice(b"\n# a change in the lock's bytes\n");
    fs::write(&lock, &after).unwrap();

    let rebuilt = sandbox.xtask(&["dev"]);
    assert_success(&rebuilt);
    let (old, new) = (sha256_hex(&before), sha256_hex(&after));
    let expected = format!("poetry.lock changed: {}… → {}…", &old[..4], &new[..4]);
    assert!(
        stderr(&rebuilt).contains(&expected),
        "expected `{expected}` in:\n{}",
        stderr(&rebuilt)
    );
    let label = inspect(
        IMAGE,
        "{{index .Config.Labels \"dev.stigmer.poetry-lock.sha256\"}}",
    );
    assert_eq!(label.as_deref(), Some(new.as_str()));
}

#[test]
fn configuration_change_replaces_the_container() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("config");
    assert_success(&sandbox.xtask(&["dev"]));
    let old_id = container_id().unwrap();
    let changed = sandbox.xtask_with(&["dev"], &[("STIGMER_LOG_LEVEL", "DEBUG")]);
    assert_success(&changed);
    assert!(
        stderr(&changed).contains("its configuration changed"),
        "{}",
        stderr(&changed)
    );
    assert_ne!(container_id().unwrap(), old_id);
    let env = inspect(CONTAINER, "{{json .Config.Env}}").unwrap();
    assert!(env.contains("LOG_LEVEL=DEBUG"), "{env}");
}

#[test]
fn a_foreign_container_with_our_name_is_refused_and_left_alone() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("foreign");
    assert_success(&sandbox.xtask(&["dev"]));
    assert_success(&sandbox.xtask(&["stop"]));
    let created = docker(&["create", "--name", CONTAINER, IMAGE]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let foreign_id = container_id().unwrap();

    // `dev` and `logs` refuse it; `stop` stops the rest of the stack and reports it.
    for (command, refuses) in [("dev", true), ("logs", true), ("stop", false)] {
        let refused = sandbox.xtask(&[command]);
        assert_eq!(
            !refused.status.success(),
            refuses,
            "{command}: {}",
            stderr(&refused)
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&refused.stdout),
            stderr(&refused)
        );
        assert!(said.contains("not created by Stigmer"), "{command}: {said}");
        assert_eq!(
            container_id().as_deref(),
            Some(foreign_id.as_str()),
            "{command} touched the foreign container"
        );
    }
    assert!(docker(&["rm", "--force", CONTAINER]).status.success());
}

#[test]
fn an_unreachable_engine_gets_the_docker_message_fast() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("no-engine");
    let started = Instant::now();
    let refused = sandbox.xtask_with(
        &["dev"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("Docker is not running. Agent-runner requires Docker."),
        "{}",
        stderr(&refused)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !sandbox.data_dir().exists(),
        "something was written without an engine"
    );

    let no_docker = sandbox.xtask_with(&["status"], &[("PATH", "/nonexistent")]);
    assert!(!no_docker.status.success());
    assert!(
        stderr(&no_docker).contains("Docker is not running"),
        "{}",
        stderr(&no_docker)
    );
}

// ---- Faults and bad input (issue 5) ----

fn edit(path: &Path, change: impl FnOnce(String) -> String) {
    let text = fs::read_to_string(path).unwrap();
    fs::write(path, change(text)).unwrap();
}

/// Starts `xtask dev --image` (a source change rebuilds the image) and returns once its
/// stderr shows `needle`.
fn dev_until(sandbox: &Sandbox, needle: &str) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = sandbox
        .command(&["dev", "--image"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let found = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains(needle));
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    if !found {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{needle}` never appeared");
    }
    child
}

fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for(mut child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn interrupted_and_killed_builds_are_recovered_by_the_next_run() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("interrupt");
    // Image mode: the source is inside the image, so editing it means a build to interrupt.
    assert_success(&sandbox.xtask(&["dev", "--image"]));
    let old_image = inspect(IMAGE, "{{.Id}}").unwrap();
    let source = sandbox.runner().join("src/agent_runner/__init__.py");

    // Ctrl-C during the build: docker cancels it, the tool stops with 130, the image is untouched.
    edit(&source, |text| text + "\n# interrupted change\n");
    let child = dev_until(&sandbox, "Building the agent-runner image");
    send(&child, "INT");
    assert_eq!(wait_for(child, Duration::from_secs(30)).code(), Some(130));
    assert_eq!(
        inspect(IMAGE, "{{.Id}}").as_deref(),
        Some(old_image.as_str())
    );

    // A second Ctrl-C forces the exit at once.
    let child = dev_until(&sandbox, "Building the agent-runner image");
    send(&child, "INT");
    send(&child, "INT");
    assert_eq!(wait_for(child, Duration::from_secs(5)).code(), Some(130));

    // SIGKILL during the build, then a plain run.
    let child = dev_until(&sandbox, "Building the agent-runner image");
    send(&child, "KILL");
    let _ = wait_for(child, Duration::from_secs(5));
    let recovered = sandbox.xtask(&["dev", "--image"]);
    assert_success(&recovered);
    assert!(
        stderr(&recovered).contains("Smoke checks"),
        "{}",
        stderr(&recovered)
    );

    // SIGKILL while waiting for the container: the next run checks the container it left.
    assert_success(&sandbox.xtask(&["stop"]));
    let child = dev_until(&sandbox, "Waiting for the stack to answer");
    send(&child, "KILL");
    let _ = wait_for(child, Duration::from_secs(5));
    let after = sandbox.xtask(&["dev", "--image"]);
    assert_success(&after);
    assert!(
        stderr(&after).contains("Smoke checks"),
        "the container left by the killed run was not checked: {}",
        stderr(&after)
    );
}

#[test]
fn two_dev_runs_at_once_share_one_stack() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("concurrent");
    assert_success(&sandbox.xtask(&["stop"]));
    let spawn = || {
        sandbox
            .command(&["dev"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert_success(&first);
    assert_success(&second);
    let both = format!("{}{}", stderr(&first), stderr(&second));
    assert!(both.contains("waiting for cargo xtask dev"), "{both}");
    assert!(both.contains("left alone"), "{both}");
    assert!(container_id().is_some());
}

#[test]
fn bad_inputs_get_precise_errors_and_leave_the_running_stack_alone() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("bad-input");
    assert_success(&sandbox.xtask(&["dev"]));
    let id = container_id().unwrap();
    let runner = sandbox.runner();
    let lock = runner.join("poetry.lock");
    let lock_bytes = fs::read(&lock).unwrap();
    let pyproject = runner.join("pyproject.toml");
    let pyproject_text = fs::read_to_string(&pyproject).unwrap();

    let expect_failure = |what: &str, expected: &str, env: &[(&str, &str)], args: &[&str]| {
        let output = sandbox.xtask_with(args, env);
        assert!(!output.status.success(), "{what} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{what}: expected `{expected}` in:\n{}",
            stderr(&output)
        );
        assert_eq!(
            container_id().as_deref(),
            Some(id.as_str()),
            "{what} touched the running container"
        );
    };

    fs::remove_file(&lock).unwrap();
    expect_failure(
        "a missing poetry.lock",
        "poetry.lock: the agent-runner image cannot be built without it",
        &[],
        &["dev"],
    );
    fs::write(&lock, "[[package]\nthis is not toml").unwrap();
    expect_failure(
        "a corrupt poetry.lock",
        "poetry.lock is not a valid Poetry lock file",
        &[],
        &["dev"],
    );
    fs::write(&lock, &lock_bytes).unwrap();
    fs::write(
        &pyproject,
        pyproject_text.replace(
            "\"python-multipart (>=0.0.20,<0.1)\",",
            "\"python-multipart (>=0.0.20,<0.1)\", \"idna (>=3)\",",
        ),
    )
    .unwrap();
    expect_failure(
        "a poetry.lock older than pyproject.toml",
        "poetry.lock is out of date with pyproject.toml",
        &[],
        &["dev"],
    );
    fs::write(&pyproject, &pyproject_text).unwrap();
    let dockerfile = runner.join("Dockerfile");
    let dockerfile_text = fs::read(&dockerfile).unwrap();
    fs::remove_file(&dockerfile).unwrap();
    expect_failure(
        "a missing Dockerfile",
        "Dockerfile: the agent-runner image cannot be built without it",
        &[],
        &["dev"],
    );
    fs::write(&dockerfile, dockerfile_text).unwrap();
    expect_failure(
        "a port out of range",
        "STIGMER_RUNNER_HEALTH_PORT must be a port number from 1 to 65535",
        &[("STIGMER_RUNNER_HEALTH_PORT", "70000")],
        &["dev"],
    );
    let unknown = sandbox.xtask(&["dev", "--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("--no-such-flag"));

    // With every input restored, the stack is still the one that ran before.
    let fine = sandbox.xtask(&["dev"]);
    assert_success(&fine);
    assert!(stderr(&fine).contains("up to date"), "{}", stderr(&fine));
    assert_eq!(container_id().as_deref(), Some(id.as_str()));
}

#[test]
fn the_upload_endpoint_refuses_escapes_huge_and_malformed_bodies() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("uploads");
    assert_success(&sandbox.xtask(&["dev"]));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{HEALTH_PORT}").parse().unwrap();
    let post = |content_type: &str, body: &[u8]| {
        stigmer_stack::http::post(
            addr,
            "/v1/uploads",
            stigmer_stack::http::Body {
                content_type,
                bytes: body,
            },
            Duration::from_secs(10),
        )
        .unwrap()
    };
    for escape in ["../escape.txt", "/etc/escape.txt", "a/../../escape.txt"] {
        let (content_type, body) = stigmer_stack::http::multipart_file("b", "file", escape, b"x");
        let response = post(&content_type, &body);
        assert_eq!(response.status, 400, "{escape}: {}", response.text());
    }
    assert!(!sandbox.data_dir().join("escape.txt").exists());
    let (content_type, huge) =
        stigmer_stack::http::multipart_file("b", "file", "huge.bin", &vec![b'x'; 11 * 1024 * 1024]);
    assert_eq!(post(&content_type, &huge).status, 413);
    assert!(!sandbox.data_dir().join("workspace/huge.bin").exists());
    assert_eq!(
        post("multipart/form-data; boundary=b", b"--b\r\nnot a part").status,
        400
    );
    assert_eq!(post("application/json", b"{}").status, 400);
    // The service is still there for the next request.
    assert_success(&sandbox.xtask(&["smoke"]));
}

#[test]
fn secrets_never_reach_an_image_layer_or_label() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("secrets");
    let secret = "sk-test-secret-for-layers";
    fs::write(
        sandbox.runner().join(".env"),
        format!("OPENAI_API_KEY={secret}\n"),
    )
    .unwrap();
    edit(
        &sandbox.runner().join("src/agent_runner/__init__.py"),
        |text| text + "\n# forces a build\n",
    );
    let built = sandbox.xtask_with(&["dev"], &[("OPENAI_API_KEY", secret)]);
    assert_success(&built);
    let history =
        String::from_utf8_lossy(&docker(&["history", "--no-trunc", IMAGE]).stdout).into_owned();
    assert!(!history.contains(secret));
    let image = String::from_utf8_lossy(&docker(&["image", "inspect", IMAGE]).stdout).into_owned();
    assert!(!image.contains(secret));
    let labels = inspect(CONTAINER, "{{json .Config.Labels}}").unwrap();
    assert!(!labels.contains(secret));
    let files = docker(&[
        "exec",
        CONTAINER,
        "sh",
        "-c",
        "grep -rl sk-test-secret /app /opt || true",
    ]);
    assert!(String::from_utf8_lossy(&files.stdout).trim().is_empty());
    // It reaches the service itself.
    let env = docker(&["exec", CONTAINER, "printenv", "OPENAI_API_KEY"]);
    assert_eq!(String::from_utf8_lossy(&env.stdout).trim(), secret);
}
