//! The docker edge: the `docker` client, and the engine's state as typed data ([`engine`],
//! [`inspect`], [`registry`]). Every other module builds argument lists and parses output as
//! plain data; the spawning itself is [`crate::exec`]'s.
//!
//! Every call that returns has a deadline ([`deadline_for`]): a wedged daemon makes `docker`
//! hang rather than fail, and a tool that hangs with it leaves the user guessing. When one
//! passes, the call is killed and the error ([`TimedOut`]) names the command and says what to
//! do. Calls whose output is shown while they run (a build, `logs -f`) have none; they end on
//! Ctrl-C. Each argument stays exactly one argv entry: no shell is involved.

pub mod engine;
pub mod inspect;
pub mod registry;

use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use crate::exec::Captured;
use crate::exec::{self, abbreviated, exit_text};

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
        ["stop" | "restart", ..] => u64::from(crate::runner::spec::STOP_GRACE_SECONDS) + 30,
        ["run" | "create" | "start" | "exec", ..] => 120,
        ["image", "import"] | ["import", ..] | ["image", "save" | "load"] => 600,
        _ => 30,
    };
    Duration::from_secs(seconds)
}

/// A handle on the `docker` client; `program` is `docker` unless a test or a user says otherwise.
pub struct Docker {
    program: String,
    /// The daemon's ID once [`engine::check_engine`] or [`Docker::engine_id`] asked.
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
        match exec::capture(&self.program, args, env, deadline)? {
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
        exec::capture(&self.program, args, &[], deadline)
    }

    /// Runs `docker <args>`, handing each line of its output to `on_line` as it arrives.
    pub fn stream(
        &self,
        args: &[String],
        env: &[(String, String)],
        on_line: impl FnMut(&str),
    ) -> Result<()> {
        exec::stream(&self.program, args, env, on_line)
    }

    /// Runs `docker <args>` with this process's stdin, stdout and stderr (for `logs -f`).
    pub fn passthrough(&self, args: &[String]) -> Result<()> {
        let status = exec::passthrough(&self.program, args)?;
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

/// The short form of a container or image ID, as `docker ps` and `docker images` print it:
/// 12 hex characters without the `sha256:` prefix.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// `name` → `name:latest`, as docker lists tags.
pub fn normalized_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || reference.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
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
    fn ids_are_shortened_like_docker_does() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

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
    }

    #[test]
    fn tags_are_normalized_like_docker_lists_them() {
        assert_eq!(normalized_tag("python:3.11-slim"), "python:3.11-slim");
        assert_eq!(normalized_tag("busybox"), "busybox:latest");
        assert_eq!(
            normalized_tag("localhost:5000/base"),
            "localhost:5000/base:latest"
        );
    }
}
