//! Removing what the benchmark made, and checking that it is gone: `dev`'s stacks (through
//! `xtask stop`), the compose projects, the containers, every image descending from the
//! benchmark's own base image (deepest first), that base image and the scratch directory.

use std::fs;

use anyhow::Result;
use stigmer_stack::docker::{args, Docker};

use super::measure;
use super::report::Report;
use super::scenario::Check;
use super::session::Session;

pub fn tear_down(session: &mut Session) -> Vec<String> {
    let mut problems = Vec::new();
    let dev = session.dev.clone();
    let service = session.service_dir.clone();
    if let Err(err) = session.xtask(&dev, &service, &["stop"]) {
        problems.push(format!("stopping the benchmark's stack: {err:#}"));
    }
    if let Some((stack, service)) = session.realistic.clone() {
        if let Err(err) = session.xtask(&stack, &service, &["stop"]) {
            problems.push(format!("stopping the realistic stack: {err:#}"));
        }
    }
    for side in &session.compose {
        if let Err(err) = side.run(&["down", "--timeout", "5"]) {
            problems.push(format!("{} down: {err:#}", side.project));
        }
    }
    for name in containers(session) {
        let _ = session.docker.capture(&args(["rm", "--force", &name]));
    }
    if let Err(err) = remove_descendants(session) {
        problems.push(format!("removing the benchmark's images: {err:#}"));
    }
    if let Some(base) = &session.base {
        let _ = session.docker.capture(&args(["rmi", &base.reference]));
    }
    let _ = fs::remove_dir_all(&session.scratch);
    problems
}

fn containers(session: &Session) -> Vec<String> {
    let mut names = vec![session.dev.container.clone()];
    names.extend(session.compose.iter().map(|side| side.container.clone()));
    if let Some((stack, _)) = &session.realistic {
        names.push(stack.container.clone());
    }
    names
}

/// Removes every image (tagged or intermediate) descending from the benchmark's base image.
pub fn remove_descendants(session: &Session) -> Result<()> {
    let Some(base) = &session.base else {
        return Ok(());
    };
    for level in descendants(&session.docker, &base.id)?.iter().rev() {
        let mut remove = args(["rmi", "--force"]);
        remove.extend(level.iter().cloned());
        let _ = session.docker.capture(&remove);
    }
    // BuildKit's images have no parent link: the tags the benchmark gave go by name.
    for tag in image_tags(session) {
        let _ = session.docker.capture(&args(["rmi", "--force", &tag]));
    }
    Ok(())
}

fn image_tags(session: &Session) -> Vec<String> {
    let mut tags = vec![session.dev.image.clone()];
    tags.extend(session.compose.iter().map(|side| side.image.clone()));
    if let Some((stack, _)) = &session.realistic {
        tags.push(stack.image.clone());
    }
    if let Some(base) = &session.base {
        tags.push(base.reference.clone());
    }
    tags
}

fn descendants(docker: &Docker, root: &str) -> Result<Vec<Vec<String>>> {
    let listing = docker.checked(&args(["images", "--all", "--quiet", "--no-trunc"]))?;
    let mut ids: Vec<String> = listing.lines().map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut inspect = args(["image", "inspect", "--format", "{{.Id}} {{.Parent}}"]);
    inspect.extend(ids);
    let captured = docker.capture(&inspect)?;
    let parents: Vec<(String, String)> = captured
        .stdout
        .lines()
        .filter_map(|line| {
            let (id, parent) = line.split_once(' ')?;
            Some((id.to_string(), parent.trim().to_string()))
        })
        .collect();
    Ok(descendants_by_depth(root, &parents))
}

/// Image IDs descending from `root`, grouped by depth (children of `root` first).
pub fn descendants_by_depth(root: &str, parents: &[(String, String)]) -> Vec<Vec<String>> {
    let mut levels: Vec<Vec<String>> = Vec::new();
    let mut frontier = vec![root.to_string()];
    while !frontier.is_empty() {
        let next: Vec<String> = parents
            .iter()
            .filter(|(_, parent)| frontier.contains(parent))
            .map(|(id, _)| id.clone())
            .collect();
        if next.is_empty() {
            break;
        }
        levels.push(next.clone());
        frontier = next;
    }
    levels
}

/// After [`tear_down`]: no container, image, compose container or server of the benchmark.
pub fn check_nothing_left(session: &Session, report: &mut Report, problems: Vec<String>) {
    let mut left = problems;
    for name in containers(session) {
        if measure::container_id(&session.docker, &name).is_some() {
            left.push(format!("container {name}"));
        }
    }
    for side in &session.compose {
        // A label filter matches the whole `key=value` (unlike `--filter name=`).
        let label = format!("label=com.docker.compose.project={}", side.project);
        let listed = session
            .docker
            .checked(&args(["ps", "--all", "--quiet", "--filter", &label]));
        if listed.is_ok_and(|ids| !ids.trim().is_empty()) {
            left.push(format!("a container of compose project {}", side.project));
        }
    }
    for tag in image_tags(session) {
        if stigmer_stack::runner::lifecycle::inspect_image(&session.docker, &tag)
            .ok()
            .flatten()
            .is_some()
        {
            left.push(format!("image {tag}"));
        }
    }
    let mut stacks = vec![session.dev.clone()];
    stacks.extend(session.realistic.iter().map(|(stack, _)| stack.clone()));
    for stack in stacks {
        for port in [stack.server_port, stack.health_port, stack.temporal_port] {
            if stigmer_stack::process::port_answers(port) {
                left.push(format!("something still listens on port {port}"));
            }
        }
    }
    report.check(
        Check::NothingLeftBehind,
        None,
        None,
        left.is_empty(),
        if left.is_empty() {
            "no container, image tag, compose project or listening port of the benchmark is left"
                .to_string()
        } else {
            format!("left behind: {}", left.join("; "))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_come_level_by_level() {
        let parents = [
            ("a", "base"),
            ("b", "a"),
            ("c", "b"),
            ("x", "other"),
            ("d", "a"),
        ]
        .map(|(id, parent)| (id.to_string(), parent.to_string()));
        assert_eq!(
            descendants_by_depth("base", &parents),
            vec![
                vec!["a".to_string()],
                vec!["b".to_string(), "d".to_string()],
                vec!["c".to_string()]
            ]
        );
    }
}
