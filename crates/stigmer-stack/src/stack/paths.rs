//! Where Stigmer keeps its local state: `~/.stigmer`, or `$STIGMER_HOME` when set.
//!
//! The environment is read by the caller and handed in, so tests can point the data
//! directory anywhere without touching their own process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The data directory (`<stigmer home>/data`) and the files the tools keep in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Resolves the data directory from the values of `STIGMER_HOME` and `HOME`.
    pub fn from_env_values(
        stigmer_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Result<DataDir> {
        let stigmer_home = match (stigmer_home.filter(|v| !v.is_empty()), home.filter(|v| !v.is_empty())) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => PathBuf::from(home).join(".stigmer"),
            (None, None) => bail!("neither STIGMER_HOME nor HOME is set: set STIGMER_HOME to the directory Stigmer may keep its data in"),
        };
        if !stigmer_home.is_absolute() {
            bail!(
                "STIGMER_HOME must be an absolute path, got `{}`: docker mounts need absolute host paths",
                stigmer_home.display()
            );
        }
        Ok(DataDir {
            root: stigmer_home.join("data"),
        })
    }

    /// Reads `STIGMER_HOME` and `HOME` from this process's environment.
    pub fn from_process_env() -> Result<DataDir> {
        DataDir::from_env_values(std::env::var_os("STIGMER_HOME"), std::env::var_os("HOME"))
    }

    pub fn at(root: PathBuf) -> DataDir {
        DataDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Mounted at `/workspace` in the agent-runner container.
    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }

    pub fn container_id_file(&self) -> PathBuf {
        self.root.join("agent-runner-container.id")
    }

    /// The ID of the container whose smoke checks passed last, kept beside its ID file so
    /// `cargo xtask dev` checks a container once.
    pub fn smoke_checked_file(&self) -> PathBuf {
        self.root.join("agent-runner-checked.id")
    }

    pub fn server_pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log of a managed process: `logs/<component>.log`.
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }

    pub fn temporal_pid_file(&self) -> PathBuf {
        self.root.join("temporal.pid")
    }

    /// The managed Temporal dev server's state, one SQLite file.
    pub fn temporal_database(&self) -> PathBuf {
        self.root.join("temporal.db")
    }

    /// The advisory lock that serialises commands on this data directory (see
    /// [`crate::stack::StackLock`]).
    pub fn stack_lock_file(&self) -> PathBuf {
        self.root.join("stack.lock")
    }

    /// `<stigmer home>/.env`, beside the data directory: settings and API keys the user keeps
    /// out of the shell's environment. `None` for a data directory at the file system's root.
    pub fn dotenv_file(&self) -> Option<PathBuf> {
        Some(self.root.parent()?.join(".env"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stigmer_home_wins_over_home() {
        let dir = DataDir::from_env_values(Some("/tmp/sh".into()), Some("/home/u".into())).unwrap();
        assert_eq!(dir.root(), Path::new("/tmp/sh/data"));
        assert_eq!(dir.workspace(), Path::new("/tmp/sh/data/workspace"));
        assert_eq!(
            dir.container_id_file(),
            Path::new("/tmp/sh/data/agent-runner-container.id")
        );
        assert_eq!(
            dir.smoke_checked_file(),
            Path::new("/tmp/sh/data/agent-runner-checked.id")
        );
        assert_eq!(dir.stack_lock_file(), Path::new("/tmp/sh/data/stack.lock"));
        assert_eq!(
            dir.dotenv_file().as_deref(),
            Some(Path::new("/tmp/sh/.env"))
        );
    }

    #[test]
    fn home_default_and_empty_values_ignored() {
        let dir = DataDir::from_env_values(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(dir.root(), Path::new("/home/u/.stigmer/data"));
    }

    #[test]
    fn relative_or_missing_home_is_refused() {
        assert!(DataDir::from_env_values(Some("rel".into()), None).is_err());
        assert!(DataDir::from_env_values(None, None).is_err());
    }
}
