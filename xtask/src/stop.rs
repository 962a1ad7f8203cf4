//! `cargo xtask stop`: the agent-runner container (graceful stop with a 30 s grace period,
//! then kill, then remove), then stigmer-server; stopping what is not running succeeds.

use anyhow::Result;
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::lifecycle::{stop, StopOutcome};
use runner_container::lock::StackLock;
use runner_container::progress::Progress;
use runner_container::server_process;
use xshell::Shell;

use crate::{smoke, Project};

#[derive(Args)]
pub struct Stop {}

impl Stop {
    pub fn run(self, _sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let _lock =
            StackLock::acquire_if_present(&project.stack.data_dir, "cargo xtask stop", |holder| {
                progress.note(&format!("waiting for {holder} to finish with this stack"));
            })?;
        let container = progress.phase("Stopping the agent-runner container", |_| {
            stop(
                &docker,
                &project.stack.data_dir,
                &project.stack.runner.container_name,
            )
        })?;
        match container {
            StopOutcome::Stopped { id } => {
                println!("stopped and removed {}", &id[..id.len().min(12)])
            }
            StopOutcome::NotRunning => {
                println!("{} was not running", project.stack.runner.container_name)
            }
        }
        smoke::forget_checked(project)?;
        let server = progress.phase("Stopping stigmer-server", |_| {
            server_process::stop(&project.stack.data_dir)
        })?;
        match server {
            server_process::StopOutcome::Stopped { pid, .. } => {
                println!("stopped stigmer-server (pid {pid})")
            }
            server_process::StopOutcome::NotRunning { .. } => {
                println!("stigmer-server was not running")
            }
        }
        Ok(())
    }
}
