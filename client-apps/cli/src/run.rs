//! `stigmer run`: creates an execution, follows its events with long polls (progress on
//! stderr), and prints the result on stdout. The exit code is 0 only when the execution
//! succeeded. Ctrl-C stops following, never the execution: it keeps running in the stack and
//! `stigmer run --follow <id>` picks it up again.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};

use crate::{RunInput, RunRequest};
use stigmer_stack::server::api::{Api, Event};
use stigmer_stack::stack::StackConfig as Config;

/// The execution being followed, for the Ctrl-C handler's message.
static FOLLOWING: Mutex<Option<String>> = Mutex::new(None);

pub fn run(config: &Config, request: RunRequest) -> Result<ExitCode> {
    let api = Api::new(config.server_port);
    if !api.reachable() {
        bail!(
            "the Stigmer server does not answer on 127.0.0.1:{}: start the stack with `stigmer server start`",
            config.server_port
        );
    }
    install_interrupt_handler()?;
    let id = match request {
        RunRequest::Follow { execution_id } => {
            // Fails with the server's message (404) for an unknown ID.
            api.execution(&execution_id)?;
            eprintln!("Following execution {execution_id}");
            execution_id
        }
        RunRequest::Start { agent, input } => {
            let input = match input {
                RunInput::Text(text) => text,
                RunInput::File(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the input file {}", path.display()))?,
            };
            let created = api.create_execution(&agent, &input)?;
            eprintln!("Execution ID: {}", created.id);
            created.id
        }
    };
    *FOLLOWING.lock().unwrap_or_else(PoisonError::into_inner) = Some(id.clone());
    follow(&api, &id)
}

fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        let following = FOLLOWING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match following {
            Some(id) => eprintln!("\n{}", interrupted_message(&id)),
            None => eprintln!("\nℹ interrupted"),
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

pub fn interrupted_message(id: &str) -> String {
    format!(
        "ℹ stopped following; execution {id} keeps running.\n  Follow it again with: stigmer run --follow {id}"
    )
}

fn follow(api: &Api, id: &str) -> Result<ExitCode> {
    let lost = |err: anyhow::Error| {
        err.context(format!(
            "lost the Stigmer server while following {id}; the execution is kept: once the server \
             runs again (`stigmer server start`), follow it with `stigmer run --follow {id}`"
        ))
    };
    let mut after = 0;
    loop {
        let page = api.events(id, after).map_err(lost)?;
        for event in &page.events {
            after = after.max(event.seq);
            if let Some(line) = format_event(event) {
                eprintln!("{line}");
            }
        }
        if page.done {
            break;
        }
    }
    let execution = api.execution(id).map_err(lost)?;
    match execution.status.as_str() {
        "succeeded" => {
            let result = execution.result.unwrap_or_default();
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(result.as_bytes())
                .and_then(|()| {
                    if result.ends_with('\n') {
                        Ok(())
                    } else {
                        stdout.write_all(b"\n")
                    }
                })
                .and_then(|()| stdout.flush())
                .context("writing the result")?;
            Ok(ExitCode::SUCCESS)
        }
        status => {
            eprintln!(
                "✗ execution {} ({}, attempt {}) {status}: {}",
                execution.id,
                execution.agent,
                execution.attempts,
                execution.error.as_deref().unwrap_or("no reason given")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The progress line for one event, or `None` for the final ones (the result goes to stdout
/// and a failure is reported once, at the end).
pub fn format_event(event: &Event) -> Option<String> {
    match event.kind.as_str() {
        "status" => Some(format!("ℹ {}", event.message)),
        "progress" => Some(format!("  {}", event.message)),
        "result" | "error" => None,
        other => Some(format!("  [{other}] {}", event.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, message: &str) -> Event {
        Event {
            seq: 1,
            kind: kind.to_string(),
            message: message.to_string(),
        }
    }

    #[test]
    fn events_become_progress_lines() {
        assert_eq!(
            format_event(&event("status", "running on runner r1 (attempt 1)")).as_deref(),
            Some("ℹ running on runner r1 (attempt 1)")
        );
        assert_eq!(
            format_event(&event("progress", "echoed 5 characters")).as_deref(),
            Some("  echoed 5 characters")
        );
        assert_eq!(format_event(&event("result", "hello")), None);
        assert_eq!(format_event(&event("error", "boom")), None);
    }

    #[test]
    fn interruption_says_how_to_follow_again() {
        assert!(interrupted_message("exec-1").contains("stigmer run --follow exec-1"));
    }
}
