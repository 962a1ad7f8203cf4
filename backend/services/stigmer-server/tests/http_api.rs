//! End-to-end tests of the HTTP contract against the real binary: the happy path, long polls,
//! error shapes, lease expiry, a SIGKILL and restart on the same data directory, graceful
//! shutdown, and the refusal of a non-loopback listen address.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use common::{Server, TestDir};

fn events(server: &Server, id: &str, after: i64, wait_seconds: u64) -> Result<Value> {
    let response = server.get(&format!(
        "/v1/executions/{id}/events?after={after}&wait_seconds={wait_seconds}"
    ))?;
    response.expect_status(200)?;
    response.json()
}

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|event| event["kind"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_execution_goes_from_create_to_result() -> Result<()> {
    let dir = TestDir::new("happy")?;
    let server = Server::start(&dir.path, &[])?;
    let health = server.get("/healthz")?;
    health.expect_status(200)?;
    assert_eq!(health.json()?, json!({"status": "ok", "version": "0.1.0"}));

    let created = server.post(
        "/v1/executions",
        &json!({"agent": "echo", "input": "hello"}),
    )?;
    created.expect_status(201)?;
    let created = created.json()?;
    let id = created["id"].as_str().context("id")?.to_owned();
    assert!(id.starts_with("exec-") && id.len() == 5 + 26, "{id}");
    assert_eq!(created["agent"], "echo");
    assert_eq!(created["status"], "queued");

    let task = server
        .poll("runner-1", 5)?
        .context("a task is handed out")?;
    assert_eq!(task["execution_id"], id.as_str());
    assert_eq!(task["agent"], "echo");
    assert_eq!(task["input"], "hello");
    assert_eq!(task["lease_seconds"], 30);
    assert_eq!(task["attempt"], 1);
    let lease_id = task["lease_id"].as_str().context("lease_id")?.to_owned();
    assert_eq!(
        server.poll("runner-2", 0)?,
        None,
        "a leased task is not handed out twice"
    );

    let running = server.get(&format!("/v1/executions/{id}"))?.json()?;
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 1);

    server
        .post(
            &format!("/v1/executions/{id}/events"),
            &json!({"lease_id": lease_id, "kind": "progress", "message": "working"}),
        )?
        .expect_status(204)?;
    server
        .post(
            &format!("/v1/executions/{id}/heartbeat"),
            &json!({"lease_id": lease_id}),
        )?
        .expect_status(204)?;
    let completion =
        json!({"lease_id": lease_id, "status": "succeeded", "result": "HELLO", "error": null});
    let complete_path = format!("/v1/executions/{id}/complete");
    server
        .post(&complete_path, &completion)?
        .expect_status(204)?;
    server
        .post(&complete_path, &completion)?
        .expect_status(204)
        .context("completing twice with the same lease and status is idempotent")?;
    let conflicting = server.post(
        &complete_path,
        &json!({"lease_id": lease_id, "status": "failed", "error": "x"}),
    )?;
    conflicting.expect_status(409)?;

    let all = events(&server, &id, 0, 0)?;
    assert_eq!(kinds(&all), ["status", "status", "progress", "result"]);
    assert_eq!(all["status"], "succeeded");
    assert_eq!(all["done"], true);
    let last = &all["events"][3];
    assert_eq!(last["message"], "HELLO");
    assert_eq!(last["seq"], 4);
    assert!(last["at"].as_str().context("at")?.ends_with('Z'));

    let finished = server.get(&format!("/v1/executions/{id}"))?.json()?;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["result"], "HELLO");
    assert_eq!(finished["error"], Value::Null);
    assert_eq!(finished["input"], "hello");
    for field in ["created_at", "updated_at"] {
        let time = finished[field].as_str().context("time")?;
        assert!(time.len() == 24 && time.ends_with('Z'), "{field}: {time}");
    }

    // A done execution answers a long poll at once, even with nothing new.
    let started = Instant::now();
    let after_all = events(&server, &id, 4, 30)?;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (kinds(&after_all).len(), &after_all["done"]),
        (0, &json!(true))
    );
    Ok(())
}

#[test]
fn long_polls_wake_when_something_arrives() -> Result<()> {
    let dir = TestDir::new("long-poll")?;
    let server = Server::start(&dir.path, &[])?;
    let addr = server.addr;

    // A runner waiting on an empty queue gets the execution created while it waits.
    let waiting_runner = std::thread::spawn(move || {
        let started = Instant::now();
        let response = common::request(
            addr,
            "POST",
            "/v1/task-queues/agent_execution_runner/poll",
            Some(br#"{"runner_id": "r", "wait_seconds": 20}"#),
        );
        (response, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let id = server.create_execution("echo", "x")?;
    let (response, waited) = waiting_runner
        .join()
        .map_err(|_| anyhow::anyhow!("panic"))?;
    let task = response?;
    task.expect_status(200)?;
    assert_eq!(task.json()?["execution_id"], id.as_str());
    assert!(
        waited < Duration::from_secs(5),
        "runner poll waited {waited:?}"
    );
    let lease_id = task.json()?["lease_id"]
        .as_str()
        .context("lease")?
        .to_owned();

    // A client waiting for events after the last one gets the runner's next event.
    let seen = events(&server, &id, 0, 0)?;
    let last_seq = seen["events"].as_array().context("events")?.len() as i64;
    let path = format!("/v1/executions/{id}/events?after={last_seq}&wait_seconds=20");
    let waiting_client = std::thread::spawn(move || {
        let started = Instant::now();
        (common::request(addr, "GET", &path, None), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    server
        .post(
            &format!("/v1/executions/{id}/events"),
            &json!({"lease_id": lease_id, "kind": "progress", "message": "half way"}),
        )?
        .expect_status(204)?;
    let (response, waited) = waiting_client
        .join()
        .map_err(|_| anyhow::anyhow!("panic"))?;
    let page = response?.json()?;
    assert!(
        waited < Duration::from_secs(5),
        "event poll waited {waited:?}"
    );
    assert_eq!(page["events"][0]["message"], "half way");
    assert_eq!(page["events"][0]["seq"], last_seq + 1);
    assert_eq!(page["done"], false);

    // With nothing arriving, the wait is honoured and answered with the unchanged state.
    let started = Instant::now();
    let quiet = events(&server, &id, last_seq + 1, 1)?;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(kinds(&quiet).len(), 0);
    let started = Instant::now();
    assert_eq!(server.poll("r", 1)?, None);
    assert!(started.elapsed() >= Duration::from_millis(900));
    Ok(())
}

#[test]
fn bad_requests_get_json_errors() -> Result<()> {
    let dir = TestDir::new("errors")?;
    let server = Server::start(&dir.path, &[])?;
    let expect_error =
        |status: u16, method: &str, path: &str, body: Option<&str>, needle: &str| -> Result<()> {
            let response = server.request(method, path, body)?;
            response.expect_status(status)?;
            let message = response.error_message()?;
            ensure!(
                message.contains(needle),
                "{method} {path}: {message:?} does not mention {needle:?}"
            );
            Ok(())
        };

    let oversized = format!(
        r#"{{"agent": "echo", "input": "{}"}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    expect_error(413, "POST", "/v1/executions", Some(&oversized), "1 MiB")?;
    let too_long_input = format!(
        r#"{{"agent": "echo", "input": "{}"}}"#,
        "x".repeat(512 * 1024 + 1)
    );
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some(&too_long_input),
        "512 KiB",
    )?;
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some("{not json"),
        "invalid JSON",
    )?;
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some(r#"{"agent": "echo"}"#),
        "missing field `input`",
    )?;
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some(r#"{"agent": 3, "input": ""}"#),
        "invalid type",
    )?;
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some(r#"{"agent": "Bad_Name", "input": ""}"#),
        "invalid agent name",
    )?;
    expect_error(400, "POST", "/v1/executions", Some(""), "invalid JSON")?;

    expect_error(
        404,
        "GET",
        "/v1/executions/exec-nope",
        None,
        "exec-nope not found",
    )?;
    expect_error(
        404,
        "GET",
        "/v1/executions/exec-nope/events",
        None,
        "not found",
    )?;
    expect_error(
        400,
        "GET",
        "/v1/executions/exec-nope/events?wait_seconds=31",
        None,
        "wait_seconds",
    )?;
    expect_error(
        400,
        "GET",
        "/v1/executions/exec-nope/events?after=abc",
        None,
        "after",
    )?;
    expect_error(404, "GET", "/v1/nowhere", None, "no route")?;
    expect_error(405, "DELETE", "/v1/executions", None, "not allowed")?;

    let poll = |queue: &str| format!("/v1/task-queues/{queue}/poll");
    expect_error(
        404,
        "POST",
        &poll("other"),
        Some(r#"{"runner_id": "r"}"#),
        "unknown task queue",
    )?;
    expect_error(
        400,
        "POST",
        &poll("agent_execution_runner"),
        Some(r#"{"runner_id": "r", "wait_seconds": 31}"#),
        "wait_seconds",
    )?;
    expect_error(
        400,
        "POST",
        &poll("agent_execution_runner"),
        Some(r#"{"runner_id": ""}"#),
        "runner_id",
    )?;

    let id = server.create_execution("echo", "")?;
    let task = server.poll("r", 0)?.context("task")?;
    assert_eq!(task["input"], "");
    let events_path = format!("/v1/executions/{id}/events");
    expect_error(
        400,
        "POST",
        &events_path,
        Some(r#"{"lease_id": "l", "kind": "result", "message": "m"}"#),
        "kind must be",
    )?;
    expect_error(
        409,
        "POST",
        &events_path,
        Some(r#"{"lease_id": "lease-wrong", "kind": "progress", "message": "m"}"#),
        "lease lease-wrong is not current",
    )?;
    expect_error(
        409,
        "POST",
        &format!("/v1/executions/{id}/heartbeat"),
        Some(r#"{"lease_id": "lease-wrong"}"#),
        "not current",
    )?;
    expect_error(
        400,
        "POST",
        &format!("/v1/executions/{id}/complete"),
        Some(r#"{"lease_id": "l", "status": "done"}"#),
        "status must be",
    )?;
    expect_error(
        404,
        "POST",
        "/v1/executions/exec-nope/complete",
        Some(r#"{"lease_id": "l", "status": "failed"}"#),
        "not found",
    )?;
    Ok(())
}

#[test]
fn an_expired_lease_puts_the_task_back_in_the_queue() -> Result<()> {
    let dir = TestDir::new("lease")?;
    let server = Server::start(&dir.path, &["--lease-seconds", "1"])?;
    let id = server.create_execution("echo", "slow")?;
    let first = server.poll("runner-slow", 0)?.context("task")?;
    assert_eq!(first["lease_seconds"], 1);
    let stale_lease = first["lease_id"].as_str().context("lease")?.to_owned();

    let started = Instant::now();
    let second = server
        .poll("runner-fast", 10)?
        .context("handed out again")?;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "requeue took {waited:?}");
    assert_eq!(second["execution_id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["lease_id"], first["lease_id"]);

    let late = server.post(
        &format!("/v1/executions/{id}/complete"),
        &json!({"lease_id": stale_lease, "status": "succeeded", "result": "late"}),
    )?;
    late.expect_status(409)?;
    assert!(late.error_message()?.contains("is not current"));

    let messages: Vec<String> = events(&server, &id, 0, 0)?["events"]
        .as_array()
        .context("events")?
        .iter()
        .map(|event| {
            format!(
                "{} {}",
                event["kind"].as_str().unwrap_or("?"),
                event["message"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert!(
        messages[2].starts_with("status lease of runner runner-slow expired"),
        "{messages:?}"
    );
    let execution = server.get(&format!("/v1/executions/{id}"))?.json()?;
    assert_eq!(
        (&execution["status"], &execution["attempts"]),
        (&json!("running"), &json!(2))
    );
    Ok(())
}

#[test]
fn a_sigkilled_server_loses_nothing_and_honours_leases_after_restart() -> Result<()> {
    let dir = TestDir::new("sigkill")?;
    // Long enough that a slow restart on a loaded CI machine still finds the lease live.
    let lease = ["--lease-seconds", "10"];
    let server = Server::start(&dir.path, &lease)?;
    let leased = server.create_execution("echo", "one")?;
    let waiting = server.create_execution("echo", "two")?;
    let task = server.poll("runner-1", 0)?.context("task")?;
    assert_eq!(task["execution_id"], leased.as_str());
    let lease_id = task["lease_id"].as_str().context("lease")?.to_owned();
    server
        .post(
            &format!("/v1/executions/{leased}/events"),
            &json!({"lease_id": lease_id, "kind": "progress", "message": "before the crash"}),
        )?
        .expect_status(204)?;
    let handed_out_at = Instant::now();
    server.kill()?;

    let server = Server::start(&dir.path, &lease)?;
    for (id, status) in [(&leased, "running"), (&waiting, "queued")] {
        let execution = server.get(&format!("/v1/executions/{id}"))?.json()?;
        assert_eq!(execution["status"], status, "{id}");
    }
    let before = events(&server, &leased, 0, 0)?;
    assert_eq!(before["events"][2]["message"], "before the crash");

    // The live lease survives the restart: only the other execution is handed out...
    let next = server.poll("runner-2", 0)?.context("the queued one")?;
    assert_eq!(next["execution_id"], waiting.as_str());
    assert!(
        handed_out_at.elapsed() < Duration::from_secs(10),
        "restart too slow for this check"
    );
    assert_eq!(server.poll("runner-2", 0)?, None);
    // ...and the lease holder may still heartbeat while it is current.
    server
        .post(
            &format!("/v1/executions/{leased}/heartbeat"),
            &json!({"lease_id": lease_id}),
        )?
        .expect_status(204)?;

    // Once the lease expires the task is handed out again.
    let again = server
        .poll("runner-2", 20)?
        .context("requeued after expiry")?;
    assert_eq!(again["execution_id"], leased.as_str());
    assert_eq!(again["attempt"], 2);
    server.kill()?;
    Ok(())
}

#[test]
fn sigterm_ends_long_polls_and_exits_cleanly() -> Result<()> {
    let dir = TestDir::new("sigterm")?;
    let mut server = Server::start(&dir.path, &[])?;
    let addr = server.addr;
    let waiting_runner = std::thread::spawn(move || {
        common::request(
            addr,
            "POST",
            "/v1/task-queues/agent_execution_runner/poll",
            Some(br#"{"runner_id": "r", "wait_seconds": 30}"#),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .context("run kill -TERM")?;
    ensure!(status.success(), "kill -TERM failed");
    let exit = server.wait_for_exit(Duration::from_secs(10))?;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    let response = waiting_runner
        .join()
        .map_err(|_| anyhow::anyhow!("panic"))??;
    assert_eq!(response.status, 204, "the in-flight poll was answered");
    assert!(
        server.log().contains("SIGTERM received"),
        "{}",
        server.log()
    );
    Ok(())
}

#[test]
fn a_non_loopback_listen_address_is_refused() -> Result<()> {
    let dir = TestDir::new("loopback")?;
    let output = Command::new(env!("CARGO_BIN_EXE_stigmer-server"))
        .arg("--data-dir")
        .arg(&dir.path)
        .args(["--listen", "0.0.0.0:7234"])
        .output()
        .context("run stigmer-server")?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:7234"),
        "{stderr}"
    );
    assert!(
        !dir.path.join("stigmer.db").exists(),
        "nothing is created on refusal"
    );
    Ok(())
}
