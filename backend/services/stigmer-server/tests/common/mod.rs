//! Test harness shared by the integration tests: a throwaway data directory, the real
//! `stigmer-server` binary started on a free loopback port (it is told to listen on port 0 and
//! the test reads the bound address from its log), and a minimal HTTP/1.1 client over
//! `std::net::TcpStream`, so the tests exercise exactly what the runner and the CLI will see.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let path = std::env::temp_dir().join(format!(
            "stigmer-server-{name}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `stigmer-server`; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stigmer-server"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
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
        let address = match address_receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lock().map(|lines| lines.join("\n")).unwrap_or_default();
                bail!("stigmer-server did not report its address; its log:\n{lines}");
            }
        };
        Ok(Self {
            child,
            addr: address.parse().context("parse the reported address")?,
            log,
        })
    }

    pub fn log(&self) -> String {
        self.log
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill().context("kill the server")?;
        self.child.wait().context("reap the server")?;
        Ok(())
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("poll the server")? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("the server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse> {
        request(self.addr, method, path, body.map(str::as_bytes))
    }

    pub fn get(&self, path: &str) -> Result<HttpResponse> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<HttpResponse> {
        self.request("POST", path, Some(&body.to_string()))
    }

    /// Creates an execution and returns its ID.
    pub fn create_execution(&self, agent: &str, input: &str) -> Result<String> {
        let response = self.post(
            "/v1/executions",
            &serde_json::json!({ "agent": agent, "input": input }),
        )?;
        response.expect_status(201)?;
        Ok(response.json()?["id"]
            .as_str()
            .context("id is a string")?
            .to_owned())
    }

    /// Polls the runner queue; `None` on 204.
    pub fn poll(&self, runner_id: &str, wait_seconds: u64) -> Result<Option<Value>> {
        let response = self.post(
            "/v1/task-queues/agent_execution_runner/poll",
            &serde_json::json!({ "runner_id": runner_id, "wait_seconds": wait_seconds }),
        )?;
        match response.status {
            204 => Ok(None),
            200 => Ok(Some(response.json()?)),
            other => bail!("poll answered {other}: {}", response.body),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("parse JSON: {}", self.body))
    }

    pub fn expect_status(&self, status: u16) -> Result<&Self> {
        if self.status != status {
            bail!("expected {status}, got {}: {}", self.status, self.body);
        }
        Ok(self)
    }

    /// The `error` field of a JSON error body.
    pub fn error_message(&self) -> Result<String> {
        Ok(self.json()?["error"]
            .as_str()
            .with_context(|| format!("no error field in {}", self.body))?
            .to_owned())
    }
}

/// One request on a fresh connection with `Connection: close`, read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&message).context("send the request")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context("read the response")?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let status_line = head.lines().next().context("empty response")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .context("no status code")?
        .parse()
        .context("parse the status code")?;
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if chunked {
        bail!("chunked responses are not expected from this server: {text:?}");
    }
    Ok(HttpResponse {
        status,
        body: body.to_owned(),
    })
}
