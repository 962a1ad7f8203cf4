//! The manifest: every declared input's digest, gathered from the service directory, and the
//! labels `docker build` puts on the image from it (and reads back).
//!
//! Apart from the decision because it is the only part that reads the working tree (through
//! [`super::tree`]); the decision compares two manifests and touches nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::table::{InputKind, PATH_DEPENDENCY_INPUT, POETRY_LOCK_INPUT, REBUILD_INPUTS};
use super::tree::{
    hash_source_tree, hash_tree, hex, is_path_dependency_noise, sha256_hex, SourceTree,
};

/// The hex SHA-256 of `poetry.lock`'s bytes.
pub const POETRY_LOCK_LABEL: &str = "dev.stigmer.poetry-lock.sha256";
/// The digest over the whole manifest.
pub const INPUTS_LABEL: &str = "dev.stigmer.inputs.sha256";
/// The per-input manifest as JSON, so a decision can name what changed.
pub const MANIFEST_LABEL: &str = "dev.stigmer.inputs.manifest";

/// Input name → digest (or the literal value, for the base image ID and build arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct InputManifest {
    pub entries: BTreeMap<String, String>,
}

impl InputManifest {
    /// Hashes the inputs [`REBUILD_INPUTS`] declares, of the service at `service_dir`.
    pub fn from_tree(
        service_dir: &Path,
        base_image_id: &str,
        build_args: &BTreeMap<String, String>,
    ) -> Result<(InputManifest, SourceTree)> {
        let mut entries = BTreeMap::new();
        let mut source = None;
        for input in &REBUILD_INPUTS {
            // A file's or a source tree's name is its path in the service directory.
            let value = match input.kind {
                InputKind::File => {
                    let path = service_dir.join(input.name);
                    let bytes = fs::read(&path).with_context(|| {
                        format!(
                            "reading {}: the agent-runner image cannot be built without it",
                            path.display()
                        )
                    })?;
                    sha256_hex(&bytes)
                }
                InputKind::SourceTree => {
                    let tree =
                        hash_source_tree(&service_dir.join(input.name.trim_end_matches('/')))?;
                    let digest = tree.digest.clone();
                    source = Some(tree);
                    digest
                }
                InputKind::BaseImage => base_image_id.to_string(),
                InputKind::BuildArgs => {
                    let args: Vec<String> =
                        build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    args.join(" ")
                }
                // One entry for each path dependency poetry.lock records, added by the caller
                // through `add_path_dependency`.
                InputKind::PathDependencies => continue,
            };
            entries.insert(input.name.to_string(), value);
        }
        // `check_declared` (run by the tidy test) keeps one source tree row in the table.
        let source = source.context("REBUILD_INPUTS declares no source tree")?;
        Ok((InputManifest { entries }, source))
    }

    /// Adds a path dependency's source tree (the files
    /// [`path_dependency_files`](super::path_dependency_files) lists) as the input
    /// `path dependency <name>`, so an edit in it names it:
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
                self.entries
                    .get(POETRY_LOCK_INPUT)
                    .cloned()
                    .unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::inputs::fixture::{args, service_dir};
    use crate::runner::inputs::{path_dependency_files, RebuildDecision};
    use std::path::PathBuf;

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

    #[test]
    fn the_table_gives_the_entries_and_digest_images_already_carry() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let names: Vec<&str> = manifest.entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "base image",
                "build args",
                "poetry.lock",
                "pyproject.toml",
                "src/"
            ]
        );
        // The digest of this fixture before the inputs moved into REBUILD_INPUTS: an image
        // built then is still up to date.
        assert_eq!(
            manifest.digest(),
            "f86bc2d9eab34b4a211a4aa3bea8ddd4928f5fcdb7c02d0ca52b37b6518d58a3"
        );
    }

    #[test]
    fn a_missing_input_is_a_clear_error() {
        let (dir, _cleanup) = service_dir();
        fs::remove_file(dir.join("Dockerfile")).unwrap();
        let err = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap_err();
        assert!(format!("{err:#}").contains("Dockerfile"), "{err:#}");
    }
}
