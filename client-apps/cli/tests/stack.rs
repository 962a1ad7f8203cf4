//! Engine-backed tests of `stigmer server` and `stigmer run` on the whole stack: a Temporal
//! dev server, the embedded stigmer-server and the agent-runner container from the image
//! `stigmer-agent-runner:test` (built by `cargo xtask ci`). They fail, never skip, when the
//! engine, the image or the Temporal CLI is missing. Failure paths are in `faults.rs`.

// The whole file is test code: its helpers panic on purpose.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    alive, assert_success, container_state, docker, median, percentile, temporal_cli, text, Names,
    Stack, IMAGE,
};

static NAMES: Names = Names {
    container: "stigmer-agent-runner-cli-test",
    health_port: 7436,
    server_port: 7437,
    temporal_port: 17433,
};

#[test]
fn stack_start_run_and_stop() {
    let stack = Stack::new(&NAMES, "lifecycle");

    let started = Instant::now();
    let start = stack.stigmer(&["server", "start"]);
    let start_time = started.elapsed();
    assert_success(&start);
    let stdout = text(&start.stdout);
    assert!(stdout.contains("✓ Stigmer is running"), "{stdout}");
    assert!(stdout.contains("localhost:17433"), "{stdout}");

    let status = stack.stigmer(&["server", "status", "--json"]);
    assert_success(&status);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["temporal"]["mode"], "managed", "{status:#}");
    assert_eq!(status["temporal"]["healthy"], true, "{status:#}");
    assert_eq!(
        status["temporal"]["process"]["state"], "running",
        "{status:#}"
    );
    assert_eq!(status["server"]["state"], "running", "{status:#}");
    assert_eq!(status["server"]["healthy"], true, "{status:#}");
    assert_eq!(status["agent_runner"]["state"], "running", "{status:#}");
    assert_eq!(status["agent_runner"]["healthy"], true, "{status:#}");
    assert_eq!(status["agent_runner"]["image_current"], true, "{status:#}");
    let memory = |component: &str| {
        status[component]["process"]["resident_bytes"]
            .as_u64()
            .or_else(|| status[component]["resident_bytes"].as_u64())
            .unwrap_or(0)
            / 1_000_000
    };
    let runner_memory = text(
        &docker(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            NAMES.container,
        ])
        .stdout,
    );

    let echo = stack.stigmer(&["run", "echo", "--input", "hi"]);
    assert_success(&echo);
    assert_eq!(text(&echo.stdout), "hi\n");
    let id = text(&echo.stderr)
        .lines()
        .find_map(|line| line.strip_prefix("Execution ID: ").map(String::from))
        .unwrap();
    // Temporal's own word, as `temporal workflow list` gives it.
    let listed = Command::new(temporal_cli())
        .args([
            "workflow",
            "list",
            "--address",
            &format!("127.0.0.1:{}", NAMES.temporal_port),
            "--query",
            &format!("WorkflowId = '{id}'"),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_success(&listed);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let listed = &listed[0];
    assert_eq!(
        listed["status"], "WORKFLOW_EXECUTION_STATUS_COMPLETED",
        "{listed:#}"
    );
    assert_eq!(listed["taskQueue"], "agent_execution_runner", "{listed:#}");
    assert_eq!(listed["type"]["name"], "ExecuteAgent", "{listed:#}");

    let diff = stack.home.join("some.diff");
    std::fs::write(
        &diff,
        "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,4 @@\n import os\n+password = \"hunter2\"\n+print(eval(input()))\n x = 1\n",
    )
    .unwrap();
    let review = stack.stigmer(&["run", "pr-reviewer", "--input-file", diff.to_str().unwrap()]);
    assert_success(&review);
    assert!(
        text(&review.stdout).contains("[secret] looks like a hard-coded password"),
        "{}",
        text(&review.stdout)
    );

    let unknown = stack.stigmer(&["run", "no-such-agent", "--input", "x"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown.stderr));
    assert!(
        text(&unknown.stderr).contains("unknown agent 'no-such-agent'"),
        "{}",
        text(&unknown.stderr)
    );
    assert!(text(&unknown.stdout).is_empty());

    let mut latencies = Vec::new();
    for _ in 0..30 {
        let run_started = Instant::now();
        let run = stack.stigmer(&["run", "echo", "--input", "hello"]);
        latencies.push(run_started.elapsed());
        assert_success(&run);
    }
    eprintln!(
        "FIGURES: `stigmer server start` (image present, stack stopped): {start_time:?}; \
         `stigmer run echo` of 30: p50 {:?}, p95 {:?} (debug build); idle memory: temporal \
         {} MB, stigmer-server {} MB, agent-runner {}",
        median(latencies.clone()),
        percentile(latencies, 0.95),
        memory("temporal"),
        memory("server"),
        runner_memory.trim()
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
    assert_success(&stack.stigmer(&["server", "logs", "--component", "agent-runner"]));
    assert_success(&stack.stigmer(&["server", "logs", "--component", "temporal"]));

    let server = stack.server_pid();
    let temporal = stack.temporal_pid();
    let container_id = std::fs::read_to_string(stack.id_file()).unwrap();
    let restart = stack.stigmer(&["server", "start", "--restart"]);
    assert_success(&restart);
    assert!(text(&restart.stdout).contains("✓ Stigmer is running"));
    assert!(!alive(server), "--restart left the old server running");
    assert!(!alive(temporal), "--restart left the old Temporal running");
    assert_ne!(
        std::fs::read_to_string(stack.id_file()).unwrap(),
        container_id
    );
    // The history survived the restart of Temporal on its SQLite file.
    let follow = stack.stigmer(&["run", "--follow", &id]);
    assert_success(&follow);
    assert_eq!(text(&follow.stdout), "hi\n");

    let stop = stack.stigmer(&["server", "stop"]);
    assert_success(&stop);
    let stderr = text(&stop.stderr);
    let order: Vec<usize> = ["agent-runner container", "stigmer-server", "Temporal"]
        .iter()
        .map(|what| {
            stderr
                .find(what)
                .unwrap_or_else(|| panic!("{what}: {stderr}"))
        })
        .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{stderr}");
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
fn a_hundred_start_stop_cycles_leak_nothing() {
    let stack = Stack::new(&NAMES, "cycles");
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
        assert_eq!(stack.processes(), Vec::<String>::new(), "cycle {cycle}");
    }
    let per_cycle = started.elapsed() / cycles;
    eprintln!("FIGURES: {cycles} start/stop cycles of the whole stack, {per_cycle:?} per cycle");
    stack.assert_nothing_left();
    let mut left: Vec<String> = std::fs::read_dir(stack.data())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // What a stack keeps on purpose: its databases, logs, workspace and lock file.
    let kept = [
        "logs",
        "stack.lock",
        "stigmer.db",
        "stigmer.db-shm",
        "stigmer.db-wal",
        "temporal.db",
        "temporal.db-shm",
        "temporal.db-wal",
        "workspace",
    ];
    assert!(
        left.iter().all(|name| kept.contains(&name.as_str())),
        "{left:?}"
    );
}

#[test]
fn workspace_and_databases_survive_restarts_and_crashes() {
    let stack = Stack::new(&NAMES, "persistence");
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
    support::kill(stack.server_pid(), 9);
    support::kill(stack.temporal_pid(), 9);
    assert!(docker(&["kill", NAMES.container]).status.success());
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
    assert_success(&stack.stigmer(&["run", "echo", "--input", "after"]));
    assert_success(&stack.stigmer(&["server", "stop"]));
}

/// This machine's addresses other than loopback, from the kernel's own table.
fn non_loopback_addresses() -> Vec<std::net::IpAddr> {
    let output = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("`ip` (iproute2) lists the machine's addresses");
    text(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            fields.find(|field| *field == "inet" || *field == "inet6")?;
            let address = fields.next()?.split('/').next()?;
            address.parse::<std::net::IpAddr>().ok()
        })
        .filter(|address| !address.is_loopback())
        .collect()
}

#[test]
fn the_stack_listens_on_loopback_only_and_runs_unprivileged() {
    let stack = Stack::new(&NAMES, "security");
    let secret = "sk-test-not-for-any-process-list";
    assert_success(&stack.stigmer_env(&["server", "start"], &[("OPENAI_API_KEY", secret)]));
    // The secret reaches the process, and no label or image layer carries it.
    let printed = docker(&["exec", NAMES.container, "printenv", "OPENAI_API_KEY"]);
    assert_eq!(text(&printed.stdout).trim(), secret);
    let labels = text(
        &docker(&[
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            NAMES.container,
        ])
        .stdout,
    );
    assert!(!labels.contains(secret), "{labels}");
    let history = text(&docker(&["history", "--no-trunc", IMAGE]).stdout);
    assert!(!history.contains(secret));
    let inspect = |format: &str| {
        text(&docker(&["inspect", "--format", format, NAMES.container]).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), "[\"ALL\"]");
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert!(inspect("{{json .HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_ne!(inspect("{{.Config.User}}").split(':').next(), Some("0"));
    // Every non-loopback address of this machine refuses every port of the stack. A machine
    // without one cannot show it, so it fails rather than passes.
    let addresses = non_loopback_addresses();
    assert!(
        !addresses.is_empty(),
        "no non-loopback address to test with"
    );
    let ports = [
        NAMES.server_port,
        NAMES.health_port,
        NAMES.temporal_port,
        NAMES.temporal_port + 10,
        NAMES.temporal_port + 11,
    ];
    for port in ports {
        let local = std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(1),
        );
        assert!(
            local.is_ok(),
            "127.0.0.1:{port} must answer for this test to mean anything"
        );
        for address in &addresses {
            let reached = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(*address, port),
                Duration::from_secs(1),
            );
            assert!(reached.is_err(), "{address}:{port} answers");
        }
    }
    assert_success(&stack.stigmer(&["server", "stop"]));
    assert_eq!(container_state(NAMES.container), None);
}
