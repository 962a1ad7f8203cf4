//! What one run did, measured from outside the tool: the image and container before and
//! after, the time until the runner answers on the host (through the library's health probe),
//! memory by `docker stats` and `/proc`, and whether an image reused its dependency layer,
//! found by the image's history.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use stigmer_stack::docker::inspect::{ContainerState, Image};
use stigmer_stack::docker::{args, Docker};
use stigmer_stack::http::healthz;
use stigmer_stack::runner::lifecycle;

use super::report::parse_memory_usage;
use super::session::DevSummary;

/// The image and container of one tool at one moment.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub image: Option<Image>,
    pub container: Option<String>,
}

pub fn state(docker: &Docker, image: &str, container: &str) -> State {
    State {
        image: lifecycle::inspect_image(docker, image).ok().flatten(),
        container: container_id(docker, container),
    }
}

pub fn container_id(docker: &Docker, name: &str) -> Option<String> {
    match lifecycle::inspect_container(docker, name) {
        Ok(ContainerState::Ours(found) | ContainerState::Foreign(found)) => Some(found.id),
        _ => None,
    }
}

/// One timed run of a tool.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command's own time.
    pub seconds: f64,
    /// From the command's start until the runner answered on the host; for a run expected to
    /// start a new runner process, until the new one answered.
    pub until_answering: f64,
    pub before: State,
    pub after: State,
    /// `dev --json`'s answer, for `dev`.
    pub summary: Option<DevSummary>,
    /// For a run that made a new image: whether it reused the dependency layer, judged at
    /// once (the tool may remove the image it replaced before the next run).
    pub dependency_layer: Option<(bool, String)>,
}

impl Outcome {
    pub fn image_changed(&self) -> bool {
        self.before.image.as_ref().map(|i| &i.id) != self.after.image.as_ref().map(|i| &i.id)
    }

    pub fn restarted(&self) -> bool {
        self.before.container != self.after.container
    }
}

/// Polls the runner's health endpoint until it answers; past `deadline` the error names the
/// container and port that did not answer.
pub fn wait_answering(port: u16, container: &str, deadline: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if healthz(port, Duration::from_millis(250)).is_ok() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= deadline {
            bail!(
                "waiting for {container} to answer on 127.0.0.1:{port}/healthz timed out after {} s",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long after a command's start a new runner process may take to answer.
const NEW_PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `run`, timed, then until the runner answers on the host: with `new_process`, until a
/// new runner process answers (see [`until_new_process`]); otherwise until it answers at all
/// within `answer_deadline`. Returns what `run` returned, its own seconds and the seconds
/// until the runner answered.
pub fn timed<T>(
    docker: &Docker,
    port: u16,
    container: &str,
    new_process: bool,
    answer_deadline: Duration,
    run: impl FnOnce() -> Result<T>,
) -> Result<(T, f64, f64)> {
    if new_process {
        return until_new_process(docker, port, container, NEW_PROCESS_DEADLINE, run);
    }
    let started = Instant::now();
    let value = run()?;
    let seconds = started.elapsed().as_secs_f64();
    wait_answering(port, container, answer_deadline)?;
    Ok((value, seconds, started.elapsed().as_secs_f64()))
}

/// Runs `run` while watching the health endpoint on `port` from another thread, and returns
/// its result, its own duration and the time from its start until a new runner process
/// answered: one whose `generation` differs from the one answering before, or one that
/// answers after the endpoint stopped answering from a container other than the one before
/// (a replaced container counts its generations afresh; a probe that timed out under load is
/// no restart). Waits past `run`'s end (a tool that returns before the runner answers) up to
/// `deadline`.
pub fn until_new_process<T>(
    docker: &Docker,
    port: u16,
    container: &str,
    deadline: Duration,
    run: impl FnOnce() -> Result<T>,
) -> Result<(T, f64, f64)> {
    let generation = |health: &serde_json::Value| health["generation"].as_u64();
    let baseline = healthz(port, Duration::from_millis(250))
        .ok()
        .map(|health| generation(&health));
    let old_container = container_id(docker, container);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut was_down = baseline.is_none();
            loop {
                match healthz(port, Duration::from_millis(250)) {
                    Ok(health) => {
                        let now = Some(generation(&health));
                        let answered = started.elapsed().as_secs_f64();
                        if baseline.is_some() && now != baseline {
                            return Some(answered);
                        }
                        if was_down {
                            if old_container.is_none()
                                || container_id(docker, container) != old_container
                            {
                                return Some(answered);
                            }
                            was_down = false;
                        }
                    }
                    Err(_) => was_down = true,
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let result = run();
        let seconds = started.elapsed().as_secs_f64();
        if result.is_ok() {
            while !watcher.is_finished() && started.elapsed() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = watcher.join().ok().flatten();
        let value = result?;
        let answered = answered.with_context(|| {
            format!(
                "waiting for a new runner process of {container} to answer on 127.0.0.1:{port} timed out after {} s",
                deadline.as_secs()
            )
        })?;
        Ok((value, seconds, answered))
    })
}

/// When the container's current process started (`State.StartedAt`), to see a restart.
pub fn started_at(docker: &Docker, container: &str) -> Result<String> {
    Ok(docker
        .checked(&args([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.StartedAt}}",
            container,
        ]))?
        .trim()
        .to_string())
}

/// A container's memory once it has been idle for `settle`: it must answer first, within
/// `deadline`, and the error says which container did not.
pub fn idle_container_memory(
    docker: &Docker,
    container: &str,
    health_port: u16,
    settle: Duration,
    deadline: Duration,
) -> Result<f64> {
    wait_answering(health_port, container, deadline)
        .with_context(|| format!("waiting for {container} to be idle for its memory figure"))?;
    std::thread::sleep(settle);
    container_memory(docker, container)
}

/// `docker stats --no-stream` MemUsage (cgroup usage less page cache), in MB.
pub fn container_memory(docker: &Docker, container: &str) -> Result<f64> {
    let text = docker
        .checked(&args([
            "stats",
            "--no-stream",
            "--format",
            "{{.MemUsage}}",
            container,
        ]))
        .with_context(|| format!("`docker stats` of {container}"))?;
    parse_memory_usage(&text).with_context(|| format!("`docker stats` printed `{}`", text.trim()))
}

/// The resident memory of the process a PID file names (Temporal, stigmer-server), in MB.
pub fn process_memory(pid_file: &std::path::Path, component: &str) -> Result<f64> {
    match stigmer_stack::process::state(pid_file) {
        stigmer_stack::process::ProcessState::Running { record } => {
            stigmer_stack::process::resident_bytes(record.pid)
                .map(|bytes| bytes as f64 / 1e6)
                .with_context(|| format!("reading {component}'s memory (pid {})", record.pid))
        }
        _ => bail!(
            "{component} is not running (no live process in {})",
            pid_file.display()
        ),
    }
}

/// Dockerfile instructions that only change the image's configuration: their history rows
/// make no layer (https://docs.docker.com/reference/dockerfile/). Every other row (RUN, COPY,
/// ADD, an imported base) does, even when it adds no bytes (a COPY of an empty directory).
const METADATA: [&str; 14] = [
    "ARG",
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The instruction of a history row, without the legacy builder's `/bin/sh -c #(nop)`.
fn instruction(created_by: &str) -> &str {
    let step = created_by.trim();
    let step = step.strip_prefix("/bin/sh -c").unwrap_or(step).trim_start();
    let step = step.strip_prefix("#(nop)").unwrap_or(step).trim_start();
    step.split_whitespace().next().unwrap_or("")
}

fn makes_layer(created_by: &str) -> bool {
    !METADATA.contains(&instruction(created_by))
}

/// The index, in the image's layers (base first), of the layer that copies the venv into the
/// runtime stage (`COPY --from=builder /opt/venv /opt/venv`), from the image's history
/// (newest first). The rows that make layers must be exactly as many as the image's layers,
/// or the mapping is refused.
pub fn dependency_layer_index(history: &str, layers: usize) -> Result<usize> {
    let rows: Vec<&str> = history
        .lines()
        .filter(|line| !line.trim().is_empty())
        .rev()
        .map(|line| {
            line.split_once('\t')
                .map_or("", |(_, created_by)| created_by)
        })
        .collect();
    let with_layers = rows.iter().filter(|row| makes_layer(row)).count();
    ensure!(
        with_layers == layers,
        "the image's history has {with_layers} steps that make layers but the image {layers} \
         layers: the dependency layer cannot be told apart"
    );
    let position = rows
        .iter()
        .position(|row| instruction(row) == "COPY" && row.contains("/opt/venv"))
        .context("no step of the image's history copies /opt/venv")?;
    Ok(rows[..position]
        .iter()
        .filter(|row| makes_layer(row))
        .count())
}

/// For a run that made a new image, the dependency-layer verdict (see below).
pub fn layer_verdict(docker: &Docker, before: &State, after: &State) -> Option<(bool, String)> {
    let changed = before.image.as_ref().map(|i| &i.id) != after.image.as_ref().map(|i| &i.id);
    changed.then(|| dependency_layer_reused(docker, before.image.as_ref(), after.image.as_ref()))
}

/// Whether `after` is a new image that shares with `before` its dependency layer and every
/// layer below it, and a sentence saying what was found.
pub fn dependency_layer_reused(
    docker: &Docker,
    before: Option<&Image>,
    after: Option<&Image>,
) -> (bool, String) {
    let (Some(before), Some(after)) = (before, after) else {
        return (
            false,
            "an image is missing before or after the run".to_string(),
        );
    };
    if before.id == after.id {
        return (false, "no new image was built".to_string());
    }
    let index = match crate::size::history(docker, &after.id)
        .and_then(|text| dependency_layer_index(&text, after.layers.len()))
    {
        Ok(index) => index,
        Err(err) => return (false, format!("{err:#}")),
    };
    let same = before.layers.len() > index && before.layers[..=index] == after.layers[..=index];
    let first_changed = before
        .layers
        .iter()
        .zip(&after.layers)
        .position(|(a, b)| a != b)
        .unwrap_or(before.layers.len().min(after.layers.len()));
    (
        same,
        format!(
            "dependency layer {} of {}; first changed layer {}",
            index + 1,
            after.layers.len(),
            first_changed + 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History of a BuildKit-built runner image (newest first), as `docker history` printed it.
    const HISTORY: &str = "0\tLABEL dev.stigmer.poetry-lock.sha256=f3d8\n\
137825\tCOPY src/agent_runner /app/agent_runner # buildkit\n\
0\tCOPY /opt/local /opt/local # buildkit\n\
0\tARG STIGMER_INPUTS_MANIFEST=\n\
0\tCMD [\"python\" \"-m\" \"agent_runner\"]\n\
0\tHEALTHCHECK &{[\"CMD\" \"python\"] \"5s\" \"3s\" \"30s\" '\\x03'}\n\
0\tSTOPSIGNAL SIGTERM\n\
0\tUSER 10001:10001\n\
0\tENV PATH=/opt/venv/bin:/opt/local/bin\n\
131031863\tCOPY /opt/venv /opt/venv # buildkit\n\
3936\tRUN /bin/sh -c groupadd --gid 10001 runner # buildkit\n\
0\t/bin/sh -c #(nop)  LABEL dev.stigmer.bench-base=x\n\
170379809\t\n";

    /// The same steps as the legacy builder records them.
    const LEGACY: &str = "0\t/bin/sh -c #(nop)  LABEL dev.stigmer.poetry-lock.sha256=fe4a\n\
53138\t/bin/sh -c #(nop) COPY dir:7104 in /app/agent_runner \n\
0\t/bin/sh -c #(nop) COPY dir:aa in /opt/local \n\
0\t/bin/sh -c #(nop)  CMD [\"python\"]\n\
219077731\t/bin/sh -c #(nop) COPY dir:2143 in /opt/venv \n\
3940\t/bin/sh -c groupadd --gid 10001 runner\n\
170379809\t\n";

    #[test]
    fn the_dependency_layer_is_found_by_history() {
        assert_eq!(dependency_layer_index(HISTORY, 5).unwrap(), 2);
        assert_eq!(dependency_layer_index(LEGACY, 5).unwrap(), 2);
        let err = dependency_layer_index(HISTORY, 6).unwrap_err();
        assert!(format!("{err}").contains("cannot be told apart"), "{err}");
        assert!(dependency_layer_index("10\tRUN true\n", 1).is_err());
    }
}
