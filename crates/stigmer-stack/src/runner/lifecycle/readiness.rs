//! Whether the agent-runner answers: waiting for its health endpoint after a start, reloading
//! it in place (the dev loop's SIGHUP to its supervisor) and reading its logs for the reports
//! when it does not.
//!
//! Apart from start and stop because these poll a running container and never create or
//! remove one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::find::inspect_container;
use crate::docker::inspect::{ContainerState, RunStatus};
use crate::docker::{args, Docker};
use crate::http;
use crate::runner::spec::ContainerSpec;

/// Polls the health endpoint until it answers, watching the container so that an exit is
/// reported at once with its code and last log lines instead of after the whole timeout.
pub fn wait_until_ready(
    docker: &Docker,
    spec: &ContainerSpec,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last_state_check = Instant::now();
    loop {
        crate::ui::interrupt::check()?;
        if http::healthz(spec.health_port, Duration::from_millis(250)).is_ok() {
            return Ok(started.elapsed());
        }
        if last_state_check.elapsed() >= Duration::from_millis(300) {
            last_state_check = Instant::now();
            match inspect_container(docker, &spec.name)? {
                ContainerState::Ours(container) if container.status == RunStatus::Running => {}
                ContainerState::Ours(container) => bail!(
                    "the agent-runner container stopped while starting ({:?}, exit code {}); its last log lines:\n{}",
                    container.status,
                    container.exit_code,
                    log_tail(docker, &container.id, 50)
                ),
                _ => bail!("the agent-runner container disappeared while starting"),
            }
        }
        if started.elapsed() >= timeout {
            bail!(
                "the agent-runner did not answer on {} within {} s; its last log lines:\n{}",
                format_args!("127.0.0.1:{}", spec.health_port),
                timeout.as_secs(),
                log_tail(docker, &spec.name, 50)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A reload the runner made: the generation now answering, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    pub after: Duration,
}

/// What the runner's `/healthz` says about its processes (its supervisor's record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    /// The runner process that answered.
    pub answering: u64,
    /// The last start the supervisor attempted and how it went (`failed` with its reason).
    pub attempted: Option<(u64, Result<(), String>)>,
}

impl Generations {
    /// Reads `generation` and `reload` from a `/healthz` answer (pure, for tests).
    pub fn parse(health: &serde_json::Value) -> Option<Generations> {
        let answering = health["generation"].as_u64()?;
        let reload = &health["reload"];
        let attempted = reload["generation"].as_u64().map(|generation| {
            let outcome = match reload["state"].as_str() {
                Some("failed") => Err(reload["error"]
                    .as_str()
                    .unwrap_or("no reason recorded")
                    .to_string()),
                _ => Ok(()),
            };
            (generation, outcome)
        });
        Some(Generations {
            answering,
            attempted,
        })
    }
}

/// Reloads the runner inside its container: on SIGHUP its supervisor forks a new runner from
/// the dependencies it imported once, which loads the current (mounted) source, and stops the
/// old one only once the new one answers (see the runner's `supervisor.py`). Waits until the
/// new generation answers; a new runner that crashes or never gets ready fails this with its
/// reason, and the old one goes on serving.
pub fn reload(docker: &Docker, spec: &ContainerSpec, timeout: Duration) -> Result<Reloaded> {
    let started = Instant::now();
    let before = http::healthz(spec.health_port, Duration::from_secs(2))
        .ok()
        .and_then(|health| Generations::parse(&health))
        .context("the runner does not report its generation: is it the current runner image?")?;
    // Generations are counted by the supervisor: whatever it attempts after the signal is
    // newer than both the runner answering now and the last start it recorded (which may
    // be an earlier failed attempt).
    let last_attempt = before
        .attempted
        .as_ref()
        .map_or(before.answering, |(generation, _)| *generation)
        .max(before.answering);
    docker.checked(&args(["kill", "--signal", "HUP", &spec.name]))?;
    loop {
        crate::ui::interrupt::check()?;
        if let Some(now) = http::healthz(spec.health_port, Duration::from_millis(250))
            .ok()
            .and_then(|health| Generations::parse(&health))
        {
            if now.answering > before.answering {
                return Ok(Reloaded {
                    generation: now.answering,
                    after: started.elapsed(),
                });
            }
            if let Some((generation, Err(reason))) = now.attempted {
                if generation > last_attempt {
                    bail!(
                        "the new runner did not start, so the previous one (generation {}) goes on \
                         serving: {reason}",
                        before.answering
                    );
                }
            }
        }
        if started.elapsed() >= timeout {
            bail!(
                "the runner did not reload within {} s; its last log lines:\n{}",
                timeout.as_secs(),
                log_tail(docker, &spec.name, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `lines` log lines of a container, for error reports.
pub fn log_tail(docker: &Docker, name_or_id: &str, lines: u32) -> String {
    match docker.capture(&logs_args(name_or_id, false, Some(lines))) {
        Ok(captured) => format!("{}{}", captured.stdout, captured.stderr),
        Err(err) => format!("(could not read the logs: {err:#})"),
    }
}

/// `docker logs` arguments.
pub fn logs_args(name_or_id: &str, follow: bool, tail: Option<u32>) -> Vec<String> {
    let mut list = vec!["logs".to_string()];
    if follow {
        list.push("--follow".to_string());
    }
    if let Some(tail) = tail {
        list.extend(["--tail".to_string(), tail.to_string()]);
    }
    list.push(name_or_id.to_string());
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_come_from_the_health_answer() {
        let health: serde_json::Value = serde_json::from_str(
            r#"{"status":"ok","generation":3,"reload":{"generation":4,"state":"failed","error":"SyntaxError: x","at":"t"}}"#,
        )
        .unwrap();
        assert_eq!(
            Generations::parse(&health),
            Some(Generations {
                answering: 3,
                attempted: Some((4, Err("SyntaxError: x".to_string())))
            })
        );
        let first: serde_json::Value =
            serde_json::from_str(r#"{"generation":1,"reload":null}"#).unwrap();
        assert_eq!(
            Generations::parse(&first),
            Some(Generations {
                answering: 1,
                attempted: None
            })
        );
        assert_eq!(
            Generations::parse(&serde_json::json!({"status": "ok"})),
            None
        );
    }

    #[test]
    fn logs_arguments() {
        assert_eq!(
            logs_args("c", true, Some(50)),
            args(["logs", "--follow", "--tail", "50", "c"])
        );
        assert_eq!(logs_args("c", false, None), args(["logs", "c"]));
    }
}
