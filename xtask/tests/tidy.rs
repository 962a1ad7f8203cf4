//! The tree's own rules, checked on every `cargo test` (and so by `cargo xtask ci`), as
//! rust-analyzer's `tidy` does: every module opens with a `//!` paragraph, no source file
//! outside tests grows past 600 lines, only `crates/stigmer-stack/src/exec.rs` spawns a
//! process, and the table of rebuild inputs agrees with the Dockerfile and `.dockerignore`.
//!
//! Each check names every offending file, so one run lists all there is to fix.

use std::fs;
use std::path::{Path, PathBuf};

/// Past this a file holds more than one thing; split it along a seam (a directory module).
const MAX_LINES: usize = 600;
/// The edge: the one module allowed to start processes (see its `//!`).
const SPAWN_EDGE: &str = "crates/stigmer-stack/src/exec.rs";
/// The Rust source trees of the workspace's members.
const SOURCE_ROOTS: [&str; 4] = [
    "xtask",
    "crates",
    "backend/services/stigmer-server",
    "client-apps/cli",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under the members, as (path relative to the root, text); build output
/// and fixtures are skipped.
fn rust_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(name, "target" | "fixtures" | ".git") {
                    walk(&path, root, out);
                }
            } else if name.ends_with(".rs") {
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let relative = path.strip_prefix(root).expect("under the root");
                out.push((relative.to_string_lossy().into_owned(), text));
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    for member in SOURCE_ROOTS {
        walk(&root.join(member), &root, &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} Rust files: is the walk looking in the right place?",
        files.len()
    );
    files
}

/// A file of a test target (`tests/`), as opposed to the programs' own sources.
fn is_test_target(path: &str) -> bool {
    path.split('/').any(|part| part == "tests")
}

/// The part of a file that is not its inline unit tests.
fn without_unit_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The lines of code that start a process other than through the edge.
fn spawns(text: &str) -> Vec<String> {
    const SIGNS: [&str; 6] = [
        "Command::new",
        "process::Command",
        "tokio::process",
        "xshell",
        "cmd!(",
        "fork(",
    ];
    without_unit_tests(text)
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
        .filter(|line| {
            SIGNS.iter().any(|sign| line.contains(sign))
                || (line.starts_with("use std::process::{") && line.contains("Command"))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_module_opens_with_a_doc_paragraph() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` paragraph saying what they hold:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let long: Vec<String> = rust_files()
        .into_iter()
        .filter(|(path, _)| !is_test_target(path))
        .filter_map(|(path, text)| {
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("{path}: {lines} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (inline tests included); split along a seam into a directory \
         module:\n{}",
        long.join("\n")
    );
}

#[test]
fn only_the_edge_spawns_processes() {
    let found: Vec<String> = rust_files()
        .into_iter()
        .filter(|(path, _)| !is_test_target(path) && path != SPAWN_EDGE)
        .flat_map(|(path, text)| {
            spawns(&text)
                .into_iter()
                .map(move |line| format!("{path}: {line}"))
        })
        .collect();
    assert!(
        found.is_empty(),
        "processes are started through `stigmer_stack::exec` (or the `Docker` wrapper on it) \
         only, so deadlines, errors and Ctrl-C work one way everywhere:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_spawn_check_sees_each_way_of_spawning() {
    for line in [
        "let child = Command::new(\"sleep\").spawn()?;",
        "use std::process::{Child, Command};",
        "let out = cmd!(sh, \"git status\").read()?;",
        "let child = tokio::process::Command::new(\"x\");",
    ] {
        assert_eq!(spawns(line), vec![line.to_string()], "{line}");
    }
    assert!(spawns("// Command::new is only called in exec.rs").is_empty());
    assert!(
        spawns("fn f() {}\n#[cfg(test)]\nmod tests { fn t() { Command::new(\"x\"); } }").is_empty()
    );
}

#[test]
fn the_rebuild_inputs_agree_with_the_dockerfile_and_dockerignore() {
    let runner = root().join("backend/services/agent-runner");
    let read = |name: &str| {
        fs::read_to_string(runner.join(name))
            .unwrap_or_else(|e| panic!("reading {name} of the agent-runner: {e}"))
    };
    if let Err(disagreements) =
        stigmer_stack::runner::inputs::check_declared(&read("Dockerfile"), &read(".dockerignore"))
    {
        panic!(
            "REBUILD_INPUTS (crates/stigmer-stack/src/runner/inputs/table.rs), the Dockerfile \
             and .dockerignore disagree:\n{}",
            disagreements.join("\n")
        );
    }
}
