//! Finding the agent-runner's container and image: one exact `docker inspect` each, and the
//! judgement whether a container with our name is this stack's, another stack's, another
//! engine's or not ours at all; with the ID file beside `daemon.pid` that caches which
//! container was started.
//!
//! Apart from start and stop because it only reads: nothing here changes a container.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::docker::inspect::{parse_containers, parse_images, Container, ContainerState, Image};
use crate::docker::{args, Docker};
use crate::runner::spec::{DATA_DIR_LABEL, ENGINE_LABEL};
use crate::stack::DataDir;

/// Looks up one container by exact name or ID.
pub fn inspect_container(docker: &Docker, name_or_id: &str) -> Result<ContainerState> {
    let captured = docker.capture(&args(["inspect", "--type", "container", name_or_id]))?;
    // A missing container prints `[]` and exits 1; anything unparsable is a real failure.
    match parse_containers(&captured.stdout) {
        Ok(containers) => Ok(ContainerState::from_containers(containers)),
        Err(_) => bail!(
            "`docker inspect {name_or_id}` failed: {}",
            captured.stderr_tail()
        ),
    }
}

/// Looks up one image by reference or ID; `None` when the engine does not have it.
pub fn inspect_image(docker: &Docker, reference: &str) -> Result<Option<Image>> {
    let captured = docker.capture(&args(["image", "inspect", reference]))?;
    match parse_images(&captured.stdout) {
        Ok(mut images) => Ok(images.pop()),
        Err(_) => bail!(
            "`docker image inspect {reference}` failed: {}",
            captured.stderr_tail()
        ),
    }
}

/// The message for a container that has our name but is not ours.
pub fn foreign_container_message(container: &Container) -> String {
    format!(
        "a container named `{name}` ({id}) exists but was not created by Stigmer: it lacks the label \
         dev.stigmer.managed=true, so it was left untouched.\n\
         Rename or remove it yourself if you are sure it is not needed (`docker rm -f {name}`), \
         or choose another name with STIGMER_RUNNER_CONTAINER.",
        name = container.name,
        id = container.short_id()
    )
}

/// The message for a container of ours that belongs to another data directory's stack.
pub fn other_stack_message(container: &Container) -> String {
    format!(
        "the container `{name}` ({id}) belongs to the Stigmer stack of another data directory ({dir}), \
         so it was left untouched.\nStop that stack first (`STIGMER_HOME={home} stigmer server stop`), \
         or choose another container name with STIGMER_RUNNER_CONTAINER.",
        name = container.name,
        id = container.short_id(),
        dir = container.labels.get(DATA_DIR_LABEL).map(String::as_str).unwrap_or("unknown"),
        home = container
            .labels
            .get(DATA_DIR_LABEL)
            .and_then(|dir| Path::new(dir).parent())
            .map(|home| home.display().to_string())
            .unwrap_or_default(),
    )
}

/// The message for a container of ours whose label names another engine than the one it is
/// on (a daemon whose identity changed): never touched.
pub fn other_engine_message(container: &Container, engine: &str) -> String {
    format!(
        "the container `{name}` ({id}) was created by Stigmer on another Docker engine ({other}) \
         than this one ({engine}), so it was left untouched. Remove it yourself if it is not \
         needed (`docker rm -f {name}`).",
        name = container.name,
        id = container.short_id(),
        other = container
            .labels
            .get(ENGINE_LABEL)
            .map(String::as_str)
            .unwrap_or("unknown"),
    )
}

/// This stack's container from `state`, `None` when there is none; a foreign container,
/// another stack's or another engine's is an error that says what to do, and is never touched.
pub fn claim(state: ContainerState, data_dir: &DataDir, engine: &str) -> Result<Option<Container>> {
    match state {
        ContainerState::Absent => Ok(None),
        ContainerState::Foreign(container) => bail!(foreign_container_message(&container)),
        ContainerState::Ours(container) if !container.belongs_to(data_dir) => {
            bail!(other_stack_message(&container))
        }
        ContainerState::Ours(container) if !container.created_on(engine) => {
            bail!(other_engine_message(&container, engine))
        }
        ContainerState::Ours(container) => Ok(Some(container)),
    }
}

/// This stack's container, found through the ID file when it was recorded on this engine, or
/// failing that by exact name.
pub fn find_ours(docker: &Docker, data_dir: &DataDir, name: &str) -> Result<Option<Container>> {
    let engine = docker.engine_id()?;
    if let Some(record) = read_id_file(data_dir).filter(|record| record.engine == engine) {
        // A stale file may name a container that is gone or, after ID reuse, not ours.
        if let ContainerState::Ours(container) = inspect_container(docker, &record.container)? {
            if container.belongs_to(data_dir) && container.created_on(&engine) {
                return Ok(Some(container));
            }
        }
    }
    claim(inspect_container(docker, name)?, data_dir, &engine)
}

/// What the ID file holds: the engine and the container started on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRecord {
    pub engine: String,
    pub container: String,
}

impl IdRecord {
    /// Parses `<engine id> <container id>`; a bare container ID (written before engines were
    /// recorded) or anything malformed is `None`: then the container is looked up by name.
    pub fn parse(text: &str) -> Option<IdRecord> {
        let (engine, container) = text.trim().split_once(' ')?;
        let hex =
            |id: &str| (12..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit());
        let engine_ok = !engine.is_empty()
            && engine
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":-".contains(c));
        (engine_ok && hex(container)).then(|| IdRecord {
            engine: engine.to_string(),
            container: container.to_string(),
        })
    }

    fn to_line(&self) -> String {
        format!("{} {}\n", self.engine, self.container)
    }
}

/// Reads the cached container ID and its engine; a missing or corrupt file counts as none.
pub fn read_id_file(data_dir: &DataDir) -> Option<IdRecord> {
    IdRecord::parse(&fs::read_to_string(data_dir.container_id_file()).ok()?)
}

pub(super) fn write_id_file(data_dir: &DataDir, record: &IdRecord) -> Result<()> {
    let path = data_dir.container_id_file();
    fs::create_dir_all(data_dir.root())
        .with_context(|| format!("creating {}", data_dir.root().display()))?;
    crate::files::write_atomically(&path, record.to_line().as_bytes())
}

pub(super) fn remove_id_file(data_dir: &DataDir) -> Result<()> {
    let path = data_dir.container_id_file();
    crate::files::remove_if_present(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_file_must_look_like_an_id() {
        let root = std::env::temp_dir().join(format!("idfile-{}", std::process::id()));
        let data_dir = DataDir::at(root.clone());
        let record = IdRecord {
            engine: "KO7T:VFQZ:VJIN".to_string(),
            container: "0123456789abcdef".to_string(),
        };
        write_id_file(&data_dir, &record).unwrap();
        assert_eq!(read_id_file(&data_dir), Some(record));
        for corrupt in [
            "rm -rf /\n",
            "0123456789abcdef\n",
            "e; 0123456789abcdef",
            "e zz",
        ] {
            fs::write(data_dir.container_id_file(), corrupt).unwrap();
            assert_eq!(read_id_file(&data_dir), None, "{corrupt:?}");
        }
        remove_id_file(&data_dir).unwrap();
        remove_id_file(&data_dir).unwrap();
        fs::remove_dir_all(root).unwrap();
    }
}
