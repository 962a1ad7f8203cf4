//! Running the check: `docker exec <runner> python -m agent_runner.import_check` with the
//! project's policy, once per image and policy (a passed report is read back from the cache),
//! and, when it hangs, where: the stack it prints at its own deadline.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use stigmer_stack::docker::inspect::ContainerState;
use stigmer_stack::docker::{args, Docker};
use stigmer_stack::runner::lifecycle::inspect_container;

use super::plan::{cache_path, cached_report, keep_report, read_policy};
use super::report::ImportReport;
use super::POLICY_TABLE;
use crate::Project;

/// How long xtask waits for the import check: a little past the check's own deadline
/// (100 s, after which SIGALRM ends it inside the container, exit 128 + 14).
const IMPORT_CHECK_TIMEOUT: Duration = Duration::from_secs(110);
const IMPORT_CHECK_DEADLINE_EXIT: i32 = 142;

/// Runs `python -m agent_runner.import_check` in the container with the project's policy,
/// once per image and policy: a passed report is kept on the host and read back next time.
pub fn check_image(docker: &Docker, project: &Project) -> Result<String> {
    let pyproject = project.runner_dir.join("pyproject.toml");
    let policy = read_policy(&project.runner_dir)?;
    let container = &project.stack.runner.container_name;
    let image_id = match inspect_container(docker, container)? {
        ContainerState::Ours(found) | ContainerState::Foreign(found) => found.image_id,
        ContainerState::Absent => {
            bail!("the container {container} is not there: run `cargo xtask dev` to start it")
        }
    };
    let mounted = match &project.stack.runner.source_mount {
        Some(_) => Some(
            stigmer_stack::runner::inputs::hash_source_tree(&project.runner_dir.join("src"))?
                .digest,
        ),
        None => None,
    };
    let cache = cache_path(&project.cache_dir(), &image_id, &policy, mounted.as_deref());
    if let Some(report) = cached_report(&cache) {
        return Ok(report.lines(true));
    }
    let mut exec = args(["exec", container]);
    exec.extend(policy.command());
    let Some(captured) = docker.capture_within(&exec, IMPORT_CHECK_TIMEOUT)? else {
        bail!(deadline_message(container, None, &pyproject));
    };
    if captured.code == Some(IMPORT_CHECK_DEADLINE_EXIT) {
        let location = hang_location(&captured.stderr);
        bail!(deadline_message(container, location.as_deref(), &pyproject));
    }
    let report = ImportReport::parse(&captured.stdout).with_context(|| {
        format!(
            "the import check printed no report (exit {:?}): {}{}",
            captured.code,
            captured.stdout,
            captured.stderr_tail()
        )
    })?;
    ensure!(
        captured.success == report.ok,
        "the import check exited {:?} with a report that says ok = {}",
        captured.code,
        report.ok
    );
    if !report.ok {
        bail!(
            "{}\n{}",
            report.lines(false),
            report.failure_message(&pyproject)
        );
    }
    keep_report(&cache, &report)?;
    Ok(report.lines(false))
}

/// What to say when the check hit its deadline: `location` from [`hang_location`] when the
/// check printed its stack.
pub fn deadline_message(container: &str, location: Option<&str>, pyproject: &Path) -> String {
    let found = match location {
        Some(location) => format!("it hung importing {location}"),
        None => format!(
            "find where with `docker exec {container} python -m agent_runner.import_check --deadline 10`, \
             which prints the stack when it gives up"
        ),
    };
    format!(
        "the import check did not finish in time: a module hangs while imported; {found}. \
         Add that module to `skip` in {POLICY_TABLE} of {}, or fix it, then run `cargo xtask dev` again",
        pyproject.display()
    )
}

/// Where the check hung, from the stack faulthandler printed at its deadline (most recent
/// call first): the file the check's own import started, and the line it waits on when
/// that is elsewhere (a socket, a lock in a dependency).
pub fn hang_location(stderr: &str) -> Option<String> {
    let block = stderr
        .split("(most recent call first):")
        .find(|block| block.contains(" in import_error"))?;
    // `  File "/opt/venv/.../hangs.py", line 2 in <module>` -> (path, line, function)
    let frames: Vec<(&str, &str, &str)> = block
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("File \"")?;
            let (path, rest) = rest.split_once("\", line ")?;
            let (number, function) = rest.split_once(" in ")?;
            Some((path, number, function))
        })
        .collect();
    let ours = |frame: &&(&str, &str, &str)| !frame.0.starts_with("<frozen");
    let started = frames.iter().position(|(path, _, function)| {
        *function == "import_module" && path.ends_with("importlib/__init__.py")
    })?;
    let top = frames[..started].iter().find(ours)?;
    let outer = frames[..started].iter().rev().find(ours)?;
    Some(if top == outer {
        format!("{}, line {}", top.0, top.1)
    } else {
        format!("{} (waiting at {}, line {})", outer.0, top.0, top.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `docker exec … python -m agent_runner.import_check --deadline 2` with a
    /// module that sleeps at import (the thread line shortened).
    const HUNG: &str = "Timeout (0:00:02)!
Thread 0x00007f268136d040 (most recent call first):
  File \"/opt/venv/lib/python3.11/site-packages/hangs.py\", line 2 in <module>
  File \"<frozen importlib._bootstrap>\", line 241 in _call_with_frames_removed
  File \"<frozen importlib._bootstrap_external>\", line 940 in exec_module
  File \"<frozen importlib._bootstrap>\", line 690 in _load_unlocked
  File \"<frozen importlib._bootstrap>\", line 1149 in _find_and_load_unlocked
  File \"<frozen importlib._bootstrap>\", line 1178 in _find_and_load
  File \"<frozen importlib._bootstrap>\", line 1206 in _gcd_import
  File \"/usr/lib/python3.11/importlib/__init__.py\", line 126 in import_module
  File \"/app/agent_runner/import_check.py\", line 217 in import_error
  File \"/app/agent_runner/import_check.py\", line 234 in <listcomp>
  File \"/app/agent_runner/import_check.py\", line 234 in import_chunk
  File \"/app/agent_runner/import_check.py\", line 388 in <module>
  File \"<frozen runpy>\", line 88 in _run_code
";

    #[test]
    fn a_hang_is_located_from_the_printed_stack() {
        assert_eq!(
            hang_location(HUNG).as_deref(),
            Some("/opt/venv/lib/python3.11/site-packages/hangs.py, line 2")
        );
        // Deeper: the module the check imported, and where it waits.
        let deeper = HUNG.replace(
            "  File \"<frozen importlib._bootstrap>\", line 241",
            "  File \"/usr/lib/python3.11/socket.py\", line 836 in create_connection\n  \
             File \"/opt/venv/lib/python3.11/site-packages/redis/__init__.py\", line 9 in <module>\n  \
             File \"<frozen importlib._bootstrap>\", line 241",
        );
        let deeper = deeper.replacen(
            "  File \"/opt/venv/lib/python3.11/site-packages/hangs.py\", line 2 in <module>\n",
            "",
            1,
        );
        assert_eq!(
            hang_location(&deeper).as_deref(),
            Some("/opt/venv/lib/python3.11/site-packages/redis/__init__.py (waiting at /usr/lib/python3.11/socket.py, line 836)")
        );
        assert_eq!(hang_location("Killed\n"), None);
        assert_eq!(
            deadline_message("c", Some("/x/hangs.py, line 2"), Path::new("r/pyproject.toml")),
            "the import check did not finish in time: a module hangs while imported; it hung importing \
             /x/hangs.py, line 2. Add that module to `skip` in [tool.stigmer.import-check] of r/pyproject.toml, \
             or fix it, then run `cargo xtask dev` again"
        );
    }
}
