//! Engine-backed fault tests of the stack through `stigmer`: components killed mid-execution
//! (the execution still completes with its result), taken ports and an unreachable Temporal
//! (a clear error, nothing killed, nothing left), no Docker or a wedged one, a foreign
//! container, a runner crashing at start, concurrent and interrupted starts, stale files.

// The whole file is test code: its helpers panic on purpose.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    alive, assert_success, container_state, docker, kill, signal, spawn_until, text,
    wait_with_deadline, Names, Stack, IMAGE,
};

static NAMES: Names = Names {
    container: "stigmer-agent-runner-cli-faults",
    health_port: 7536,
    server_port: 7537,
    temporal_port: 17533,
};

/// Follows an execution to its end and returns what `stigmer run` printed.
fn follow(stack: &Stack, id: &str) -> std::process::Output {
    let child = stack
        .command(&["run", "--follow", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_deadline(child, Duration::from_secs(120))
}

#[test]
fn temporal_killed_mid_execution_and_started_again_completes_it() {
    let stack = Stack::new(&NAMES, "temporal-killed");
    assert_success(&stack.stigmer(&["server", "start"]));
    let (child, id, _) = stack.run_in_background(&["run", "sleep", "--input", "3"]);
    stack.wait_until_running(&id);
    let temporal = stack.temporal_pid();
    kill(temporal, 9);
    while alive(temporal) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let restart = stack.stigmer(&["server", "start"]);
    assert_success(&restart);
    assert!(
        text(&restart.stderr).contains("stale temporal PID file"),
        "{}",
        text(&restart.stderr)
    );
    // The `stigmer run` that followed it all along sees the result.
    let output = wait_with_deadline(child, Duration::from_secs(120));
    assert_success(&output);
    assert_eq!(text(&output.stdout), "slept 3 s\n");
    assert_eq!(stack.execution(&id)["status"], "succeeded");
}

#[test]
fn a_runner_killed_mid_activity_is_retried_on_the_restarted_runner() {
    let stack = Stack::new(&NAMES, "runner-killed");
    assert_success(&stack.stigmer(&["server", "start"]));
    let (child, id, _) = stack.run_in_background(&["run", "sleep", "--input", "4"]);
    stack.wait_until_running(&id);
    let killed_at = Instant::now();
    assert!(docker(&["kill", NAMES.container]).status.success());
    // The exited container is replaced by a fresh runner.
    assert_success(&stack.stigmer(&["server", "start"]));
    let output = wait_with_deadline(child, Duration::from_secs(120));
    assert_success(&output);
    assert_eq!(text(&output.stdout), "slept 4 s\n");
    let execution = stack.execution(&id);
    assert_eq!(execution["attempts"], 2, "{execution}");
    // A heartbeat timeout of seconds, not the activity's start-to-close timeout.
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(30), "retried after {took:?}");
    eprintln!("FIGURES: runner killed mid-activity, finished on the new runner {took:?} later");
}

#[test]
fn a_server_killed_mid_execution_loses_nothing() {
    let stack = Stack::new(&NAMES, "server-killed");
    assert_success(&stack.stigmer(&["server", "start"]));
    let (child, id, lines) = stack.run_in_background(&["run", "sleep", "--input", "2"]);
    stack.wait_until_running(&id);
    // Ctrl-C stops following, never the execution.
    signal(&child, 2);
    let interrupted = wait_with_deadline(child, Duration::from_secs(10));
    assert_eq!(interrupted.status.code(), Some(130));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.join("\n")
            .contains(&format!("stigmer run --follow {id}")),
        "{rest:?}"
    );
    let server = stack.server_pid();
    kill(server, 9);
    while alive(server) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let restart = stack.stigmer(&["server", "start"]);
    assert_success(&restart);
    assert!(
        text(&restart.stderr).contains("stale stigmer-server PID file"),
        "{}",
        text(&restart.stderr)
    );
    let output = follow(&stack, &id);
    assert_success(&output);
    assert_eq!(text(&output.stdout), "slept 2 s\n");
}

#[test]
fn a_temporal_port_held_by_another_process_is_reported_and_left_alone() {
    let stack = Stack::new(&NAMES, "port-taken");
    let holder = std::net::TcpListener::bind(("127.0.0.1", NAMES.temporal_port)).unwrap();
    let start = stack.stigmer(&["server", "start"]);
    assert!(!start.status.success());
    let stderr = text(&start.stderr);
    assert!(
        stderr.contains(&format!("port {},", NAMES.temporal_port)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "the holder is this test process ({}): {stderr}",
        std::process::id()
    );
    assert!(stderr.contains("STIGMER_TEMPORAL_PORT"), "{stderr}");
    stack.assert_nothing_left();
    // Still ours, still listening.
    assert!(std::net::TcpStream::connect(("127.0.0.1", NAMES.temporal_port)).is_ok());
    drop(holder);
}

#[test]
fn an_unreachable_temporal_address_is_reported_within_seconds() {
    let stack = Stack::new(&NAMES, "temporal-nowhere");
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let start = stack.stigmer_env(
        &["server", "start"],
        &[("STIGMER_TEMPORAL_ADDRESS", &address)],
    );
    let took = started.elapsed();
    assert!(!start.status.success());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let stderr = text(&start.stderr);
    assert!(stderr.contains("Temporal does not answer"), "{stderr}");
    assert!(stderr.contains(&address), "{stderr}");
    stack.assert_nothing_left();
}

#[test]
fn without_docker_nothing_is_written() {
    let stack = Stack::new(&NAMES, "docker-missing");
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
fn a_wedged_docker_is_given_up_on_with_the_command_named() {
    let stack = Stack::new(&NAMES, "docker-wedged");
    // A `docker` that answers the engine check, then hangs on everything else, as a daemon
    // stuck on a lock does; it is first on PATH for the child only.
    let bin = stack.home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("docker");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = info ]; then echo 'FAKE:ENGINE|20.10.24|linux|x86_64|Debian'; exit 0; fi\nexec sleep 600\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let start = stack.stigmer_env(
        &["server", "start"],
        &[("PATH", &path), ("STIGMER_DOCKER_TIMEOUT_SCALE", "0.05")],
    );
    let took = started.elapsed();
    assert!(!start.status.success());
    assert!(took < Duration::from_secs(10), "{took:?}");
    let stderr = text(&start.stderr);
    assert!(
        stderr.contains(
            "`docker image inspect stigmer-agent-runner:test` did not finish within 1.5 s"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("docker info"), "{stderr}");
    assert!(!stack.data().exists(), "the data directory was written");
}

#[test]
fn missing_image_names_the_build_command_and_leaves_nothing() {
    let stack = Stack::new(&NAMES, "no-image");
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

/// Removes the foreign container even when the test fails.
struct ForeignContainer;

impl Drop for ForeignContainer {
    fn drop(&mut self) {
        docker(&["rm", "--force", NAMES.container]);
    }
}

#[test]
fn foreign_container_with_our_name_is_left_alone() {
    let stack = Stack::new(&NAMES, "foreign");
    let created = docker(&["create", "--name", NAMES.container, IMAGE]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let _foreign = ForeignContainer;

    let start = stack.stigmer(&["server", "start"]);
    assert!(!start.status.success());
    assert!(
        text(&start.stderr).contains("not created by Stigmer"),
        "{}",
        text(&start.stderr)
    );
    assert_eq!(container_state(NAMES.container).as_deref(), Some("created"));
    // What the failed start brought up before the runner went again.
    assert_eq!(stack.processes(), Vec::<String>::new());
    assert!(!stack.server_pid_file().exists());
    assert!(!stack.temporal_pid_file().exists());

    let stop = stack.stigmer(&["server", "stop"]);
    assert_success(&stop);
    assert!(
        text(&stop.stderr).contains("not created by Stigmer"),
        "{}",
        text(&stop.stderr)
    );
    assert_eq!(container_state(NAMES.container).as_deref(), Some("created"));
}

#[test]
fn a_runner_that_exits_at_start_is_reported_with_its_exit_code_and_logs() {
    let stack = Stack::new(&NAMES, "crash");
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
    let stack = Stack::new(&NAMES, "concurrent");
    let spawn = || {
        stack
            .command(&["server", "start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let first = wait_with_deadline(first, Duration::from_secs(90));
    let second = wait_with_deadline(second, Duration::from_secs(90));
    assert_success(&first);
    assert_success(&second);
    let both = format!("{}{}", text(&first.stdout), text(&second.stdout));
    assert!(
        both.contains("already running"),
        "one of them must find the other's stack: {both}"
    );
    assert_eq!(stack.containers().len(), 1);
    assert_eq!(stack.processes().len(), 2, "{:?}", stack.processes());
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}

#[test]
fn killed_starts_and_stale_files_are_recovered() {
    let stack = Stack::new(&NAMES, "recover");
    // SIGKILL while waiting for the stack: Temporal, server and container are left running.
    let (child, _) = spawn_until(
        stack.command(&["server", "start"]),
        "Waiting for the stack to answer",
    );
    signal(&child, 9);
    let _ = wait_with_deadline(child, Duration::from_secs(10));
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(stack.containers().len(), 1);
    assert_eq!(stack.processes().len(), 2);

    // A container created but never started (a crash between create and start) is replaced.
    assert_success(&stack.stigmer(&["server", "stop"]));
    let data_dir = stigmer_stack::stack::DataDir::at(stack.data());
    let settings = stigmer_stack::runner::spec::RunnerSettings {
        image: IMAGE.to_string(),
        container_name: NAMES.container.to_string(),
        health_port: NAMES.health_port,
        backend_endpoint: format!("localhost:{}", NAMES.server_port),
        ..Default::default()
    };
    let spec = stigmer_stack::runner::spec::ContainerSpec::agent_runner(
        &settings,
        &data_dir,
        stigmer_stack::runner::spec::HostUser::current(),
    );
    let mut create = vec!["create".to_string()];
    create.extend(spec.run_args().into_iter().skip(2));
    assert_success(&Command::new("docker").args(&create).output().unwrap());
    assert_eq!(container_state(NAMES.container).as_deref(), Some("created"));
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(container_state(NAMES.container).as_deref(), Some("running"));

    // Corrupt and stale files, and a container removed behind the tool's back.
    assert_success(&stack.stigmer(&["server", "stop"]));
    std::fs::write(stack.server_pid_file(), "not a pid\n").unwrap();
    std::fs::write(stack.temporal_pid_file(), "1 12345\n").unwrap();
    std::fs::write(stack.id_file(), "../../etc/passwd\n").unwrap();
    let start = stack.stigmer(&["server", "start"]);
    assert_success(&start);
    // PID 1 with a made-up start time: another program's PID, never signalled.
    assert!(alive(1));
    for component in ["stigmer-server", "temporal"] {
        assert!(
            text(&start.stderr).contains(&format!("stale {component} PID file")),
            "{component}: {}",
            text(&start.stderr)
        );
    }
    let id = std::fs::read_to_string(stack.id_file()).unwrap();
    let container = id.split_whitespace().last().unwrap().to_string();
    assert!(docker(&["rm", "--force", &container]).status.success());
    assert_success(&stack.stigmer(&["server", "start"]));
    assert_eq!(container_state(NAMES.container).as_deref(), Some("running"));
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}

#[test]
fn ctrl_c_during_start_stops_cleanly_and_twice_forces() {
    let stack = Stack::new(&NAMES, "ctrl-c");
    let (child, _) = spawn_until(
        stack.command(&["server", "start"]),
        "Waiting for the stack to answer",
    );
    signal(&child, 2);
    let stopped = wait_with_deadline(child, Duration::from_secs(30));
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
    assert_eq!(stack.containers().len(), 1);
    assert_success(&stack.stigmer(&["server", "stop"]));
    stack.assert_nothing_left();
}
