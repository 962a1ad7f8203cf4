//! `poetry.lock`: its packages and their sources, its freshness against `pyproject.toml`, and
//! the install plan for the image.
//!
//! Poetry writes one `[[package]]` per locked distribution with its groups, its marker (one
//! string, or one per group when groups disagree) and, for packages that do not come from a
//! package index, a `[package.source]` of type `directory` (a path dependency), `file`, `url`
//! or `git` (https://python-poetry.org/docs/dependency-specification/). [`plan`] turns that
//! into what the image installs: for each main-group package whose marker holds in the
//! image, the best wheel for the image, else its source archive, else the path dependency's
//! directory; git and URL dependencies are refused by name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use stigmer_stack::runner::inputs::sha256_hex;

use super::markers::evaluate;
use super::tags::best_wheel;
use super::target::Target;

#[derive(Debug, Deserialize)]
struct LockFile {
    #[serde(default)]
    package: Vec<LockedPackage>,
    metadata: LockMetadata,
}

#[derive(Debug, Deserialize)]
struct LockMetadata {
    #[serde(rename = "lock-version")]
    lock_version: String,
    #[serde(rename = "content-hash")]
    content_hash: Option<String>,
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
pub fn parse_packages(text: &str) -> Result<Vec<LockedPackage>> {
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
    let path = runner_dir.join("poetry.lock");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}: run `poetry lock` in {}",
            path.display(),
            runner_dir.display()
        )
    })?;
    parse_lock(&text).with_context(|| format!("in {}", path.display()))
}

/// Fails, as `poetry check --lock` would, when `poetry.lock` was not made from the current
/// `pyproject.toml`: its `content-hash` must be the hash Poetry computes from the
/// dependency-relevant parts of `pyproject.toml`.
pub fn check_lock_is_fresh(runner_dir: &Path) -> Result<()> {
    let lock_path = runner_dir.join("poetry.lock");
    let lock_text = fs::read_to_string(&lock_path).with_context(|| {
        format!(
            "reading {}: run `poetry lock` in {}",
            lock_path.display(),
            runner_dir.display()
        )
    })?;
    let lock: LockFile = toml::from_str(&lock_text)
        .context("poetry.lock is not a valid Poetry lock file; regenerate it with `poetry lock`")?;
    let pyproject_path = runner_dir.join("pyproject.toml");
    let pyproject_text = fs::read_to_string(&pyproject_path)
        .with_context(|| format!("reading {}", pyproject_path.display()))?;
    let pyproject: toml::Value = toml::from_str(&pyproject_text)
        .with_context(|| format!("{} is not valid TOML", pyproject_path.display()))?;
    let expected = poetry_content_hash(&pyproject)?;
    match lock.metadata.content_hash {
        Some(found) if found == expected => Ok(()),
        Some(found) => bail!(
            "poetry.lock is out of date with pyproject.toml (its content-hash is {}…, pyproject.toml hashes to {}…): \
             run `poetry lock` in {}",
            &found[..found.len().min(12)],
            &expected[..12],
            runner_dir.display()
        ),
        None => bail!("poetry.lock has no content-hash: regenerate it with `poetry lock` in {}", runner_dir.display()),
    }
}

/// Poetry 2's `Locker._get_content_hash`: the SHA-256 of `json.dumps(relevant, sort_keys=True)`
/// over the dependency-relevant keys of `[project]`, `[dependency-groups]` and `[tool.poetry]`
/// (poetry/packages/locker.py, Poetry 2.3 and later).
pub fn poetry_content_hash(pyproject: &toml::Value) -> Result<String> {
    use toml::map::Map;
    use toml::Value;
    const LEGACY_KEYS: [&str; 4] = ["dependencies", "source", "extras", "dev-dependencies"];
    let table =
        |value: Option<&Value>| value.and_then(Value::as_table).cloned().unwrap_or_default();
    let project = table(pyproject.get("project"));
    let groups = table(pyproject.get("dependency-groups"));
    let tool_poetry = table(pyproject.get("tool").and_then(|tool| tool.get("poetry")));
    let mut relevant_project = Map::new();
    for key in ["requires-python", "dependencies", "optional-dependencies"] {
        if let Some(value) = project.get(key) {
            relevant_project.insert(key.to_string(), value.clone());
        }
    }
    // `None` stands for Python's null, which only legacy projects record.
    let mut relevant_poetry: Vec<(String, Result<Option<String>>)> = Vec::new();
    for key in LEGACY_KEYS.iter().chain(["group"].iter()) {
        match tool_poetry.get(*key) {
            Some(value) => relevant_poetry.push((key.to_string(), python_json(value).map(Some))),
            None if !LEGACY_KEYS.contains(key)
                || !relevant_project.is_empty()
                || !groups.is_empty() => {}
            None => relevant_poetry.push((key.to_string(), Ok(None))),
        }
    }
    let poetry_json = python_json_object(relevant_poetry.into_iter())?;
    let mut top: Vec<(String, Result<Option<String>>)> = Vec::new();
    if !relevant_project.is_empty() {
        top.push((
            "project".to_string(),
            python_json(&Value::Table(relevant_project)).map(Some),
        ));
    }
    if !groups.is_empty() {
        top.push((
            "dependency-groups".to_string(),
            python_json(&Value::Table(groups)).map(Some),
        ));
    }
    let text = if top.is_empty() {
        poetry_json
    } else {
        top.push((
            "tool".to_string(),
            Ok(Some(format!("{{\"poetry\": {poetry_json}}}"))),
        ));
        python_json_object(top.into_iter())?
    };
    Ok(sha256_hex(text.as_bytes()))
}

/// A JSON object the way Python's `json.dumps(..., sort_keys=True)` writes it.
fn python_json_object(
    entries: impl Iterator<Item = (String, Result<Option<String>>)>,
) -> Result<String> {
    let mut entries: Vec<(String, Option<String>)> = entries
        .map(|(k, v)| v.map(|v| (k, v)))
        .collect::<Result<_>>()?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(key, value)| {
            format!(
                "{}: {}",
                python_json_string(&key),
                value.unwrap_or_else(|| "null".to_string())
            )
        })
        .collect();
    Ok(format!("{{{}}}", parts.join(", ")))
}

/// One TOML value as Python's `json.dumps` writes it: `", "` and `": "` separators, ASCII only.
fn python_json(value: &toml::Value) -> Result<String> {
    use toml::Value;
    Ok(match value {
        Value::String(text) => python_json_string(text),
        Value::Integer(number) => number.to_string(),
        Value::Boolean(flag) => if *flag { "true" } else { "false" }.to_string(),
        Value::Float(number) if number.fract() == 0.0 && number.is_finite() => format!("{number:.1}"),
        Value::Float(number) => number.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(python_json).collect::<Result<Vec<_>>>()?.join(", ")),
        Value::Table(table) => python_json_object(table.iter().map(|(k, v)| (k.clone(), python_json(v).map(Some))))?,
        Value::Datetime(_) => bail!("pyproject.toml has a date among its dependency settings, which Poetry cannot hash either"),
    })
}

fn python_json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `pip install --require-hashes` lines for the packages in `groups`: exact versions, every
/// hash the lock lists, and the lock's environment marker.
pub fn requirements(packages: &[LockedPackage], groups: &[&str]) -> String {
    let mut text = String::from("# Generated by `cargo xtask` from poetry.lock: do not edit.\n");
    for package in packages {
        let Some(group) = groups
            .iter()
            .find(|group| package.groups.iter().any(|g| g == *group))
        else {
            continue;
        };
        text.push_str(&format!("{}=={}", package.name, package.version));
        if let Some(marker) = package.marker_for(group) {
            text.push_str(&format!(" ; {marker}"));
        }
        for file in &package.files {
            text.push_str(&format!(" --hash={}", file.hash));
        }
        text.push('\n');
    }
    text
}

/// One thing the image installs, decided from the lock for the image's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// A wheel from a package index, checked against the lock's hash.
    Wheel(LockedArtifact),
    /// A source archive from a package index (no wheel fits the image), built in the
    /// image's builder stage.
    Sdist(LockedArtifact),
    /// A path dependency: its directory is copied into the build context and built there.
    Path {
        name: String,
        version: String,
        dir: PathBuf,
    },
    /// A local archive (`{file = "../dist/x.whl"}`), copied into the build context.
    File {
        name: String,
        version: String,
        path: PathBuf,
        sha256: String,
    },
}

/// A file of a package index, as the lock pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedArtifact {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    /// The index it comes from (`[package.source]`'s URL); `None` for PyPI.
    pub index: Option<String>,
}

impl Install {
    #[cfg(test)]
    pub fn name(&self) -> &str {
        match self {
            Install::Wheel(artifact) | Install::Sdist(artifact) => &artifact.name,
            Install::Path { name, .. } | Install::File { name, .. } => name,
        }
    }
}

/// What the image installs from `packages`: those of `groups` whose marker holds in the
/// image, each as its best wheel for the image, else its source archive, else its path or
/// file. `runner_dir` resolves relative paths the way Poetry does: from the directory of
/// `pyproject.toml`. Every package that cannot be installed is named in one error.
pub fn plan(
    packages: &[LockedPackage],
    groups: &[&str],
    target: &Target,
    runner_dir: &Path,
) -> Result<Vec<Install>> {
    let supported = target.platform.supported_tags();
    let mut installs = Vec::new();
    let mut refused = Vec::new();
    for package in packages {
        let Some(group) = groups
            .iter()
            .find(|group| package.groups.iter().any(|g| g == *group))
        else {
            continue;
        };
        if let Some(marker) = package.marker_for(group) {
            let needed = evaluate(marker, &target.markers)
                .with_context(|| format!("deciding whether the image needs {}", package.name))?;
            if !needed {
                continue;
            }
        }
        let name = package.name.clone();
        let version = package.version.clone();
        match package.source.as_ref().map(|s| (s.kind.as_str(), s)) {
            None | Some(("legacy", _)) => {
                let index = package.source.as_ref().map(|s| s.url.clone());
                let artifact = |file: &str| LockedArtifact {
                    name: name.clone(),
                    version: version.clone(),
                    file: file.to_string(),
                    sha256: package.sha256_of(file).unwrap_or_default().to_string(),
                    index: index.clone(),
                };
                let files = package.files.iter().map(|f| f.file.as_str());
                if let Some(wheel) = best_wheel(files, &supported) {
                    installs.push(Install::Wheel(artifact(wheel)));
                } else if let Some(sdist) = package
                    .files
                    .iter()
                    .find(|f| f.file.ends_with(".tar.gz") || f.file.ends_with(".zip"))
                {
                    installs.push(Install::Sdist(artifact(&sdist.file)));
                } else {
                    let wheels: Vec<&str> = package.files.iter().map(|f| f.file.as_str()).collect();
                    refused.push(format!(
                        "{name} {version}: none of its locked files fits the image ({}) and it has no source archive; \
                         locked: {}",
                        target.describe(),
                        if wheels.is_empty() { "nothing".to_string() } else { wheels.join(", ") }
                    ));
                }
            }
            Some(("directory", source)) => installs.push(Install::Path {
                name,
                version,
                dir: runner_dir.join(&source.url),
            }),
            Some(("file", source)) => {
                let file_name = Path::new(&source.url)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                installs.push(Install::File {
                    sha256: package.sha256_of(&file_name).unwrap_or_default().to_string(),
                    name,
                    version,
                    path: runner_dir.join(&source.url),
                });
            }
            Some(("git", source)) => refused.push(format!(
                "{name} {version} comes from git ({} at {}): the image is built from the build context alone, \
                 with no network in the build; check it out inside the repository and depend on it by path \
                 (`{{path = \"...\"}}`), or publish it to the package index",
                source.url,
                source
                    .resolved_reference
                    .as_deref()
                    .or(source.reference.as_deref())
                    .unwrap_or("its default branch")
            )),
            Some((kind, source)) => refused.push(format!(
                "{name} {version} comes from a {kind} source ({}): the image is built from the build context alone, \
                 with no network in the build; download it into the repository and depend on it as a file \
                 (`{{file = \"...\"}}`), or publish it to the package index",
                source.url
            )),
        }
    }
    if !refused.is_empty() {
        bail!(
            "the agent-runner image cannot install {} locked package{}:\n  {}",
            refused.len(),
            if refused.len() == 1 { "" } else { "s" },
            refused.join("\n  ")
        );
    }
    Ok(installs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wheels::target::tests::{bookworm_amd64, bookworm_arm64};
    use crate::wheels::target::Target;

    const LOCK: &str = r#"
[[package]]
name = "colorama"
version = "0.4.6"
groups = ["dev"]
markers = "sys_platform == \"win32\""
files = [
    {file = "colorama-0.4.6-py2.py3-none-any.whl", hash = "sha256:aa"},
]

[[package]]
name = "python-multipart"
version = "0.0.34"
groups = ["main"]
files = [
    {file = "python_multipart-0.0.34-py3-none-any.whl", hash = "sha256:bb"},
    {file = "python_multipart-0.0.34.tar.gz", hash = "sha256:cc"},
]

[[package]]
name = "shared"
version = "1.0"
groups = ["main", "dev"]
markers = {main = "python_version >= \"3.11\"", dev = "sys_platform == \"linux\""}
files = []

[metadata]
lock-version = "2.1"
python-versions = ">=3.11,<3.12"
content-hash = "x"
"#;

    #[test]
    fn main_group_requirements_are_exact() {
        let packages = parse_lock(LOCK).unwrap();
        assert_eq!(
            requirements(&packages, &["main"]),
            "# Generated by `cargo xtask` from poetry.lock: do not edit.\n\
             python-multipart==0.0.34 --hash=sha256:bb --hash=sha256:cc\n\
             shared==1.0 ; python_version >= \"3.11\"\n"
        );
    }

    #[test]
    fn dev_group_carries_markers() {
        let packages = parse_lock(LOCK).unwrap();
        let text = requirements(&packages, &["main", "dev"]);
        assert!(
            text.contains("colorama==0.4.6 ; sys_platform == \"win32\" --hash=sha256:aa\n"),
            "{text}"
        );
        assert!(
            text.contains("shared==1.0 ; python_version >= \"3.11\"\n"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_or_old_locks_are_refused() {
        let err = parse_lock("[[package]\nname=").unwrap_err();
        assert!(format!("{err:#}").contains("poetry lock"), "{err:#}");
        let old = "[[package]]\nname = \"a\"\nversion = \"1\"\ncategory = \"main\"\n[metadata]\nlock-version = \"1.1\"\n";
        assert!(format!("{:#}", parse_lock(old).unwrap_err()).contains("lock-version 1.1"));
    }

    #[test]
    fn content_hash_matches_poetry_on_the_real_project() {
        let runner_dir = crate::project_root()
            .unwrap()
            .join("backend/services/agent-runner");
        check_lock_is_fresh(&runner_dir).unwrap();
    }

    #[test]
    fn content_hash_follows_dependencies_not_other_settings() {
        let base: toml::Value = toml::from_str(
            "[project]\nname = \"a\"\ndependencies = [\"x (>=1)\"]\n[tool.pytest]\nq = 1\n",
        )
        .unwrap();
        let renamed: toml::Value = toml::from_str(
            "[project]\nname = \"b\"\ndependencies = [\"x (>=1)\"]\n[tool.pytest]\nq = 2\n",
        )
        .unwrap();
        let bumped: toml::Value =
            toml::from_str("[project]\nname = \"a\"\ndependencies = [\"x (>=2)\"]\n").unwrap();
        assert_eq!(
            poetry_content_hash(&base).unwrap(),
            poetry_content_hash(&renamed).unwrap()
        );
        assert_ne!(
            poetry_content_hash(&base).unwrap(),
            poetry_content_hash(&bumped).unwrap()
        );
        // python3 -c 'import json,hashlib; print(hashlib.sha256(json.dumps({"project": {"dependencies": ["x (>=1)"]}, "tool": {"poetry": {}}}, sort_keys=True).encode()).hexdigest())'
        assert_eq!(
            poetry_content_hash(&base).unwrap(),
            "1eb4c6e5476320d67c8a29a1f9c648390748bde017eddda64e6c2e4a2e7abcb9"
        );
    }

    #[test]
    fn python_json_escapes_like_python() {
        assert_eq!(
            python_json_string("é\"\\\n😀"),
            "\"\\u00e9\\\"\\\\\\n\\ud83d\\ude00\""
        );
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

    fn realistic_dir() -> PathBuf {
        crate::project_root()
            .unwrap()
            .join("xtask/tests/fixtures/realistic/backend/services/agent-runner")
    }

    fn planned(target: &Target) -> Vec<Install> {
        let dir = realistic_dir();
        plan(&read_lock(&dir).unwrap(), &["main"], target, &dir).unwrap()
    }

    fn left_out(installs: &[Install]) -> Vec<String> {
        let packages = read_lock(&realistic_dir()).unwrap();
        packages
            .iter()
            .map(|p| p.name.clone())
            .filter(|name| !installs.iter().any(|i| i.name() == name))
            .collect()
    }

    fn file_of<'a>(installs: &'a [Install], name: &str) -> &'a str {
        installs
            .iter()
            .find_map(|install| match install {
                Install::Wheel(a) if a.name == name => Some(a.file.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no wheel planned for {name}"))
    }

    #[test]
    fn the_realistic_lock_leaves_out_dev_and_windows_only_packages() {
        let installs = planned(&bookworm_amd64());
        // Debian's Python is 3.11.2, so `async-timeout ; python_full_version < "3.11.3"` stays.
        assert_eq!(
            left_out(&installs),
            ["colorama", "iniconfig", "pluggy", "pygments", "pytest"]
        );
        let mut slim = bookworm_amd64();
        slim.markers.python_full_version = "3.11.14".into();
        assert_eq!(
            left_out(&planned(&slim)),
            [
                "async-timeout",
                "colorama",
                "iniconfig",
                "pluggy",
                "pygments",
                "pytest"
            ]
        );
        let dir = realistic_dir();
        let paths: Vec<&Install> = installs
            .iter()
            .filter(|i| matches!(i, Install::Path { .. }))
            .collect();
        assert_eq!(
            paths,
            [
                &Install::Path {
                    name: "graphton".into(),
                    version: "0.3.0".into(),
                    dir: dir.join("../../libs/python/graphton"),
                },
                &Install::Path {
                    name: "stigmer-api-stubs".into(),
                    version: "0.1.0".into(),
                    dir: dir.join("../../libs/python/stigmer-api-stubs"),
                },
            ]
        );
        let sdists: Vec<&Install> = installs
            .iter()
            .filter(|i| matches!(i, Install::Sdist(_)))
            .collect();
        assert_eq!(
            sdists,
            [&Install::Sdist(LockedArtifact {
                name: "docopt".into(),
                version: "0.6.2".into(),
                file: "docopt-0.6.2.tar.gz".into(),
                sha256: "49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491".into(),
                index: Some("https://pypi.org/simple".into()),
            })]
        );
    }

    #[test]
    fn the_realistic_lock_gets_manylinux_and_abi3_wheels_per_arch() {
        let amd64 = planned(&bookworm_amd64());
        let arm64 = planned(&bookworm_arm64());
        let chosen = |installs: &[Install]| -> Vec<String> {
            [
                "cffi",
                "cryptography",
                "grpcio",
                "protobuf",
                "pydantic-core",
                "charset-normalizer",
                "temporalio",
                "multipart",
                "python-multipart",
            ]
            .iter()
            .map(|name| file_of(installs, name).to_string())
            .collect()
        };
        assert_eq!(
            chosen(&amd64),
            [
                "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl",
                "grpcio-1.85.3-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
                "pydantic_core-2.50.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                "charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl",
                "temporalio-1.35.0-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                "multipart-1.3.1-py3-none-any.whl",
                "python_multipart-0.0.34-py3-none-any.whl",
            ]
        );
        assert_eq!(
            chosen(&arm64),
            [
                "cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
                "cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl",
                "grpcio-1.85.3-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
                "protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl",
                "pydantic_core-2.50.5-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
                "charset_normalizer-3.5.3-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl",
                "temporalio-1.35.0-cp310-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                "multipart-1.3.1-py3-none-any.whl",
                "python_multipart-0.0.34-py3-none-any.whl",
            ]
        );
        // Every wheel is one the image's interpreter accepts: never a host's macOS, Windows,
        // musl or other-CPython wheel, whatever machine runs this test.
        for (installs, arch) in [(&amd64, "x86_64"), (&arm64, "aarch64")] {
            for install in installs.iter() {
                if let Install::Wheel(artifact) = install {
                    let file = &artifact.file;
                    assert!(
                        file.ends_with("-none-any.whl")
                            || (file.contains("manylinux") && file.contains(arch)),
                        "{file}"
                    );
                    assert!(
                        !file.contains("cp312")
                            && !file.contains("macosx")
                            && !file.contains("win"),
                        "{file}"
                    );
                    assert_eq!(artifact.sha256.len(), 64, "{file}");
                }
            }
        }
    }

    #[test]
    fn the_selection_follows_the_image_not_the_host_interpreter() {
        // A host running Python 3.12 (or macOS on arm64) changes nothing above: the plan
        // reads only the target. An image on CPython 3.12 would get cp312 wheels instead.
        let mut py312 = bookworm_amd64();
        py312.platform.python = (3, 12);
        py312.markers.python_version = "3.12".into();
        py312.markers.python_full_version = "3.12.7".into();
        let installs = planned(&py312);
        assert_eq!(
            file_of(&installs, "cffi"),
            "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
        );
        assert_eq!(
            left_out(&installs),
            [
                "async-timeout",
                "colorama",
                "iniconfig",
                "pluggy",
                "pygments",
                "pytest"
            ]
        );
    }

    const SOURCES: &str = r#"
[[package]]
name = "pure-sdist"
version = "1.0"
groups = ["main"]
files = [{file = "pure_sdist-1.0.tar.gz", hash = "sha256:aa"}]

[[package]]
name = "win-only"
version = "1.0"
groups = ["main", "dev"]
markers = {main = "sys_platform == \"win32\"", dev = "python_version >= \"3.8\""}
files = [{file = "win_only-1.0-py3-none-any.whl", hash = "sha256:bb"}]

[[package]]
name = "s3-extra"
version = "2.0"
optional = true
groups = ["main"]
markers = "extra == \"s3\""
files = [{file = "s3_extra-2.0-py3-none-any.whl", hash = "sha256:cc"}]

[[package]]
name = "graphton"
version = "0.3.0"
groups = ["main"]
files = []
develop = true
[package.source]
type = "directory"
url = "../../libs/python/graphton"

[[package]]
name = "vendored"
version = "0.1"
groups = ["main"]
files = [{file = "vendored-0.1-py3-none-any.whl", hash = "sha256:dd"}]
[package.source]
type = "file"
url = "../vendor/vendored-0.1-py3-none-any.whl"

[metadata]
lock-version = "2.1"
python-versions = ">=3.11,<3.12"
content-hash = "x"
"#;

    #[test]
    fn every_kind_of_source_is_planned() {
        let packages = parse_lock(SOURCES).unwrap();
        let dir = Path::new("/repo/backend/services/agent-runner");
        let installs = plan(&packages, &["main"], &bookworm_amd64(), dir).unwrap();
        assert_eq!(
            installs,
            [
                Install::Sdist(LockedArtifact {
                    name: "pure-sdist".into(),
                    version: "1.0".into(),
                    file: "pure_sdist-1.0.tar.gz".into(),
                    sha256: "aa".into(),
                    index: None,
                }),
                Install::Path {
                    name: "graphton".into(),
                    version: "0.3.0".into(),
                    dir: dir.join("../../libs/python/graphton"),
                },
                Install::File {
                    name: "vendored".into(),
                    version: "0.1".into(),
                    path: dir.join("../vendor/vendored-0.1-py3-none-any.whl"),
                    sha256: "dd".into(),
                },
            ]
        );
        // The dev group's own marker does not count for the image; the root's extras do.
        let with_s3 = bookworm_amd64().with_extras(&["S3".to_string()]);
        let names: Vec<String> = plan(&packages, &["main"], &with_s3, dir)
            .unwrap()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        assert_eq!(names, ["pure-sdist", "s3-extra", "graphton", "vendored"]);
        let names: Vec<String> = plan(&packages, &["dev"], &bookworm_amd64(), dir)
            .unwrap()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        assert_eq!(names, ["win-only"]);
    }

    #[test]
    fn git_url_and_unfit_packages_are_refused_by_name() {
        let lock = r#"
[[package]]
name = "from-git"
version = "0.2"
groups = ["main"]
files = []
[package.source]
type = "git"
url = "https://example.invalid/from-git.git"
reference = "main"
resolved_reference = "0123abc"

[[package]]
name = "from-url"
version = "0.3"
groups = ["main"]
files = [{file = "from_url-0.3.tar.gz", hash = "sha256:ee"}]
[package.source]
type = "url"
url = "https://example.invalid/from_url-0.3.tar.gz"

[[package]]
name = "mac-only-wheels"
version = "1.0"
groups = ["main"]
files = [{file = "mac_only_wheels-1.0-cp311-cp311-macosx_11_0_arm64.whl", hash = "sha256:ff"}]

[metadata]
lock-version = "2.1"
python-versions = ">=3.11,<3.12"
content-hash = "x"
"#;
        let packages = parse_lock(lock).unwrap();
        let err = plan(&packages, &["main"], &bookworm_amd64(), Path::new("/r")).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("the agent-runner image cannot install 3 locked packages:"),
            "{text}"
        );
        assert!(
            text.contains(
                "from-git 0.2 comes from git (https://example.invalid/from-git.git at 0123abc)"
            ),
            "{text}"
        );
        assert!(text.contains("from-url 0.3 comes from a url source (https://example.invalid/from_url-0.3.tar.gz)"), "{text}");
        assert!(text.contains("mac-only-wheels 1.0: none of its locked files fits the image (CPython 3.11.2, glibc 2.36, x86_64) and it has no source archive; locked: mac_only_wheels-1.0-cp311-cp311-macosx_11_0_arm64.whl"), "{text}");
    }
}
