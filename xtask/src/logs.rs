//! `cargo xtask logs [--component C] [-f] [-n N]`: a component's logs through the stack layer
//! (the runner container's by default, the dev loop's usual question).

use anyhow::Result;
use clap::Args;
use stigmer_stack::runner::lifecycle::logs_args;
use stigmer_stack::stack::{self, Component, LogSource};

use crate::Project;

#[derive(Args)]
pub struct Logs {
    /// Which component's logs to show.
    #[arg(long, value_enum, default_value = "agent-runner")]
    component: Component,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// Show only the last N lines.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 50)]
    tail: u32,
}

impl Logs {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        match stack::log_source(&project.stack, &docker, self.component)? {
            LogSource::File(path) => {
                stack::print_file(&path, self.follow, self.tail, &mut std::io::stdout())
            }
            LogSource::Container(id) => {
                docker.passthrough(&logs_args(&id, self.follow, Some(self.tail)))
            }
        }
    }
}
