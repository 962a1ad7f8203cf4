//! The one place that spawns `docker`: every other module builds argument lists and parses
//! output as plain data.
//!
//! Captured calls go through an [`xshell::Shell`], so each argument stays exactly one argv
//! entry. Calls whose output must be seen while they run (a build, `logs -f`) use
//! [`std::process::Command`] directly because xshell has no streaming API.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// What one finished `docker` call printed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Captured {
    fn from(output: std::process::Output) -> Captured {
        Captured {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
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
    sh: Shell,
    program: String,
}

impl Docker {
    pub fn new() -> Result<Docker> {
        let sh = Shell::new().context("creating a shell for docker calls")?;
        Ok(Docker {
            sh,
            program: "docker".to_string(),
        })
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    /// Runs `docker <args>` and returns what it printed, whatever its exit status.
    pub fn capture(&self, args: &[String]) -> Result<Captured> {
        self.capture_with_env(args, &[])
    }

    /// Like [`Docker::capture`], with extra variables in docker's own environment (for values
    /// that must not appear on its command line).
    pub fn capture_with_env(&self, args: &[String], env: &[(String, String)]) -> Result<Captured> {
        let program = &self.program;
        let output = cmd!(self.sh, "{program} {args...}")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running `docker {}`", args.join(" ")))?;
        Ok(Captured::from(output))
    }

    /// Runs `docker <args>`, failing with the command and the tail of its stderr.
    pub fn checked(&self, args: &[String]) -> Result<String> {
        let captured = self.capture(args)?;
        if !captured.success {
            bail!(
                "`docker {}` failed ({}):\n{}",
                args.join(" "),
                exit_text(captured.code),
                captured.stderr_tail()
            );
        }
        Ok(captured.stdout)
    }

    /// Runs `docker <args>` with a deadline; `None` when it did not finish in time (it is killed).
    pub fn capture_within(&self, args: &[String], deadline: Duration) -> Result<Option<Captured>> {
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{} {}`", self.program, args.join(" ")))?;
        let started = Instant::now();
        loop {
            if child.try_wait().context("waiting for docker")?.is_some() {
                let output = child
                    .wait_with_output()
                    .context("reading docker's output")?;
                return Ok(Some(Captured::from(output)));
            }
            if started.elapsed() >= deadline {
                // The child may already be gone; either way it no longer matters.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
            .with_context(|| format!("starting `docker {}`", args.join(" ")))?;
        if !status.success() {
            bail!(
                "`docker {}` failed ({})",
                args.join(" "),
                exit_text(status.code())
            );
        }
        Ok(())
    }
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
