//! The image's inputs and the rebuild decision.
//!
//! Every input that changes what the agent-runner image holds is a row of [`REBUILD_INPUTS`]
//! (files such as `poetry.lock`, the source tree, each path dependency, the base image's ID,
//! the build arguments) and gets a digest. The image carries them as labels; comparing them
//! with the working tree decides whether to rebuild and says why. Only declared inputs are
//! read: no walk ever enters a virtual environment, a cache or `target/`.
//!
//! A file each: `table.rs` declares the inputs, and `declared.rs` checks the Dockerfile and
//! `.dockerignore` against it ([`check_declared`]); `tree.rs` hashes a directory as Docker
//! copies it, `manifest.rs` gathers every input's digest and turns it into the image's labels
//! and back, and `decision.rs` compares the working tree's manifest with an image's labels.
//! Everything is re-exported here, so callers name `runner::inputs::...` only.

mod decision;
mod declared;
#[cfg(test)]
mod fixture;
mod manifest;
mod table;
mod tree;

pub use decision::{InputChange, RebuildDecision};
pub use declared::check_declared;
pub use manifest::{InputManifest, INPUTS_LABEL, MANIFEST_LABEL, POETRY_LOCK_LABEL};
pub use table::{
    InputKind, RebuildInput, BASE_IMAGE_INPUT, BUILD_ARGS_INPUT, PATH_DEPENDENCY_INPUT,
    POETRY_LOCK_INPUT, REBUILD_INPUTS, SOURCE_INPUT,
};
pub use tree::{
    hash_source_tree, hash_tree, hex, is_path_dependency_noise, path_dependency_files, sha256_hex,
    EntryKind, SourceFile, SourceTree, NOT_SOURCE,
};
