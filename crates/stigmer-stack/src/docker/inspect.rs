//! Typed state parsed from `docker inspect` JSON: decisions are made from these values,
//! never from error text alone.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use std::path::Path;

use crate::runner::spec::{CONFIG_LABEL, DATA_DIR_LABEL, MANAGED_LABEL};
use crate::stack::DataDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// One container as `docker inspect` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub status: RunStatus,
    pub health: Option<Health>,
    pub exit_code: i64,
    pub started_at: String,
    pub labels: BTreeMap<String, String>,
}

impl Container {
    /// Ours means created by this project: the run-time label is there.
    pub fn is_ours(&self) -> bool {
        self.labels.get(MANAGED_LABEL).map(String::as_str) == Some("true")
    }

    /// Whether the container belongs to the stack of `data_dir`. One started without the
    /// data-directory label (by the project's compose file) counts as this stack's.
    pub fn belongs_to(&self, data_dir: &DataDir) -> bool {
        match self.labels.get(DATA_DIR_LABEL) {
            Some(dir) => Path::new(dir) == data_dir.root(),
            None => true,
        }
    }

    /// Whether the container was created on `engine`; one created before engines were
    /// recorded carries no label and counts as this engine's (it is on it).
    pub fn created_on(&self, engine: &str) -> bool {
        self.labels
            .get(crate::runner::spec::ENGINE_LABEL)
            .is_none_or(|label| label == engine)
    }

    pub fn config_digest(&self) -> Option<&str> {
        self.labels.get(CONFIG_LABEL).map(String::as_str)
    }

    pub fn short_id(&self) -> &str {
        crate::docker::short_id(&self.id)
    }
}

/// What is known about the container with our name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Absent,
    /// Has the name but not our label: never stopped or removed by us.
    Foreign(Container),
    Ours(Container),
}

impl ContainerState {
    pub fn from_containers(mut containers: Vec<Container>) -> ContainerState {
        match containers.pop() {
            None => ContainerState::Absent,
            Some(container) if container.is_ours() => ContainerState::Ours(container),
            Some(container) => ContainerState::Foreign(container),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainer {
    id: String,
    name: String,
    image: String,
    state: RawState,
    config: RawConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawState {
    status: String,
    exit_code: i64,
    started_at: String,
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawHealth {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    labels: Option<BTreeMap<String, String>>,
}

/// Parses the JSON array `docker inspect --type container` prints (`[]` when absent).
pub fn parse_containers(json: &str) -> Result<Vec<Container>> {
    let raw: Vec<RawContainer> =
        serde_json::from_str(json).context("parsing `docker inspect` output")?;
    raw.into_iter()
        .map(|raw| {
            let status = match raw.state.status.as_str() {
                "created" => RunStatus::Created,
                "running" => RunStatus::Running,
                "paused" => RunStatus::Paused,
                "restarting" => RunStatus::Restarting,
                "removing" => RunStatus::Removing,
                "exited" => RunStatus::Exited,
                "dead" => RunStatus::Dead,
                other => anyhow::bail!("docker reported an unknown container status `{other}`"),
            };
            let health = match raw.state.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => Some(Health::Starting),
                Some("healthy") => Some(Health::Healthy),
                Some("unhealthy") => Some(Health::Unhealthy),
                _ => None,
            };
            Ok(Container {
                id: raw.id,
                name: raw.name.trim_start_matches('/').to_string(),
                image_id: raw.image,
                status,
                health,
                exit_code: raw.state.exit_code,
                started_at: raw.state.started_at,
                labels: raw.config.labels.unwrap_or_default(),
            })
        })
        .collect()
}

/// One image as `docker image inspect` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    pub id: String,
    pub tags: Vec<String>,
    pub created: String,
    pub size: u64,
    pub labels: BTreeMap<String, String>,
    /// The layer digests, base first: what two builds share shows which steps were reused.
    pub layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawImage {
    id: String,
    repo_tags: Option<Vec<String>>,
    created: String,
    size: u64,
    config: Option<RawConfig>,
    #[serde(rename = "RootFS")]
    root_fs: Option<RawRootFs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRootFs {
    layers: Option<Vec<String>>,
}

/// Parses the JSON array `docker image inspect` prints (`[]` when absent).
pub fn parse_images(json: &str) -> Result<Vec<Image>> {
    let raw: Vec<RawImage> =
        serde_json::from_str(json).context("parsing `docker image inspect` output")?;
    Ok(raw
        .into_iter()
        .map(|raw| Image {
            id: raw.id,
            tags: raw.repo_tags.unwrap_or_default(),
            created: raw.created,
            size: raw.size,
            labels: raw
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default(),
            layers: raw
                .root_fs
                .and_then(|root_fs| root_fs.layers)
                .unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = include_str!("../../tests/fixtures/inspect-running-healthy.json");
    const EXITED: &str = include_str!("../../tests/fixtures/inspect-exited.json");
    const CREATED: &str = include_str!("../../tests/fixtures/inspect-created.json");
    const IMAGE: &str = include_str!("../../tests/fixtures/image-inspect.json");

    #[test]
    fn running_healthy_container_of_ours() {
        let state = ContainerState::from_containers(parse_containers(RUNNING).unwrap());
        let ContainerState::Ours(container) = state else {
            panic!("expected ours: {state:?}")
        };
        assert_eq!(container.name, "fixture-probe");
        assert_eq!(container.status, RunStatus::Running);
        assert_eq!(container.health, Some(Health::Healthy));
        assert_eq!(container.config_digest(), Some("abc123"));
        assert!(container.image_id.starts_with("sha256:"));
    }

    #[test]
    fn exited_container_without_label_is_foreign() {
        let state = ContainerState::from_containers(parse_containers(EXITED).unwrap());
        let ContainerState::Foreign(container) = state else {
            panic!("expected foreign: {state:?}")
        };
        assert_eq!(container.status, RunStatus::Exited);
        assert_eq!(container.exit_code, 3);
        assert_eq!(container.health, None);
    }

    #[test]
    fn created_but_never_started() {
        let containers = parse_containers(CREATED).unwrap();
        assert_eq!(containers[0].status, RunStatus::Created);
        assert_eq!(containers[0].exit_code, 127);
    }

    #[test]
    fn absent_container_is_an_empty_array() {
        assert_eq!(
            ContainerState::from_containers(parse_containers("[]\n").unwrap()),
            ContainerState::Absent
        );
        assert!(parse_containers("").is_err());
    }

    #[test]
    fn image_fields() {
        let images = parse_images(IMAGE).unwrap();
        assert_eq!(images.len(), 1);
        assert!(images[0].id.starts_with("sha256:"));
        assert_eq!(images[0].tags, vec!["probe:bb".to_string()]);
        assert!(images[0].size > 0);
        assert_eq!(images[0].layers.len(), 1);
        assert!(images[0].layers[0].starts_with("sha256:"));
    }
}
