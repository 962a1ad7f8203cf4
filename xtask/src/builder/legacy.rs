//! The Dockerfile the legacy builder gets: the real one without the `RUN` flags only BuildKit
//! parses, everything else byte for byte, so every builder builds the same steps.

use anyhow::{bail, Result};

/// The flags of `RUN` that only BuildKit parses (the legacy builder fails on them:
/// https://docs.docker.com/reference/dockerfile/#run---mount and the two after it).
const BUILDKIT_ONLY_RUN_FLAGS: [&str; 3] = ["--mount=", "--network=", "--security="];

/// The Dockerfile for the legacy builder: `text` without the `RUN` flags only BuildKit
/// parses (a cache mount's step then runs without it, which the Dockerfile's own script
/// notices), everything else byte for byte. Flags are found at the start of a `RUN`
/// instruction and of the continuation lines right after it; a line left holding only the
/// continuation is dropped. Refuses a Dockerfile whose escape character is not `\`.
pub fn legacy_dockerfile(text: &str) -> Result<String> {
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('#') {
            break;
        }
        let directive = line.trim_start_matches('#').trim().to_ascii_lowercase();
        if let Some(escape) = directive.strip_prefix("escape=") {
            if escape.trim() != "\\" {
                bail!("the Dockerfile sets `# escape={escape}`: the legacy derivation reads `\\` only");
            }
        }
    }
    let mut derived = String::with_capacity(text.len());
    // Whether the previous line ended in a continuation, and whether the current instruction
    // is a RUN still at its flags.
    let (mut continued, mut in_run_flags) = (false, false);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let newline = &line[body.len()..];
        let trimmed = body.trim_start();
        if trimmed.starts_with('#') || (continued && trimmed.is_empty()) {
            // Comments and blank lines inside an instruction neither end nor start one.
            derived.push_str(line);
            continue;
        }
        let ends_continued = body.trim_end().ends_with('\\');
        if !continued {
            let word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            in_run_flags = trimmed[..word_end].eq_ignore_ascii_case("RUN");
            if in_run_flags {
                let indent = &body[..body.len() - trimmed.len()];
                let (rest, still_flags) = strip_buildkit_flags(&trimmed[word_end..]);
                in_run_flags = still_flags;
                derived.push_str(indent);
                derived.push_str(&trimmed[..word_end]);
                if !rest.is_empty() {
                    derived.push(' ');
                    derived.push_str(rest);
                }
                derived.push_str(newline);
            } else {
                derived.push_str(line);
            }
        } else if in_run_flags {
            let (rest, still_flags) = strip_buildkit_flags(trimmed);
            in_run_flags = still_flags;
            if rest == "\\" && rest.len() != trimmed.len() {
                // The line held only flags and the continuation: nothing is left of it.
            } else if rest.len() == trimmed.len() {
                derived.push_str(line);
            } else {
                derived.push_str(&body[..body.len() - trimmed.len()]);
                derived.push_str(rest);
                derived.push_str(newline);
            }
        } else {
            derived.push_str(line);
        }
        continued = ends_continued;
    }
    Ok(derived)
}

/// `segment` without its leading BuildKit-only flags, and whether the instruction may still
/// be at its flags after it (nothing but a continuation is left).
fn strip_buildkit_flags(segment: &str) -> (&str, bool) {
    let mut rest = segment.trim_start();
    loop {
        if rest.is_empty() || rest == "\\" {
            return (rest, true);
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if !BUILDKIT_ONLY_RUN_FLAGS
            .iter()
            .any(|flag| rest[..end].starts_with(flag))
        {
            return (rest, false);
        }
        rest = rest[end..].trim_start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::TARGET_STAGE;
    use std::fs;

    #[test]
    fn the_legacy_dockerfile_loses_only_buildkit_flags() {
        let text = "\
# syntax is not set: the daemon's own frontend parses this
FROM base AS builder
RUN --mount=type=cache,id=v,target=/c,sharing=locked \\
    set -eu; \\
    echo --mount=type=cache stays in the command
run --network=none --mount=type=secret,id=s echo one line
RUN \\
    --mount=type=cache,target=/a \\
    # a comment inside the instruction
    --security=insecure \\
    make
RUN echo plain --mount=x
COPY --from=builder /opt /opt
  RUN   --mount=type=tmpfs,target=/t   true\r
";
        assert_eq!(
            legacy_dockerfile(text).unwrap(),
            "\
# syntax is not set: the daemon's own frontend parses this
FROM base AS builder
RUN \\
    set -eu; \\
    echo --mount=type=cache stays in the command
run echo one line
RUN \\
    # a comment inside the instruction
    make
RUN echo plain --mount=x
COPY --from=builder /opt /opt
  RUN true\r
"
        );
        let escaped = legacy_dockerfile("# escape=`\nFROM x\n").unwrap_err();
        assert!(escaped.to_string().contains("escape=`"), "{escaped}");
        assert_eq!(
            legacy_dockerfile("# escape=\\\nFROM x\n").unwrap(),
            "# escape=\\\nFROM x\n"
        );
    }

    #[test]
    fn the_real_dockerfile_has_a_cache_mount_that_the_legacy_one_lacks() {
        let path = crate::project_root()
            .unwrap()
            .join("backend/services/agent-runner/Dockerfile");
        let text = fs::read_to_string(path).unwrap();
        assert!(text.contains("RUN --mount=type=cache,"), "{text}");
        let legacy = legacy_dockerfile(&text).unwrap();
        assert!(!legacy.contains("--mount="), "{legacy}");
        // Only the flag went: every other line is kept.
        let removed: Vec<&str> = text
            .lines()
            .filter(|line| !legacy.lines().any(|kept| kept == *line))
            .collect();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(
            removed[0].starts_with("RUN --mount=type=cache,"),
            "{removed:?}"
        );
        // The target stage exists and is the last one.
        let last_from = text
            .lines()
            .rfind(|line| line.starts_with("FROM "))
            .unwrap();
        assert!(
            last_from.ends_with(&format!(" AS {TARGET_STAGE}")),
            "{last_from}"
        );
    }
}
