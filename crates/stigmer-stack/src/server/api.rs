//! The client side of the stigmer-server HTTP API (`/v1/executions`), for the CLI's `run`
//! and the dev loop's smoke check: typed requests and answers over [`crate::http`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::{self, Body, Response};
use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// How long the server may hold a long poll for events (the API allows up to 30 s).
pub const EVENTS_WAIT_SECONDS: u64 = 25;
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Execution {
    pub id: String,
    pub agent: String,
    pub status: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventsPage {
    pub events: Vec<Event>,
    pub done: bool,
}

pub struct Api {
    addr: SocketAddr,
}

impl Api {
    pub fn new(port: u16) -> Api {
        Api {
            addr: super::address(port),
        }
    }

    /// Whether the server answers at all: the first thing `stigmer run` checks.
    pub fn reachable(&self) -> bool {
        http::healthz(self.addr.port(), Duration::from_secs(2)).is_ok()
    }

    pub fn create_execution(&self, agent: &str, input: &str) -> Result<Created> {
        let body = serde_json::json!({ "agent": agent, "input": input }).to_string();
        let response = http::post(
            self.addr,
            "/v1/executions",
            Body {
                content_type: "application/json",
                bytes: body.as_bytes(),
            },
            SHORT_TIMEOUT,
        )?;
        parse(&response, "creating the execution")
    }

    pub fn execution(&self, id: &str) -> Result<Execution> {
        let response = http::get(
            self.addr,
            &format!("/v1/executions/{}", path_segment(id)?),
            SHORT_TIMEOUT,
        )?;
        parse(&response, &format!("reading execution {id}"))
    }

    /// Events with `seq > after`, waiting up to [`EVENTS_WAIT_SECONDS`] for the first one.
    pub fn events(&self, id: &str, after: u64) -> Result<EventsPage> {
        let path = format!(
            "/v1/executions/{}/events?after={after}&wait_seconds={EVENTS_WAIT_SECONDS}",
            path_segment(id)?
        );
        let timeout = Duration::from_secs(EVENTS_WAIT_SECONDS + 10);
        let response = http::get(self.addr, &path, timeout)?;
        parse(&response, &format!("reading the events of {id}"))
    }
}

impl Api {
    /// Follows `id` until it ends, without printing anything, and returns how it ended.
    pub fn wait_until_done(&self, id: &str, timeout: Duration) -> Result<Execution> {
        let started = std::time::Instant::now();
        let mut after = 0;
        loop {
            let page = self.events(id, after)?;
            after = page.events.last().map_or(after, |event| event.seq);
            if page.done {
                return self.execution(id);
            }
            if started.elapsed() >= timeout {
                bail!("{id} did not finish within {} s", timeout.as_secs());
            }
        }
    }
}

/// Execution IDs go into a URL path: refuse anything that would change it.
fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("`{id}` is not an execution ID (they look like exec-01j…)");
    }
    Ok(id)
}

fn parse<T: serde::de::DeserializeOwned>(response: &Response, what: &str) -> Result<T> {
    if !(200..300).contains(&response.status) {
        bail!("{what}: {}", error_message(response));
    }
    serde_json::from_slice(&response.body)
        .with_context(|| format!("{what}: unexpected answer `{}`", response.text()))
}

/// The server's `{"error": ...}` message, or the raw answer.
pub fn error_message(response: &Response) -> String {
    match response.json() {
        Ok(body) if body["error"].is_string() => {
            format!(
                "{} (HTTP {})",
                body["error"].as_str().unwrap_or_default(),
                response.status
            )
        }
        _ => format!("HTTP {}: {}", response.status, response.text().trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_shown_with_their_message() {
        let response = Response {
            status: 400,
            body: br#"{"error":"agent must match [a-z0-9-]"}"#.to_vec(),
        };
        assert_eq!(
            error_message(&response),
            "agent must match [a-z0-9-] (HTTP 400)"
        );
        let response = Response {
            status: 502,
            body: b"bad gateway".to_vec(),
        };
        assert_eq!(error_message(&response), "HTTP 502: bad gateway");
    }

    #[test]
    fn execution_ids_cannot_escape_the_path() {
        assert!(path_segment("exec-01abc").is_ok());
        for bad in ["", "../x", "a/b", "a?b=c", "a b"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_page_parses() {
        let page: EventsPage = serde_json::from_str(
            r#"{"events":[{"seq":1,"kind":"status","message":"queued","at":"2024-01-01T00:00:00Z"}],"status":"queued","done":false}"#,
        )
        .unwrap();
        assert_eq!(page.events[0].kind, "status");
        assert!(!page.done);
    }
}
