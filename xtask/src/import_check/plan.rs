//! The check's plan: the policy in `[tool.stigmer.import-check]`, the command it becomes, and
//! the cache of passed reports, keyed by image, policy and mounted source.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use stigmer_stack::runner::inputs::sha256_hex;

use super::report::ImportReport;
use super::POLICY_TABLE;

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
    use crate::import_check::report::tests::REPORT;

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
