//! `cargo xtask stop`: the stack's `down` (the runner container with a 30 s grace period, then
//! stigmer-server, then the managed Temporal), displayed; stopping what is not running
//! succeeds.

use anyhow::{bail, Result};
use clap::Args;
use stigmer_stack::stack::StackLock;
use stigmer_stack::stack::{self, RunnerStop};

use crate::{smoke, Project};

#[derive(Args)]
pub struct Stop {}

impl Stop {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let _lock =
            StackLock::acquire_if_present(&project.stack.data_dir, "cargo xtask stop", |holder| {
                eprintln!("ℹ waiting for {holder} to finish with this stack");
            })?;
        let report = stack::down(&project.stack, &docker)?;
        print!("{report}");
        smoke::forget_checked(project)?;
        if report.runner == RunnerStop::EngineUnavailable {
            bail!("the agent-runner container could not be checked: Docker does not answer");
        }
        Ok(())
    }
}
