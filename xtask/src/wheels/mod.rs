//! Locked wheels for a hermetic image build.
//!
//! Containers on our build machines cannot reach PyPI over TLS (the egress proxy's CA is
//! only in the host's trust store), so `docker build` never downloads anything: the host
//! fetches the exact files `poetry.lock` pins into `wheels/` beside the Dockerfile, checked
//! against the lock's SHA-256 hashes, and writes `wheels/requirements.txt` from the lock so
//! that `pip install --require-hashes` inside the build checks them a second time. The same
//! path serves laptops, so there is one way the image gets its dependencies.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use runner_container::inputs::sha256_hex;
use serde::Deserialize;
use xshell::{cmd, Shell};

use runner_container::progress::Phase;

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
    fn marker_for(&self, group: &str) -> Option<&str> {
        match &self.markers {
            Some(Markers::All(marker)) => Some(marker),
            Some(Markers::PerGroup(per_group)) => per_group.get(group).map(String::as_str),
            None => None,
        }
    }

    /// The lock's SHA-256 for `file`, if the lock lists it.
    fn sha256_of(&self, file: &str) -> Option<&str> {
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

/// Makes `wheels/` hold exactly the main group's wheels, each checked against the lock.
/// Costs no download when they are already there.
pub fn prepare(sh: &Shell, runner_dir: &Path, platform: &str, phase: &Phase) -> Result<()> {
    check_lock_is_fresh(runner_dir)?;
    let packages = read_lock(runner_dir)?;
    let main: Vec<&LockedPackage> = packages
        .iter()
        .filter(|p| p.groups.iter().any(|g| g == "main"))
        .collect();
    let dir = runner_dir.join("wheels");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let requirements_path = dir.join("requirements.txt");
    let requirements_text = requirements(&packages, &["main"]);
    if fs::read_to_string(&requirements_path).ok().as_deref() != Some(requirements_text.as_str()) {
        fs::write(&requirements_path, &requirements_text)
            .with_context(|| format!("writing {}", requirements_path.display()))?;
    }
    let mut all_present = true;
    for package in &main {
        all_present &= verified_wheel(&dir, package)?.is_some();
    }
    if !all_present {
        phase.line("fetching locked wheels with pip");
        fetch(sh, &dir, &requirements_path, platform)?;
    }
    // Keep exactly the locked wheels: a stale one would only bloat the build context.
    let mut wanted = Vec::new();
    for package in &main {
        let Some(file) = verified_wheel(&dir, package)? else {
            bail!(
                "no wheel of {} {} matching poetry.lock's hashes could be fetched for {platform}; \
                 the image installs wheels only",
                package.name,
                package.version
            );
        };
        wanted.push(file);
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry
            .context("listing the wheels")?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".whl") && !wanted.contains(&name) {
            fs::remove_file(dir.join(&name))
                .with_context(|| format!("removing the stale wheel {name}"))?;
        }
    }
    Ok(())
}

/// The file name of a wheel of `package` in `dir` whose bytes match the lock, if any.
fn verified_wheel(dir: &Path, package: &LockedPackage) -> Result<Option<String>> {
    for file in package.files.iter().filter(|f| f.file.ends_with(".whl")) {
        let path = dir.join(&file.file);
        let Ok(bytes) = fs::read(&path) else { continue };
        if Some(sha256_hex(&bytes).as_str()) == package.sha256_of(&file.file) {
            return Ok(Some(file.file.clone()));
        }
        // A file with the locked name but other bytes is corrupt or tampered with.
        fs::remove_file(&path).with_context(|| {
            format!(
                "removing {}, whose hash differs from poetry.lock",
                path.display()
            )
        })?;
    }
    Ok(None)
}

/// Downloads the wheels for the engine's platform with the host's pip.
fn fetch(sh: &Shell, dir: &Path, requirements: &Path, platform: &str) -> Result<()> {
    let arch = match platform {
        "linux/amd64" => "x86_64",
        "linux/arm64" => "aarch64",
        other => bail!("the Docker engine's platform {other} is not one the agent-runner image is built for (linux/amd64, linux/arm64)"),
    };
    // Bookworm's glibc is 2.36; pip accepts every older manylinux tag with it.
    let manylinux = format!("manylinux_2_36_{arch}");
    let python = python_on_host(sh)?;
    cmd!(
        sh,
        "{python} -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes
            --python-version 3.11 --implementation cp --abi cp311 --platform {manylinux}
            --dest {dir} --requirement {requirements}"
    )
    .run()
    .context("fetching the locked wheels with pip (the host needs Python 3 with pip and access to PyPI)")
}

pub fn python_on_host(sh: &Shell) -> Result<String> {
    for candidate in ["python3", "python"] {
        if cmd!(sh, "{candidate} -m pip --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
        {
            return Ok(candidate.to_string());
        }
    }
    bail!("no Python 3 with pip on PATH: install it (`apt-get install python3-pip`, or python.org) so the locked wheels can be fetched")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let runner_dir = crate::project_root().join("backend/services/agent-runner");
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
        let packages =
            read_lock(&crate::project_root().join("backend/services/agent-runner")).unwrap();
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
}
