//! Measures, without asserting on time, how long one execution's round trip takes against the
//! real binary: create, runner poll, complete, then the client reading the result and `done`.
//! Each request opens a new loopback connection and every write is an fsynced SQLite commit, so
//! the figures bound what the CLI and the runner will see. Run with `--nocapture` to read them.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use common::{Server, TestDir};

const ROUND_TRIPS: usize = 200;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    eprintln!(
        "{name:<31} n={:<4} mean={:>8.2?} p50={:>8.2?} p95={:>8.2?} p99={:>8.2?} max={:>8.2?}",
        samples.len(),
        total / u32::try_from(samples.len()).unwrap_or(1),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}

#[test]
fn round_trip_latency_is_reported() -> Result<()> {
    let dir = TestDir::new("latency")?;
    let server = Server::start(&dir.path, &[])?;
    let mut create = Vec::new();
    let mut poll = Vec::new();
    let mut complete = Vec::new();
    let mut read_result = Vec::new();
    let mut whole = Vec::new();
    for round in 0..ROUND_TRIPS {
        let started = Instant::now();
        let id = server.create_execution("echo", &format!("round {round}"))?;
        let created = Instant::now();
        let task = server.poll("latency-runner", 0)?.context("task")?;
        let polled = Instant::now();
        ensure!(task["execution_id"] == id.as_str(), "oldest first");
        server
            .post(
                &format!("/v1/executions/{id}/complete"),
                &json!({"lease_id": task["lease_id"], "status": "succeeded", "result": "ok"}),
            )?
            .expect_status(204)?;
        let completed = Instant::now();
        let page = server
            .get(&format!(
                "/v1/executions/{id}/events?after=2&wait_seconds=5"
            ))?
            .json()?;
        let read = Instant::now();
        ensure!(page["done"] == true && page["events"][0]["message"] == "ok");
        create.push(created - started);
        poll.push(polled - created);
        complete.push(completed - polled);
        read_result.push(read - completed);
        whole.push(read - started);
    }
    eprintln!(
        "round trips against {} (debug or release per cargo profile):",
        server.addr
    );
    report("POST /v1/executions", create);
    report("POST .../poll (hand-out)", poll);
    report("POST .../complete", complete);
    report("GET .../events (result)", read_result);
    report("create->poll->complete->result", whole);
    Ok(())
}
