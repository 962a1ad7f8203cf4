//! The engine-backed CLI tests' harness: a [`Stack`] is one test's data directory and the
//! environment its `stigmer` children get (ports, container name, image), set on the children
//! only, never on the test process. Tests of one binary share a container name and ports, so
//! they take turns through [`Stack::new`]'s lock; the guard stops whatever a test started,
//! even when it panics. The engine and the test image must be there: a missing one fails.

// Each test binary uses a part of the harness.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use stigmer_stack::exec::{self, PipeReaders};
use stigmer_stack::http;

pub const IMAGE: &str = "stigmer-agent-runner:test";

/// The names and ports one test binary uses, apart from every other binary's and from a
/// developer's own stack.
pub struct Names {
    pub container: &'static str,
    pub health_port: u16,
    pub server_port: u16,
    pub temporal_port: u16,
}

static LOCK: Mutex<()> = Mutex::new(());

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the `docker` program must be installed for these tests")
}

/// The engine and the test image must be there: a missing one is a failure, not a skip.
fn require_engine_and_image() {
    let info = docker(&["info", "--format", "{{.ID}}"]);
    assert!(
        info.status.success(),
        "these tests need a running Docker engine: {}",
        text(&info.stderr)
    );
    let image = docker(&["image", "inspect", IMAGE]);
    assert!(
        image.status.success(),
        "the image {IMAGE} is missing: build it with \
         `STIGMER_RUNNER_IMAGE={IMAGE} cargo xtask rebuild-runner` (cargo xtask ci does)"
    );
}

/// The Temporal CLI the stack runs, through the project's own installer (downloaded once
/// into the shared tools directory when missing).
pub fn temporal_cli() -> PathBuf {
    let config = stigmer_stack::stack::StackConfig::from_lookup(
        |name| {
            ["STIGMER_TOOLS_DIR", "XDG_CACHE_HOME", "HOME"]
                .contains(&name)
                .then(|| std::env::var(name).ok())
                .flatten()
        },
        stigmer_stack::stack::DataDir::at(PathBuf::from("/unused")),
    )
    .unwrap();
    stigmer_stack::temporal::binary(&config.temporal, &config.tools_dir, |_| {}).unwrap()
}

/// How long one `stigmer` command of a test may take (a first start pulls nothing, but a
/// stop waits out grace periods).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(300);

/// One test's stack: its data directory and the environment its `stigmer` children get.
pub struct Stack {
    pub home: PathBuf,
    pub names: &'static Names,
    env: Vec<(&'static str, String)>,
    _turn: MutexGuard<'static, ()>,
}

impl Stack {
    pub fn new(names: &'static Names, name: &str) -> Stack {
        let turn = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        require_engine_and_image();
        let home =
            std::env::temp_dir().join(format!("stigmer-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let env = vec![
            ("STIGMER_HOME", home.display().to_string()),
            ("STIGMER_RUNNER_IMAGE", IMAGE.to_string()),
            ("STIGMER_RUNNER_CONTAINER", names.container.to_string()),
            ("STIGMER_RUNNER_HEALTH_PORT", names.health_port.to_string()),
            ("STIGMER_SERVER_PORT", names.server_port.to_string()),
            ("STIGMER_TEMPORAL_PORT", names.temporal_port.to_string()),
        ];
        let stack = Stack {
            home,
            names,
            env,
            _turn: turn,
        };
        // A previous run that crashed may have left our test container behind.
        stack.stigmer(&["server", "stop"]);
        let _ = docker(&["rm", "--force", names.container]);
        stack
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stigmer"));
        command
            .args(args)
            .stdin(Stdio::null())
            .env_remove("STIGMER_TEMPORAL_ADDRESS");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// `stigmer <args>` to its end; one that runs past [`COMMAND_DEADLINE`] fails the test
    /// instead of holding the suite.
    pub fn stigmer(&self, args: &[&str]) -> Output {
        self.stigmer_env(args, &[])
    }

    /// Like [`Stack::stigmer`], with extra variables for this one child.
    pub fn stigmer_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_with_deadline(child, COMMAND_DEADLINE)
    }

    pub fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    pub fn server_pid_file(&self) -> PathBuf {
        self.data().join("daemon.pid")
    }

    pub fn temporal_pid_file(&self) -> PathBuf {
        self.data().join("temporal.pid")
    }

    pub fn id_file(&self) -> PathBuf {
        self.data().join("agent-runner-container.id")
    }

    pub fn server_pid(&self) -> i32 {
        pid_in(&self.server_pid_file())
    }

    pub fn temporal_pid(&self) -> i32 {
        pid_in(&self.temporal_pid_file())
    }

    pub fn server(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.names.server_port))
    }

    /// The server's record of an execution.
    pub fn execution(&self, id: &str) -> serde_json::Value {
        http::get(
            self.server(),
            &format!("/v1/executions/{id}"),
            Duration::from_secs(5),
        )
        .unwrap()
        .json()
        .unwrap()
    }

    /// Waits until a runner reports that it runs the execution.
    pub fn wait_until_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let execution = self.execution(id);
            if execution["status"] == "running" {
                return;
            }
            assert!(Instant::now() < deadline, "never ran: {execution}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes whose command line mentions this test's data directory (our server and
    /// our Temporal).
    pub fn processes(&self) -> Vec<String> {
        let needle = self.data().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                entry.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                let state = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let zombie = state.rsplit(')').next()?.trim_start().starts_with('Z');
                (!zombie && cmdline.contains(&needle)).then_some(cmdline)
            })
            .collect()
    }

    /// Containers of this test's data directory, whatever their name or state.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label=dev.stigmer.data-dir={}", self.data().display());
        let output = docker(&["ps", "--all", "--quiet", "--filter", &filter]);
        text(&output.stdout).lines().map(String::from).collect()
    }

    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert_eq!(
            container_state(self.names.container),
            None,
            "the container is left"
        );
        assert_eq!(self.containers(), Vec::<String>::new());
        assert_eq!(self.processes(), Vec::<String>::new(), "processes are left");
        for file in [
            self.server_pid_file(),
            self.temporal_pid_file(),
            self.id_file(),
        ] {
            assert!(!file.exists(), "{} is left", file.display());
        }
    }

    /// `stigmer run` in the background, once it printed its execution ID.
    pub fn run_in_background(&self, args: &[&str]) -> (Child, String, Receiver<String>) {
        let (child, lines) = spawn_until(self.command(args), "Execution ID: ");
        let id = lines
            .recv()
            .unwrap()
            .strip_prefix("Execution ID: ")
            .unwrap()
            .to_string();
        (child, id, lines)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stigmer(&["server", "stop"]);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn pid_in(file: &std::path::Path) -> i32 {
    let text = std::fs::read_to_string(file).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// `docker inspect`'s status of a container, `None` when it does not exist.
pub fn container_state(name: &str) -> Option<String> {
    let output = docker(&[
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Status}}",
        name,
    ]);
    output
        .status
        .success()
        .then(|| text(&output.stdout).trim().to_string())
}

/// A process exists and has not exited; a zombie waiting for init to reap it counts as gone.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill only sends a signal; every PID here is one this test started.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill -{signal} {pid}"
    );
}

pub fn signal(child: &Child, signal: i32) {
    kill(i32::try_from(child.id()).unwrap(), signal);
}

pub fn wait_with_deadline(mut child: Child, deadline: Duration) -> Output {
    let output = PipeReaders::take_from(&mut child);
    let status = exec::wait_within(&mut child, deadline).unwrap();
    let (stdout, stderr) = output.collect();
    let Some(status) = status else {
        panic!(
            "not finished within {deadline:?}; stderr:\n{}",
            text(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Starts `command` and returns once a line of its stderr contains `needle`, with the child;
/// that line and the rest of its stderr keep flowing into the returned channel.
pub fn spawn_until(mut command: Command, needle: &str) -> (Child, Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (sender, lines) = std::sync::mpsc::channel();
    let (found_sender, found) = std::sync::mpsc::channel();
    let wanted = needle.to_string();
    std::thread::spawn(move || {
        let mut seen = false;
        for line in stderr.lines().map_while(Result::ok) {
            if !seen && line.contains(&wanted) {
                seen = true;
                let _ = found_sender.send(());
            }
            if seen {
                let _ = sender.send(line);
            }
        }
    });
    if found.recv_timeout(Duration::from_secs(90)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`{needle}` never appeared on the stderr of `stigmer {}`",
            command_text(&command)
        );
    }
    (child, lines)
}

fn command_text(command: &Command) -> String {
    command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn percentile(mut samples: Vec<Duration>, fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
    samples[index]
}
