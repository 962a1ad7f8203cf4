//! The check that the Dockerfile and `.dockerignore` agree with [`super::REBUILD_INPUTS`]: every
//! path the image copies from the build context is a declared input, and only declared inputs
//! are let into the context. Otherwise an input could change the image without changing the
//! decision, and the dev loop would run a stale image it calls up to date.
//!
//! Apart from the table because it reads Dockerfile syntax; pure (text in, disagreements out),
//! so the tidy test and the unit tests below run it without an engine.

use std::collections::BTreeSet;

use super::table::{InputKind, RebuildInput, REBUILD_INPUTS};

/// Where the table lives, for messages that say what to edit.
const TABLE_FILE: &str = "crates/stigmer-stack/src/runner/inputs/table.rs";

/// Checks the agent-runner's `dockerfile` and `dockerignore` (their text) against
/// [`REBUILD_INPUTS`]; the disagreements, each a sentence that says what to change.
///
/// - Every `COPY` (and `ADD`) from the build context, that is without `--from`, copies some
///   row's `copied_as`, and every `copied_as` is copied.
/// - `.dockerignore` denies everything (`*`) before its first allow line, and its `!` allow
///   lines let in exactly the `copied_as` paths. The rule: an allow line covers a path when it
///   names that path or a parent directory of it (`!wheels/` covers `wheels/index/` and
///   `wheels/local/`); every `copied_as` must be covered by an allow line, and every allow line
///   must cover some `copied_as`. Deny lines after the allows (`**/__pycache__`) are not
///   checked: they narrow what is let in.
/// - The table has `File` rows for `Dockerfile` and `.dockerignore` (the build reads both),
///   one row of every other kind, and no name twice.
///
/// Paths are compared without a leading `./` or `/` and without a trailing `/`.
pub fn check_declared(dockerfile: &str, dockerignore: &str) -> Result<(), Vec<String>> {
    let disagreements = disagreements(&REBUILD_INPUTS, dockerfile, dockerignore);
    if disagreements.is_empty() {
        Ok(())
    } else {
        Err(disagreements)
    }
}

fn disagreements(table: &[RebuildInput], dockerfile: &str, dockerignore: &str) -> Vec<String> {
    let mut found = table_disagreements(table);
    // (row name, `copied_as` as the table writes it, normalized)
    let declared: Vec<(&str, &str, String)> = table
        .iter()
        .filter_map(|input| {
            let copied_as = input.copied_as?;
            Some((input.name, copied_as, normalized(copied_as)))
        })
        .collect();

    let mut copied = BTreeSet::new();
    for instruction in instructions(dockerfile) {
        match context_sources(&instruction) {
            Ok(sources) => copied.extend(sources),
            Err(problem) => found.push(problem),
        }
    }
    for path in &copied {
        if !declared.iter().any(|(_, _, declared)| declared == path) {
            found.push(format!(
                "the Dockerfile copies `{path}` from the build context, but no row of \
                 REBUILD_INPUTS ({TABLE_FILE}) has it as `copied_as`: add a row for it, or a \
                 change to it will not rebuild the image"
            ));
        }
    }
    for (name, copied_as, path) in &declared {
        if !copied.contains(path) {
            found.push(format!(
                "REBUILD_INPUTS declares `{name}` copied as `{copied_as}`, but the Dockerfile has \
                 no `COPY` of it: fix the row in {TABLE_FILE} or the Dockerfile"
            ));
        }
    }

    let lines: Vec<&str> = dockerignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let first_allow = lines
        .iter()
        .position(|line| line.starts_with('!'))
        .unwrap_or(lines.len());
    if !lines[..first_allow].contains(&"*") {
        found.push(
            "`.dockerignore` must deny everything (`*`) before its first allow line, so that \
             only the allow lines let anything into the build context"
                .to_string(),
        );
    }
    let allowed: Vec<String> = lines
        .iter()
        .filter_map(|line| line.strip_prefix('!'))
        .map(normalized)
        .collect();
    for (name, copied_as, path) in &declared {
        if !allowed.iter().any(|allow| covers(allow, path)) {
            found.push(format!(
                "`.dockerignore` does not let `{copied_as}` in (no `!{copied_as}` or `!` line \
                 for a parent of it), though the Dockerfile copies it for `{name}`: add the \
                 allow line"
            ));
        }
    }
    for allow in &allowed {
        if !declared.iter().any(|(_, _, path)| covers(allow, path)) {
            found.push(format!(
                "`.dockerignore` lets `{allow}` in, but no row of REBUILD_INPUTS is copied from \
                 there: remove the line, or declare the input in {TABLE_FILE}"
            ));
        }
    }
    found
}

/// The table's own rules: the rows the build always reads, one row of each kind the manifest
/// hashes once, and names that do not collide in the manifest.
fn table_disagreements(table: &[RebuildInput]) -> Vec<String> {
    let mut found = Vec::new();
    for required in ["Dockerfile", ".dockerignore"] {
        if !table
            .iter()
            .any(|input| input.kind == InputKind::File && input.name == required)
        {
            found.push(format!(
                "REBUILD_INPUTS has no `File` row for `{required}`: docker build reads it, so a \
                 change to it must rebuild; add the row in {TABLE_FILE}"
            ));
        }
    }
    for kind in [
        InputKind::SourceTree,
        InputKind::PathDependencies,
        InputKind::BaseImage,
        InputKind::BuildArgs,
    ] {
        let rows = table.iter().filter(|input| input.kind == kind).count();
        if rows != 1 {
            found.push(format!(
                "REBUILD_INPUTS has {rows} rows of kind {kind:?}; the manifest reads exactly one: \
                 fix {TABLE_FILE}"
            ));
        }
    }
    let mut names = BTreeSet::new();
    for input in table {
        if !names.insert(input.name) {
            found.push(format!(
                "REBUILD_INPUTS names `{}` twice: each row needs a name of its own in {TABLE_FILE}",
                input.name
            ));
        }
    }
    found
}

/// The Dockerfile's instructions, one string each: comment lines dropped and lines ending in
/// `\` joined with the next, as Docker reads them
/// (https://docs.docker.com/reference/dockerfile/#format). Assumes the default escape
/// character `\`; heredocs are not read.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        // Comment lines go before continuations are joined, even inside an instruction; empty
        // continuation lines are skipped.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        instructions.push(current);
    }
    instructions
}

/// The build-context paths a `COPY` or `ADD` instruction copies, normalized: its sources, its
/// flags left out. None for any other instruction, for a copy from a stage or an image
/// (`--from`), for a heredoc source and for an `ADD` of a URL: none of those is in the context.
/// An instruction that cannot be read is a disagreement of its own.
fn context_sources(instruction: &str) -> Result<Vec<String>, String> {
    let mut words = instruction.split_whitespace();
    let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
    if keyword != "COPY" && keyword != "ADD" {
        return Ok(Vec::new());
    }
    let mut arguments: Vec<&str> = words.collect();
    let flags = arguments
        .iter()
        .take_while(|word| word.starts_with("--"))
        .count();
    if arguments[..flags]
        .iter()
        .any(|flag| flag.starts_with("--from"))
    {
        return Ok(Vec::new());
    }
    arguments.drain(..flags);
    // The JSON form (`COPY ["a b", "/dst/"]`) is for paths with spaces.
    let paths: Vec<String> = if arguments.first().is_some_and(|word| word.starts_with('[')) {
        serde_json::from_str(&arguments.join(" ")).map_err(|err| {
            format!("the Dockerfile's `{instruction}` is not a JSON array of paths ({err})")
        })?
    } else {
        arguments.iter().map(|word| word.to_string()).collect()
    };
    let Some((_, sources)) = paths
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
    else {
        return Err(format!(
            "the Dockerfile's `{instruction}` names no source and destination"
        ));
    };
    Ok(sources
        .iter()
        .filter(|source| !source.starts_with("<<"))
        .filter(|source| !(keyword == "ADD" && source.contains("://")))
        .map(|source| normalized(source))
        .collect())
}

/// A context path as Docker resolves it: relative to the context's root, so without a leading
/// `./` or `/`, and without a directory's trailing `/`.
fn normalized(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    path.trim_matches('/').to_string()
}

/// Whether the allow line `allow` (normalized) lets `path` in: it names the path or a parent
/// directory of it.
fn covers(allow: &str, path: &str) -> bool {
    path == allow
        || path
            .strip_prefix(allow)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../backend/services/agent-runner/Dockerfile"
    ));
    const DOCKERIGNORE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../backend/services/agent-runner/.dockerignore"
    ));

    /// `text` with `line` (a whole line) removed; the line must be there.
    fn without_line(text: &str, line: &str) -> String {
        let kept: Vec<&str> = text.lines().filter(|l| *l != line).collect();
        assert_eq!(
            kept.len() + 1,
            text.lines().count(),
            "{line:?} once in the text"
        );
        kept.join("\n") + "\n"
    }

    #[test]
    fn the_service_files_agree_with_the_table() {
        assert_eq!(check_declared(DOCKERFILE, DOCKERIGNORE), Ok(()));
        // The messages send people to the table: it must be there.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert!(root.join(TABLE_FILE).is_file(), "{TABLE_FILE}");
    }

    #[test]
    fn a_copy_without_a_row_is_named() {
        let dockerfile = format!("{DOCKERFILE}COPY tests/ /app/tests/\n");
        assert_eq!(
            check_declared(&dockerfile, DOCKERIGNORE),
            Err(vec![format!(
                "the Dockerfile copies `tests` from the build context, but no row of \
                 REBUILD_INPUTS ({TABLE_FILE}) has it as `copied_as`: add a row for it, or a \
                 change to it will not rebuild the image"
            )])
        );
    }

    #[test]
    fn a_declared_copy_missing_from_the_dockerfile_is_named() {
        let dockerfile = without_line(DOCKERFILE, "COPY src/agent_runner /app/agent_runner");
        assert_eq!(
            check_declared(&dockerfile, DOCKERIGNORE),
            Err(vec![format!(
                "REBUILD_INPUTS declares `src/` copied as `src/agent_runner/`, but the \
                 Dockerfile has no `COPY` of it: fix the row in {TABLE_FILE} or the Dockerfile"
            )])
        );
    }

    #[test]
    fn a_removed_allow_line_names_what_it_let_in() {
        let dockerignore = without_line(DOCKERIGNORE, "!wheels/");
        let disagreements = check_declared(DOCKERFILE, &dockerignore).unwrap_err();
        assert_eq!(
            disagreements,
            [
                "`.dockerignore` does not let `wheels/index/` in (no `!wheels/index/` or `!` \
                 line for a parent of it), though the Dockerfile copies it for `poetry.lock`: \
                 add the allow line",
                "`.dockerignore` does not let `wheels/local/` in (no `!wheels/local/` or `!` \
                 line for a parent of it), though the Dockerfile copies it for `path \
                 dependency`: add the allow line",
            ]
        );
    }

    #[test]
    fn an_allow_line_for_what_is_not_copied_is_named() {
        let dockerignore = format!("{DOCKERIGNORE}!docs/\n");
        assert_eq!(
            check_declared(DOCKERFILE, &dockerignore),
            Err(vec![format!(
                "`.dockerignore` lets `docs` in, but no row of REBUILD_INPUTS is copied from \
                 there: remove the line, or declare the input in {TABLE_FILE}"
            )])
        );
    }

    #[test]
    fn a_dockerignore_that_does_not_deny_everything_first_is_refused() {
        let dockerignore = without_line(DOCKERIGNORE, "*");
        let disagreements = check_declared(DOCKERFILE, &dockerignore).unwrap_err();
        assert_eq!(disagreements.len(), 1, "{disagreements:?}");
        assert!(disagreements[0].contains("deny everything (`*`)"));
    }

    #[test]
    fn context_paths_are_read_as_docker_reads_copy_and_add() {
        let dockerfile = "\
FROM x AS builder
COPY --chown=1:1 ./a/ b.txt /dst/
COPY --from=builder /opt /opt
COPY --link [\"c d\", \"/e\"]
ADD https://example.com/x.tgz local.tgz /x/
RUN echo \\
# COPY inside a continuation is still a comment
    COPY not-an-instruction /x
copy /lower/ /l
";
        let copied: Vec<String> = instructions(dockerfile)
            .iter()
            .flat_map(|instruction| context_sources(instruction).unwrap())
            .collect();
        assert_eq!(copied, ["a", "b.txt", "c d", "local.tgz", "lower"]);
        assert!(context_sources("COPY onlyone").is_err());
        assert!(context_sources("COPY [\"a\", ").is_err());
    }

    #[test]
    fn an_allow_line_covers_a_path_or_its_children_only() {
        assert!(covers("wheels", "wheels/index"));
        assert!(covers("wheels/index", "wheels/index"));
        assert!(!covers("wheels", "wheelsx/index"));
        assert!(!covers("wheels/index", "wheels"));
    }

    #[test]
    fn the_table_must_keep_the_files_the_build_reads() {
        let without_dockerfile: Vec<RebuildInput> = REBUILD_INPUTS
            .iter()
            .copied()
            .filter(|input| input.name != "Dockerfile")
            .collect();
        assert_eq!(
            table_disagreements(&without_dockerfile),
            [format!(
                "REBUILD_INPUTS has no `File` row for `Dockerfile`: docker build reads it, so a \
                 change to it must rebuild; add the row in {TABLE_FILE}"
            )]
        );
        let mut twice = REBUILD_INPUTS.to_vec();
        twice.push(REBUILD_INPUTS[4]);
        assert_eq!(
            table_disagreements(&twice),
            [
                format!(
                    "REBUILD_INPUTS has 2 rows of kind SourceTree; the manifest reads exactly \
                     one: fix {TABLE_FILE}"
                ),
                format!(
                    "REBUILD_INPUTS names `src/` twice: each row needs a name of its own in \
                     {TABLE_FILE}"
                ),
            ]
        );
        assert_eq!(table_disagreements(&REBUILD_INPUTS), Vec::<String>::new());
    }
}
