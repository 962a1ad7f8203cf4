//! The HTTP edge: the axum router, one handler per route, request validation, and the mapping
//! of every failure (axum's body and query rejections included) to the `{"error": "..."}` shape.
//! Handlers translate between JSON and the `executions` methods; they hold no state of their own.
//!
//! The contract, shared by the server, the Python agent-runner and the `stigmer` CLI:
//!
//! ```text
//! All JSON, HTTP/1.1, on 127.0.0.1:7234 (loopback only). Errors: non-2xx with body {"error": "<human message>"}.
//! Request bodies larger than 1 MiB -> 413; malformed JSON or missing/invalid fields -> 400; unknown execution -> 404.
//!
//! Health
//! - GET /healthz -> 200 {"status":"ok","version":"0.1.0","temporal":{"http":"http://127.0.0.1:7243","namespace":"default","task_queue":"agent_execution_runner"}}
//!
//! Clients (the `stigmer` CLI)
//! - POST /v1/executions  body {"agent": "echo", "input": "hello"}   (agent: 1..=64 chars [a-z0-9-]; input: string, may be "")
//!   -> 201 {"id": "exec-<26 lowercase base36 chars>", "agent": "echo", "status": "queued"}
//!   The execution is stored, then started as the Temporal workflow `ExecuteAgent` whose ID is the execution ID,
//!   on task queue `agent_execution_runner`.
//! - GET /v1/executions/{id}
//!   -> 200 {"id","agent","input","status","result","error","attempts","created_at","updated_at"}
//!      status is one of "queued" | "running" | "succeeded" | "failed"; result/error are string or null; times RFC 3339 UTC.
//! - GET /v1/executions/{id}/events?after=N&wait_seconds=S   (long poll; after defaults 0, wait_seconds 0..=30, default 0)
//!   -> 200 {"events":[{"seq":1,"kind":"status"|"progress"|"result"|"error","message":"...","at":"<rfc3339>"}],
//!           "status":"running","done":false}
//!      Returns at once if events with seq > N exist or the execution is done; otherwise waits up to S seconds for one.
//!      "done" is true when status is succeeded or failed; the final event is kind "result" (succeeded) or "error" (failed).
//!
//! Runners (the Python agent-runner's activity, best effort)
//! - POST /v1/executions/{id}/events  body {"kind": "status"|"progress", "message": "..."}
//!   -> 204; a "status" event means the runner started the agent: status becomes "running", attempts +1.
//!   -> 404 unknown execution; 409 when the execution already finished.
//! How an execution ends is Temporal's word: the server reads the workflow's close event.
//! Everything accepted is stored in SQLite before the response is sent, so nothing accepted is lost when the server
//! is SIGKILLed; on start, the workflows of unfinished executions are watched again.
//! ```

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
use crate::executions::Executions;
use crate::log::{error, info};
use crate::store::{Event, EventKind, Execution, RunnerEventOutcome};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_INPUT_BYTES: usize = 512 * 1024;
const MAX_AGENT_NAME_CHARS: usize = 64;
const MAX_WAIT_SECONDS: u64 = 30;

pub fn router(executions: Arc<Executions>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/executions", post(create_execution))
        .route("/v1/executions/{id}", get(get_execution))
        .route(
            "/v1/executions/{id}/events",
            get(list_events).post(append_runner_event),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(executions)
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

async fn health(State(executions): State<Arc<Executions>>) -> Json<serde_json::Value> {
    let target = executions.temporal().target();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "temporal": {
            "http": target.http_base,
            "namespace": target.namespace,
            "task_queue": target.task_queue,
        },
    }))
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
    State(executions): State<Arc<Executions>>,
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
    let execution = executions.create(request.agent, request.input).await?;
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
    State(executions): State<Arc<Executions>>,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    match executions.execution(id.clone()).await? {
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
    State(executions): State<Arc<Executions>>,
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
    let Some((events, status)) = executions.events_after(id.clone(), after, wait).await? else {
        return Err(ApiError::unknown_execution(&id));
    };
    Ok(Json(EventsView {
        events: events.into_iter().map(EventView::from).collect(),
        status: status.as_str(),
        done: status.is_done(),
    }))
}

#[derive(Deserialize)]
struct RunnerEventRequest {
    kind: String,
    message: String,
}

async fn append_runner_event(
    State(executions): State<Arc<Executions>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: RunnerEventRequest = parse_json_body(body)?;
    let kind = match request.kind.as_str() {
        "progress" => EventKind::Progress,
        "status" => EventKind::Status,
        other => {
            return Err(ApiError::bad_request(format!(
                "kind must be \"progress\" or \"status\", got {other:?}"
            )))
        }
    };
    match executions
        .append_runner_event(id.clone(), kind, request.message)
        .await?
    {
        RunnerEventOutcome::Accepted => Ok(StatusCode::NO_CONTENT),
        RunnerEventOutcome::UnknownExecution => Err(ApiError::unknown_execution(&id)),
        RunnerEventOutcome::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "execution {id} already finished with status {}",
                status.as_str()
            ),
        )),
    }
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
