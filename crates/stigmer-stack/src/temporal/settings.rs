//! Where the stack's Temporal is, read once from the environment: the managed dev server
//! (its frontend port, whether it serves the Web UI, the user's own binary) or an existing
//! Temporal by address; and the addresses the runner and the server reach it on.
//!
//! Apart from driving the dev server because it is plain data and its checks: nothing here
//! starts, probes or downloads anything.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::{DEFAULT_FRONTEND_PORT, DEFAULT_NAMESPACE};

/// Where the stack's Temporal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporalMode {
    /// `temporal server start-dev`, started and stopped with the stack.
    Managed {
        frontend_port: u16,
        ui: bool,
        /// `STIGMER_TEMPORAL_BIN`: the user's own binary instead of the pinned download.
        binary: Option<PathBuf>,
    },
    /// `STIGMER_TEMPORAL_ADDRESS`: an existing Temporal; the stack starts nothing.
    External {
        /// The frontend's gRPC `host:port`, for the runner.
        address: String,
        /// The frontend's HTTP API, for the server (`STIGMER_TEMPORAL_HTTP`, else the same host
        /// on port 7243).
        http_base: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalSettings {
    pub mode: TemporalMode,
    pub namespace: String,
}

impl Default for TemporalSettings {
    fn default() -> TemporalSettings {
        TemporalSettings {
            mode: TemporalMode::Managed {
                frontend_port: DEFAULT_FRONTEND_PORT,
                ui: false,
                binary: None,
            },
            namespace: DEFAULT_NAMESPACE.to_string(),
        }
    }
}

/// The managed dev server's ports, all fixed (never random), all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevServerPorts {
    pub frontend: u16,
    pub http: u16,
    pub metrics: u16,
    pub ui: u16,
}

impl DevServerPorts {
    pub fn from_frontend(frontend: u16) -> Result<DevServerPorts> {
        let offset = |delta: u16| {
            frontend.checked_add(delta).with_context(|| {
                format!(
                    "STIGMER_TEMPORAL_PORT {frontend} leaves no room for the HTTP, metrics and UI \
                     ports above it (+10, +11, +1000): choose a port below {}",
                    u16::MAX - 1000
                )
            })
        };
        Ok(DevServerPorts {
            frontend,
            http: offset(10)?,
            metrics: offset(11)?,
            ui: offset(1000)?,
        })
    }
}

impl TemporalSettings {
    /// Reads `STIGMER_TEMPORAL_ADDRESS`, `STIGMER_TEMPORAL_HTTP`, `STIGMER_TEMPORAL_PORT`,
    /// `STIGMER_TEMPORAL_UI`, `STIGMER_TEMPORAL_BIN` and `STIGMER_TEMPORAL_NAMESPACE` through
    /// `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<TemporalSettings> {
        let namespace =
            lookup("STIGMER_TEMPORAL_NAMESPACE").unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if namespace.is_empty()
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!("STIGMER_TEMPORAL_NAMESPACE must be a Temporal namespace name (letters, digits, `._-`), got `{namespace}`");
        }
        if let Some(address) = lookup("STIGMER_TEMPORAL_ADDRESS") {
            let (host, port) = address.rsplit_once(':').with_context(|| {
                format!("STIGMER_TEMPORAL_ADDRESS must be host:port (no scheme), got `{address}`")
            })?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0)
            {
                bail!("STIGMER_TEMPORAL_ADDRESS must be host:port (no scheme), got `{address}`");
            }
            let http_base = match lookup("STIGMER_TEMPORAL_HTTP") {
                Some(url) if url.starts_with("http://") => url.trim_end_matches('/').to_string(),
                Some(url) => bail!(
                    "STIGMER_TEMPORAL_HTTP must be the http:// URL of Temporal's HTTP API, got `{url}`"
                ),
                None => format!("http://{host}:7243"),
            };
            return Ok(TemporalSettings {
                mode: TemporalMode::External { address, http_base },
                namespace,
            });
        }
        let frontend_port = match lookup("STIGMER_TEMPORAL_PORT") {
            None => DEFAULT_FRONTEND_PORT,
            Some(text) => match text.trim().parse::<u16>() {
                Ok(port) if port >= 1 => port,
                _ => bail!(
                    "STIGMER_TEMPORAL_PORT must be a port number from 1 to 65535, got `{text}`"
                ),
            },
        };
        DevServerPorts::from_frontend(frontend_port)?;
        let ui = match lookup("STIGMER_TEMPORAL_UI").as_deref() {
            None | Some("" | "0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => bail!("STIGMER_TEMPORAL_UI must be 1 or 0, got `{other}`"),
        };
        Ok(TemporalSettings {
            mode: TemporalMode::Managed {
                frontend_port,
                ui,
                binary: lookup("STIGMER_TEMPORAL_BIN").map(PathBuf::from),
            },
            namespace,
        })
    }

    pub fn is_managed(&self) -> bool {
        matches!(self.mode, TemporalMode::Managed { .. })
    }

    /// The gRPC frontend the runner connects to, as the host sees it.
    pub fn frontend_address(&self) -> String {
        match &self.mode {
            TemporalMode::Managed { frontend_port, .. } => format!("localhost:{frontend_port}"),
            TemporalMode::External { address, .. } => address.clone(),
        }
    }

    /// Temporal's HTTP API, where the server starts and watches workflows.
    pub fn http_base(&self) -> String {
        match &self.mode {
            TemporalMode::Managed { frontend_port, .. } => {
                let http = frontend_port.saturating_add(10);
                format!("http://127.0.0.1:{http}")
            }
            TemporalMode::External { http_base, .. } => http_base.clone(),
        }
    }

    /// The Web UI's URL when the managed dev server serves one.
    pub fn ui_url(&self) -> Option<String> {
        match &self.mode {
            TemporalMode::Managed {
                frontend_port,
                ui: true,
                ..
            } => Some(format!(
                "http://127.0.0.1:{}",
                frontend_port.saturating_add(1000)
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Settings from these variables only, as the environment would give them.
    pub(in crate::temporal) fn settings(pairs: &[(&str, &str)]) -> Result<TemporalSettings> {
        TemporalSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn managed_by_default_with_fixed_ports() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults, TemporalSettings::default());
        assert_eq!(defaults.frontend_address(), "localhost:7233");
        assert_eq!(defaults.http_base(), "http://127.0.0.1:7243");
        assert_eq!(defaults.ui_url(), None);
        let moved = settings(&[
            ("STIGMER_TEMPORAL_PORT", "17233"),
            ("STIGMER_TEMPORAL_UI", "1"),
        ])
        .unwrap();
        assert_eq!(moved.http_base(), "http://127.0.0.1:17243");
        assert_eq!(moved.ui_url().as_deref(), Some("http://127.0.0.1:18233"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for pairs in [
            &[("STIGMER_TEMPORAL_PORT", "0")][..],
            &[("STIGMER_TEMPORAL_PORT", "65000")],
            &[("STIGMER_TEMPORAL_ADDRESS", "http://t:7233")],
            &[("STIGMER_TEMPORAL_ADDRESS", "t")],
            &[
                ("STIGMER_TEMPORAL_ADDRESS", "t:7233"),
                ("STIGMER_TEMPORAL_HTTP", "t:7243"),
            ],
            &[("STIGMER_TEMPORAL_UI", "maybe")],
            &[("STIGMER_TEMPORAL_NAMESPACE", "a b")],
        ] {
            let err = settings(pairs).unwrap_err().to_string();
            assert!(err.contains(pairs.last().unwrap().0), "{err}");
        }
    }
}
