//! A background process the stack manages on the host (stigmer-server, the Temporal dev
//! server): started detached with a PID file and a log file, checked, stopped.
//!
//! A PID file holds `"<pid> <start time>"`, the start time being field 22 of `/proc/<pid>/stat`
//! (clock ticks after boot). A PID alone is not proof: after the process died the kernel may
//! hand its number to any other process. A PID file whose process is gone, whose start time
//! differs (PID reuse) or that does not parse is stale: it is removed, and no signal is ever
//! sent to the process it names. A port that already answers before a start belongs to someone
//! else: it is reported, with the process holding it when `/proc` tells, and never touched.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::http;

/// Everything needed to start, probe and stop one managed process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The name users see: `stigmer-server`, `temporal`.
    pub component: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// Loopback ports the process listens on; one that answers before the start is another
    /// process's.
    pub ports: Vec<u16>,
    /// A loopback HTTP endpoint that answers 2xx once the process is ready.
    pub ready_probe: (u16, String),
    pub ready_timeout: Duration,
    /// SIGTERM, then this long, then SIGKILL.
    pub stop_grace: Duration,
    /// What a user can do when a port is taken (the variable that moves it).
    pub port_hint: String,
}

/// The content of a PID file.
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
pub fn uptime_of(start_time: u64) -> Option<u64> {
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

/// Resident memory of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn resident_bytes(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// What a PID file says, checked against `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    Absent,
    /// The file exists but names no process of ours; the reason says why.
    Stale {
        reason: String,
    },
    Running {
        record: PidRecord,
    },
}

/// Reads and checks a PID file without changing anything.
pub fn state(pid_file: &Path) -> ProcessState {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return ProcessState::Absent,
        Err(err) => {
            return ProcessState::Stale {
                reason: format!("it cannot be read ({err})"),
            }
        }
    };
    let Some(record) = PidRecord::parse(&text) else {
        return ProcessState::Stale {
            reason: format!("it does not hold `<pid> <start time>`: {:?}", text.trim()),
        };
    };
    match proc_stat(record.pid) {
        None => ProcessState::Stale {
            reason: format!("process {} is gone", record.pid),
        },
        Some(stat) if stat.state == 'Z' => ProcessState::Stale {
            reason: format!("process {} has exited", record.pid),
        },
        Some(stat) if stat.start_time != record.start_time => ProcessState::Stale {
            reason: format!(
                "process {} is another program that got the same PID later",
                record.pid
            ),
        },
        Some(_) => ProcessState::Running { record },
    }
}

/// Whether the running process is an older build than `binary`: cargo replaces the file on a
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
pub fn remove_stale(pid_file: &Path) -> Result<Option<String>> {
    match state(pid_file) {
        ProcessState::Stale { reason } => {
            crate::files::remove_if_present(pid_file)?;
            Ok(Some(reason))
        }
        ProcessState::Absent | ProcessState::Running { .. } => Ok(None),
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

    pub fn started(self) -> bool {
        matches!(self, StartOutcome::Started { .. })
    }
}

/// Whether something accepts connections on the loopback `port`.
pub fn port_answers(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// The message for a port that another process holds.
fn port_taken_message(spec: &ProcessSpec, port: u16) -> String {
    let holder = port_holder(port)
        .map(|(pid, name)| format!(" (pid {pid}, `{name}`)"))
        .unwrap_or_default();
    format!(
        "port {port}, which {component} needs, is already taken by another process{holder} that \
         this stack did not start: it is left alone. Stop it, or {hint}",
        component = spec.component,
        hint = spec.port_hint
    )
}

/// The process listening on the loopback TCP `port`, from `/proc/net/tcp` and the `/proc/*/fd`
/// links to its socket inode; `None` when `/proc` does not tell (another user's process).
pub fn port_holder(port: u16) -> Option<(i32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            listening_inode(&text, port)
        })?;
    let link = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str())
        });
        if owns {
            let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_string()));
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table (state `0A`).
pub fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        let listening = fields.get(3)? == &"0A";
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// Starts the process detached unless ours already runs, and waits until its probe answers.
/// A stale PID file is removed first. On failure nothing is left running.
pub fn start(spec: &ProcessSpec) -> Result<StartOutcome> {
    match launch(spec)? {
        Launch::AlreadyRunning { pid } => Ok(StartOutcome::AlreadyRunning { pid }),
        Launch::Launched(launched) => launched.wait_until_ready(spec),
    }
}

/// What [`launch`] did: the stack launches all its processes first and then waits for them
/// together, so their start-up times overlap.
pub enum Launch {
    AlreadyRunning { pid: i32 },
    Launched(Launched),
}

/// A process just spawned, not yet known to be ready.
pub struct Launched {
    child: Child,
    pid: i32,
    log_offset: u64,
}

impl Launched {
    /// Waits until the probe answers; on failure the process is stopped and its PID file gone.
    pub fn wait_until_ready(mut self, spec: &ProcessSpec) -> Result<StartOutcome> {
        if let Err(err) = wait_until_ready(spec, &mut self.child, self.log_offset) {
            let _ = stop(&spec.pid_file, spec.component, spec.stop_grace);
            let _ = self.child.wait();
            return Err(err);
        }
        Ok(StartOutcome::Started { pid: self.pid })
    }
}

/// Spawns the process detached with its PID file written, unless ours already runs; a stale
/// PID file is removed first, and a port another process holds is refused.
pub fn launch(spec: &ProcessSpec) -> Result<Launch> {
    if let ProcessState::Running { record } = state(&spec.pid_file) {
        return Ok(Launch::AlreadyRunning { pid: record.pid });
    }
    remove_stale(&spec.pid_file)?;
    // Another program (or another data directory's stack) may hold a port; its answers must
    // not be taken for our process's, and it is not ours to stop.
    if let Some(port) = spec.ports.iter().copied().find(|port| port_answers(*port)) {
        bail!(port_taken_message(spec, port));
    }
    let log_dir = spec
        .log_file
        .parent()
        .context("a log file has a directory")?;
    fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_file)
        .with_context(|| format!("opening {}", spec.log_file.display()))?;
    let log_offset = log.metadata().map(|meta| meta.len()).unwrap_or(0);
    let mut child = crate::exec::spawn_detached(&spec.program, &spec.args, log)
        .with_context(|| format!("starting {}", spec.component))?;
    let pid = i32::try_from(child.id()).context("the PID does not fit a pid_t")?;
    let record = match proc_stat(pid) {
        Some(stat) => PidRecord {
            pid,
            start_time: stat.start_time,
        },
        None => {
            let _ = child.wait();
            bail!(
                "{} exited at once; the end of {}:\n{}",
                spec.component,
                spec.log_file.display(),
                log_since(&spec.log_file, log_offset)
            );
        }
    };
    let pid_dir = spec
        .pid_file
        .parent()
        .context("a PID file has a directory")?;
    fs::create_dir_all(pid_dir).with_context(|| format!("creating {}", pid_dir.display()))?;
    crate::files::write_atomically(&spec.pid_file, record.to_line().as_bytes())?;
    Ok(Launch::Launched(Launched {
        child,
        pid,
        log_offset,
    }))
}

fn wait_until_ready(spec: &ProcessSpec, child: &mut Child, log_offset: u64) -> Result<()> {
    let started = Instant::now();
    let (port, path) = &spec.ready_probe;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
    loop {
        crate::ui::interrupt::check()?;
        // Checked before the probe: an answer must come from our own process.
        if let Some(status) = child.try_wait().context("watching the process")? {
            bail!(
                "{} exited while starting ({status}); its log ({}) says:\n{}",
                spec.component,
                spec.log_file.display(),
                log_since(&spec.log_file, log_offset)
            );
        }
        if http::get(address, path, Duration::from_millis(500))
            .is_ok_and(|answer| (200..300).contains(&answer.status))
        {
            return Ok(());
        }
        if started.elapsed() >= spec.ready_timeout {
            bail!(
                "{} did not answer on http://{address}{path} within {} s; its log ({}) says:\n{}",
                spec.component,
                spec.ready_timeout.as_secs(),
                spec.log_file.display(),
                log_since(&spec.log_file, log_offset)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
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
        Ok(_) => crate::exec::tail_lines(&text, 30),
        Err(err) => format!("(could not read it: {err})"),
    }
}

/// What [`stop`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum StopOutcome {
    Stopped {
        pid: i32,
        /// It ignored SIGTERM for the whole grace period.
        killed: bool,
    },
    /// Nothing of ours ran; a stale PID file (with its reason) may have been removed.
    NotRunning { stale: Option<String> },
}

/// SIGTERM, up to `grace`, then SIGKILL; the PID file is removed. Idempotent.
pub fn stop(pid_file: &Path, component: &str, grace: Duration) -> Result<StopOutcome> {
    let record = match state(pid_file) {
        ProcessState::Absent => return Ok(StopOutcome::NotRunning { stale: None }),
        ProcessState::Stale { reason } => {
            crate::files::remove_if_present(pid_file)?;
            return Ok(StopOutcome::NotRunning {
                stale: Some(reason),
            });
        }
        ProcessState::Running { record } => record,
    };
    signal(record.pid, libc::SIGTERM, component)?;
    let deadline = Instant::now() + grace;
    let mut killed = false;
    while is_ours_and_alive(record) {
        if Instant::now() >= deadline {
            if !killed {
                signal(record.pid, libc::SIGKILL, component)?;
                killed = true;
            }
            if Instant::now() >= deadline + Duration::from_secs(5) {
                bail!(
                    "{component} (pid {}) is still there 5 s after SIGKILL",
                    record.pid
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    crate::files::remove_if_present(pid_file)?;
    Ok(StopOutcome::Stopped {
        pid: record.pid,
        killed,
    })
}

fn signal(pid: i32, signal: i32, component: &str) -> Result<()> {
    // SAFETY: kill only sends a signal; the PID was checked against its start time just before.
    let result = unsafe { libc::kill(pid, signal) };
    if result != 0 {
        let err = std::io::Error::last_os_error();
        // ESRCH: the process ended between the check and the signal, which is what we wanted.
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signalling {component} (pid {pid})"));
        }
    }
    Ok(())
}

/// One managed process's part of a status report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessStatus {
    /// `running`, `stale` or `absent`.
    pub state: &'static str,
    pub pid: Option<i32>,
    pub uptime_seconds: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub stale_reason: Option<String>,
    pub log_file: PathBuf,
}

pub fn status(pid_file: &Path, log_file: &Path) -> ProcessStatus {
    let mut status = ProcessStatus {
        state: "absent",
        pid: None,
        uptime_seconds: None,
        resident_bytes: None,
        stale_reason: None,
        log_file: log_file.to_path_buf(),
    };
    match state(pid_file) {
        ProcessState::Absent => {}
        ProcessState::Stale { reason } => {
            status.state = "stale";
            status.stale_reason = Some(reason);
        }
        ProcessState::Running { record } => {
            status.state = "running";
            status.pid = Some(record.pid);
            status.uptime_seconds = uptime_of(record.start_time);
            status.resident_bytes = resident_bytes(record.pid);
        }
    }
    status
}

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
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
        assert!(resident_bytes(pid).is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn stale_files_are_removed_and_nothing_is_signalled() {
        let root = std::env::temp_dir().join(format!("stigmer-pid-test-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let pid_file = root.join("x.pid");
        let own = i32::try_from(std::process::id()).unwrap();
        let own_start = proc_stat(own).unwrap().start_time;
        // This test process with a wrong start time: must be left alone (we would die).
        for text in [format!("{own} {}", own_start + 7), "garbage".to_string()] {
            fs::write(&pid_file, &text).unwrap();
            assert!(matches!(state(&pid_file), ProcessState::Stale { .. }));
            assert!(matches!(
                stop(&pid_file, "x", Duration::from_secs(1)).unwrap(),
                StopOutcome::NotRunning { stale: Some(_) }
            ));
            assert!(!pid_file.exists());
        }
        assert_eq!(
            stop(&pid_file, "x", Duration::from_secs(1)).unwrap(),
            StopOutcome::NotRunning { stale: None }
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_listening_socket_is_found_in_the_tcp_table() {
        // Captured from /proc/net/tcp: a listener on 127.0.0.1:7233 (0x1C41) and a connection.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1C41 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listening_inode(table, 7233), Some(123_456));
        assert_eq!(listening_inode(table, 7234), None);
    }

    #[test]
    fn the_holder_of_a_port_is_named_and_never_touched() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_answers(port));
        let (pid, _) = port_holder(port).unwrap();
        assert_eq!(pid, i32::try_from(std::process::id()).unwrap());
        let spec = ProcessSpec {
            component: "temporal",
            program: PathBuf::from("/bin/false"),
            args: Vec::new(),
            pid_file: std::env::temp_dir().join(format!("port-test-{port}.pid")),
            log_file: std::env::temp_dir().join(format!("port-test-{port}.log")),
            ports: vec![port],
            ready_probe: (port, "/".to_string()),
            ready_timeout: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            port_hint: "move it with STIGMER_TEMPORAL_PORT".to_string(),
        };
        let err = start(&spec).unwrap_err().to_string();
        assert!(err.contains(&format!("port {port}")), "{err}");
        assert!(err.contains("STIGMER_TEMPORAL_PORT"), "{err}");
        assert!(!spec.pid_file.exists());
        // The listener is still ours and still listening.
        assert!(port_answers(port));
    }
}
