//! The one table of the agent-runner image's rebuild inputs: the entries the manifest hashes
//! and a decision names, and what the Dockerfile copies of each from the build context.
//!
//! To add a rebuild input: add a row here, the `COPY` to the Dockerfile and the allow line to
//! `.dockerignore`; the tidy test checks they agree (see [`super::check_declared`]). The
//! manifest reads its entries from this table, so a row is hashed and named as soon as it is
//! added.

/// One input of the agent-runner image's rebuild decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildInput {
    /// The manifest entry a decision names: `poetry.lock`, `src/`, `base image`, ... For a
    /// [`InputKind::File`] or an [`InputKind::SourceTree`] it is also its path in the service
    /// directory (a directory's ends in `/`).
    pub name: &'static str,
    pub kind: InputKind,
    /// What the Dockerfile `COPY`s of it from the build context (a directory ends in `/`),
    /// which `.dockerignore` must let in; `None` when nothing is copied for it.
    pub copied_as: Option<&'static str>,
}

/// How an input is read and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A file of the service directory, hashed by its bytes.
    File,
    /// A directory of the service directory, hashed entry by entry as Docker copies it (see
    /// [`super::hash_source_tree`]).
    SourceTree,
    /// Each path dependency `poetry.lock` records, hashed as Docker copies it, one entry
    /// `path dependency <name>` each (see [`super::InputManifest::add_path_dependency`]).
    PathDependencies,
    /// The base image's ID.
    BaseImage,
    /// The build arguments that change what the image holds, as `KEY=value` words.
    BuildArgs,
}

/// `poetry.lock`'s entry, whose digest is also a label of its own
/// ([`super::POETRY_LOCK_LABEL`]).
pub const POETRY_LOCK_INPUT: &str = "poetry.lock";

/// Every input of the rebuild decision. The order is the order the manifest reads them in.
pub const REBUILD_INPUTS: [RebuildInput; 8] = [
    RebuildInput {
        name: "Dockerfile",
        kind: InputKind::File,
        copied_as: None,
    },
    RebuildInput {
        name: ".dockerignore",
        kind: InputKind::File,
        copied_as: None,
    },
    RebuildInput {
        name: "pyproject.toml",
        kind: InputKind::File,
        copied_as: None,
    },
    // The index wheels and their requirements are laid out from the lock by `cargo xtask`.
    RebuildInput {
        name: POETRY_LOCK_INPUT,
        kind: InputKind::File,
        copied_as: Some("wheels/index/"),
    },
    // The whole of src/ is hashed; the image holds its package.
    RebuildInput {
        name: "src/",
        kind: InputKind::SourceTree,
        copied_as: Some("src/agent_runner/"),
    },
    // Path dependencies are built into wheels/local/ by `cargo xtask`, beside source archives.
    RebuildInput {
        name: "path dependency",
        kind: InputKind::PathDependencies,
        copied_as: Some("wheels/local/"),
    },
    RebuildInput {
        name: "base image",
        kind: InputKind::BaseImage,
        copied_as: None,
    },
    RebuildInput {
        name: "build args",
        kind: InputKind::BuildArgs,
        copied_as: None,
    },
];

/// The manifest's entry for the source tree (`src/`).
pub const SOURCE_INPUT: &str = name_of(InputKind::SourceTree);
/// The manifest's entry for the base image's ID.
pub const BASE_IMAGE_INPUT: &str = name_of(InputKind::BaseImage);
/// The prefix of a path dependency's input: `path dependency graphton`.
pub const PATH_DEPENDENCY_INPUT: &str = name_of(InputKind::PathDependencies);
/// The manifest's entry for the build arguments.
pub const BUILD_ARGS_INPUT: &str = name_of(InputKind::BuildArgs);

/// The name of the row of `kind`, for the kinds that have one row (all but
/// [`InputKind::File`]; [`super::check_declared`] checks there is exactly one). Evaluated when
/// compiling the constants above, so a kind without a row does not compile.
const fn name_of(kind: InputKind) -> &'static str {
    let mut index = 0;
    while index < REBUILD_INPUTS.len() {
        // A fieldless enum compares by its discriminant in a const fn (`==` is not const).
        if REBUILD_INPUTS[index].kind as u8 == kind as u8 {
            return REBUILD_INPUTS[index].name;
        }
        index += 1;
    }
    panic!("REBUILD_INPUTS has no row of this kind")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derived_from_the_table_are_the_manifest_entries() {
        assert_eq!(SOURCE_INPUT, "src/");
        assert_eq!(BASE_IMAGE_INPUT, "base image");
        assert_eq!(PATH_DEPENDENCY_INPUT, "path dependency");
        assert_eq!(BUILD_ARGS_INPUT, "build args");
    }
}
