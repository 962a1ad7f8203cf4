//! Crashes and outages against the real binary and a real Temporal dev server: a SIGKILLed
//! server restarted on its data directory, a Temporal that is not there yet, and a Temporal
//! SIGKILLed and restarted on its database file. In each case nothing accepted is lost, each
//! execution has exactly one workflow run, and its end is still recorded.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use common::{event_lines, last_seq, wait_for, Server, Temporal, TemporalPorts, TestDir};

const WORKFLOW_APPEARS: Duration = Duration::from_secs(5);
/// The watcher retries an unreachable Temporal with a backoff capped at 2 s.
const END_RECORDED: Duration = Duration::from_secs(10);

fn run_id(described: &Value) -> Result<String> {
    Ok(described["workflowExecutionInfo"]["execution"]["runId"]
        .as_str()
        .context("a described workflow has a run ID")?
        .to_owned())
}

/// Asserts that Temporal has exactly one run under `id`, the one first seen as `first_run`.
fn assert_one_run(temporal: &Temporal, id: &str, first_run: &str) -> Result<()> {
    let described = temporal.describe(id)?.context("the workflow exists")?;
    assert_eq!(
        run_id(&described)?,
        first_run,
        "the latest run is the first"
    );
    assert_eq!(
        described["workflowExecutionInfo"]["firstRunId"], first_run,
        "no run chain"
    );
    let started_events = temporal
        .history(id)?
        .iter()
        .filter(|event| event["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED")
        .count();
    assert_eq!(started_events, 1);
    // Visibility is written after the run itself: wait until it lists the closed run, then
    // there must be no other.
    let runs = wait_for(
        Duration::from_secs(5),
        "the closed run in visibility",
        || {
            let runs = temporal.runs(id)?;
            let closed = runs
                .iter()
                .any(|run| run["status"] != "WORKFLOW_EXECUTION_STATUS_RUNNING");
            Ok(closed.then_some(runs))
        },
    )?;
    let run_ids: Vec<&Value> = runs.iter().map(|run| &run["execution"]["runId"]).collect();
    assert_eq!(run_ids, [&json!(first_run)], "{runs:?}");
    Ok(())
}

fn assert_failed_naming(execution: &Value, reason: &str) {
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{execution}");
}

#[test]
fn a_sigkilled_server_loses_nothing_and_starts_no_second_run() -> Result<()> {
    let dir = TestDir::new("sigkill")?;
    let temporal = Temporal::start(&dir)?;
    let http = temporal.http_base();

    let server = Server::start(&dir.path, &http, &[])?;
    let first = server.create_execution("echo", "one")?;
    let first_run = run_id(&temporal.wait_for_workflow(&first, WORKFLOW_APPEARS)?)?;
    server.kill()?;

    // Restarted on the same data directory: the execution is there, and watched again.
    let server = Server::start(&dir.path, &http, &[])?;
    assert!(
        server
            .log()
            .contains("watching 1 unfinished execution(s) from the previous run"),
        "{}",
        server.log()
    );
    let execution = server.execution(&first)?;
    assert_eq!(
        (&execution["status"], &execution["input"]),
        (&json!("queued"), &json!("one"))
    );
    assert_eq!(
        event_lines(&server.events(&first, 0, 0)?),
        ["status queued"]
    );
    temporal.terminate(&first, "ended after the first restart")?;
    let ended = server.wait_until_done(&first, END_RECORDED)?;
    assert_failed_naming(&ended, "ended after the first restart");
    assert_one_run(&temporal, &first, &first_run)?;

    // A second execution whose workflow ends while no server runs: the next server must read
    // that end, not start the workflow again.
    let second = server.create_execution("echo", "two")?;
    let second_run = run_id(&temporal.wait_for_workflow(&second, WORKFLOW_APPEARS)?)?;
    expect_progress(&server, &second, "before the crash")?;
    server.kill()?;
    temporal.terminate(&second, "ended while the server was down")?;

    let server = Server::start(&dir.path, &http, &[])?;
    let ended = server
        .wait_until_done(&second, END_RECORDED)
        .context("the restarted server must read the end Temporal has (did it start a new run?)")?;
    assert_failed_naming(&ended, "ended while the server was down");
    assert_eq!(
        event_lines(&server.events(&second, 0, 0)?),
        [
            "status queued",
            "progress before the crash",
            "error the workflow was terminated in Temporal: ended while the server was down",
        ],
        "the events from before the crash are kept, the end follows them"
    );
    assert_one_run(&temporal, &second, &second_run)?;
    assert_failed_naming(&server.execution(&first)?, "ended after the first restart");
    assert_one_run(&temporal, &first, &first_run)?;
    Ok(())
}

fn expect_progress(server: &Server, id: &str, message: &str) -> Result<()> {
    common::expect_status(&server.post_event(id, "progress", message)?, 204)
}

#[test]
fn executions_wait_for_an_absent_temporal() -> Result<()> {
    let dir = TestDir::new("temporal-absent")?;
    let ports = TemporalPorts::free()?;
    let http = ports.http_base();
    let server = Server::start(&dir.path, &http, &[])?;

    let id = server.create_execution("echo", "patience")?;
    let page = server.events(&id, 1, 10)?;
    let lines = event_lines(&page);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("status waiting for Temporal") && lines[0].contains(&http),
        "{lines:?}"
    );
    // The watcher keeps trying (100 ms, 200 ms, 400 ms, ...) without saying so again.
    std::thread::sleep(Duration::from_millis(1500));
    let all = server.events(&id, 0, 0)?;
    assert_eq!(event_lines(&all).len(), 2, "{:?}", event_lines(&all));
    assert_eq!(
        (&all["status"], &all["done"]),
        (&json!("queued"), &json!(false))
    );

    let temporal = Temporal::start_on(ports, None, &dir)?;
    let ready_at = Instant::now();
    let described = temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?;
    eprintln!(
        "the workflow appeared {:?} after Temporal answered",
        ready_at.elapsed()
    );
    assert_eq!(
        described["workflowExecutionInfo"]["status"],
        "WORKFLOW_EXECUTION_STATUS_RUNNING"
    );
    let history = temporal.history(&id)?;
    assert_eq!(
        history[0]["workflowExecutionStartedEventAttributes"]["input"],
        json!([{"execution_id": id, "agent": "echo", "input": "patience"}])
    );

    // From then on it is watched like any other.
    temporal.terminate(&id, "ended after the outage")?;
    assert_failed_naming(
        &server.wait_until_done(&id, END_RECORDED)?,
        "ended after the outage",
    );
    assert_one_run(&temporal, &id, &run_id(&described)?)?;
    Ok(())
}

#[test]
fn the_watcher_survives_temporal_being_killed() -> Result<()> {
    let dir = TestDir::new("temporal-killed")?;
    let database = dir.path.join("temporal.db");
    let temporal = Temporal::start_on(TemporalPorts::free()?, Some(&database), &dir)?;
    let ports = temporal.ports;
    let server = Server::start(&dir.path, &temporal.http_base(), &[])?;
    let id = server.create_execution("echo", "hi")?;
    let first_run = run_id(&temporal.wait_for_workflow(&id, WORKFLOW_APPEARS)?)?;
    let seen = last_seq(&server.events(&id, 0, 0)?);

    temporal.kill()?;
    // The watcher's history long poll breaks; it says once that it waits for Temporal.
    let page = server.events(&id, seen, 10)?;
    let lines = event_lines(&page);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("status waiting for Temporal"),
        "{lines:?}"
    );

    let temporal = Temporal::start_on(ports, Some(&database), &dir)?;
    let described = temporal
        .describe(&id)?
        .context("the workflow survived Temporal's SIGKILL")?;
    assert_eq!(
        described["workflowExecutionInfo"]["status"],
        "WORKFLOW_EXECUTION_STATUS_RUNNING"
    );
    // Give the watcher's retries (capped at 2 s) time to reach the restarted Temporal, so the
    // end below is read from a history long poll rather than by chance on a reconnect.
    std::thread::sleep(Duration::from_secs(3));
    let terminated_at = Instant::now();
    temporal.terminate(&id, "ended after Temporal's restart")?;
    let ended = server.wait_until_done(&id, END_RECORDED)?;
    eprintln!(
        "the end was recorded {:?} after the terminate call",
        terminated_at.elapsed()
    );
    assert!(
        terminated_at.elapsed() < Duration::from_secs(1),
        "the watcher was not back on the history long poll: {:?}",
        terminated_at.elapsed()
    );
    assert_failed_naming(&ended, "ended after Temporal's restart");
    assert_one_run(&temporal, &id, &first_run)?;
    Ok(())
}
