//! `cargo xtask status [--json]`: the image and why it is or is not current, the
//! container's state, health and uptime.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use runner_container::engine::check_engine;
use runner_container::http::healthz;
use runner_container::inspect::{ContainerState, RunStatus};
use runner_container::lifecycle::inspect_container;
use runner_container::server_process;
use runner_container::time;
use serde_json::{json, Value};
use xshell::Shell;

use crate::image::{self, short_id};
use crate::{base_image, Project};

#[derive(Args)]
pub struct Status {
    /// Print one JSON object for programs instead of text.
    #[arg(long)]
    json: bool,
}

impl Status {
    pub fn run(self, _sh: &Shell, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let engine = check_engine(&docker)?;
        let present = image::present_images(&docker, project)?;
        let image_report = match base_image::find_present(project, &present) {
            Some(base) => {
                let plan = image::decide(project, base, present)?;
                json!({
                    "name": project.stack.runner.image,
                    "id": plan.image.as_ref().map(|i| i.id.clone()),
                    "size_bytes": plan.image.as_ref().map(|i| i.size),
                    "created": plan.image.as_ref().map(|i| i.created.clone()),
                    "current": !plan.decision.needs_build(),
                    "reason": plan.reason(project),
                    "base_image": plan.base.reference,
                })
            }
            None => json!({
                "name": project.stack.runner.image,
                "current": false,
                "reason": format!("base image {} not present: `cargo xtask dev` pulls or makes it", project.configured_base),
            }),
        };
        let container_report = match inspect_container(
            &docker,
            &project.stack.runner.container_name,
        )? {
            ContainerState::Absent => json!({"state": "absent"}),
            ContainerState::Foreign(container) => {
                json!({"state": "foreign", "id": container.id, "note": "not created by Stigmer: left alone"})
            }
            ContainerState::Ours(container) => {
                let answering = container.status == RunStatus::Running
                    && healthz(project.stack.runner.health_port, Duration::from_secs(1)).is_ok();
                let uptime = (container.status == RunStatus::Running)
                    .then(|| time::seconds_since(&container.started_at))
                    .flatten();
                json!({
                    "state": container.status,
                    "id": container.id,
                    "image_id": container.image_id,
                    "runs_current_image": image_report["id"].as_str() == Some(container.image_id.as_str()),
                    "docker_health": container.health,
                    "health_endpoint": if answering { "answering" } else { "not answering" },
                    "uptime_seconds": uptime,
                    "exit_code": container.exit_code,
                })
            }
        };
        let report = json!({
            "engine": engine,
            "server": server_process::status(&project.stack.data_dir, project.stack.server_port),
            "image": image_report,
            "container": container_report,
            "health_url": project.stack.runner.health_url(),
            "data_dir": project.stack.data_dir.root(),
        });
        if self.json {
            println!("{report}");
        } else {
            print_text(&report);
        }
        Ok(())
    }
}

fn print_text(report: &Value) {
    let image = &report["image"];
    let current = if image["current"] == true {
        "current"
    } else {
        "outdated"
    };
    let id = image["id"].as_str().map(short_id).unwrap_or("none");
    println!(
        "image      {} ({id}, {current}: {})",
        image["name"].as_str().unwrap_or_default(),
        image["reason"].as_str().unwrap_or_default()
    );
    let container = &report["container"];
    let state = container["state"].as_str().unwrap_or_default();
    let mut line = format!("container  {state}");
    if let Some(id) = container["id"].as_str() {
        line.push_str(&format!(" ({})", &id[..id.len().min(12)]));
    }
    if let Some(endpoint) = container["health_endpoint"].as_str() {
        line.push_str(&format!(", health endpoint {endpoint}"));
    }
    if let Some(health) = container["docker_health"].as_str() {
        line.push_str(&format!(", docker says {health}"));
    }
    if let Some(uptime) = container["uptime_seconds"].as_u64() {
        line.push_str(&format!(", up {}", time::duration_text(uptime)));
    }
    if container["runs_current_image"] == false {
        line.push_str(", runs an older image");
    }
    println!("{line}");
    println!(
        "health     {}",
        report["health_url"].as_str().unwrap_or_default()
    );
    let server = &report["server"];
    let pid = server["pid"]
        .as_i64()
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    let answering = if server["healthy"] == true {
        "answering"
    } else {
        "not answering"
    };
    println!(
        "server     {}{pid} at {}, {answering}",
        server["state"].as_str().unwrap_or_default(),
        server["url"].as_str().unwrap_or_default()
    );
}
