//! Where each component's logs are: the log files of the host processes (Temporal,
//! stigmer-server) and `docker logs` of the runner container; and printing a log file's tail,
//! then (when following) what is appended to it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::docker::engine;
use crate::docker::Docker;
use crate::exec::tail_lines;
use crate::runner::lifecycle;
use crate::stack::StackConfig;
use crate::{server, temporal};

/// A component of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    Temporal,
    StigmerServer,
    AgentRunner,
}

/// Where a component's logs are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    File(PathBuf),
    /// `docker logs` of this container ID.
    Container(String),
}

/// Finds the logs of `component`; the error says how to get some.
pub fn log_source(
    config: &StackConfig,
    docker: &Docker,
    component: Component,
) -> Result<LogSource> {
    let data_dir = &config.data_dir;
    let file = |name: &str| {
        let path = data_dir.log_file(name);
        if path.exists() {
            Ok(LogSource::File(path))
        } else {
            bail!(
                "no {name} log yet at {}: it has not been started with this data directory \
                 (`stigmer server start`)",
                path.display()
            )
        }
    };
    match component {
        Component::Temporal if !config.temporal.is_managed() => bail!(
            "Temporal is not run by this stack (STIGMER_TEMPORAL_ADDRESS is {}): read its logs \
             where it runs",
            config.temporal.frontend_address()
        ),
        Component::Temporal => file(temporal::COMPONENT),
        Component::StigmerServer => file(server::COMPONENT),
        Component::AgentRunner => {
            engine::check_engine(docker)?;
            match lifecycle::find_ours(docker, data_dir, &config.runner.container_name)? {
                Some(container) => Ok(LogSource::Container(container.id)),
                None => bail!(
                    "there is no agent-runner container ({}): start it with `stigmer server start`",
                    config.runner.container_name
                ),
            }
        }
    }
}

/// Prints the last `tail` lines of a file, then (with `follow`) what is appended to it until
/// interrupted.
pub fn print_file(path: &Path, follow: bool, tail: u32, out: &mut impl Write) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let shown = tail_lines(&String::from_utf8_lossy(&bytes), tail as usize);
    if !shown.is_empty() {
        writeln!(out, "{shown}").context("writing the log")?;
    }
    if !follow {
        return Ok(());
    }
    let mut position = bytes.len() as u64;
    let mut buffer = Vec::new();
    loop {
        crate::ui::interrupt::check()?;
        std::thread::sleep(Duration::from_millis(250));
        let length = fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        if length < position {
            // Truncated or replaced: start again from its beginning.
            file = File::open(path).with_context(|| format!("reopening {}", path.display()))?;
            position = 0;
        }
        file.seek(SeekFrom::Start(position))
            .context("seeking in the log")?;
        buffer.clear();
        position += file.read_to_end(&mut buffer).context("reading the log")? as u64;
        out.write_all(&buffer)
            .and_then(|()| out.flush())
            .context("writing the log")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_tail_is_its_last_lines() {
        let path = std::env::temp_dir().join(format!("logs-test-{}.log", std::process::id()));
        fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut out = Vec::new();
        print_file(&path, false, 2, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "two\nthree\n");
        fs::remove_file(path).unwrap();
    }
}
