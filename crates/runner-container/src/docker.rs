//! The one place that spawns `docker`: every other module builds argument lists and parses
//! output as plain data.
//!
//! Every call that returns has a deadline ([`deadline_for`]): a wedged daemon makes `docker`
//! hang rather than fail, and a tool that hangs with it leaves the user guessing. When one
//! passes, the call is killed and the error ([`TimedOut`]) names the command and says what to
//! do. Calls whose output is shown while they run (a build, `logs -f`) have none; they end on
//! Ctrl-C. Each argument stays exactly one argv entry: no shell is involved.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A docker call that did not finish within its deadline (it was killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub command: String,
    pub after: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` did not finish within {:.1} s, so it was stopped: the Docker engine may be wedged or \
             overloaded. Check it with `docker info`, restart it if it does not answer, then run \
             this again (STIGMER_DOCKER_TIMEOUT_SCALE=2 doubles every deadline, for a slow engine)",
            self.command,
            self.after.as_secs_f64()
        )
    }
}

impl std::error::Error for TimedOut {}

/// How long a `docker` call may take, from its subcommand: long for transfers, the grace
/// period and a margin for stops, short for queries, which a healthy engine answers in
/// milliseconds.
pub fn deadline_for(args: &[String]) -> Duration {
    let words: Vec<&str> = args.iter().map(String::as_str).take(2).collect();
    let seconds = match words.as_slice() {
        ["pull" | "push", ..] | ["image", "pull" | "push"] => 900,
        ["stop" | "restart", ..] => u64::from(crate::spec::STOP_GRACE_SECONDS) + 30,
        ["run" | "create" | "start" | "exec", ..] => 120,
        ["image", "import"] | ["import", ..] | ["image", "save" | "load"] => 600,
        _ => 30,
    };
    Duration::from_secs(seconds)
}

/// What one finished `docker` call printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    /// The last lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        tail_lines(&self.stderr, 10)
    }
}

pub fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A handle on the `docker` client; `program` is `docker` unless a test or a user says otherwise.
pub struct Docker {
    program: String,
    /// The daemon's ID once [`crate::engine::check_engine`] or [`Docker::engine_id`] asked.
    engine_id: std::sync::OnceLock<String>,
    /// `STIGMER_DOCKER_TIMEOUT_SCALE`, read once: every deadline is multiplied by it (tests
    /// shrink them, a slow engine stretches them).
    deadline_scale: f64,
}

impl Docker {
    pub fn new() -> Result<Docker> {
        let deadline_scale = match std::env::var("STIGMER_DOCKER_TIMEOUT_SCALE") {
            Err(_) => 1.0,
            Ok(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|scale| (0.01..=100.0).contains(scale))
                .with_context(|| {
                    format!("STIGMER_DOCKER_TIMEOUT_SCALE must be a number from 0.01 to 100, got `{text}`")
                })?,
        };
        Ok(Docker {
            program: "docker".to_string(),
            engine_id: std::sync::OnceLock::new(),
            deadline_scale,
        })
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// The ID of the daemon this handle talks to (asked once): ID files and container labels
    /// record it, so nothing recorded against one engine is acted on in another.
    pub fn engine_id(&self) -> Result<String> {
        if let Some(id) = self.engine_id.get() {
            return Ok(id.clone());
        }
        let id = self
            .checked(&args(["info", "--format", "{{.ID}}"]))?
            .trim()
            .to_string();
        if id.is_empty() {
            bail!("the Docker engine reported no ID (`docker info --format '{{{{.ID}}}}'`)");
        }
        self.remember_engine_id(&id);
        Ok(id)
    }

    pub(crate) fn remember_engine_id(&self, id: &str) {
        let _ = self.engine_id.set(id.to_string());
    }

    /// Runs `docker <args>` and returns what it printed, whatever its exit status.
    pub fn capture(&self, args: &[String]) -> Result<Captured> {
        self.capture_with_env(args, &[])
    }

    /// Like [`Docker::capture`], with extra variables in docker's own environment (for values
    /// that must not appear on its command line).
    pub fn capture_with_env(&self, args: &[String], env: &[(String, String)]) -> Result<Captured> {
        let deadline = deadline_for(args).mul_f64(self.deadline_scale);
        match self.run_until(args, env, deadline)? {
            Some(captured) => Ok(captured),
            None => Err(TimedOut {
                command: format!("docker {}", abbreviated(args)),
                after: deadline,
            }
            .into()),
        }
    }

    /// Runs `docker <args>`, failing with the command and the tail of its stderr.
    pub fn checked(&self, args: &[String]) -> Result<String> {
        let captured = self.capture(args)?;
        if !captured.success {
            bail!(
                "`docker {}` failed ({}):\n{}",
                abbreviated(args),
                exit_text(captured.code),
                captured.stderr_tail()
            );
        }
        Ok(captured.stdout)
    }

    /// Runs `docker <args>` with an explicit deadline; `None` when it did not finish in time
    /// (it is killed). For the engine check, whose deadline is part of its message.
    pub fn capture_within(&self, args: &[String], deadline: Duration) -> Result<Option<Captured>> {
        self.run_until(args, &[], deadline)
    }

    fn run_until(
        &self,
        args: &[String],
        env: &[(String, String)],
        deadline: Duration,
    ) -> Result<Option<Captured>> {
        let mut child = Command::new(&self.program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{} {}`", self.program, abbreviated(args)))?;
        // Both pipes drain on their own threads so a chatty command never blocks on a full pipe.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        );
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for docker")? {
                break status;
            }
            if started.elapsed() >= deadline {
                // The child may already be gone; either way it no longer matters.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let joined = |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_default();
        Ok(Some(Captured {
            success: status.success(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&joined(stdout)).into_owned(),
            stderr: String::from_utf8_lossy(&joined(stderr)).into_owned(),
        }))
    }

    /// Runs `docker <args>`, handing each line of its output to `on_line` as it arrives.
    pub fn stream(
        &self,
        args: &[String],
        env: &[(String, String)],
        on_line: impl FnMut(&str),
    ) -> Result<()> {
        stream(&self.program, args, env, on_line)
    }

    /// Runs `docker <args>` with this process's stdin, stdout and stderr (for `logs -f`).
    pub fn passthrough(&self, args: &[String]) -> Result<()> {
        let status = Command::new(&self.program)
            .args(args)
            .status()
            .with_context(|| format!("starting `docker {}`", abbreviated(args)))?;
        if !status.success() {
            bail!(
                "`docker {}` failed ({})",
                abbreviated(args),
                exit_text(status.code())
            );
        }
        Ok(())
    }
}

/// The command as an error message shows it: long values (labels, manifests) cut short.
fn abbreviated(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            if arg.chars().count() > 80 {
                format!("{}…", arg.chars().take(77).collect::<String>())
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program <args>`, handing each line of its output (stdout, then stderr) to `on_line`
/// as it arrives. Fails with the last 50 lines when the command fails. Used for docker and
/// for the other long-running tools of the loop (mmdebstrap).
pub fn stream(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{program} {}`", args.join(" ")))?;
    // Both pipes are drained on their own threads, so lines arrive as they are written
    // whichever pipe the tool uses, and neither pipe can fill up and stall it.
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|pipe| Box::new(pipe) as Box<dyn std::io::Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|pipe| Box::new(pipe) as Box<dyn std::io::Read + Send>);
    for pipe in [stdout, stderr].into_iter().flatten() {
        let sender = sender.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(sender);
    let mut recent: Vec<String> = Vec::new();
    let mut interrupted = false;
    loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                on_line(&line);
                recent.push(line);
                if recent.len() > 50 {
                    recent.remove(0);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if crate::interrupt::requested() && !interrupted {
            // Without a terminal the child did not get the Ctrl-C itself: pass it on, so
            // that docker cancels the build (or mmdebstrap cleans up) before we return.
            interrupted = true;
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill only sends a signal to our own child.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{program}`"))?;
    if interrupted {
        return Err(crate::interrupt::Interrupted.into());
    }
    if !status.success() {
        // The full argument list can be long (labels); the first words name the command.
        let command: Vec<&str> = std::iter::once(program)
            .chain(args.iter().take(2).map(String::as_str))
            .collect();
        bail!(
            "`{} …` failed ({}); its last lines:\n{}",
            command.join(" "),
            exit_text(status.code()),
            recent.join("\n")
        );
    }
    Ok(())
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// Builds an owned argument list from string slices.
pub fn args<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_subcommand() {
        let of =
            |words: &[&str]| deadline_for(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        assert_eq!(of(&["pull", "x"]), Duration::from_secs(900));
        assert_eq!(of(&["image", "push", "x"]), Duration::from_secs(900));
        assert_eq!(of(&["stop", "--time", "30", "x"]), Duration::from_secs(60));
        assert_eq!(of(&["image", "inspect", "x"]), Duration::from_secs(30));
        assert_eq!(of(&["run", "--rm", "x"]), Duration::from_secs(120));
        assert_eq!(of(&["ps", "--all"]), Duration::from_secs(30));
    }

    #[test]
    fn a_timeout_names_the_command_and_the_fix() {
        let message = TimedOut {
            command: "docker image inspect stigmer-agent-runner:local".to_string(),
            after: Duration::from_secs(30),
        }
        .to_string();
        assert!(
            message.starts_with(
                "`docker image inspect stigmer-agent-runner:local` did not finish within 30.0 s"
            ),
            "{message}"
        );
        assert!(message.contains("docker info"), "{message}");
        let long = abbreviated(&["build".to_string(), "x".repeat(200)]);
        assert!(long.chars().count() < 100, "{long}");
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_deadline() {
        let docker = Docker {
            program: "sleep".to_string(),
            engine_id: std::sync::OnceLock::new(),
            deadline_scale: 1.0,
        };
        let started = Instant::now();
        let answer = docker
            .capture_within(&["10".to_string()], Duration::from_millis(200))
            .unwrap();
        assert_eq!(answer, None);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let finished = docker
            .capture_within(&["0".to_string()], Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(finished.success);
    }
}
