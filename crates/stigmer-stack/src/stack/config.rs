//! Everything the local stack's tools (the CLI and `cargo xtask`) take from the environment,
//! read once: the data directory, the runner's settings, the server's port, where Temporal is
//! and where the stack's own tools (the Temporal CLI) are kept.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::runner::spec::{RunnerSettings, PASSTHROUGH_NAMES, SECRET_NAMES};
use crate::server::{ServerConfig, DEFAULT_SERVER_PORT};
use crate::stack::DataDir;
use crate::temporal::TemporalSettings;
use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub data_dir: DataDir,
    pub runner: RunnerSettings,
    pub server_port: u16,
    pub temporal: TemporalSettings,
    /// `STIGMER_TOOLS_DIR`, else `$XDG_CACHE_HOME/stigmer/tools`, else
    /// `~/.cache/stigmer/tools`: a cache shared by every data directory, so tests that move
    /// `STIGMER_HOME` do not download the Temporal CLI again.
    pub tools_dir: PathBuf,
}

impl StackConfig {
    /// The process environment, then `<stigmer home>/.env` for the runner's secrets and
    /// Ollama settings (the environment wins).
    pub fn from_process_env() -> Result<StackConfig> {
        StackConfig::from_process_env_or(|_| None)
    }

    /// Like [`StackConfig::from_process_env`], with `fallback` supplying what a project file
    /// sets for variables the environment leaves unset (`cargo xtask` reads `stigmer.toml`).
    pub fn from_process_env_or(fallback: impl Fn(&str) -> Option<String>) -> Result<StackConfig> {
        let data_dir = DataDir::from_process_env()?;
        let dotenv = read_dotenv(&data_dir)?;
        StackConfig::from_lookup(
            |name| {
                std::env::var(name)
                    .ok()
                    .filter(|value| !value.is_empty())
                    .or_else(|| {
                        let from_file =
                            SECRET_NAMES.contains(&name) || PASSTHROUGH_NAMES.contains(&name);
                        from_file.then(|| dotenv.get(name).cloned()).flatten()
                    })
                    .or_else(|| fallback(name))
            },
            data_dir,
        )
    }

    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        data_dir: DataDir,
    ) -> Result<StackConfig> {
        let server_port = match lookup("STIGMER_SERVER_PORT") {
            None => DEFAULT_SERVER_PORT,
            Some(text) => match text.trim().parse::<u16>() {
                Ok(port) if port >= 1 => port,
                _ => {
                    bail!("STIGMER_SERVER_PORT must be a port number from 1 to 65535, got `{text}`")
                }
            },
        };
        let temporal = TemporalSettings::from_lookup(&lookup)?;
        let mut runner = RunnerSettings::from_lookup(&lookup)?;
        // The runner reaches the server and Temporal over host networking, so it follows their
        // ports unless an endpoint was set explicitly.
        if lookup("STIGMER_BACKEND_ENDPOINT").is_none() {
            runner.backend_endpoint = format!("localhost:{server_port}");
        }
        runner.temporal_address = temporal.frontend_address();
        runner.temporal_namespace = temporal.namespace.clone();
        let tools_dir = match (
            lookup("STIGMER_TOOLS_DIR"),
            lookup("XDG_CACHE_HOME"),
            lookup("HOME"),
        ) {
            (Some(dir), _, _) => PathBuf::from(dir),
            (None, Some(cache), _) => PathBuf::from(cache).join("stigmer/tools"),
            (None, None, Some(home)) => PathBuf::from(home).join(".cache/stigmer/tools"),
            (None, None, None) => bail!(
                "neither STIGMER_TOOLS_DIR nor HOME is set: set STIGMER_TOOLS_DIR to a directory \
                 where Stigmer may keep the Temporal CLI"
            ),
        };
        if !tools_dir.is_absolute() {
            bail!(
                "STIGMER_TOOLS_DIR must be an absolute path, got `{}`",
                tools_dir.display()
            );
        }
        Ok(StackConfig {
            data_dir,
            runner,
            server_port,
            temporal,
            tools_dir,
        })
    }

    /// How to run the server as `program server run` (the `stigmer` program).
    pub fn server_config(&self, program: PathBuf) -> ServerConfig {
        ServerConfig {
            program,
            port: self.server_port,
            temporal_http: self.temporal.http_base(),
            temporal_namespace: self.temporal.namespace.clone(),
        }
    }
}

/// `KEY=VALUE` lines of `<stigmer home>/.env` (comments, blank lines, `export ` and quotes
/// allowed); a missing file is an empty one.
fn read_dotenv(data_dir: &DataDir) -> Result<BTreeMap<String, String>> {
    let Some(path) = data_dir.dotenv_file() else {
        return Ok(BTreeMap::new());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_dotenv(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.trim().to_string(), unquoted.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &'static [(&'static str, &'static str)]) -> Result<StackConfig> {
        StackConfig::from_lookup(
            |name| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            },
            DataDir::at(PathBuf::from("/d")),
        )
    }

    #[test]
    fn dotenv_lines() {
        let parsed = parse_dotenv(
            "# keys\nexport OPENAI_API_KEY=\"sk-1\"\n\nOLLAMA_MODEL='llama3'\nbroken line\n",
        );
        assert_eq!(
            parsed.get("OPENAI_API_KEY").map(String::as_str),
            Some("sk-1")
        );
        assert_eq!(
            parsed.get("OLLAMA_MODEL").map(String::as_str),
            Some("llama3")
        );
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn the_runner_follows_temporal_and_tools_are_shared() {
        let defaults = config(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(defaults.runner.temporal_address, "localhost:7233");
        assert_eq!(
            defaults.tools_dir,
            PathBuf::from("/home/u/.cache/stigmer/tools")
        );
        let moved = config(&[
            ("STIGMER_TEMPORAL_PORT", "17233"),
            ("STIGMER_TOOLS_DIR", "/t"),
            ("HOME", "/home/u"),
        ])
        .unwrap();
        assert_eq!(moved.runner.temporal_address, "localhost:17233");
        assert_eq!(moved.tools_dir, PathBuf::from("/t"));
        let external = config(&[
            ("STIGMER_TEMPORAL_ADDRESS", "t.example:7233"),
            ("HOME", "/h"),
        ])
        .unwrap();
        assert_eq!(external.runner.temporal_address, "t.example:7233");
    }

    #[test]
    fn backend_endpoint_follows_the_server_port() {
        let defaults = config(&[("HOME", "/h")]).unwrap();
        assert_eq!(defaults.server_port, 7234);
        assert_eq!(defaults.runner.backend_endpoint, "localhost:7234");
        let moved = config(&[("STIGMER_SERVER_PORT", "7337"), ("HOME", "/h")]).unwrap();
        assert_eq!(moved.runner.backend_endpoint, "localhost:7337");
        let explicit = config(&[
            ("STIGMER_SERVER_PORT", "7337"),
            ("STIGMER_BACKEND_ENDPOINT", "example:9"),
            ("HOME", "/h"),
        ])
        .unwrap();
        assert_eq!(explicit.runner.backend_endpoint, "example:9");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for pairs in [
            &[("STIGMER_SERVER_PORT", "0")][..],
            &[("STIGMER_SERVER_PORT", "x")],
            &[("STIGMER_TOOLS_DIR", "relative")],
        ] {
            let err = config(pairs).err().unwrap().to_string();
            assert!(err.contains(pairs[0].0), "{err}");
        }
    }
}
