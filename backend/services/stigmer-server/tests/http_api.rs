//! The HTTP contract of `src/http.rs` against the real binary and a real Temporal dev server:
//! health, creation as an `ExecuteAgent` workflow, runner events, the end read from Temporal,
//! long polls, error shapes, the refusal of a non-loopback address and graceful shutdown.
//! Crashes and outages are in `recovery.rs`.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};

use common::{
    error_message, event_lines, expect_status, free_ports, last_seq, Server, Temporal, TestDir,
};

/// How long the server may take to start a new execution's workflow: one loopback call.
const WORKFLOW_APPEARS: Duration = Duration::from_secs(5);
/// How long the server may take to record an end Temporal already has.
const END_RECORDED: Duration = Duration::from_secs(10);

/// A `--temporal-http` nothing listens on, for tests where nothing reaches Temporal.
fn closed_temporal_http() -> Result<String> {
    let [port] = free_ports()?;
    Ok(format!("http://127.0.0.1:{port}"))
}

#[test]
fn health_reports_the_configured_temporal_target() -> Result<()> {
    let dir = TestDir::new("health")?;
    let temporal_http = closed_temporal_http()?;
    // Not the defaults, so that a hard-coded answer would fail.
    let server = Server::start(
        &dir.path,
        &format!("{temporal_http}/"),
        &[
            "--temporal-namespace",
            "stigmer-tests",
            "--task-queue",
            "tests_queue",
        ],
    )?;
    let health = server.get("/healthz")?;
    expect_status(&health, 200)?;
    assert_eq!(
        health.json()?,
        json!({
            "status": "ok",
            "version": "0.1.0",
            "temporal": {
                "http": temporal_http,
                "namespace": "stigmer-tests",
                "task_queue": "tests_queue",
            },
        })
    );
    Ok(())
}

#[test]
fn create_starts_an_execute_agent_workflow() -> Result<()> {
    let dir = TestDir::new("create")?;
    let temporal = Temporal::start(&dir)?;
    let server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    // Quotes, a newline and non-ASCII text, to see the input reach Temporal unchanged.
    let input = "review \"this\"\nplease ✓";

    let created = server.post(
        "/v1/executions",
        &json!({"agent": "pr-reviewer", "input": input}),
    )?;
    expect_status(&created, 201)?;
    let created = created.json()?;
    let id = created["id"].as_str().context("id is a string")?.to_owned();
    let suffix = id.strip_prefix("exec-").context("id starts with exec-")?;
    assert_eq!(suffix.len(), 26, "{id}");
    assert!(
        suffix
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(
        created,
        json!({"id": id, "agent": "pr-reviewer", "status": "queued"})
    );

    let started = Instant::now();
    let described = temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;
    eprintln!(
        "workflow visible in Temporal {:?} after the 201",
        started.elapsed()
    );
    let info = &described["workflowExecutionInfo"];
    assert_eq!(info["execution"]["workflowId"], id.as_str());
    assert_eq!(info["status"], "WORKFLOW_EXECUTION_STATUS_RUNNING");
    assert_eq!(info["type"]["name"], "ExecuteAgent");
    assert_eq!(info["taskQueue"], "agent_execution_runner");

    let history = temporal.history(&id)?;
    let first = history.first().context("the history has events")?;
    assert_eq!(first["eventType"], "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED");
    let attributes = &first["workflowExecutionStartedEventAttributes"];
    assert_eq!(attributes["workflowType"]["name"], "ExecuteAgent");
    assert_eq!(attributes["taskQueue"]["name"], "agent_execution_runner");
    assert_eq!(
        attributes["input"],
        json!([{"execution_id": id, "agent": "pr-reviewer", "input": input}])
    );

    let execution = server.execution(&id)?;
    assert_eq!(execution["status"], "queued");
    assert_eq!(execution["attempts"], 0);
    assert_eq!(execution["input"], input);
    assert_eq!(
        (&execution["result"], &execution["error"]),
        (&Value::Null, &Value::Null)
    );
    for field in ["created_at", "updated_at"] {
        let time = execution[field].as_str().context("times are strings")?;
        assert!(time.len() == 24 && time.ends_with('Z'), "{field}: {time}");
    }
    assert_eq!(event_lines(&server.events(&id, 0, 0)?), ["status queued"]);
    Ok(())
}

#[test]
fn runner_events_mark_the_execution_running_and_are_listed() -> Result<()> {
    let dir = TestDir::new("runner-events")?;
    let temporal = Temporal::start(&dir)?;
    let server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    let id = server.create_execution("echo", "hi")?;
    temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;

    expect_status(
        &server.post_event(&id, "status", "running (attempt 1)")?,
        204,
    )?;
    let execution = server.execution(&id)?;
    assert_eq!(
        (&execution["status"], &execution["attempts"]),
        (&json!("running"), &json!(1))
    );
    expect_status(&server.post_event(&id, "progress", "half way")?, 204)?;
    assert_eq!(
        server.execution(&id)?["attempts"],
        1,
        "progress is no attempt"
    );
    expect_status(
        &server.post_event(&id, "status", "running (attempt 2)")?,
        204,
    )?;
    let execution = server.execution(&id)?;
    assert_eq!(
        (&execution["status"], &execution["attempts"]),
        (&json!("running"), &json!(2))
    );
    let page = server.events(&id, 0, 0)?;
    assert_eq!(
        event_lines(&page),
        [
            "status queued",
            "status running (attempt 1)",
            "progress half way",
            "status running (attempt 2)",
        ]
    );
    let seqs: Vec<&Value> = page["events"]
        .as_array()
        .context("events")?
        .iter()
        .map(|event| &event["seq"])
        .collect();
    assert_eq!(seqs, [&json!(1), &json!(2), &json!(3), &json!(4)]);
    assert_eq!(
        (&page["status"], &page["done"]),
        (&json!("running"), &json!(false))
    );

    // How an execution ends is Temporal's word, never a runner's.
    for kind in ["result", "error", "done"] {
        let refused = server.post_event(&id, kind, "HI")?;
        expect_status(&refused, 400)?;
        assert!(error_message(&refused)?.contains("kind must be"), "{kind}");
    }
    let unknown = server.post_event("exec-nope", "progress", "x")?;
    expect_status(&unknown, 404)?;
    assert_eq!(error_message(&unknown)?, "execution exec-nope not found");

    temporal.terminate(&id, "runner events test over")?;
    server.wait_until_done(&id, END_RECORDED)?;
    let late = server.post_event(&id, "progress", "too late")?;
    expect_status(&late, 409)?;
    assert!(
        error_message(&late)?.contains("already finished with status failed"),
        "{}",
        late.text()
    );
    let status_after_end = server.post_event(&id, "status", "running (attempt 3)")?;
    expect_status(&status_after_end, 409)?;
    let execution = server.execution(&id)?;
    assert_eq!(
        (&execution["status"], &execution["attempts"]),
        (&json!("failed"), &json!(2)),
        "a refused event changes nothing"
    );
    assert_eq!(event_lines(&server.events(&id, 0, 0)?).len(), 5);
    Ok(())
}

#[test]
fn terminating_the_workflow_fails_the_execution_and_wakes_long_polls() -> Result<()> {
    let dir = TestDir::new("terminate")?;
    let temporal = Temporal::start(&dir)?;
    let server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    let id = server.create_execution("echo", "hi")?;
    temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;
    expect_status(
        &server.post_event(&id, "status", "running (attempt 1)")?,
        204,
    )?;
    let seen = last_seq(&server.events(&id, 0, 0)?);
    let reason = "stopped by the terminate test";

    let (page, answered_after) = thread::scope(|scope| -> Result<(Value, Duration)> {
        let waiting = scope.spawn(|| server.events(&id, seen, 10));
        thread::sleep(Duration::from_millis(300));
        ensure!(
            !waiting.is_finished(),
            "the long poll answered before the end"
        );
        let terminated_at = Instant::now();
        temporal.terminate(&id, reason)?;
        let page = waiting
            .join()
            .map_err(|_| anyhow!("the long poll thread panicked"))??;
        Ok((page, terminated_at.elapsed()))
    })?;
    eprintln!("events long poll answered {answered_after:?} after the terminate call");
    assert!(
        answered_after < Duration::from_secs(1),
        "the long poll answered {answered_after:?} after the termination"
    );
    assert_eq!(
        (&page["status"], &page["done"]),
        (&json!("failed"), &json!(true))
    );
    let lines = event_lines(&page);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error ") && lines[0].contains(reason),
        "{lines:?}"
    );

    let execution = server.execution(&id)?;
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["result"], Value::Null);
    let error = execution["error"].as_str().context("error is a string")?;
    assert!(
        error.contains("terminated") && error.contains(reason),
        "{error}"
    );
    let all = server.events(&id, 0, 0)?;
    assert_eq!(all["events"][2]["kind"], "error");
    assert_eq!(all["events"][2]["message"], error);
    assert_eq!(last_seq(&all), 3, "the error event is the last one");

    // A done execution answers a long poll at once, even with nothing new.
    let started = Instant::now();
    let after_end = server.events(&id, 3, 30)?;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(event_lines(&after_end), Vec::<String>::new());
    assert_eq!(after_end["done"], true);
    Ok(())
}

#[test]
fn a_start_temporal_refuses_fails_the_execution_with_its_message() -> Result<()> {
    let dir = TestDir::new("refused")?;
    let temporal = Temporal::start(&dir)?;
    // A namespace the dev server does not have: Temporal answers, and says no.
    let server = Server::start(
        &dir.path,
        &temporal.http_base(),
        &["--temporal-namespace", "no-such-namespace"],
    )?;
    let id = server.create_execution("echo", "hi")?;
    let execution = server.wait_until_done(&id, END_RECORDED)?;
    assert_eq!(execution["status"], "failed");
    let error = execution["error"].as_str().context("error is a string")?;
    assert!(
        error.contains(&format!("Temporal refused to start workflow {id}"))
            && error.contains("no-such-namespace"),
        "{error}"
    );
    let lines = event_lines(&server.events(&id, 0, 0)?);
    assert_eq!(
        lines,
        ["status queued".to_owned(), format!("error {error}")]
    );
    assert_eq!(temporal.describe(&id)?, None, "nothing was started");
    Ok(())
}

#[test]
fn long_polls_wake_on_a_new_event_and_honour_wait_seconds() -> Result<()> {
    let dir = TestDir::new("long-poll")?;
    let temporal = Temporal::start(&dir)?;
    let server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    let id = server.create_execution("echo", "hi")?;
    temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;
    let seen = last_seq(&server.events(&id, 0, 0)?);

    let (page, woke_after) = thread::scope(|scope| -> Result<(Value, Duration)> {
        let waiting = scope.spawn(|| server.events(&id, seen, 20));
        thread::sleep(Duration::from_millis(300));
        ensure!(
            !waiting.is_finished(),
            "the long poll answered with nothing new"
        );
        let posted_at = Instant::now();
        expect_status(&server.post_event(&id, "progress", "half way")?, 204)?;
        let page = waiting
            .join()
            .map_err(|_| anyhow!("the long poll thread panicked"))??;
        Ok((page, posted_at.elapsed()))
    })?;
    eprintln!("events long poll woke {woke_after:?} after the runner's event was sent");
    assert!(
        woke_after < Duration::from_secs(1),
        "woke after {woke_after:?}"
    );
    assert_eq!(event_lines(&page), ["progress half way"]);
    assert_eq!(page["events"][0]["seq"], seen + 1);
    assert_eq!(
        (&page["status"], &page["done"]),
        (&json!("queued"), &json!(false))
    );
    let at = page["events"][0]["at"].as_str().context("at is a string")?;
    assert!(at.len() == 24 && at.ends_with('Z'), "{at}");

    // With nothing arriving, the wait is honoured and answered with the unchanged state.
    let started = Instant::now();
    let quiet = server.events(&id, seen + 1, 2)?;
    let waited = started.elapsed();
    eprintln!("a quiet long poll with wait_seconds=2 answered after {waited:?}");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(event_lines(&quiet), Vec::<String>::new());
    assert_eq!(
        (&quiet["status"], &quiet["done"]),
        (&json!("queued"), &json!(false))
    );
    Ok(())
}

#[test]
fn bad_requests_get_json_errors() -> Result<()> {
    let dir = TestDir::new("errors")?;
    // Validation comes before anything reaches Temporal: none is needed, and the one accepted
    // request below simply waits for it.
    let server = Server::start(&dir.path, &closed_temporal_http()?, &[])?;
    let expect_error =
        |status: u16, method: &str, path: &str, body: Option<&str>, needle: &str| -> Result<()> {
            let response = server.request(method, path, body)?;
            expect_status(&response, status).with_context(|| format!("{method} {path}"))?;
            let message = error_message(&response)?;
            ensure!(
                message.contains(needle),
                "{method} {path}: {message:?} does not mention {needle:?}"
            );
            Ok(())
        };
    let with_input =
        |bytes: usize| format!(r#"{{"agent": "echo", "input": "{}"}}"#, "x".repeat(bytes));

    expect_error(
        413,
        "POST",
        "/v1/executions",
        Some(&with_input(1024 * 1024 + 10)),
        "1 MiB",
    )?;
    expect_error(
        400,
        "POST",
        "/v1/executions",
        Some(&with_input(512 * 1024 + 1)),
        "512 KiB",
    )?;
    for (body, needle) in [
        ("{not json", "invalid JSON"),
        ("", "invalid JSON"),
        (r#"{"agent": "echo"}"#, "missing field `input`"),
        (r#"{"input": "x"}"#, "missing field `agent`"),
        (r#"{"agent": 3, "input": ""}"#, "invalid type"),
        (
            r#"{"agent": "Bad_Name", "input": ""}"#,
            "invalid agent name",
        ),
        (r#"{"agent": "", "input": ""}"#, "invalid agent name"),
    ] {
        expect_error(400, "POST", "/v1/executions", Some(body), needle)?;
    }

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
        404,
        "POST",
        "/v1/executions/exec-nope/events",
        Some(r#"{"kind": "progress", "message": "m"}"#),
        "exec-nope not found",
    )?;
    expect_error(
        404,
        "GET",
        "/v1/nowhere",
        None,
        "no route for GET /v1/nowhere",
    )?;
    expect_error(405, "DELETE", "/v1/executions", None, "not allowed")?;
    expect_error(405, "PUT", "/healthz", None, "not allowed")?;

    // The largest input allowed is accepted: the limits above are where the contract says.
    let id = server.create_execution("echo", &"x".repeat(512 * 1024))?;
    let events_path = format!("/v1/executions/{id}/events");
    for (query, needle) in [
        (
            "wait_seconds=31",
            "wait_seconds must be between 0 and 30, got 31",
        ),
        ("wait_seconds=-1", "wait_seconds"),
        ("after=abc", "after"),
        ("after=-1", "after must be 0 or more"),
    ] {
        expect_error(400, "GET", &format!("{events_path}?{query}"), None, needle)?;
    }
    for (body, needle) in [
        (r#"{"kind": "progress"}"#, "missing field `message`"),
        (r#"{"message": "m"}"#, "missing field `kind`"),
        ("[]", "invalid"),
    ] {
        expect_error(400, "POST", &events_path, Some(body), needle)?;
    }
    let execution = server.execution(&id)?;
    assert_eq!(execution["input"].as_str().map(str::len), Some(512 * 1024));
    Ok(())
}

#[test]
fn a_non_loopback_listen_address_is_refused() -> Result<()> {
    let dir = TestDir::new("loopback")?;
    let data_dir = dir.path.join("data");
    for address in ["0.0.0.0:7234", "192.168.1.2:7234"] {
        let output = Command::new(env!("CARGO_BIN_EXE_stigmer-server"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", address])
            .output()
            .context("run stigmer-server")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("refusing to listen on {address}")),
            "{stderr}"
        );
    }
    assert!(!data_dir.exists(), "nothing is created on refusal");
    Ok(())
}

#[test]
fn sigterm_ends_an_events_long_poll_and_exits_cleanly() -> Result<()> {
    let dir = TestDir::new("sigterm")?;
    let temporal = Temporal::start(&dir)?;
    let mut server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    let id = server.create_execution("echo", "hi")?;
    temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;
    let seen = last_seq(&server.events(&id, 0, 0)?);

    let (page, answered_after) = thread::scope(|scope| -> Result<(Value, Duration)> {
        let waiting = scope.spawn(|| server.events(&id, seen, 30));
        thread::sleep(Duration::from_millis(300));
        ensure!(
            !waiting.is_finished(),
            "the long poll answered with nothing new"
        );
        let signalled_at = Instant::now();
        server.send_sigterm()?;
        let page = waiting
            .join()
            .map_err(|_| anyhow!("the long poll thread panicked"))??;
        Ok((page, signalled_at.elapsed()))
    })?;
    eprintln!("the in-flight long poll was answered {answered_after:?} after SIGTERM");
    assert!(
        answered_after < Duration::from_secs(2),
        "{answered_after:?}"
    );
    assert_eq!(event_lines(&page), Vec::<String>::new());
    assert_eq!(
        (&page["status"], &page["done"]),
        (&json!("queued"), &json!(false))
    );

    let exit = server.wait_for_exit(Duration::from_secs(5))?;
    assert!(exit.success(), "exit {exit:?}; log:\n{}", server.log());
    let log = server.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("INFO stopped"), "{log}");
    // Stopping the server ends nothing in Temporal: the workflow waits for the next start.
    let described = temporal
        .describe(&id)?
        .context("the workflow is still in Temporal")?;
    assert_eq!(
        described["workflowExecutionInfo"]["status"],
        "WORKFLOW_EXECUTION_STATUS_RUNNING"
    );
    Ok(())
}
