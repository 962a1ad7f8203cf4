//! The image's inputs and the rebuild decision.
//!
//! Every input that changes what the agent-runner image holds gets a digest: the
//! Dockerfile, `.dockerignore`, `pyproject.toml`, `poetry.lock`, the source tree under
//! `src/`, each path dependency's source tree (`path dependency graphton`), the base
//! image's ID and the build arguments. The image carries them as labels;
//! comparing them with the working tree decides whether to rebuild and says why. Only
//! declared inputs are read: no walk ever enters a virtual environment, a cache or `target/`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::runner::spec::hex;

/// The hex SHA-256 of `poetry.lock`'s bytes.
pub const POETRY_LOCK_LABEL: &str = "dev.stigmer.poetry-lock.sha256";
/// The digest over the whole manifest.
pub const INPUTS_LABEL: &str = "dev.stigmer.inputs.sha256";
/// The per-input manifest as JSON, so a decision can name what changed.
pub const MANIFEST_LABEL: &str = "dev.stigmer.inputs.manifest";

/// Files at the top of the service directory that are inputs, in manifest order.
pub const INPUT_FILES: [&str; 4] = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "poetry.lock",
];
/// The source tree copied into the image.
pub const SOURCE_DIR: &str = "src";
/// The manifest's entry for the source tree.
pub const SOURCE_INPUT: &str = "src/";
pub const BASE_IMAGE_INPUT: &str = "base image";
/// The prefix of a path dependency's input: `path dependency graphton`.
pub const PATH_DEPENDENCY_INPUT: &str = "path dependency";
/// Directory names that are never a path dependency's source: version control, virtual
/// environments, caches and build output. Neither hashed nor copied into the build context.
pub const NOT_SOURCE: [&str; 10] = [
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "build",
    "dist",
    "node_modules",
];
pub const BUILD_ARGS_INPUT: &str = "build args";

/// What an entry of a tree is, as Docker copies it: `COPY` keeps a file's executable bit, copies
/// a symbolic link as a link (its text, not its target: a link that leaves the context dangles
/// in the image) and copies directories, empty ones included
/// (https://docs.docker.com/reference/dockerfile/#copy). Each of these counts in the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    #[default]
    File,
    Executable,
    Symlink,
    Directory,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Executable => "executable",
            EntryKind::Symlink => "symlink",
            EntryKind::Directory => "directory",
        }
    }
}

/// One entry of a tree and its digest: of the content for a file, of the link text for a
/// symbolic link, empty for a directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    pub path: String,
    #[serde(default)]
    pub kind: EntryKind,
    pub sha256: String,
}

/// The source tree's files and the digest over all of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceTree {
    pub digest: String,
    pub files: Vec<SourceFile>,
}

impl SourceTree {
    /// Paths added, removed or changed between `older` and this tree.
    pub fn changed_since(&self, older: &SourceTree) -> Vec<String> {
        let old: BTreeMap<&str, (EntryKind, &str)> = older
            .files
            .iter()
            .map(|f| (f.path.as_str(), (f.kind, f.sha256.as_str())))
            .collect();
        let new: BTreeMap<&str, (EntryKind, &str)> = self
            .files
            .iter()
            .map(|f| (f.path.as_str(), (f.kind, f.sha256.as_str())))
            .collect();
        let mut changed: Vec<String> = new
            .iter()
            .filter(|(path, digest)| old.get(*path) != Some(*digest))
            .map(|(path, _)| path.to_string())
            .collect();
        changed.extend(
            old.keys()
                .filter(|path| !new.contains_key(*path))
                .map(|path| format!("{path} (removed)")),
        );
        changed.sort();
        changed
    }
}

/// Input name → digest (or the literal value, for the base image ID and build arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct InputManifest {
    pub entries: BTreeMap<String, String>,
}

impl InputManifest {
    /// Hashes the declared inputs of the service at `service_dir`.
    pub fn from_tree(
        service_dir: &Path,
        base_image_id: &str,
        build_args: &BTreeMap<String, String>,
    ) -> Result<(InputManifest, SourceTree)> {
        let mut entries = BTreeMap::new();
        for name in INPUT_FILES {
            let path = service_dir.join(name);
            let bytes = fs::read(&path).with_context(|| {
                format!(
                    "reading {}: the agent-runner image cannot be built without it",
                    path.display()
                )
            })?;
            entries.insert(name.to_string(), sha256_hex(&bytes));
        }
        let tree = hash_source_tree(&service_dir.join(SOURCE_DIR))?;
        entries.insert(SOURCE_INPUT.to_string(), tree.digest.clone());
        entries.insert(BASE_IMAGE_INPUT.to_string(), base_image_id.to_string());
        let args: Vec<String> = build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        entries.insert(BUILD_ARGS_INPUT.to_string(), args.join(" "));
        Ok((InputManifest { entries }, tree))
    }

    /// Adds a path dependency's source tree (the files [`path_dependency_files`] lists) as the
    /// input `path dependency <name>`, so an edit in it names it:
    /// `path dependency graphton changed: 3f2a… → 9c41…`.
    pub fn add_path_dependency(&mut self, name: &str, dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            bail!(
                "the path dependency {name} is missing at {}: poetry.lock points there; fix its path in pyproject.toml and run `poetry lock`",
                dir.display()
            );
        }
        let tree = hash_tree(dir, is_path_dependency_noise)
            .with_context(|| format!("hashing the path dependency {name}"))?;
        self.entries
            .insert(format!("{PATH_DEPENDENCY_INPUT} {name}"), tree.digest);
        Ok(())
    }

    /// The digest over every entry, used as the image's inputs label and, later, its tag.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, value) in &self.entries {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([b'\n']);
        }
        hex(&hasher.finalize())
    }

    /// The labels `docker build --label` puts on the image.
    pub fn labels(&self) -> Vec<(String, String)> {
        let manifest = serde_json::to_string(&self.entries).unwrap_or_default();
        vec![
            (
                POETRY_LOCK_LABEL.to_string(),
                self.entries.get("poetry.lock").cloned().unwrap_or_default(),
            ),
            (INPUTS_LABEL.to_string(), self.digest()),
            (MANIFEST_LABEL.to_string(), manifest),
        ]
    }

    /// Reads the manifest back from an image's labels; `None` when the image has none.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<InputManifest> {
        let entries = serde_json::from_str(labels.get(MANIFEST_LABEL)?).ok()?;
        Some(InputManifest { entries })
    }
}

/// Hashes the source tree under `dir` (byte-code caches left out, as `.dockerignore` leaves
/// them out of the image).
pub fn hash_source_tree(dir: &Path) -> Result<SourceTree> {
    if !dir.is_dir() {
        bail!(
            "{} is missing: the agent-runner's sources must be there",
            dir.display()
        );
    }
    hash_tree(dir, |name| name == "__pycache__")
}

/// Hashes every entry under `dir` (see [`EntryKind`]) but byte-code and the directories
/// `skip_dir` names, in a stable order.
pub fn hash_tree(dir: &Path, skip_dir: impl Fn(&str) -> bool) -> Result<SourceTree> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let walk = WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            entry.depth() == 0
                || !(entry.file_type().is_dir() && skip_dir(&entry.file_name().to_string_lossy()))
        });
    for entry in walk {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        if entry.depth() == 0 {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.ends_with(".pyc") || name.ends_with(".pyo") {
            continue;
        }
        let path = entry.path();
        let (kind, sha256) = if entry.path_is_symlink() {
            let target = fs::read_link(path)
                .with_context(|| format!("reading the link {}", path.display()))?;
            let text = target.to_string_lossy().into_owned();
            (EntryKind::Symlink, sha256_hex(text.as_bytes()))
        } else if entry.file_type().is_dir() {
            (EntryKind::Directory, String::new())
        } else {
            let metadata = entry
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let kind = if metadata.permissions().mode() & 0o111 != 0 {
                EntryKind::Executable
            } else {
                EntryKind::File
            };
            (kind, sha256_hex(&bytes))
        };
        let relative = path
            .strip_prefix(dir)
            .context("walkdir yields paths under its root")?;
        files.push(SourceFile {
            path: relative.to_string_lossy().replace('\\', "/"),
            kind,
            sha256,
        });
    }
    let mut hasher = Sha256::new();
    for file in &files {
        hasher.update(file.path.as_bytes());
        hasher.update([0]);
        hasher.update(file.kind.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(file.sha256.as_bytes());
        hasher.update([b'\n']);
    }
    Ok(SourceTree {
        digest: hex(&hasher.finalize()),
        files,
    })
}

/// A path dependency's directories that are not its source: virtual environments, build
/// output, caches, `*.egg-info`.
pub fn is_path_dependency_noise(name: &str) -> bool {
    NOT_SOURCE.contains(&name) || name.ends_with(".egg-info")
}

/// The files of a path dependency at `dir`, relative to it and sorted: everything but
/// [`NOT_SOURCE`] directories, `*.egg-info` and byte-code.
pub fn path_dependency_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.is_dir() {
        bail!(
            "{} is missing: a path dependency in poetry.lock points there; fix its path in pyproject.toml and run `poetry lock`",
            dir.display()
        );
    }
    let walk = WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            entry.depth() == 0
                || !(entry.file_type().is_dir()
                    && is_path_dependency_noise(&entry.file_name().to_string_lossy()))
        });
    let mut files = Vec::new();
    for entry in walk {
        let entry = entry.with_context(|| format!("walking {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy();
        if !entry.file_type().is_file() || name.ends_with(".pyc") || name.ends_with(".pyo") {
            continue;
        }
        files.push(
            entry
                .path()
                .strip_prefix(dir)
                .context("walkdir yields paths under its root")?
                .to_path_buf(),
        );
    }
    Ok(files)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// One input whose digest differs between the image and the working tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputChange {
    pub input: String,
    pub image: Option<String>,
    pub tree: String,
}

impl fmt::Display for InputChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = self
            .image
            .as_deref()
            .map_or_else(|| "none".to_string(), short);
        write!(f, "{} changed: {old} → {}", self.input, short(&self.tree))
    }
}

/// Abbreviates digests (`3f2a…`) and leaves other values whole.
fn short(value: &str) -> String {
    let digest = value.strip_prefix("sha256:").unwrap_or(value);
    if digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("{}…", &digest[..4])
    } else if value.is_empty() {
        "none".to_string()
    } else {
        value.to_string()
    }
}

/// Whether the image must be rebuilt, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RebuildDecision {
    UpToDate,
    ImageMissing,
    /// The image exists but carries no manifest: it was not built by this tool.
    Unlabelled,
    /// The manifest matches, but these labels do not say what the tree's would: a doctored
    /// or half-labelled image, never taken for current.
    Mislabelled {
        labels: Vec<String>,
    },
    Changed {
        changes: Vec<InputChange>,
    },
}

impl RebuildDecision {
    pub fn decide(
        tree: &InputManifest,
        image_labels: Option<&BTreeMap<String, String>>,
    ) -> RebuildDecision {
        RebuildDecision::decide_ignoring(tree, image_labels, &[])
    }

    /// Like [`RebuildDecision::decide`], with the `ignored` inputs left out of the comparison:
    /// the dev loop mounts the working tree's source over the image's copy, so the source the
    /// image was built with does not matter there. The image's labels must still agree with its
    /// own manifest, so a doctored one is never taken for current.
    pub fn decide_ignoring(
        tree: &InputManifest,
        image_labels: Option<&BTreeMap<String, String>>,
        ignored: &[&str],
    ) -> RebuildDecision {
        let Some(labels) = image_labels else {
            return RebuildDecision::ImageMissing;
        };
        let Some(image) = InputManifest::from_labels(labels) else {
            return RebuildDecision::Unlabelled;
        };
        let compared = |manifest: &InputManifest| -> BTreeMap<String, String> {
            manifest
                .entries
                .iter()
                .filter(|(name, _)| !ignored.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        };
        let (wanted, built) = (compared(tree), compared(&image));
        if wanted == built {
            // Every label the build sets must say what the manifest would, the poetry.lock
            // digest and the inputs digest included, not only the manifest.
            let expected = if ignored.is_empty() { tree } else { &image };
            let mislabelled: Vec<String> = expected
                .labels()
                .into_iter()
                .filter(|(key, value)| labels.get(key) != Some(value))
                .map(|(key, _)| key)
                .collect();
            if mislabelled.is_empty() {
                return RebuildDecision::UpToDate;
            }
            return RebuildDecision::Mislabelled {
                labels: mislabelled,
            };
        }
        let mut changes: Vec<InputChange> = wanted
            .iter()
            .filter(|(name, value)| built.get(*name) != Some(*value))
            .map(|(name, value)| InputChange {
                input: name.clone(),
                image: built.get(name).cloned(),
                tree: value.clone(),
            })
            .collect();
        // An input the image knew of but the tree no longer declares still forces a build.
        changes.extend(
            built
                .iter()
                .filter(|(name, _)| !wanted.contains_key(*name))
                .map(|(name, value)| InputChange {
                    input: name.clone(),
                    image: Some(value.clone()),
                    tree: String::new(),
                }),
        );
        RebuildDecision::Changed { changes }
    }

    pub fn needs_build(&self) -> bool {
        !matches!(self, RebuildDecision::UpToDate)
    }
}

impl fmt::Display for RebuildDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebuildDecision::UpToDate => write!(f, "up to date"),
            RebuildDecision::ImageMissing => write!(f, "no image yet"),
            RebuildDecision::Unlabelled => write!(
                f,
                "the image carries no input labels (not built by cargo xtask)"
            ),
            RebuildDecision::Mislabelled { labels } => {
                write!(f, "labels {} differ", labels.join(", "))
            }
            RebuildDecision::Changed { changes } => {
                let parts: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn service_dir() -> (PathBuf, impl Drop) {
        struct Cleanup(PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "inputs-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        fs::create_dir_all(dir.join("src/agent_runner/__pycache__")).unwrap();
        for (name, text) in [
            ("Dockerfile", "FROM x\n"),
            (".dockerignore", "*\n"),
            ("pyproject.toml", "[tool]\n"),
            ("poetry.lock", "# lock\n"),
        ] {
            fs::write(dir.join(name), text).unwrap();
        }
        fs::write(dir.join("src/agent_runner/__init__.py"), "").unwrap();
        fs::write(dir.join("src/agent_runner/main.py"), "print('hi')\n").unwrap();
        fs::write(
            dir.join("src/agent_runner/__pycache__/main.cpython-311.pyc"),
            "junk",
        )
        .unwrap();
        (dir.clone(), Cleanup(dir))
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    fn args() -> BTreeMap<String, String> {
        BTreeMap::from([("BASE_IMAGE".to_string(), "python:3.11-slim".to_string())])
    }

    #[test]
    fn poetry_lock_label_is_the_sha256_of_its_bytes() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = manifest.labels().into_iter().collect();
        // printf '# lock\n' | sha256sum
        assert_eq!(labels[POETRY_LOCK_LABEL], sha256_hex(b"# lock\n"));
        assert_eq!(labels[POETRY_LOCK_LABEL].len(), 64);
        assert_eq!(InputManifest::from_labels(&labels), Some(manifest.clone()));
        assert_eq!(
            RebuildDecision::decide(&manifest, Some(&labels)),
            RebuildDecision::UpToDate
        );
    }

    #[test]
    fn touching_a_file_changes_nothing_but_editing_names_it() {
        let (dir, _cleanup) = service_dir();
        let (before, tree_before) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        // Rewriting the same bytes (a touch, a checkout) leaves every digest alone.
        fs::write(dir.join("poetry.lock"), "# lock\n").unwrap();
        fs::write(
            dir.join("src/agent_runner/__pycache__/main.cpython-311.pyc"),
            "other junk",
        )
        .unwrap();
        let (same, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        assert_eq!(
            RebuildDecision::decide(&same, Some(&labels)),
            RebuildDecision::UpToDate
        );

        fs::write(dir.join("src/agent_runner/main.py"), "print('bye')\n").unwrap();
        let (edited, tree_after) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let decision = RebuildDecision::decide(&edited, Some(&labels));
        let RebuildDecision::Changed { changes } = &decision else {
            panic!("{decision:?}")
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].input, "src/");
        assert_eq!(
            tree_after.changed_since(&tree_before),
            vec!["agent_runner/main.py".to_string()]
        );
    }

    #[test]
    fn a_mounted_source_leaves_the_source_out_but_not_the_labels() {
        let (dir, _cleanup) = service_dir();
        let (built, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = built.labels().into_iter().collect();
        fs::write(dir.join("src/agent_runner/main.py"), "print('edited')\n").unwrap();
        let (edited, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let source = SOURCE_INPUT;
        assert!(RebuildDecision::decide(&edited, Some(&labels)).needs_build());
        assert_eq!(
            RebuildDecision::decide_ignoring(&edited, Some(&labels), &[source]),
            RebuildDecision::UpToDate
        );
        // Any other input still counts.
        fs::write(dir.join("poetry.lock"), "# other\n").unwrap();
        let (locked, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let RebuildDecision::Changed { changes } =
            RebuildDecision::decide_ignoring(&locked, Some(&labels), &[source])
        else {
            panic!("a lock change must rebuild")
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].input, "poetry.lock");
        // A doctored inputs label is caught against the image's own manifest.
        let mut doctored = labels.clone();
        doctored.insert(INPUTS_LABEL.to_string(), "0".repeat(64));
        assert!(matches!(
            RebuildDecision::decide_ignoring(&edited, Some(&doctored), &[source]),
            RebuildDecision::Mislabelled { .. }
        ));
    }

    #[test]
    fn the_reason_line_abbreviates_digests() {
        let (dir, _cleanup) = service_dir();
        let (before, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        fs::write(dir.join("poetry.lock"), "# lock 2\n").unwrap();
        let (after, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let old = &sha256_hex(b"# lock\n")[..4];
        let new = &sha256_hex(b"# lock 2\n")[..4];
        assert_eq!(
            RebuildDecision::decide(&after, Some(&labels)).to_string(),
            format!("poetry.lock changed: {old}… → {new}…")
        );
    }

    #[test]
    fn base_image_and_build_args_are_inputs() {
        let (dir, _cleanup) = service_dir();
        let (before, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        let other_args = BTreeMap::from([(
            "BASE_IMAGE".to_string(),
            "stigmer-python-base:3.11-bookworm".to_string(),
        )]);
        let (after, _) = InputManifest::from_tree(&dir, "sha256:other", &other_args).unwrap();
        let text = RebuildDecision::decide(&after, Some(&labels)).to_string();
        assert_eq!(text, "base image changed: sha256:base → sha256:other; build args changed: BASE_IMAGE=python:3.11-slim → BASE_IMAGE=stigmer-python-base:3.11-bookworm");
    }

    #[test]
    fn a_doctored_label_is_never_up_to_date() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let mut labels: BTreeMap<String, String> = manifest.labels().into_iter().collect();
        labels.insert(POETRY_LOCK_LABEL.to_string(), "0".repeat(64));
        let decision = RebuildDecision::decide(&manifest, Some(&labels));
        assert_eq!(
            decision,
            RebuildDecision::Mislabelled {
                labels: vec![POETRY_LOCK_LABEL.to_string()]
            }
        );
        assert!(decision.needs_build());
    }

    #[test]
    fn missing_and_foreign_images() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        assert_eq!(
            RebuildDecision::decide(&manifest, None),
            RebuildDecision::ImageMissing
        );
        assert_eq!(
            RebuildDecision::decide(&manifest, Some(&BTreeMap::new())),
            RebuildDecision::Unlabelled
        );
    }

    #[test]
    fn a_path_dependency_change_names_it_and_caches_do_not_count() {
        let (dir, _cleanup) = service_dir();
        let lib = dir.join("libs/graphton");
        fs::create_dir_all(lib.join("graphton/__pycache__")).unwrap();
        fs::create_dir_all(lib.join(".venv/lib")).unwrap();
        fs::create_dir_all(lib.join("graphton.egg-info")).unwrap();
        fs::write(
            lib.join("pyproject.toml"),
            "[project]\nname = \"graphton\"\n",
        )
        .unwrap();
        fs::write(lib.join("graphton/__init__.py"), "X = 1\n").unwrap();
        fs::write(lib.join("graphton/__pycache__/x.pyc"), "junk").unwrap();
        fs::write(lib.join(".venv/lib/site.py"), "junk").unwrap();
        fs::write(lib.join("graphton.egg-info/PKG-INFO"), "junk").unwrap();
        assert_eq!(
            path_dependency_files(&lib).unwrap(),
            vec![
                PathBuf::from("graphton/__init__.py"),
                PathBuf::from("pyproject.toml")
            ]
        );
        let (mut before, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        before.add_path_dependency("graphton", &lib).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        fs::write(lib.join(".venv/lib/site.py"), "other junk").unwrap();
        let (mut same, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        same.add_path_dependency("graphton", &lib).unwrap();
        assert_eq!(
            RebuildDecision::decide(&same, Some(&labels)),
            RebuildDecision::UpToDate
        );
        fs::write(lib.join("graphton/__init__.py"), "X = 2\n").unwrap();
        let (mut after, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        after.add_path_dependency("graphton", &lib).unwrap();
        let old = &before.entries["path dependency graphton"][..4];
        let new = &after.entries["path dependency graphton"][..4];
        assert_ne!(old, new);
        assert_eq!(
            RebuildDecision::decide(&after, Some(&labels)).to_string(),
            format!("path dependency graphton changed: {old}… → {new}…")
        );
        let err = after
            .add_path_dependency("gone", &dir.join("libs/gone"))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("path dependency gone"),
            "{err:#}"
        );
    }

    /// The source digest of the service at `dir`.
    fn source_digest(dir: &Path) -> String {
        hash_source_tree(&dir.join(SOURCE_DIR)).unwrap().digest
    }

    #[test]
    fn a_symlink_counts_by_its_link_text_as_docker_copies_it() {
        let (dir, _cleanup) = service_dir();
        let package = dir.join("src/agent_runner");
        std::os::unix::fs::symlink("main.py", package.join("alias.py")).unwrap();
        let linked = source_digest(&dir);
        // Another target with the same content is another link.
        fs::write(package.join("copy.py"), "print('hi')\n").unwrap();
        fs::remove_file(package.join("alias.py")).unwrap();
        let copied = source_digest(&dir);
        std::os::unix::fs::symlink("copy.py", package.join("alias.py")).unwrap();
        assert_ne!(source_digest(&dir), copied);
        fs::remove_file(package.join("alias.py")).unwrap();
        std::os::unix::fs::symlink("main.py", package.join("alias.py")).unwrap();
        fs::remove_file(package.join("copy.py")).unwrap();
        assert_eq!(source_digest(&dir), linked);
        // Editing the target changes the target's entry, not the link's.
        let tree = hash_source_tree(&dir.join(SOURCE_DIR)).unwrap();
        let link = tree
            .files
            .iter()
            .find(|f| f.path == "agent_runner/alias.py")
            .unwrap();
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(link.sha256, sha256_hex(b"main.py"));
    }

    #[test]
    fn an_executable_bit_counts_as_docker_keeps_it() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _cleanup) = service_dir();
        let script = dir.join("src/agent_runner/main.py");
        let before = source_digest(&dir);
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let executable = source_digest(&dir);
        assert_ne!(executable, before);
        fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(source_digest(&dir), before);
    }

    #[test]
    fn an_empty_directory_counts_as_docker_copies_it() {
        let (dir, _cleanup) = service_dir();
        let before = hash_source_tree(&dir.join(SOURCE_DIR)).unwrap();
        fs::create_dir(dir.join("src/agent_runner/templates")).unwrap();
        let after = hash_source_tree(&dir.join(SOURCE_DIR)).unwrap();
        assert_ne!(after.digest, before.digest);
        assert_eq!(
            after.changed_since(&before),
            vec!["agent_runner/templates".to_string()]
        );
        fs::remove_dir(dir.join("src/agent_runner/templates")).unwrap();
        assert_eq!(source_digest(&dir), before.digest);
    }

    #[test]
    fn a_missing_input_is_a_clear_error() {
        let (dir, _cleanup) = service_dir();
        fs::remove_file(dir.join("Dockerfile")).unwrap();
        let err = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap_err();
        assert!(format!("{err:#}").contains("Dockerfile"), "{err:#}");
    }
}
