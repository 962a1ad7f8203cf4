//! Launching a managed process detached with its PID file and log, waiting until its ready
//! probe answers (or reporting its log when it exits or times out), and stopping it with
//! SIGTERM, then SIGKILL after the grace period.
//!
//! Apart from `/proc` reading because these are the operations that spawn and signal; each
//! checks the PID file against `/proc` first, so only our own process is ever signalled.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::procfs::{
    is_ours_and_alive, port_holder, proc_stat, remove_stale, state, PidRecord, ProcessState,
};
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
    // A forced exit between the start and the PID file would leave a process no stop can
    // find, holding the ports the next start needs.
    let (child, pid) = crate::ui::interrupt::hold_forced_exit(|| -> Result<(Child, i32)> {
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
        if let Err(err) = write_pid_file(&spec.pid_file, &record) {
            // Unrecorded, it could never be stopped: it goes at once.
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        Ok((child, pid))
    })?;
    Ok(Launch::Launched(Launched {
        child,
        pid,
        log_offset,
    }))
}

fn write_pid_file(pid_file: &Path, record: &PidRecord) -> Result<()> {
    let pid_dir = pid_file.parent().context("a PID file has a directory")?;
    fs::create_dir_all(pid_dir).with_context(|| format!("creating {}", pid_dir.display()))?;
    crate::files::write_atomically(pid_file, record.to_line().as_bytes())
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
    fn a_process_is_alive_until_its_last_thread_exits() {
        use super::super::procfs::any_thread_running;
        // The main thread ends (pthread_exit) while another thread sleeps: the main thread is
        // a zombie, and the process still holds its listening socket.
        let script = "import ctypes, socket, sys, threading, time\n\
                      s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
                      print(s.getsockname()[1], flush=True)\n\
                      threading.Thread(target=time.sleep, args=(60,)).start()\n\
                      ctypes.CDLL(None).pthread_exit(None)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the agent-runner's tests need it too)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_stat(pid).unwrap().state != 'Z' {
            assert!(Instant::now() < deadline, "the main thread never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        let record = PidRecord {
            pid,
            start_time: proc_stat(pid).unwrap().start_time,
        };
        assert!(port_answers(port));
        assert!(is_ours_and_alive(record));
        let pid_file = std::env::temp_dir().join(format!("stigmer-thread-test-{pid}.pid"));
        fs::write(&pid_file, record.to_line()).unwrap();
        assert_eq!(state(&pid_file), ProcessState::Running { record });

        child.kill().unwrap();
        while any_thread_running(pid) {
            assert!(Instant::now() < deadline, "the process never exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Exited, not yet reaped: gone, and so is its port.
        assert_eq!(proc_stat(pid).unwrap().state, 'Z');
        assert!(!is_ours_and_alive(record));
        assert!(matches!(state(&pid_file), ProcessState::Stale { .. }));
        assert!(!port_answers(port));
        child.wait().unwrap();
        fs::remove_file(pid_file).unwrap();
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
