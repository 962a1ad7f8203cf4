//! The one place that spawns a process. Every program the tools run (docker, cargo, pip,
//! mmdebstrap, apt-get, the stack's own processes) goes through these functions, so each call
//! has what it needs and nothing more: a deadline when it returns, streaming when its output is
//! shown while it runs, a process group of its own when it outlives the caller. Arguments are
//! passed as a list, one argv entry each: no shell is ever involved.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What one finished call printed.
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

/// Starts `program <args>` with `env` added, no stdin, and both output pipes for the caller
/// to drain.
pub fn spawn_piped(program: &str, args: &[String], env: &[(String, String)]) -> Result<Child> {
    spawn_piped_in(program, args, &Surroundings::adding(env))
}

/// Where a child runs and what its environment holds beyond this process's own: variables
/// added, variables removed (so a setting of the caller does not leak into a child meant to
/// run with its default), and a working directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Surroundings<'a> {
    pub env: &'a [(String, String)],
    pub unset: &'a [&'a str],
    pub dir: Option<&'a Path>,
}

impl<'a> Surroundings<'a> {
    pub fn adding(env: &'a [(String, String)]) -> Surroundings<'a> {
        Surroundings {
            env,
            ..Surroundings::default()
        }
    }
}

/// [`spawn_piped`] with its [`Surroundings`].
pub fn spawn_piped_in(program: &str, args: &[String], around: &Surroundings) -> Result<Child> {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(around.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in around.unset {
        command.env_remove(name);
    }
    if let Some(dir) = around.dir {
        command.current_dir(dir);
    }
    command
        .spawn()
        .with_context(|| format!("starting `{program} {}`", abbreviated(args)))
}

/// Runs `program <args>` and returns what it printed, or `None` when it did not finish within
/// `deadline` (it is killed then).
pub fn capture(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    deadline: Duration,
) -> Result<Option<Captured>> {
    capture_in(program, args, &Surroundings::adding(env), deadline)
}

/// [`capture`] with its [`Surroundings`].
pub fn capture_in(
    program: &str,
    args: &[String],
    around: &Surroundings,
    deadline: Duration,
) -> Result<Option<Captured>> {
    let mut child = spawn_piped_in(program, args, around)?;
    let output = PipeReaders::take_from(&mut child);
    let Some(status) =
        wait_within(&mut child, deadline).with_context(|| format!("waiting for `{program}`"))?
    else {
        return Ok(None);
    };
    let (stdout, stderr) = output.collect();
    Ok(Some(Captured {
        success: status.success(),
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }))
}

/// What a child writes on its piped stdout and stderr, read on threads of their own as it
/// comes, so a chatty child never blocks on a full pipe.
pub struct PipeReaders {
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl PipeReaders {
    pub fn take_from(child: &mut Child) -> PipeReaders {
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        PipeReaders {
            stdout: read(
                child
                    .stdout
                    .take()
                    .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
            ),
            stderr: read(
                child
                    .stderr
                    .take()
                    .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
            ),
        }
    }

    /// Everything written (stdout, stderr), once the child has exited.
    pub fn collect(self) -> (Vec<u8>, Vec<u8>) {
        (
            self.stdout.join().unwrap_or_default(),
            self.stderr.join().unwrap_or_default(),
        )
    }
}

/// The child's exit status, or `None` when it ran past `deadline` and was killed.
pub fn wait_within(child: &mut Child, deadline: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= deadline {
            // The child may already be gone; either way it no longer matters.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
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
    let mut child = spawn_piped(program, args, env)?;
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
        if crate::ui::interrupt::requested() && !interrupted {
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
        return Err(crate::ui::interrupt::Interrupted.into());
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

pub fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// Runs `program <args>` with this process's stdin, stdout and stderr (`docker logs -f`, a
/// command whose output is the user's to read).
pub fn passthrough(program: &str, args: &[String]) -> Result<ExitStatus> {
    Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("starting `{program} {}`", abbreviated(args)))
}

/// Runs `program <args>` in `dir` to its end, its output shown as it comes (a build, a test
/// run); fails with the exit code when it does not succeed.
pub fn run(
    program: &str,
    args: &[impl AsRef<OsStr>],
    dir: &Path,
    env: &[(&str, &str)],
) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting `{program}`"))?;
    if !status.success() {
        bail!(
            "`{program} {}` failed ({})",
            shown(args),
            exit_text(status.code())
        );
    }
    Ok(())
}

/// Runs `program <args>` in `dir` and returns its standard output; fails with the tail of its
/// standard error when it does not succeed.
pub fn read(program: &str, args: &[impl AsRef<OsStr>], dir: &Path) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting `{program}`"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed ({}):\n{}",
            shown(args),
            exit_text(output.status.code()),
            tail_lines(&String::from_utf8_lossy(&output.stderr), 10)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `program <args>` runs and succeeds, its output discarded: a probe (`sudo -n true`,
/// `mmdebstrap --version`). A program that cannot be started counts as a failure.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts `program <args>` detached, in a process group of its own (Ctrl-C in the terminal
/// that started it must not reach a process that outlives that command), its output appended
/// to `log`.
pub fn spawn_detached(program: &Path, args: &[impl AsRef<OsStr>], log: File) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_for_stderr = log.try_clone().context("duplicating the log file handle")?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

fn shown(args: &[impl AsRef<OsStr>]) -> String {
    args.iter()
        .map(|arg| arg.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The command as an error message shows it: long values (labels, manifests) cut short.
pub fn abbreviated(args: &[String]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hanging_command_is_killed_at_its_deadline() {
        let started = Instant::now();
        let answer = capture(
            "sleep",
            &["10".to_string()],
            &[],
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(answer, None);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let finished = capture("sleep", &["0".to_string()], &[], Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert!(finished.success);
    }

    #[test]
    fn long_arguments_are_cut_short_in_messages() {
        let long = abbreviated(&["build".to_string(), "x".repeat(200)]);
        assert!(long.chars().count() < 100, "{long}");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn surroundings_set_unset_and_place_the_child() {
        let env = [("STIGMER_EXEC_TEST_ADDED".to_string(), "yes".to_string())];
        let around = Surroundings {
            env: &env,
            unset: &["HOME"],
            dir: Some(Path::new("/tmp")),
        };
        let script = "echo \"$STIGMER_EXEC_TEST_ADDED ${HOME:-unset} $(pwd)\"".to_string();
        let captured = capture_in(
            "/bin/sh",
            &["-c".to_string(), script],
            &around,
            Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
        assert!(captured.success, "{captured:?}");
        assert_eq!(captured.stdout.trim(), "yes unset /tmp");
    }

    #[test]
    fn run_read_and_probe() {
        let here = Path::new("/");
        assert_eq!(read("echo", &["hi"], here).unwrap(), "hi\n");
        assert!(run("false", &[] as &[&str], here, &[]).is_err());
        assert!(succeeds("true", &[]));
        assert!(!succeeds("/nonexistent/program", &[]));
    }
}
