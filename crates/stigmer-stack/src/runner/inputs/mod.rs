//! The image's inputs and the rebuild decision.
//!
//! Every input that changes what the agent-runner image holds gets a digest: the
//! Dockerfile, `.dockerignore`, `pyproject.toml`, `poetry.lock`, the source tree under
//! `src/`, each path dependency's source tree (`path dependency graphton`), the base
//! image's ID and the build arguments. The image carries them as labels;
//! comparing them with the working tree decides whether to rebuild and says why. Only
//! declared inputs are read: no walk ever enters a virtual environment, a cache or `target/`.
//!
//! Three steps, a file each: `tree.rs` hashes a directory as Docker copies it, `manifest.rs`
//! gathers every input's digest and turns it into the image's labels and back, and
//! `decision.rs` compares the working tree's manifest with an image's labels. Everything is
//! re-exported here, so callers name `runner::inputs::...` only.

mod decision;
#[cfg(test)]
mod fixture;
mod manifest;
mod tree;

pub use decision::{InputChange, RebuildDecision};
pub use manifest::{
    InputManifest, BASE_IMAGE_INPUT, BUILD_ARGS_INPUT, INPUTS_LABEL, INPUT_FILES, MANIFEST_LABEL,
    PATH_DEPENDENCY_INPUT, POETRY_LOCK_LABEL, SOURCE_DIR, SOURCE_INPUT,
};
pub use tree::{
    hash_source_tree, hash_tree, hex, is_path_dependency_noise, path_dependency_files, sha256_hex,
    EntryKind, SourceFile, SourceTree, NOT_SOURCE,
};
