//! `poetry.lock` as typed data: each `[[package]]` with its groups, markers, files and
//! source, read with the checks that refuse a lock Poetry 1 or a corrupt edit made.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole file; [`super::content_hash`] reads its `[metadata]` too.
#[derive(Debug, Deserialize)]
pub(super) struct LockFile {
    #[serde(default)]
    pub(super) package: Vec<LockedPackage>,
    pub(super) metadata: LockMetadata,
}

#[derive(Debug, Deserialize)]
pub(super) struct LockMetadata {
    #[serde(rename = "lock-version")]
    pub(super) lock_version: String,
    #[serde(rename = "content-hash")]
    pub(super) content_hash: Option<String>,
}

/// One `[[package]]` of `poetry.lock`.
#[derive(Debug, Clone, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    markers: Option<Markers>,
    #[serde(default)]
    pub files: Vec<LockedFile>,
    #[serde(default)]
    pub source: Option<LockedSource>,
}

/// Where a package comes from, when not from the default package index.
#[derive(Debug, Clone, Deserialize)]
pub struct LockedSource {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default, rename = "resolved_reference")]
    pub resolved_reference: Option<String>,
}

/// Poetry 2 writes one marker string, or one per group when groups disagree.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Markers {
    All(String),
    PerGroup(BTreeMap<String, String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct LockedFile {
    pub file: String,
    pub hash: String,
}

impl LockedPackage {
    pub fn marker_for(&self, group: &str) -> Option<&str> {
        match &self.markers {
            Some(Markers::All(marker)) => Some(marker),
            Some(Markers::PerGroup(per_group)) => per_group.get(group).map(String::as_str),
            None => None,
        }
    }

    /// The lock's SHA-256 for `file`, if the lock lists it.
    pub fn sha256_of(&self, file: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.file == file)
            .and_then(|f| f.hash.strip_prefix("sha256:"))
    }
}

/// Reads `poetry.lock` (Poetry 2 format: lock-version 2.x).
pub fn parse_lock(text: &str) -> Result<Vec<LockedPackage>> {
    let lock: LockFile = toml::from_str(text)
        .context("poetry.lock is not a valid Poetry lock file; regenerate it with `poetry lock`")?;
    if !lock.metadata.lock_version.starts_with("2.") {
        bail!("poetry.lock has lock-version {}; this project needs Poetry 2 (lock-version 2.x): run `poetry lock`", lock.metadata.lock_version);
    }
    for package in &lock.package {
        if package.groups.is_empty() {
            bail!("poetry.lock lists {} without its groups; regenerate it with Poetry 2 (`poetry lock`)", package.name);
        }
    }
    Ok(lock.package)
}

/// The `[[package]]` tables of a piece of `poetry.lock`, without its `[metadata]`.
fn parse_packages(text: &str) -> Result<Vec<LockedPackage>> {
    #[derive(Deserialize)]
    struct Packages {
        #[serde(default)]
        package: Vec<LockedPackage>,
    }
    let packages: Packages = toml::from_str(text)
        .context("poetry.lock is not a valid Poetry lock file; regenerate it with `poetry lock`")?;
    Ok(packages.package)
}

pub fn read_lock(runner_dir: &Path) -> Result<Vec<LockedPackage>> {
    let (path, text) = read_lock_text(runner_dir)?;
    parse_lock(&text).with_context(|| format!("in {}", path.display()))
}

fn read_lock_text(runner_dir: &Path) -> Result<(PathBuf, String)> {
    let path = runner_dir.join("poetry.lock");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: run `poetry lock` in {}",
            path.display(),
            runner_dir.display()
        )
    })?;
    Ok((path, text))
}

/// The path dependencies `poetry.lock` records (`[package.source] type = "directory"`),
/// resolved from the service directory as Poetry resolves them. Parsing a whole lock of a
/// hundred packages costs about 25 ms, more than the rest of a decision, so only the
/// `[[package]]` tables that mention a directory source are parsed.
pub fn path_dependencies(runner_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let (path, text) = read_lock_text(runner_dir)?;
    let mut found = Vec::new();
    for table in text.split("[[package]]\n").skip(1) {
        if !table.contains("type = \"directory\"") {
            continue;
        }
        // Up to the next top-level table ([metadata] after the last package).
        let table = table.split("\n[metadata]").next().unwrap_or(table);
        let packages = parse_packages(&format!("[[package]]\n{table}"))
            .with_context(|| format!("in {}", path.display()))?;
        for package in packages {
            if let Some(source) = package.source.filter(|s| s.kind == "directory") {
                found.push((package.name, runner_dir.join(source.url)));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_or_old_locks_are_refused() {
        let err = parse_lock("[[package]\nname=").unwrap_err();
        assert!(format!("{err:#}").contains("poetry lock"), "{err:#}");
        let old = "[[package]]\nname = \"a\"\nversion = \"1\"\ncategory = \"main\"\n[metadata]\nlock-version = \"1.1\"\n";
        assert!(format!("{:#}", parse_lock(old).unwrap_err()).contains("lock-version 1.1"));
    }

    #[test]
    fn the_real_lock_parses_and_has_python_multipart_in_main() {
        let packages = read_lock(
            &crate::project_root()
                .unwrap()
                .join("backend/services/agent-runner"),
        )
        .unwrap();
        let multipart = packages
            .iter()
            .find(|p| p.name == "python-multipart")
            .unwrap();
        assert!(multipart.groups.contains(&"main".to_string()));
        assert!(multipart
            .files
            .iter()
            .any(|f| f.file.ends_with(".whl") && f.hash.starts_with("sha256:")));
    }

    #[test]
    fn path_dependencies_of_the_realistic_lock() {
        let dir = crate::project_root()
            .unwrap()
            .join("xtask/tests/fixtures/realistic/backend/services/agent-runner");
        let found = path_dependencies(&dir).unwrap();
        assert_eq!(
            found,
            [
                (
                    "graphton".to_string(),
                    dir.join("../../libs/python/graphton")
                ),
                (
                    "stigmer-api-stubs".to_string(),
                    dir.join("../../libs/python/stigmer-api-stubs")
                ),
            ]
        );
        let real = crate::project_root()
            .unwrap()
            .join("backend/services/agent-runner");
        assert_eq!(path_dependencies(&real).unwrap(), []);
    }
}
