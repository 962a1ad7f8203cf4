//! Ctrl-C: the first one asks the running step to stop cleanly, the second forces an exit.
//!
//! Long steps (a build, a readiness wait) poll [`requested`] and end with [`Interrupted`];
//! a child process that did not get the terminal's signal itself (no terminal, as in tests
//! and CI) is interrupted by the step that runs it.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

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
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C handler")
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
