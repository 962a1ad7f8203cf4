//! The stigmer-server background process: finding its binary, starting it detached with its
//! PID file and log file, its status, and stopping it.
//!
//! `daemon.pid` holds `"<pid> <start time>"`, the start time being field 22 of
//! `/proc/<pid>/stat` (clock ticks after boot). A PID alone is not proof: after the server
//! died the kernel may hand its number to any other process. A PID file whose process is
//! gone, whose start time differs (PID reuse) or that does not parse is stale: it is removed,
//! and no signal is ever sent to the process it names.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::http;
use crate::paths::DataDir;

pub const DEFAULT_SERVER_PORT: u16 = 7234;
pub const BINARY_NAME: &str = "stigmer-server";
pub const LOG_FILE_NAME: &str = "stigmer-server.log";
/// How long a fresh server may take to answer `/healthz` (it opens SQLite and binds a port).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// SIGTERM lets the server finish its requests; after this it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the server's output goes.
pub fn log_file(data_dir: &DataDir) -> PathBuf {
    data_dir.logs_dir().join(LOG_FILE_NAME)
}

/// The loopback address the server listens on.
pub fn address(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Finds the server binary: `$STIGMER_SERVER_BIN`, else `stigmer-server` beside the running
/// program (cargo puts all binaries of a workspace in one directory), else on `PATH`.
/// The environment values are handed in by the caller.
pub fn find_binary(
    explicit: Option<OsString>,
    current_exe: Option<PathBuf>,
    path_var: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(explicit) = explicit.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(explicit);
        if !is_executable(&path) {
            bail!(
                "STIGMER_SERVER_BIN names `{}`, which is not an executable file: build it with \
                 `cargo build -p stigmer-server` or unset STIGMER_SERVER_BIN",
                path.display()
            );
        }
        return Ok(path);
    }
    let beside = current_exe
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join(BINARY_NAME));
    let on_path = path_var
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(BINARY_NAME));
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable(candidate))
        .with_context(|| {
            format!(
                "the `{BINARY_NAME}` program was found neither beside this program nor on PATH: \
                 build it with `cargo build -p stigmer-server`, or point STIGMER_SERVER_BIN at it"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The content of `daemon.pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
}

impl PidRecord {
    /// Parses `"<pid> <start time>"`; anything else (a bare PID included) is `None`.
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse::<i32>().ok().filter(|pid| *pid > 1)?;
        let start_time = fields.next()?.parse::<u64>().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(PidRecord { pid, start_time })
    }

    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie: exited, not yet reaped) and so on.
    pub state: char,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The second field is the command name in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the last `)`
/// (proc(5)).
pub fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) ... field 22 (starttime): index 19 from here.
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `record` names a live process that is the one we started.
fn is_ours_and_alive(record: PidRecord) -> bool {
    matches!(proc_stat(record.pid), Some(stat) if stat.state != 'Z' && stat.start_time == record.start_time)
}

/// Seconds a process started `start_time` ticks after boot has been running.
fn uptime_of(start_time: u64) -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let system_seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let started = start_time as f64 / ticks_per_second as f64;
    Some((system_seconds - started).max(0.0) as u64)
}

/// What the PID file says, checked against `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    Absent,
    /// The file exists but names no process of ours; the reason says why.
    Stale {
        reason: String,
    },
    Running {
        record: PidRecord,
    },
}

/// Reads and checks `daemon.pid` without changing anything.
pub fn state(data_dir: &DataDir) -> ServerState {
    let path = data_dir.server_pid_file();
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return ServerState::Absent,
        Err(err) => {
            return ServerState::Stale {
                reason: format!("it cannot be read ({err})"),
            }
        }
    };
    let Some(record) = PidRecord::parse(&text) else {
        return ServerState::Stale {
            reason: format!("it does not hold `<pid> <start time>`: {:?}", text.trim()),
        };
    };
    match proc_stat(record.pid) {
        None => ServerState::Stale {
            reason: format!("process {} is gone", record.pid),
        },
        Some(stat) if stat.state == 'Z' => ServerState::Stale {
            reason: format!("process {} has exited", record.pid),
        },
        Some(stat) if stat.start_time != record.start_time => ServerState::Stale {
            reason: format!(
                "process {} is another program that got the same PID later",
                record.pid
            ),
        },
        Some(_) => ServerState::Running { record },
    }
}

/// Whether the running server is an older build than `binary`: cargo replaces the file on a
/// rebuild, so the process's `/proc/<pid>/exe` then reads `… (deleted)` or names another file.
pub fn runs_outdated_binary(record: &PidRecord, binary: &Path) -> bool {
    let Ok(running) = fs::read_link(format!("/proc/{}/exe", record.pid)) else {
        return false;
    };
    let wanted = binary
        .canonicalize()
        .unwrap_or_else(|_| binary.to_path_buf());
    running != wanted
}

/// Removes a stale PID file; returns why it was stale, or `None` when there was nothing to do.
pub fn remove_stale(data_dir: &DataDir) -> Result<Option<String>> {
    match state(data_dir) {
        ServerState::Stale { reason } => {
            remove_pid_file(data_dir)?;
            Ok(Some(reason))
        }
        ServerState::Absent | ServerState::Running { .. } => Ok(None),
    }
}

fn remove_pid_file(data_dir: &DataDir) -> Result<()> {
    let path = data_dir.server_pid_file();
    crate::paths::remove_if_present(&path)
}

fn write_pid_file(data_dir: &DataDir, record: PidRecord) -> Result<()> {
    let path = data_dir.server_pid_file();
    crate::paths::write_atomically(&path, record.to_line().as_bytes())
}

/// How to run the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub binary: PathBuf,
    pub port: u16,
    /// `--lease-seconds`; the server's default (30 s) when `None`.
    pub lease_seconds: Option<u64>,
}

impl ServerConfig {
    /// The server's arguments (pure, for tests).
    pub fn args(&self, data_dir: &DataDir) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            data_dir.root().as_os_str().to_owned(),
            "--listen".into(),
            address(self.port).to_string().into(),
        ];
        if let Some(seconds) = self.lease_seconds {
            args.extend(["--lease-seconds".into(), seconds.to_string().into()]);
        }
        args
    }
}

/// What [`start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    AlreadyRunning { pid: i32 },
    Started { pid: i32 },
}

impl StartOutcome {
    pub fn pid(self) -> i32 {
        match self {
            StartOutcome::AlreadyRunning { pid } | StartOutcome::Started { pid } => pid,
        }
    }
}

/// Starts the server detached unless ours already runs, and waits until `/healthz` answers.
/// A stale PID file is removed first. On failure nothing is left running.
pub fn start(data_dir: &DataDir, config: &ServerConfig) -> Result<StartOutcome> {
    if let ServerState::Running { record } = state(data_dir) {
        return Ok(StartOutcome::AlreadyRunning { pid: record.pid });
    }
    remove_stale(data_dir)?;
    // Something else (another data directory's server, another program) may hold the port;
    // its answers must not be taken for our server's.
    if http::get(address(config.port), "/healthz", Duration::from_millis(500)).is_ok() {
        bail!(
            "another process already answers on {} although no server of this data directory \
             ({}) runs: stop it, or choose another port with STIGMER_SERVER_PORT",
            url(config.port),
            data_dir.root().display()
        );
    }
    fs::create_dir_all(data_dir.logs_dir())
        .with_context(|| format!("creating {}", data_dir.logs_dir().display()))?;
    let log_path = log_file(data_dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_offset = log.metadata().map(|meta| meta.len()).unwrap_or(0);
    let log_for_stderr = log.try_clone().context("duplicating the log file handle")?;
    let mut child = Command::new(&config.binary)
        .args(config.args(data_dir))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        // A process group of its own: Ctrl-C in the terminal that ran `stigmer server
        // start` must not reach the server, which outlives that command.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", config.binary.display()))?;
    let pid = i32::try_from(child.id()).context("the server's PID does not fit a pid_t")?;
    let record = match proc_stat(pid) {
        Some(stat) => PidRecord {
            pid,
            start_time: stat.start_time,
        },
        None => {
            let _ = child.wait();
            bail!(
                "{BINARY_NAME} exited at once; the end of {}:\n{}",
                log_path.display(),
                log_since(&log_path, log_offset)
            );
        }
    };
    write_pid_file(data_dir, record)?;
    if let Err(err) = wait_until_healthy(&mut child, config.port, &log_path, log_offset) {
        let _ = stop(data_dir);
        let _ = child.wait();
        return Err(err);
    }
    Ok(StartOutcome::Started { pid })
}

fn wait_until_healthy(child: &mut Child, port: u16, log_path: &Path, offset: u64) -> Result<()> {
    let started = Instant::now();
    loop {
        // Checked before the health endpoint: an answer must come from our own process.
        if let Some(status) = child.try_wait().context("watching the server process")? {
            bail!(
                "{BINARY_NAME} exited while starting ({status}); its log ({}) says:\n{}",
                log_path.display(),
                log_since(log_path, offset)
            );
        }
        if http::healthz(port, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if started.elapsed() >= READY_TIMEOUT {
            bail!(
                "{BINARY_NAME} did not answer on {} within {} s; its log ({}) says:\n{}",
                url(port),
                READY_TIMEOUT.as_secs(),
                log_path.display(),
                log_since(log_path, offset)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last lines the log received after `offset` (this run's output).
fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_string(&mut text)
    });
    match read {
        Ok(_) if text.trim().is_empty() => "(nothing)".to_string(),
        Ok(_) => crate::docker::tail_lines(&text, 30),
        Err(err) => format!("(could not read it: {err})"),
    }
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped {
        pid: i32,
        killed: bool,
    },
    /// Nothing of ours ran; a stale PID file (with its reason) may have been removed.
    NotRunning {
        stale: Option<String>,
    },
}

/// SIGTERM, up to [`STOP_GRACE`], then SIGKILL; the PID file is removed. Idempotent.
pub fn stop(data_dir: &DataDir) -> Result<StopOutcome> {
    let record = match state(data_dir) {
        ServerState::Absent => return Ok(StopOutcome::NotRunning { stale: None }),
        ServerState::Stale { reason } => {
            remove_pid_file(data_dir)?;
            return Ok(StopOutcome::NotRunning {
                stale: Some(reason),
            });
        }
        ServerState::Running { record } => record,
    };
    signal(record.pid, libc::SIGTERM)?;
    let deadline = Instant::now() + STOP_GRACE;
    let mut killed = false;
    while is_ours_and_alive(record) {
        if Instant::now() >= deadline {
            if !killed {
                signal(record.pid, libc::SIGKILL)?;
                killed = true;
            }
            if Instant::now() >= deadline + Duration::from_secs(5) {
                bail!(
                    "{BINARY_NAME} (pid {}) is still there 5 s after SIGKILL",
                    record.pid
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_pid_file(data_dir)?;
    Ok(StopOutcome::Stopped {
        pid: record.pid,
        killed,
    })
}

fn signal(pid: i32, signal: i32) -> Result<()> {
    // SAFETY: kill only sends a signal; the PID was checked against its start time just before.
    let result = unsafe { libc::kill(pid, signal) };
    if result != 0 {
        let err = std::io::Error::last_os_error();
        // ESRCH: the process ended between the check and the signal, which is what we wanted.
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signalling {BINARY_NAME} (pid {pid})"));
        }
    }
    Ok(())
}

/// Everything `stigmer server status` shows about the server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServerStatus {
    /// `running`, `stale` or `absent`.
    pub state: &'static str,
    pub pid: Option<i32>,
    pub uptime_seconds: Option<u64>,
    pub url: String,
    /// `/healthz` answered on the port (with `state` other than `running`: another process).
    pub healthy: bool,
    pub version: Option<String>,
    pub stale_reason: Option<String>,
    pub log_file: PathBuf,
}

pub fn status(data_dir: &DataDir, port: u16) -> ServerStatus {
    let mut status = ServerStatus {
        state: "absent",
        pid: None,
        uptime_seconds: None,
        url: url(port),
        healthy: false,
        version: None,
        stale_reason: None,
        log_file: log_file(data_dir),
    };
    match state(data_dir) {
        ServerState::Absent => {}
        ServerState::Stale { reason } => {
            status.state = "stale";
            status.stale_reason = Some(reason);
        }
        ServerState::Running { record } => {
            status.state = "running";
            status.pid = Some(record.pid);
            status.uptime_seconds = uptime_of(record.start_time);
        }
    }
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
    fn pid_record_round_trip() {
        let record = PidRecord {
            pid: 4242,
            start_time: 123_456,
        };
        assert_eq!(record.to_line(), "4242 123456\n");
        assert_eq!(PidRecord::parse(&record.to_line()), Some(record));
    }

    #[test]
    fn corrupt_pid_files_are_refused() {
        for text in [
            "",
            "4242",
            "4242 x",
            "abc 1",
            "-1 5",
            "0 5",
            "1 5",
            "4242 5 6",
            "99999999999 5",
        ] {
            assert_eq!(PidRecord::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn proc_stat_fields_after_a_tricky_name() {
        // A real line from /proc/<pid>/stat, with a command name holding `) (` and spaces.
        let stat = "4242 (evil) (name x) S 1 4242 4242 0 -1 4194560 300 0 0 0 2 1 0 0 20 0 1 0 987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(
            parse_proc_stat(stat),
            Some(ProcStat {
                state: 'S',
                start_time: 987_654
            })
        );
        assert_eq!(parse_proc_stat("4242 (cut) S 1 2"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
    }

    #[test]
    fn own_process_is_alive_and_ours() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let stat = proc_stat(pid).unwrap();
        assert!(is_ours_and_alive(PidRecord {
            pid,
            start_time: stat.start_time
        }));
        // Same PID, another start time: PID reuse, so not ours.
        assert!(!is_ours_and_alive(PidRecord {
            pid,
            start_time: stat.start_time + 1
        }));
        assert!(uptime_of(stat.start_time).is_some());
    }

    #[test]
    fn stale_files_are_removed_and_nothing_is_signalled() {
        let root = std::env::temp_dir().join(format!("stigmer-pid-test-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let data_dir = DataDir::at(root.clone());
        let own = i32::try_from(std::process::id()).unwrap();
        let own_start = proc_stat(own).unwrap().start_time;
        // This test process with a wrong start time: must be left alone (we would die).
        for text in [format!("{own} {}", own_start + 7), "garbage".to_string()] {
            fs::write(data_dir.server_pid_file(), &text).unwrap();
            assert!(matches!(state(&data_dir), ServerState::Stale { .. }));
            assert!(matches!(
                stop(&data_dir).unwrap(),
                StopOutcome::NotRunning { stale: Some(_) }
            ));
            assert!(!data_dir.server_pid_file().exists());
        }
        assert_eq!(
            stop(&data_dir).unwrap(),
            StopOutcome::NotRunning { stale: None }
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn server_args() {
        let config = ServerConfig {
            binary: PathBuf::from("/bin/stigmer-server"),
            port: 7337,
            lease_seconds: Some(5),
        };
        let args: Vec<String> = config
            .args(&DataDir::at(PathBuf::from("/d")))
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--data-dir",
                "/d",
                "--listen",
                "127.0.0.1:7337",
                "--lease-seconds",
                "5"
            ]
        );
    }

    #[test]
    fn binary_lookup_order_and_error() {
        let dir = std::env::temp_dir().join(format!("stigmer-bin-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let binary = dir.join(BINARY_NAME);
        fs::write(&binary, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        let exe = Some(dir.join("stigmer"));
        assert_eq!(find_binary(None, exe.clone(), None).unwrap(), binary);
        assert_eq!(
            find_binary(None, None, Some(dir.clone().into_os_string())).unwrap(),
            binary
        );
        let err = find_binary(None, Some(PathBuf::from("/nonexistent/stigmer")), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cargo build -p stigmer-server"), "{err}");
        assert!(find_binary(Some("/nonexistent/x".into()), exe, None).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
