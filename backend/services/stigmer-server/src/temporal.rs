//! Temporal through its HTTP API (the frontend's grpc-gateway, `--http-port` of the dev server,
//! 7243 by default on a cluster): start the `ExecuteAgent` workflow of an execution and wait
//! for its close event.
//!
//! Why HTTP and not the official Rust SDK (`temporalio-client`): a cold debug build of a small
//! client with it took 3 min 47 s for 218 crates on our machines (it needs protobuf code
//! generation), which alone would break the 4-minute budget of a first `cargo xtask dev`; the
//! HTTP API is plain JSON over the client this server already has, with the same latency
//! (a start→result round trip is about 50 ms either way). Only these calls are needed, and the
//! HTTP API exposes all of them (https://docs.temporal.io/references/http-api). Payloads use
//! the API's shorthand: a JSON value in place of a `Payload` is encoded as `json/plain`, which
//! every Temporal SDK's default converter reads.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::store::Outcome;

/// The workflow type the agent-runner hosts.
pub const WORKFLOW_TYPE: &str = "ExecuteAgent";
/// Temporal holds a history long poll for about 20 s; the client must wait longer than that.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(70);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Temporal's HTTP API is and which namespace and task queue the executions use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalTarget {
    /// `http://127.0.0.1:7243`, without a trailing slash.
    pub http_base: String,
    pub namespace: String,
    pub task_queue: String,
}

/// A call that failed because Temporal could not be reached, or answered that it cannot serve
/// right now (a frontend still starting says `503 Frontend is not healthy yet`): the caller
/// waits and tries again, as opposed to an answer refusing the request itself.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// What starting a workflow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    New,
    /// A workflow with this ID exists (running or closed): the same execution, started before
    /// a restart or by a concurrent call; it is watched, never started twice.
    AlreadyExisted,
}

/// What the history long poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseEvent {
    Closed(Outcome),
    /// The workflow does not exist (Temporal's state was removed): it must be started again.
    Missing,
}

pub struct Temporal {
    target: TemporalTarget,
    client: reqwest::Client,
}

impl Temporal {
    pub fn new(target: TemporalTarget) -> Result<Temporal> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("create the HTTP client for Temporal")?;
        Ok(Temporal { target, client })
    }

    pub fn target(&self) -> &TemporalTarget {
        &self.target
    }

    fn workflow_url(&self, workflow_id: &str) -> String {
        format!(
            "{}/api/v1/namespaces/{}/workflows/{workflow_id}",
            self.target.http_base, self.target.namespace
        )
    }

    /// Starts `ExecuteAgent` for an execution; the workflow ID is the execution ID, so a start
    /// repeated after a crash finds the first one instead of running the agent twice.
    pub async fn start_workflow(&self, id: &str, agent: &str, input: &str) -> Result<Started> {
        let body = start_request(&self.target, id, agent, input);
        let response = self
            .client
            .post(self.workflow_url(id))
            .timeout(CALL_TIMEOUT)
            .json(&body)
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Started::New);
        }
        let text = response.text().await.unwrap_or_default();
        // ALREADY_EXISTS: gRPC code 6, which the gateway answers with 409.
        if status == reqwest::StatusCode::CONFLICT || grpc_code(&text) == Some(6) {
            return Ok(Started::AlreadyExisted);
        }
        if is_transient(status, &text) {
            return Err(self.busy(status, &text));
        }
        bail!(
            "Temporal refused to start workflow {id} ({status}): {}",
            error_message(&text)
        )
    }

    /// Waits for the workflow's close event, following Temporal's long polls until it comes.
    pub async fn wait_for_close(&self, id: &str) -> Result<CloseEvent> {
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                (
                    "historyEventFilterType",
                    "HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT".to_owned(),
                ),
                ("waitNewEvent", "true".to_owned()),
            ];
            if let Some(token) = &page_token {
                query.push(("nextPageToken", token.clone()));
            }
            let response = self
                .client
                .get(format!("{}/history", self.workflow_url(id)))
                .query(&query)
                .timeout(LONG_POLL_TIMEOUT)
                .send()
                .await
                .map_err(|error| self.unreachable(&error))?;
            let status = response.status();
            let text = response
                .text()
                .await
                .map_err(|error| self.unreachable(&error))?;
            if status == reqwest::StatusCode::NOT_FOUND || grpc_code(&text) == Some(5) {
                return Ok(CloseEvent::Missing);
            }
            if is_transient(status, &text) {
                return Err(self.busy(status, &text));
            }
            if !status.is_success() {
                bail!(
                    "Temporal refused to read the history of {id} ({status}): {}",
                    error_message(&text)
                );
            }
            let page: HistoryPage = serde_json::from_str(&text)
                .with_context(|| format!("reading Temporal's history of {id}"))?;
            if let Some(outcome) = page.history.events.iter().find_map(close_outcome) {
                return Ok(CloseEvent::Closed(outcome));
            }
            // An empty page: the long poll expired (or the run continued as new); poll again.
            page_token = page.next_page_token.filter(|token| !token.is_empty());
        }
    }

    fn busy(&self, status: reqwest::StatusCode, text: &str) -> anyhow::Error {
        anyhow::Error::new(Unreachable(format!(
            "Temporal at {} cannot serve yet ({status}: {})",
            self.target.http_base,
            error_message(text)
        )))
    }

    fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(Unreachable(format!(
            "Temporal's HTTP API at {} does not answer ({error})",
            self.target.http_base
        )))
    }
}

/// The body of `StartWorkflowExecution` (pure, for tests).
pub fn start_request(target: &TemporalTarget, id: &str, agent: &str, input: &str) -> Value {
    json!({
        "workflowType": { "name": WORKFLOW_TYPE },
        "taskQueue": { "name": target.task_queue },
        "input": [{ "execution_id": id, "agent": agent, "input": input }],
        // The same request ID makes a retried start of the same execution a no-op.
        "requestId": id,
        "workflowIdReusePolicy": "WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE",
    })
}

#[derive(Deserialize)]
struct HistoryPage {
    #[serde(default)]
    history: History,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct History {
    #[serde(default)]
    events: Vec<Value>,
}

/// The outcome a close event records; `None` for other events (and for continue-as-new, whose
/// next run is what the following poll reads).
pub fn close_outcome(event: &Value) -> Option<Outcome> {
    let kind = event["eventType"].as_str()?;
    let failed = |error: String| Some(Outcome::Failed { error });
    match kind {
        "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED" => {
            let result = &event["workflowExecutionCompletedEventAttributes"]["result"];
            Some(Outcome::Succeeded {
                result: payload_text(result),
            })
        }
        "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED" => failed(failure_text(
            &event["workflowExecutionFailedEventAttributes"]["failure"],
        )),
        "EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT" => {
            failed("the workflow timed out in Temporal".to_owned())
        }
        "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED" => {
            failed("the workflow was cancelled in Temporal".to_owned())
        }
        "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED" => {
            let reason = event["workflowExecutionTerminatedEventAttributes"]["reason"]
                .as_str()
                .filter(|reason| !reason.is_empty())
                .unwrap_or("no reason given");
            failed(format!("the workflow was terminated in Temporal: {reason}"))
        }
        _ => None,
    }
}

/// A result payload in shorthand form: `["text"]` gives `text`; any other JSON is kept as JSON.
fn payload_text(payloads: &Value) -> String {
    let first = match payloads {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        Value::Object(map) => map
            .get("payloads")
            .and_then(|items| items.as_array()?.first().cloned())
            .unwrap_or(Value::Null),
        other => other.clone(),
    };
    match first {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A failure's message; a generic wrapper (`Activity task failed`) is followed by its causes.
fn failure_text(failure: &Value) -> String {
    let mut messages = Vec::new();
    let mut current = failure;
    while let Some(message) = current["message"].as_str() {
        if !message.is_empty() && !messages.contains(&message) {
            messages.push(message);
        }
        current = &current["cause"];
    }
    match messages.as_slice() {
        [] => "the workflow failed without a message".to_owned(),
        [only] => (*only).to_owned(),
        [generic, rest @ ..] if generic.ends_with("task failed") => rest.join(": "),
        all => all.join(": "),
    }
}

/// Answers that mean "not now" rather than "no": UNAVAILABLE (14, HTTP 503), RESOURCE_EXHAUSTED
/// (8, 429) and DEADLINE_EXCEEDED (4, 504), as the gateway maps gRPC codes
/// (https://github.com/grpc-ecosystem/grpc-gateway, runtime/errors.go).
pub fn is_transient(status: reqwest::StatusCode, text: &str) -> bool {
    matches!(status.as_u16(), 429 | 503 | 504) || matches!(grpc_code(text), Some(4 | 8 | 14))
}

fn grpc_code(text: &str) -> Option<i64> {
    serde_json::from_str::<Value>(text).ok()?["code"].as_i64()
}

fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|value| value["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_is_exact() {
        let target = TemporalTarget {
            http_base: "http://127.0.0.1:7243".to_owned(),
            namespace: "default".to_owned(),
            task_queue: "agent_execution_runner".to_owned(),
        };
        assert_eq!(
            start_request(&target, "exec-1", "echo", "hi"),
            json!({
                "workflowType": {"name": "ExecuteAgent"},
                "taskQueue": {"name": "agent_execution_runner"},
                "input": [{"execution_id": "exec-1", "agent": "echo", "input": "hi"}],
                "requestId": "exec-1",
                "workflowIdReusePolicy": "WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE",
            })
        );
    }

    // Close events as the dev server (Temporal 1.32) printed them for a Python worker.
    #[test]
    fn completed_event_gives_the_result_text() {
        let event = json!({"eventId":"11","eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
            "workflowExecutionCompletedEventAttributes":{"result":["hi"],"workflowTaskCompletedEventId":"10"}});
        assert_eq!(
            close_outcome(&event),
            Some(Outcome::Succeeded {
                result: "hi".to_owned()
            })
        );
        let structured = json!({"eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
            "workflowExecutionCompletedEventAttributes":{"result":[{"a":1}]}});
        assert_eq!(
            close_outcome(&structured),
            Some(Outcome::Succeeded {
                result: "{\"a\":1}".to_owned()
            })
        );
    }

    #[test]
    fn failed_event_gives_the_cause_behind_a_generic_wrapper() {
        let event = json!({"eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_FAILED",
            "workflowExecutionFailedEventAttributes":{"failure":{"message":"Activity task failed",
                "cause":{"message":"unknown agent 'nope'","applicationFailureInfo":{"nonRetryable":true}}}}});
        assert_eq!(
            close_outcome(&event),
            Some(Outcome::Failed {
                error: "unknown agent 'nope'".to_owned()
            })
        );
        let direct = json!({"eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_FAILED",
            "workflowExecutionFailedEventAttributes":{"failure":{"message":"ValueError: bad diff"}}});
        assert_eq!(
            close_outcome(&direct),
            Some(Outcome::Failed {
                error: "ValueError: bad diff".to_owned()
            })
        );
    }

    #[test]
    fn not_now_is_told_from_no() {
        let starting = r#"{"code":14,"message":"Frontend is not healthy yet"}"#;
        assert!(is_transient(
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            starting
        ));
        assert!(is_transient(reqwest::StatusCode::TOO_MANY_REQUESTS, "{}"));
        let unknown_namespace = r#"{"code":5,"message":"Namespace nope is not found."}"#;
        assert!(!is_transient(
            reqwest::StatusCode::NOT_FOUND,
            unknown_namespace
        ));
        assert!(!is_transient(
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"code":3}"#
        ));
    }

    #[test]
    fn terminated_and_other_events() {
        let terminated = json!({"eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED",
            "workflowExecutionTerminatedEventAttributes":{"reason":"by test"}});
        assert_eq!(
            close_outcome(&terminated),
            Some(Outcome::Failed {
                error: "the workflow was terminated in Temporal: by test".to_owned()
            })
        );
        let started = json!({"eventType":"EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"});
        assert_eq!(close_outcome(&started), None);
    }
}
