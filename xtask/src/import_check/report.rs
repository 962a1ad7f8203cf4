//! The report `python -m agent_runner.import_check` prints, as typed data, and what a user
//! reads from it: the smoke line with one line per collision, and on failure what to do next.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::POLICY_TABLE;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Captured from `python -m agent_runner.import_check` in a venv with both multipart
    /// distributions (trimmed to the fields read here, plus one ignored).
    pub const REPORT: &str = r#"{
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
}
