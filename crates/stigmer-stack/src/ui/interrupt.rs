//! Ctrl-C: the first one asks the running step to stop cleanly, the second forces an exit.
//!
//! Long steps (a build, a readiness wait) poll [`requested`] and end with [`Interrupted`];
//! a child process that did not get the terminal's signal itself (no terminal, as in tests
//! and CI) is interrupted by the step that runs it. The few steps whose half-done state
//! nothing would record (a process started but its PID file not yet written) run under
//! [`hold_forced_exit`], and a forced exit waits for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);
/// Held by [`hold_forced_exit`]; a forced exit takes it first.
static FORCE_GATE: Mutex<()> = Mutex::new(());

/// The error a step ends with when Ctrl-C stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted (Ctrl-C): stopped cleanly; run the command again to carry on"
        )
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handler; once per process.
pub fn install() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\n⚠ stopping after cleaning up… press Ctrl-C again to force");
        } else {
            eprintln!("\n✗ forced to stop");
            // The handler runs on a thread of its own: it waits here until no step is
            // half-done, then exits.
            let _gate = FORCE_GATE
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")
}

/// Runs `step` with a forced exit (the second Ctrl-C) held back until it returns.
pub fn hold_forced_exit<T>(step: impl FnOnce() -> T) -> T {
    let _gate = FORCE_GATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    step()
}

pub fn requested() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

/// Ends the current step with [`Interrupted`] once Ctrl-C was pressed.
pub fn check() -> Result<()> {
    if requested() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Whether `err` (or its cause) is an interruption: such errors exit with 130.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<Interrupted>().is_some())
}
