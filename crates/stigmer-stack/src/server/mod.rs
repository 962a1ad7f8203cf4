//! stigmer-server as a managed process of the stack: the `stigmer` program itself, run as
//! `stigmer server run` (the server is a library inside it, so users install one binary), with
//! its PID file `daemon.pid` and its log `logs/stigmer-server.log` (see [`crate::process`]);
//! [`api`] is the client of its HTTP API.

pub mod api;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::http;
use crate::process::{self, ProcessSpec, ProcessStatus};
use crate::stack::DataDir;

pub const DEFAULT_SERVER_PORT: u16 = 7234;
pub const COMPONENT: &str = "stigmer-server";
/// How long a fresh server may take to answer `/healthz` (it opens SQLite and binds a port).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// SIGTERM lets the server finish its requests; after this it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The loopback address the server listens on.
pub fn address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// How to run the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The `stigmer` program: the CLI's own executable, or the one `cargo xtask dev` built.
    pub program: PathBuf,
    pub port: u16,
    /// Temporal's HTTP API, where the server starts workflows.
    pub temporal_http: String,
    pub temporal_namespace: String,
}

impl ServerConfig {
    /// `stigmer server run ...` (pure, for tests).
    pub fn args(&self, data_dir: &DataDir) -> Vec<OsString> {
        vec![
            "server".into(),
            "run".into(),
            "--data-dir".into(),
            data_dir.root().as_os_str().to_owned(),
            "--listen".into(),
            address(self.port).to_string().into(),
            "--temporal-http".into(),
            self.temporal_http.clone().into(),
            "--temporal-namespace".into(),
            self.temporal_namespace.clone().into(),
        ]
    }

    pub fn process_spec(&self, data_dir: &DataDir) -> ProcessSpec {
        ProcessSpec {
            component: COMPONENT,
            program: self.program.clone(),
            args: self.args(data_dir),
            pid_file: data_dir.server_pid_file(),
            log_file: data_dir.log_file(COMPONENT),
            ports: vec![self.port],
            ready_probe: (self.port, "/healthz".to_string()),
            ready_timeout: READY_TIMEOUT,
            stop_grace: STOP_GRACE,
            port_hint: "choose another port with STIGMER_SERVER_PORT".to_string(),
        }
    }
}

/// Everything `status` shows about the server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServerStatus {
    #[serde(flatten)]
    pub process: ProcessStatus,
    pub url: String,
    /// `/healthz` answered on the port (with `state` other than `running`: another process).
    pub healthy: bool,
    pub version: Option<String>,
}

pub fn status(data_dir: &DataDir, port: u16) -> ServerStatus {
    let mut status = ServerStatus {
        process: process::status(&data_dir.server_pid_file(), &data_dir.log_file(COMPONENT)),
        url: url(port),
        healthy: false,
        version: None,
    };
    if let Ok(answer) = http::healthz(port, Duration::from_secs(2)) {
        status.healthy = true;
        status.version = answer["version"].as_str().map(String::from);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_args() {
        let config = ServerConfig {
            program: PathBuf::from("/bin/stigmer"),
            port: 7337,
            temporal_http: "http://127.0.0.1:7243".to_string(),
            temporal_namespace: "default".to_string(),
        };
        let args: Vec<String> = config
            .args(&DataDir::at(PathBuf::from("/d")))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "server",
                "run",
                "--data-dir",
                "/d",
                "--listen",
                "127.0.0.1:7337",
                "--temporal-http",
                "http://127.0.0.1:7243",
                "--temporal-namespace",
                "default"
            ]
        );
        let spec = config.process_spec(&DataDir::at(PathBuf::from("/d")));
        assert_eq!(spec.pid_file, PathBuf::from("/d/daemon.pid"));
        assert_eq!(spec.log_file, PathBuf::from("/d/logs/stigmer-server.log"));
        assert_eq!(spec.ports, [7337]);
    }
}
