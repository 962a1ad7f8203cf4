//! Everything the local stack's tools (the CLI and `cargo xtask`) take from the environment,
//! read once: the data directory, the runner's settings, the server's port and where its
//! binary is.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::paths::DataDir;
use crate::server_process::{self, ServerConfig, DEFAULT_SERVER_PORT};
use crate::spec::{RunnerSettings, PASSTHROUGH_NAMES, SECRET_NAMES};
use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub data_dir: DataDir,
    pub runner: RunnerSettings,
    pub server_port: u16,
    /// `STIGMER_SERVER_LEASE_SECONDS`: how long a runner holds a task without a heartbeat
    /// (the server's default when unset; tests shorten it).
    pub lease_seconds: Option<u64>,
    server_bin: Option<OsString>,
    current_exe: Option<PathBuf>,
    path_var: Option<OsString>,
}

impl StackConfig {
    /// The process environment, then `<stigmer home>/.env` for the runner's secrets and
    /// Ollama settings (the environment wins).
    pub fn from_process_env() -> Result<StackConfig> {
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
            },
            data_dir,
            std::env::var_os("STIGMER_SERVER_BIN"),
            std::env::current_exe().ok(),
            std::env::var_os("PATH"),
        )
    }

    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        data_dir: DataDir,
        server_bin: Option<OsString>,
        current_exe: Option<PathBuf>,
        path_var: Option<OsString>,
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
        let lease_seconds = lookup("STIGMER_SERVER_LEASE_SECONDS")
            .map(|text| {
                text.trim().parse::<u64>().ok().filter(|s| *s >= 1).with_context(|| {
                    format!("STIGMER_SERVER_LEASE_SECONDS must be a whole number of seconds, got `{text}`")
                })
            })
            .transpose()?;
        let mut runner = RunnerSettings::from_lookup(&lookup)?;
        // The runner reaches the server over host networking, so it follows the server's port
        // unless an endpoint was set explicitly.
        if lookup("STIGMER_BACKEND_ENDPOINT").is_none() {
            runner.backend_endpoint = format!("localhost:{server_port}");
        }
        Ok(StackConfig {
            data_dir,
            runner,
            server_port,
            lease_seconds,
            server_bin,
            current_exe,
            path_var,
        })
    }

    pub fn server_config(&self) -> Result<ServerConfig> {
        Ok(ServerConfig {
            binary: server_process::find_binary(
                self.server_bin.clone(),
                self.current_exe.clone(),
                self.path_var.clone(),
            )?,
            port: self.server_port,
            lease_seconds: self.lease_seconds,
        })
    }
}

/// `KEY=VALUE` lines of `<stigmer home>/.env` (comments, blank lines, `export ` and quotes
/// allowed); a missing file is an empty one.
fn read_dotenv(data_dir: &DataDir) -> Result<BTreeMap<String, String>> {
    let Some(home) = data_dir.root().parent() else {
        return Ok(BTreeMap::new());
    };
    let path = home.join(".env");
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
            None,
            None,
            None,
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
    fn backend_endpoint_follows_the_server_port() {
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.server_port, 7234);
        assert_eq!(defaults.runner.backend_endpoint, "localhost:7234");
        let moved = config(&[("STIGMER_SERVER_PORT", "7337")]).unwrap();
        assert_eq!(moved.runner.backend_endpoint, "localhost:7337");
        let explicit = config(&[
            ("STIGMER_SERVER_PORT", "7337"),
            ("STIGMER_BACKEND_ENDPOINT", "example:9"),
        ])
        .unwrap();
        assert_eq!(explicit.runner.backend_endpoint, "example:9");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for pairs in [
            &[("STIGMER_SERVER_PORT", "0")][..],
            &[("STIGMER_SERVER_PORT", "x")],
            &[("STIGMER_SERVER_LEASE_SECONDS", "0")],
        ] {
            let err = config(pairs).err().unwrap().to_string();
            assert!(err.contains(pairs[0].0), "{err}");
        }
    }
}
