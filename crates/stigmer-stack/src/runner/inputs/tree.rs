//! A directory hashed as Docker copies it: each entry's kind and digest, and one digest over
//! the whole tree, for the runner's source and for each path dependency.
//!
//! Apart from the manifest because it knows nothing of inputs or labels: it is the walk and
//! the hashing, and the helpers every other digest in the workspace is written with
//! ([`sha256_hex`], [`hex`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

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

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::inputs::fixture::{service_dir, SOURCE_DIR};

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
}
