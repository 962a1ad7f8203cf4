//! `cargo xtask stop`: graceful stop (30 s), then kill, then remove; stopping what is not
//! running succeeds.

use anyhow::Result;
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::lifecycle::{stop, StopOutcome};
use xshell::Shell;

use crate::Project;
use runner_container::progress::Progress;

#[derive(Args)]
pub struct Stop {}

impl Stop {
    pub fn run(self, _sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let outcome = progress.phase("Stopping the agent-runner container", |_| {
            stop(&docker, &project.data_dir, &project.settings.container_name)
        })?;
        match outcome {
            StopOutcome::Stopped { id } => {
                println!("stopped and removed {}", &id[..id.len().min(12)])
            }
            StopOutcome::NotRunning => {
                println!("{} was not running", project.settings.container_name)
            }
        }
        Ok(())
    }
}
