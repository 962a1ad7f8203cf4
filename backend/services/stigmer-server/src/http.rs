//! The HTTP edge: the axum router, one handler per route, request validation, and the mapping
//! of every failure (axum's body and query rejections included) to the `{"error": "..."}` shape.
//! Handlers translate between JSON and the `queue` methods; they hold no state of their own.
//!
//! The contract below is shared with the Python agent-runner and the `stigmer` CLI, copied
//! verbatim from the project's API brief:
//!
//! ```text
//! ## The stigmer-server HTTP API (contract shared by the server, the Python runner and the CLI)
//!
//! All JSON, HTTP/1.1, on 127.0.0.1:7234 (loopback only). Errors: non-2xx with body {"error": "<human message>"}.
//! Request bodies larger than 1 MiB -> 413; malformed JSON or missing/invalid fields -> 400; unknown execution -> 404.
//!
//! Health
//! - GET /healthz -> 200 {"status":"ok","version":"0.1.0"}
//!
//! Clients (the `stigmer` CLI)
//! - POST /v1/executions  body {"agent": "echo", "input": "hello"}   (agent: 1..=64 chars [a-z0-9-]; input: string, may be "")
//!   -> 201 {"id": "exec-<26 lowercase base32/hex chars>", "agent": "echo", "status": "queued"}
//! - GET /v1/executions/{id}
//!   -> 200 {"id","agent","input","status","result","error","attempts","created_at","updated_at"}
//!      status is one of "queued" | "running" | "succeeded" | "failed"; result/error are string or null; times RFC 3339 UTC.
//! - GET /v1/executions/{id}/events?after=N&wait_seconds=S   (long poll; after defaults 0, wait_seconds 0..=30, default 0)
//!   -> 200 {"events":[{"seq":1,"kind":"status"|"progress"|"result"|"error","message":"...","at":"<rfc3339>"}],
//!           "status":"running","done":false}
//!      Returns at once if events with seq > N exist or the execution is done; otherwise waits up to S seconds for one.
//!      "done" is true when status is succeeded or failed; the final event is kind "result" (succeeded) or "error" (failed).
//!
//! Runners (the Python agent-runner)
//! - POST /v1/task-queues/{queue}/poll  body {"runner_id": "<string>", "wait_seconds": 20}   (queue is "agent_execution_runner"; wait 0..=30)
//!   -> 200 {"execution_id","agent","input","lease_id","lease_seconds","attempt"}  when a task is handed out
//!   -> 204 (no body) when none arrived within wait_seconds
//!   A handed-out task is leased for lease_seconds (default 30). If the lease expires without completion, the task goes
//!   back to the queue (status back to "queued", attempts +1, an event kind "status" says so).
//! - POST /v1/executions/{id}/events  body {"lease_id": "...", "kind": "progress", "message": "..."}
//!   -> 204; also renews the lease (heartbeat). Wrong/expired lease -> 409 {"error": "lease ... is not current"}.
//! - POST /v1/executions/{id}/heartbeat body {"lease_id": "..."} -> 204 (renews lease) | 409
//! - POST /v1/executions/{id}/complete  body {"lease_id": "...", "status": "succeeded"|"failed", "result": "..."|null, "error": "..."|null}
//!   -> 204 | 409 (stale lease) ; completing is idempotent for the same lease and status.
//! Everything accepted is stored in SQLite before the response is sent, so nothing accepted is lost when the server
//! is SIGKILLed; on start, executions left "running" whose lease is gone are requeued.
//! ```
//!
//! Interpretations where the contract is silent: `attempts` counts hand-outs (a task's first
//! poll makes it 1, and the `attempt` a runner receives is that count), so a requeue after an
//! expired lease leaves it one higher than before the task was first handed out; every
//! execution's first event is `status` `"queued"`, and each hand-out adds a `status` event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::rfc3339_from_unix_millis;
use crate::log::{error, info};
use crate::queue::{Queue, QUEUE_NAME};
use crate::store::{Event, EventKind, Execution, FinalStatus, LeaseOutcome};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_INPUT_BYTES: usize = 512 * 1024;
const MAX_AGENT_NAME_CHARS: usize = 64;
const MAX_WAIT_SECONDS: u64 = 30;
const MAX_RUNNER_ID_CHARS: usize = 256;

pub fn router(queue: Arc<Queue>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/executions", post(create_execution))
        .route("/v1/executions/{id}", get(get_execution))
        .route(
            "/v1/executions/{id}/events",
            get(list_events).post(append_runner_event),
        )
        .route("/v1/executions/{id}/heartbeat", post(heartbeat))
        .route("/v1/executions/{id}/complete", post(complete))
        .route("/v1/task-queues/{queue}/poll", post(poll_task))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(queue)
}

/// A failed request: its status and the message placed in `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unknown_execution(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("execution {id} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Anything unexpected (the database failing, mostly) is a 500 whose message carries the
/// context chain: on a local dev server the user is also the operator.
impl From<anyhow::Error> for ApiError {
    fn from(internal: anyhow::Error) -> Self {
        error!("internal error: {internal:#}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {internal:#}"),
        )
    }
}

/// Parses a JSON body. Taking the raw bytes (rather than axum's `Json`) means a missing
/// `Content-Type` is no error and every message is ours; the size limit still applies, since
/// the `Bytes` extractor enforces `DefaultBodyLimit`.
fn parse_json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"),
            )
        } else {
            ApiError::new(rejection.status(), rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|problem| ApiError::bad_request(format!("invalid JSON body: {problem}")))
}

fn parse_query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

fn validate_agent_name(agent: &str) -> Result<(), ApiError> {
    let well_formed = (1..=MAX_AGENT_NAME_CHARS).contains(&agent.len())
        && agent
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    if well_formed {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid agent name {agent:?}: use 1 to {MAX_AGENT_NAME_CHARS} characters of a-z, 0-9 and -"
        )))
    }
}

fn validate_wait_seconds(wait_seconds: Option<u64>) -> Result<Duration, ApiError> {
    match wait_seconds.unwrap_or(0) {
        seconds @ 0..=MAX_WAIT_SECONDS => Ok(Duration::from_secs(seconds)),
        seconds => Err(ApiError::bad_request(format!(
            "wait_seconds must be between 0 and {MAX_WAIT_SECONDS}, got {seconds}"
        ))),
    }
}

fn require_non_empty(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        Err(ApiError::bad_request(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

fn lease_outcome(
    outcome: LeaseOutcome,
    execution_id: &str,
    lease_id: &str,
) -> Result<StatusCode, ApiError> {
    match outcome {
        LeaseOutcome::Accepted => Ok(StatusCode::NO_CONTENT),
        LeaseOutcome::UnknownExecution => Err(ApiError::unknown_execution(execution_id)),
        LeaseOutcome::LeaseNotCurrent => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "lease {lease_id} is not current for execution {execution_id} \
                 (it expired or the task was handed to another runner)"
            ),
        )),
        LeaseOutcome::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "execution {execution_id} already finished with status {}",
                status.as_str()
            ),
        )),
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

#[derive(Deserialize)]
struct CreateExecutionRequest {
    agent: String,
    input: String,
}

#[derive(Serialize)]
struct CreatedExecution {
    id: String,
    agent: String,
    status: &'static str,
}

async fn create_execution(
    State(queue): State<Arc<Queue>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<CreatedExecution>), ApiError> {
    let request: CreateExecutionRequest = parse_json_body(body)?;
    validate_agent_name(&request.agent)?;
    if request.input.len() > MAX_INPUT_BYTES {
        return Err(ApiError::bad_request(format!(
            "input is {} bytes; the limit is {MAX_INPUT_BYTES} (512 KiB)",
            request.input.len()
        )));
    }
    let execution = queue.create_execution(request.agent, request.input).await?;
    info!("created {} for agent {}", execution.id, execution.agent);
    Ok((
        StatusCode::CREATED,
        Json(CreatedExecution {
            id: execution.id,
            agent: execution.agent,
            status: execution.status.as_str(),
        }),
    ))
}

#[derive(Serialize)]
struct ExecutionView {
    id: String,
    agent: String,
    input: String,
    status: &'static str,
    result: Option<String>,
    error: Option<String>,
    attempts: i64,
    created_at: String,
    updated_at: String,
}

impl From<Execution> for ExecutionView {
    fn from(execution: Execution) -> Self {
        Self {
            id: execution.id,
            agent: execution.agent,
            input: execution.input,
            status: execution.status.as_str(),
            result: execution.result,
            error: execution.error,
            attempts: execution.attempts,
            created_at: rfc3339_from_unix_millis(execution.created_at),
            updated_at: rfc3339_from_unix_millis(execution.updated_at),
        }
    }
}

async fn get_execution(
    State(queue): State<Arc<Queue>>,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    match queue.execution(id.clone()).await? {
        Some(execution) => Ok(Json(execution.into())),
        None => Err(ApiError::unknown_execution(&id)),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    wait_seconds: Option<u64>,
}

#[derive(Serialize)]
struct EventView {
    seq: i64,
    kind: &'static str,
    message: String,
    at: String,
}

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        Self {
            seq: event.seq,
            kind: event.kind.as_str(),
            message: event.message,
            at: rfc3339_from_unix_millis(event.at),
        }
    }
}

#[derive(Serialize)]
struct EventsView {
    events: Vec<EventView>,
    status: &'static str,
    done: bool,
}

async fn list_events(
    State(queue): State<Arc<Queue>>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsView>, ApiError> {
    let query = parse_query(query)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad_request(format!(
            "after must be 0 or more, got {after}"
        )));
    }
    let wait = validate_wait_seconds(query.wait_seconds)?;
    let Some((events, status)) = queue.events_after(id.clone(), after, wait).await? else {
        return Err(ApiError::unknown_execution(&id));
    };
    Ok(Json(EventsView {
        events: events.into_iter().map(EventView::from).collect(),
        status: status.as_str(),
        done: status.is_done(),
    }))
}

#[derive(Deserialize)]
struct PollRequest {
    runner_id: String,
    wait_seconds: Option<u64>,
}

#[derive(Serialize)]
struct TaskView {
    execution_id: String,
    agent: String,
    input: String,
    lease_id: String,
    lease_seconds: u64,
    attempt: i64,
}

async fn poll_task(
    State(queue): State<Arc<Queue>>,
    Path(queue_name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if queue_name != QUEUE_NAME {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown task queue {queue_name:?}; the only queue is {QUEUE_NAME:?}"),
        ));
    }
    let request: PollRequest = parse_json_body(body)?;
    require_non_empty("runner_id", &request.runner_id)?;
    if request.runner_id.chars().count() > MAX_RUNNER_ID_CHARS {
        return Err(ApiError::bad_request(format!(
            "runner_id is longer than {MAX_RUNNER_ID_CHARS} characters"
        )));
    }
    let wait = validate_wait_seconds(request.wait_seconds)?;
    let runner_id = request.runner_id;
    let Some(task) = queue.poll_task(runner_id.clone(), wait).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    info!(
        "handed {} to runner {runner_id} (attempt {})",
        task.execution_id, task.attempt
    );
    Ok(Json(TaskView {
        execution_id: task.execution_id,
        agent: task.agent,
        input: task.input,
        lease_id: task.lease_id,
        lease_seconds: queue.lease_duration().as_secs(),
        attempt: task.attempt,
    })
    .into_response())
}

#[derive(Deserialize)]
struct RunnerEventRequest {
    lease_id: String,
    kind: String,
    message: String,
}

async fn append_runner_event(
    State(queue): State<Arc<Queue>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: RunnerEventRequest = parse_json_body(body)?;
    require_non_empty("lease_id", &request.lease_id)?;
    let kind = match request.kind.as_str() {
        "progress" => EventKind::Progress,
        "status" => EventKind::Status,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind must be \"progress\" or \"status\", got {other:?}"
            )))
        }
    };
    let outcome = queue
        .append_runner_event(id.clone(), request.lease_id.clone(), kind, request.message)
        .await?;
    lease_outcome(outcome, &id, &request.lease_id)
}

#[derive(Deserialize)]
struct HeartbeatRequest {
    lease_id: String,
}

async fn heartbeat(
    State(queue): State<Arc<Queue>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: HeartbeatRequest = parse_json_body(body)?;
    require_non_empty("lease_id", &request.lease_id)?;
    let outcome = queue
        .heartbeat(id.clone(), request.lease_id.clone())
        .await?;
    lease_outcome(outcome, &id, &request.lease_id)
}

#[derive(Deserialize)]
struct CompleteRequest {
    lease_id: String,
    status: String,
    result: Option<String>,
    error: Option<String>,
}

async fn complete(
    State(queue): State<Arc<Queue>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: CompleteRequest = parse_json_body(body)?;
    require_non_empty("lease_id", &request.lease_id)?;
    let status = match request.status.as_str() {
        "succeeded" => FinalStatus::Succeeded,
        "failed" => FinalStatus::Failed,
        other => {
            return Err(ApiError::bad_request(format!(
                "status must be \"succeeded\" or \"failed\", got {other:?}"
            )))
        }
    };
    let outcome = queue
        .complete(
            id.clone(),
            request.lease_id.clone(),
            status,
            request.result.clone(),
            request.error.clone(),
        )
        .await?;
    let response = lease_outcome(outcome, &id, &request.lease_id)?;
    info!("{id} finished: {}", request.status);
    Ok(response)
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// One log line per request: method, path, status, milliseconds.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    info!(
        "{method} {path} -> {} in {} ms",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_follow_the_contract() {
        for good in ["echo", "a", "my-agent-2", &"a".repeat(64)] {
            assert!(validate_agent_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Echo", "my_agent", "a b", "échо", &"a".repeat(65)] {
            assert!(validate_agent_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wait_seconds_is_bounded() {
        assert_eq!(validate_wait_seconds(None).ok(), Some(Duration::ZERO));
        assert_eq!(
            validate_wait_seconds(Some(30)).ok(),
            Some(Duration::from_secs(30))
        );
        assert!(validate_wait_seconds(Some(31)).is_err());
    }
}
