//! `stigmer.toml` at the root of the checkout: the settings a team shares through version
//! control (so far the runner image registry), read once with `toml`. A missing file means
//! every default; an unknown key is an error, so a typo never silently disables a setting.

use std::path::Path;

use anyhow::{Context, Result};
use stigmer_stack::docker::registry::Registry;

pub const FILE_NAME: &str = "stigmer.toml";

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub runner: RunnerSection,
    #[serde(default)]
    pub temporal: TemporalSection,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalSection {
    /// `host:port` of an existing Temporal the team's stacks use instead of a dev server
    /// (`STIGMER_TEMPORAL_ADDRESS` overrides it).
    pub address: Option<String>,
    /// Its HTTP API, when not on port 7243 of the same host (`STIGMER_TEMPORAL_HTTP`).
    pub http: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSection {
    /// `HOST[:PORT]/PATH` of the registry runner images are published to and pulled from.
    pub registry: Option<String>,
    /// The repository URL for the images' `org.opencontainers.image.source` label.
    pub source: Option<String>,
}

impl FileConfig {
    pub fn read(root: &Path) -> Result<FileConfig> {
        let path = root.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => FileConfig::parse(&text)
                .with_context(|| format!("reading {}: fix or remove the setting", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }

    /// The value this file gives a stack setting that the environment may also set.
    pub fn stack_setting(&self, variable: &str) -> Option<String> {
        match variable {
            "STIGMER_TEMPORAL_ADDRESS" => self.temporal.address.clone(),
            "STIGMER_TEMPORAL_HTTP" => self.temporal.http.clone(),
            _ => None,
        }
    }
}

/// The registry in force: the flag, else `STIGMER_REGISTRY`, else the file; `none` at any
/// level turns a registry set at a lower one off.
pub fn resolve_registry(
    flag: Option<&str>,
    env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Registry>> {
    let (text, origin) = match (flag, env, file) {
        (Some(text), _, _) => (text, "--registry"),
        (None, Some(text), _) => (text, stigmer_stack::docker::registry::REGISTRY_ENV),
        (None, None, Some(text)) => (text, "runner.registry in stigmer.toml"),
        (None, None, None) => return Ok(None),
    };
    Registry::parse(text).with_context(|| format!("reading {origin}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_file_parses() {
        let config = FileConfig::read(&crate::project_root().unwrap()).unwrap();
        assert!(config.runner.source.is_some());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(FileConfig::parse("[runner]\nregistri = \"x\"\n").is_err());
        let config = FileConfig::parse("[runner]\nregistry = \"ghcr.io/t\"\n").unwrap();
        assert_eq!(config.runner.registry.as_deref(), Some("ghcr.io/t"));
        assert!(FileConfig::parse("").unwrap().runner.registry.is_none());
    }

    #[test]
    fn flag_beats_environment_beats_file() {
        let pick = |flag, env, file| {
            resolve_registry(flag, env, file)
                .unwrap()
                .map(|registry| registry.as_str().to_string())
        };
        assert_eq!(pick(None, None, None), None);
        assert_eq!(pick(None, None, Some("f.io")).as_deref(), Some("f.io"));
        assert_eq!(
            pick(None, Some("e.io"), Some("f.io")).as_deref(),
            Some("e.io")
        );
        assert_eq!(
            pick(Some("g.io"), Some("e.io"), Some("f.io")).as_deref(),
            Some("g.io")
        );
        assert_eq!(pick(Some("none"), Some("e.io"), None), None);
        let err = resolve_registry(None, None, Some("nohost")).unwrap_err();
        assert!(format!("{err:#}").contains("stigmer.toml"), "{err:#}");
    }
}
