//! `cargo xtask logs [-f] [--tail N]`: the agent-runner container's logs, found through the
//! ID file or, failing that, by exact name.

use anyhow::{bail, Result};
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::lifecycle::{find_ours, logs_args};
use xshell::Shell;

use crate::Project;

#[derive(Args)]
pub struct Logs {
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// Show only the last N lines.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
    tail: u32,
}

impl Logs {
    pub fn run(self, _sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        check_engine(&docker)?;
        let Some(container) = find_ours(
            &docker,
            &project.stack.data_dir,
            &project.stack.runner.container_name,
        )?
        else {
            bail!("no agent-runner container exists: start one with `cargo xtask dev`");
        };
        docker.passthrough(&logs_args(&container.id, self.follow, Some(self.tail)))
    }
}
