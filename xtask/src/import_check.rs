//! The in-image import check's host side: the project's policy, read from
//! `[tool.stigmer.import-check]` in the runner's `pyproject.toml` (already a rebuild input),
//! turned into the arguments of `python -m agent_runner.import_check`; the JSON report it
//! prints, parsed; the lines a user reads; and the cache of passed reports, one file per
//! image ID and policy under `target/xtask/import-check/`, so an image is checked once.
//!
//! The Python check decides nothing from configuration files: it reports and sets its exit
//! code from these arguments. Everything here is plain data and pure functions, except
//! [`read_policy`] and the two cache functions, which only touch files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use stigmer_stack::runner::inputs::sha256_hex;

/// Where the policy lives, for messages.
pub const POLICY_TABLE: &str = "[tool.stigmer.import-check]";

/// Whether a collision fails the check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollisionPolicy {
    #[default]
    Warn,
    Fail,
}

impl CollisionPolicy {
    fn as_str(self) -> &'static str {
        match self {
            CollisionPolicy::Warn => "warn",
            CollisionPolicy::Fail => "fail",
        }
    }
}

/// `[tool.stigmer.import-check]`; a missing table means every default. An unknown key is
/// an error, so a misspelt setting never silently turns into the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImportPolicy {
    #[serde(default)]
    pub collisions: CollisionPolicy,
    /// Collisions reported but never failing, even with `collisions = "fail"`.
    #[serde(default)]
    pub allowed_collisions: Vec<String>,
    /// Modules (and everything below them) never imported: they act when imported.
    #[serde(default)]
    pub skip: Vec<String>,
}

#[derive(Deserialize)]
struct Pyproject {
    #[serde(default)]
    tool: Tool,
}

#[derive(Default, Deserialize)]
struct Tool {
    #[serde(default)]
    stigmer: Stigmer,
}

#[derive(Default, Deserialize)]
struct Stigmer {
    #[serde(default, rename = "import-check")]
    import_check: ImportPolicy,
}

impl ImportPolicy {
    /// The policy in `pyproject.toml`'s text.
    pub fn parse(pyproject: &str) -> Result<ImportPolicy> {
        let parsed: Pyproject = toml::from_str(pyproject)?;
        let policy = parsed.tool.stigmer.import_check;
        for (key, names) in [
            ("allowed-collisions", &policy.allowed_collisions),
            ("skip", &policy.skip),
        ] {
            if let Some(bad) = names.iter().find(|name| !is_module_name(name)) {
                bail!("{key} holds {bad:?}, which is not a module name such as `multipart` or `google.genai`");
            }
        }
        Ok(policy)
    }

    /// The command run in the container, the policy as its arguments.
    pub fn command(&self) -> Vec<String> {
        let mut command: Vec<String> = ["python", "-m", "agent_runner.import_check"]
            .map(String::from)
            .to_vec();
        command.extend([
            "--collisions".to_string(),
            self.collisions.as_str().to_string(),
        ]);
        for name in &self.allowed_collisions {
            command.extend(["--allow".to_string(), name.clone()]);
        }
        for name in &self.skip {
            command.extend(["--skip".to_string(), name.clone()]);
        }
        command
    }

    /// Part of the cache key: a changed policy checks the same image again.
    pub fn digest(&self) -> String {
        sha256_hex(self.command().join("\0").as_bytes())[..16].to_string()
    }
}

/// Reads the policy from the runner's `pyproject.toml`.
pub fn read_policy(runner_dir: &Path) -> Result<ImportPolicy> {
    let path = runner_dir.join("pyproject.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ImportPolicy::parse(&text).with_context(|| {
        format!(
            "reading {POLICY_TABLE} in {}: fix the table",
            path.display()
        )
    })
}

/// A dotted Python module name (ASCII identifiers only, which every name we meet is).
fn is_module_name(name: &str) -> bool {
    name.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
    })
}

/// The report `python -m agent_runner.import_check` prints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ImportReport {
    pub ok: bool,
    pub distributions: u64,
    pub modules_imported: u64,
    pub failures: Vec<ImportFailure>,
    pub collisions: Vec<Collision>,
    pub namespace_packages: Vec<NamespacePackage>,
    #[serde(default)]
    pub skipped: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ImportFailure {
    pub check: FailedCheck,
    pub module: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailedCheck {
    /// The module does not import, even alone in a fresh interpreter.
    Import,
    /// The module imports alone but not after the modules imported before it.
    ImportOrder,
    /// A collision, failing because the policy says `collisions = "fail"`.
    Collision,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Collision {
    pub name: String,
    pub distributions: Vec<String>,
    pub winner: Option<String>,
    pub detail: String,
    pub fails: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct NamespacePackage {
    pub name: String,
    pub distributions: Vec<String>,
    pub style: String,
}

impl ImportReport {
    pub fn parse(json: &str) -> Result<ImportReport> {
        serde_json::from_str(json).context("parsing the import check's report")
    }

    /// The smoke line: the summary, then one line per collision.
    pub fn lines(&self, cached: bool) -> String {
        let mut text = format!(
            "{} distributions, {} modules imported in {:.2}s",
            self.distributions, self.modules_imported, self.seconds
        );
        // Nested namespaces (`opentelemetry.util`) are in the JSON; the line names the tops.
        let tops: Vec<&str> = self
            .namespace_packages
            .iter()
            .map(|namespace| namespace.name.as_str())
            .filter(|name| !name.contains('.'))
            .collect();
        if !tops.is_empty() {
            let _ = write!(text, ", shared namespace packages {}", tops.join(", "));
        }
        if !self.skipped.is_empty() {
            let _ = write!(text, ", skipped {}", self.skipped.join(", "));
        }
        if cached {
            text.push_str(" (this image's earlier result)");
        }
        for collision in &self.collisions {
            let mark = if collision.fails { "✗" } else { "⚠" };
            // The detail names the winner: the file `import` loaded and its distribution.
            let _ = write!(
                text,
                "\n    {mark} collision `{}` between {}: {}",
                collision.name,
                collision.distributions.join(" and "),
                collision.detail
            );
        }
        text
    }

    /// Why the check failed, and what to do next.
    pub fn failure_message(&self, pyproject: &Path) -> String {
        let mut text = String::from("the import check failed:");
        for failure in &self.failures {
            let _ = match failure.check {
                // Its detail is on the collision's own line above.
                FailedCheck::Collision => write!(
                    text,
                    "\n  collision `{}`, as collisions = \"fail\" says",
                    failure.module
                ),
                FailedCheck::Import => {
                    write!(text, "\n  import {}: {}", failure.module, failure.error)
                }
                FailedCheck::ImportOrder => write!(
                    text,
                    "\n  import {} after others: {}",
                    failure.module, failure.error
                ),
            };
        }
        let pyproject = pyproject.display();
        let failed = |check: FailedCheck| self.failures.iter().any(|f| f.check == check);
        if failed(FailedCheck::Import) || failed(FailedCheck::ImportOrder) {
            let _ = write!(
                text,
                "\nfix the dependency in {pyproject} (or, for a module that acts when imported, add it to \
                 `skip` in {POLICY_TABLE} there), then run `cargo xtask dev` again"
            );
        }
        if failed(FailedCheck::Collision) {
            let _ = write!(
                text,
                "\nremove one of the colliding distributions from {pyproject}, or accept the collision by \
                 adding its name to `allowed-collisions` in {POLICY_TABLE} there, then run `cargo xtask dev` again"
            );
        }
        text
    }
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

/// The cache file of a passed check of `image_id` under `policy`.
/// Where a passed report is kept: per image, policy and, when the working tree's source is
/// mounted over the image's, that source's digest (the runner's own modules are checked too).
pub fn cache_path(
    cache_dir: &Path,
    image_id: &str,
    policy: &ImportPolicy,
    mounted_source: Option<&str>,
) -> PathBuf {
    let image = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let source = mounted_source
        .map(|digest| format!("-{}", &digest[..digest.len().min(16)]))
        .unwrap_or_default();
    cache_dir
        .join("import-check")
        .join(format!("{image}-{}{source}.json", policy.digest()))
}

/// A passed report kept earlier; anything unreadable counts as absent (the check runs again).
pub fn cached_report(path: &Path) -> Option<ImportReport> {
    let report = ImportReport::parse(&std::fs::read_to_string(path).ok()?).ok()?;
    report.ok.then_some(report)
}

/// Keeps a passed report. Failed ones are not kept: each run shows them afresh.
pub fn keep_report(path: &Path, report: &ImportReport) -> Result<()> {
    if !report.ok {
        return Ok(());
    }
    let dir = path.parent().context("the cache path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    stigmer_stack::files::write_atomically(path, &serde_json::to_vec_pretty(report)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `python -m agent_runner.import_check` in a venv with both multipart
    /// distributions (trimmed to the fields read here, plus one ignored).
    const REPORT: &str = r#"{
  "ok": true,
  "distributions": 102,
  "modules_imported": 252,
  "failures": [],
  "collisions": [
    {
      "name": "multipart",
      "distributions": ["multipart", "python-multipart"],
      "winner": "multipart",
      "detail": "a module and a package: multipart.py (multipart), multipart/ (python-multipart); `import multipart` finds multipart/__init__.py of python-multipart, which loads multipart.py of multipart; `from multipart import MultipartSegment` works",
      "fails": false,
      "probe": {"statement": "from multipart import MultipartSegment", "ok": true, "error": null}
    }
  ],
  "namespace_packages": [
    {"name": "google", "distributions": ["googleapis-common-protos", "protobuf"], "style": "pep420"},
    {"name": "langgraph", "distributions": ["langgraph", "langgraph-checkpoint"], "style": "pep420"},
    {"name": "opentelemetry.util", "distributions": ["opentelemetry-api", "opentelemetry-util-http"], "style": "pep420"}
  ],
  "skipped": ["pip"],
  "jobs": 1,
  "seconds": 1.655
}"#;

    #[test]
    fn the_table_becomes_the_arguments() {
        let policy = ImportPolicy::parse(
            "[tool.poetry]\npackage-mode = false\n\n[tool.stigmer.import-check]\n\
             collisions = \"fail\"\nallowed-collisions = [\"multipart\"]\nskip = [\"google.genai\", \"redis\"]\n",
        )
        .unwrap();
        assert_eq!(
            policy.command(),
            [
                "python",
                "-m",
                "agent_runner.import_check",
                "--collisions",
                "fail",
                "--allow",
                "multipart",
                "--skip",
                "google.genai",
                "--skip",
                "redis"
            ]
        );
    }

    #[test]
    fn a_missing_table_or_key_means_the_defaults() {
        let defaults = [
            "python",
            "-m",
            "agent_runner.import_check",
            "--collisions",
            "warn",
        ];
        assert_eq!(ImportPolicy::parse("").unwrap().command(), defaults);
        assert_eq!(
            ImportPolicy::parse("[tool.stigmer.import-check]\nskip = []\n")
                .unwrap()
                .command(),
            defaults
        );
        assert_eq!(
            ImportPolicy::parse("[tool.stigmer]\nother = 1\n").unwrap(),
            ImportPolicy::default()
        );
    }

    #[test]
    fn mistakes_in_the_table_are_errors() {
        for (table, expected) in [
            ("collisions = \"error\"", "unknown variant `error`"),
            (
                "allowed_collisions = []",
                "unknown field `allowed_collisions`",
            ),
            ("skip = [\"redis asyncio\"]", "skip holds \"redis asyncio\""),
            (
                "allowed-collisions = [\"\"]",
                "allowed-collisions holds \"\"",
            ),
            ("skip = \"redis\"", "invalid type"),
        ] {
            let text = format!("[tool.stigmer.import-check]\n{table}\n");
            let err = ImportPolicy::parse(&text).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{table}: {err:#}");
        }
    }

    #[test]
    fn the_checked_in_pyproject_has_a_valid_policy() {
        read_policy(
            &crate::project_root()
                .unwrap()
                .join("backend/services/agent-runner"),
        )
        .unwrap();
    }

    #[test]
    fn the_cache_is_keyed_by_image_and_policy() {
        let warn = ImportPolicy::default();
        let fail = ImportPolicy {
            collisions: CollisionPolicy::Fail,
            ..ImportPolicy::default()
        };
        let skip = ImportPolicy {
            skip: vec!["redis".into()],
            ..ImportPolicy::default()
        };
        let dir = Path::new("/repo/target/xtask");
        let path = cache_path(dir, "sha256:abc123", &warn, None);
        assert_eq!(
            path,
            dir.join(format!("import-check/abc123-{}.json", warn.digest()))
        );
        assert_eq!(warn.digest().len(), 16);
        assert_ne!(path, cache_path(dir, "sha256:abc124", &warn, None));
        assert_ne!(path, cache_path(dir, "sha256:abc123", &fail, None));
        assert_ne!(path, cache_path(dir, "sha256:abc123", &skip, None));
        // A mounted source is checked per source digest.
        let mounted = cache_path(dir, "sha256:abc123", &warn, Some("0123456789abcdef0123"));
        assert_ne!(path, mounted);
        assert_ne!(
            mounted,
            cache_path(dir, "sha256:abc123", &warn, Some("fedcba9876543210"))
        );
    }

    #[test]
    fn a_report_reads_and_becomes_the_smoke_lines() {
        let report = ImportReport::parse(REPORT).unwrap();
        assert_eq!(
            report.lines(false),
            "102 distributions, 252 modules imported in 1.66s, shared namespace packages google, langgraph, \
             skipped pip\n    ⚠ collision `multipart` between multipart and python-multipart: \
             a module and a package: multipart.py (multipart), multipart/ (python-multipart); `import multipart` \
             finds multipart/__init__.py of python-multipart, which loads multipart.py of multipart; \
             `from multipart import MultipartSegment` works"
        );
        assert!(report
            .lines(true)
            .starts_with("102 distributions, 252 modules imported in 1.66s, shared namespace packages google, langgraph, skipped pip (this image's earlier result)\n"));
    }

    #[test]
    fn a_failed_report_says_what_to_do_next() {
        let mut report = ImportReport::parse(REPORT).unwrap();
        report.ok = false;
        report.collisions[0].fails = true;
        report.failures = vec![
            ImportFailure {
                check: FailedCheck::Import,
                module: "redis".into(),
                error: "ImportError: no".into(),
            },
            ImportFailure {
                check: FailedCheck::Collision,
                module: "multipart".into(),
                error: "owned by multipart, python-multipart".into(),
            },
        ];
        assert!(report
            .lines(false)
            .contains("\n    ✗ collision `multipart`"));
        let message = report.failure_message(Path::new("runner/pyproject.toml"));
        assert_eq!(
            message,
            "the import check failed:\n  import redis: ImportError: no\n  collision `multipart`, as \
             collisions = \"fail\" says\nfix the dependency in runner/pyproject.toml (or, for a module that \
             acts when imported, add it to `skip` in [tool.stigmer.import-check] there), then run `cargo xtask \
             dev` again\nremove one of the colliding distributions from runner/pyproject.toml, or accept the \
             collision by adding its name to `allowed-collisions` in [tool.stigmer.import-check] there, then run \
             `cargo xtask dev` again"
        );
    }

    #[test]
    fn failure_kinds_are_read_by_name() {
        let failure: ImportFailure = serde_json::from_str(
            r#"{"check": "import-order", "module": "setuptools", "error": "AssertionError: x"}"#,
        )
        .unwrap();
        assert_eq!(failure.check, FailedCheck::ImportOrder);
        let unknown = r#"{"check": "imports", "module": "m", "error": "e"}"#;
        assert!(serde_json::from_str::<ImportFailure>(unknown).is_err());
    }

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

    #[test]
    fn only_passed_reports_are_kept() {
        let dir = std::env::temp_dir().join(format!("importcheck-cache-{}", std::process::id()));
        let path = cache_path(&dir, "sha256:feed", &ImportPolicy::default(), None);
        let mut report = ImportReport::parse(REPORT).unwrap();
        assert_eq!(cached_report(&path), None);
        keep_report(&path, &report).unwrap();
        assert_eq!(cached_report(&path), Some(report.clone()));
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(cached_report(&path), None);
        std::fs::remove_file(&path).unwrap();
        report.ok = false;
        keep_report(&path, &report).unwrap();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
