//! `cargo xtask logs [-f] [--tail N]`: the agent-runner container's logs, found through the
//! ID file or, failing that, by exact name.

use anyhow::{bail, Result};
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::inspect::ContainerState;
use runner_container::lifecycle::{
    foreign_container_message, inspect_container, logs_args, read_id_file,
};
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
        let by_file = match read_id_file(&project.data_dir) {
            Some(id) => match inspect_container(&docker, &id)? {
                ContainerState::Ours(container) => Some(container),
                _ => None,
            },
            None => None,
        };
        let container = match by_file {
            Some(container) => container,
            None => match inspect_container(&docker, &project.settings.container_name)? {
                ContainerState::Ours(container) => container,
                ContainerState::Foreign(container) => bail!(foreign_container_message(&container)),
                ContainerState::Absent => {
                    bail!("no agent-runner container exists: start one with `cargo xtask dev`")
                }
            },
        };
        docker.passthrough(&logs_args(&container.id, self.follow, Some(self.tail)))
    }
}
