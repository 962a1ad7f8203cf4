//! Smoke checks against the real container and image: the class of failure behind the
//! seed (a module that imports at build time and not at run time) is only caught by running
//! the installed code where it runs.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::check_engine;
use stigmer_stack::docker::{args, Docker};
use stigmer_stack::http::healthz;
use stigmer_stack::http::{self, Body};
use stigmer_stack::runner::lifecycle::log_tail;
use stigmer_stack::runner::spec::TASK_QUEUE;
use stigmer_stack::server::api::Api;
use stigmer_stack::temporal;
use stigmer_stack::ui::progress::{seconds, Progress};

use crate::{import_check, Project};

type Check = fn(&Docker, &Project) -> Result<String>;

/// Checks that need only the running container: started as soon as it runs, while the
/// service is still starting.
const IMAGE_CHECKS: [(&str, Check); 1] = [(
    "every installed module imports, collisions reported by name",
    import_check::check_image,
)];

/// Checks that need the service answering.
const SERVICE_CHECKS: [(&str, Check); 4] = [
    ("health endpoint answers from the host", health_from_host),
    (
        "a multipart upload lands in the workspace",
        multipart_upload,
    ),
    ("the service runs as a non-root user", non_root),
    (
        "an echo execution runs through server, Temporal and container",
        echo_execution,
    ),
];

type Outcomes = Vec<(&'static str, Result<String>)>;

/// Image checks running in the background (see [`start_image_checks`]).
pub struct StartedChecks(std::thread::JoinHandle<Outcomes>);

/// Starts the image checks at once, so that they overlap the service's start.
pub fn start_image_checks(project: &Project) -> StartedChecks {
    let project = project.clone();
    StartedChecks(std::thread::spawn(move || run_all(&IMAGE_CHECKS, &project)))
}

/// Runs `checks` at once, each on its own thread with its own docker handle (one is not
/// shared between threads); the slowest sets the time.
fn run_all(checks: &[(&'static str, Check)], project: &Project) -> Outcomes {
    std::thread::scope(|scope| {
        let running: Vec<_> = checks
            .iter()
            .map(|&(name, check)| {
                (
                    name,
                    scope.spawn(move || Docker::new().and_then(|docker| check(&docker, project))),
                )
            })
            .collect();
        running
            .into_iter()
            .map(|(name, handle)| {
                (
                    name,
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the check panicked"))),
                )
            })
            .collect()
    })
}

/// How long the echo execution may take end to end (the runner may still be backing off).
const EXECUTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every check (the image checks already started, if any); a failure names the check
/// and shows the last 50 log lines.
pub fn run_checks(
    docker: &Docker,
    project: &Project,
    progress: &mut Progress,
    started: Option<StartedChecks>,
) -> Result<()> {
    progress.phase("Smoke checks", |phase| {
        let mut outcomes = run_all(&SERVICE_CHECKS, project);
        outcomes.extend(match started {
            Some(StartedChecks(handle)) => handle.join().unwrap_or_else(|_| {
                vec![("image checks", Err(anyhow::anyhow!("the checks panicked")))]
            }),
            None => run_all(&IMAGE_CHECKS, project),
        });
        let mut failed = Vec::new();
        for (name, outcome) in outcomes {
            match outcome {
                Ok(detail) => phase.report(&format!("✓ {name}: {detail}")),
                Err(err) => {
                    eprintln!("✗ smoke check failed: {name}: {err:#}");
                    failed.push(name);
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        eprintln!(
            "last 50 log lines of {}:\n{}",
            project.stack.runner.container_name,
            log_tail(docker, &project.stack.runner.container_name, 50)
        );
        bail!("smoke check failed: {}", failed.join("; "))
    })
}

fn health_from_host(_: &Docker, project: &Project) -> Result<String> {
    let body = healthz(project.stack.runner.health_port, Duration::from_secs(2))?;
    ensure!(body["status"] == "ok", "the health endpoint said {body}");
    Ok(format!(
        "127.0.0.1:{} status ok",
        project.stack.runner.health_port
    ))
}

fn multipart_upload(_: &Docker, project: &Project) -> Result<String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let directory = format!("smoke-{}-{nanos}", std::process::id());
    let contents = format!("smoke {nanos}\n");
    let (content_type, body) = http::multipart_file(
        &format!("smoke{nanos}"),
        "file",
        &format!("{directory}/probe.txt"),
        contents.as_bytes(),
    );
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, project.stack.runner.health_port));
    let response = http::post(
        addr,
        "/v1/uploads",
        Body {
            content_type: &content_type,
            bytes: &body,
        },
        Duration::from_secs(5),
    )?;
    ensure!(
        response.status == 201,
        "the upload answered {}: {}",
        response.status,
        response.text()
    );
    let host_dir = project.stack.data_dir.workspace().join(&directory);
    let host_file = host_dir.join("probe.txt");
    let landed = fs::read_to_string(&host_file).with_context(|| {
        format!(
            "the upload is not visible on the host at {}",
            host_file.display()
        )
    })?;
    ensure!(
        landed == contents,
        "the uploaded file holds {landed:?}, not {contents:?}"
    );
    let owner = fs::metadata(&host_file)
        .context("reading the uploaded file's owner")?
        .uid();
    let expected = project.host_user.container_user().0;
    ensure!(
        owner == expected,
        "the uploaded file is owned by uid {owner}, not {expected}"
    );
    fs::remove_dir_all(&host_dir)
        .with_context(|| format!("the host user cannot delete {}", host_dir.display()))?;
    ensure!(
        !host_dir.exists(),
        "{} is still there after deleting it",
        host_dir.display()
    );
    Ok(format!(
        "stored, owned by uid {owner}, deleted from the host"
    ))
}

fn non_root(docker: &Docker, project: &Project) -> Result<String> {
    let body = healthz(project.stack.runner.health_port, Duration::from_secs(2))?;
    let uid = body["uid"]
        .as_u64()
        .context("the health endpoint does not report the process's uid")?;
    ensure!(uid != 0, "the service runs as root");
    let user = docker.checked(&args([
        "exec",
        &project.stack.runner.container_name,
        "id",
        "-u",
    ]))?;
    ensure!(user.trim() != "0", "`docker exec id -u` says root");
    Ok(format!("uid {uid}"))
}

fn echo_execution(_: &Docker, project: &Project) -> Result<String> {
    let api = Api::new(project.stack.server_port);
    let input = format!(
        "smoke {}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let started = Instant::now();
    let created = api.create_execution("echo", &input)?;
    let execution = api.wait_until_done(&created.id, EXECUTION_TIMEOUT)?;
    ensure!(
        execution.status == "succeeded",
        "{} ended {}: {}",
        created.id,
        execution.status,
        execution.error.unwrap_or_default()
    );
    ensure!(
        execution.result.as_deref() == Some(input.as_str()),
        "{} returned {:?}, not {input:?}",
        created.id,
        execution.result
    );
    let elapsed = started.elapsed();
    // The server's record is only its view: Temporal's own must say the same.
    let workflow = temporal::describe_workflow(&project.stack.temporal, &created.id)?;
    ensure!(
        workflow.status == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
            && workflow.task_queue == TASK_QUEUE
            && workflow.workflow_type == "ExecuteAgent",
        "Temporal's history of {} disagrees with the server: {workflow:?}",
        created.id
    );
    Ok(format!(
        "{} returned its input in {}, completed in Temporal on {TASK_QUEUE}",
        created.id,
        seconds(elapsed)
    ))
}

/// The container whose smoke checks passed last, kept beside its ID file.
fn checked_file(project: &Project) -> std::path::PathBuf {
    project.stack.data_dir.smoke_checked_file()
}

pub fn was_checked(project: &Project, container_id: &str) -> bool {
    fs::read_to_string(checked_file(project)).is_ok_and(|text| text.trim() == container_id)
}

pub fn mark_checked(project: &Project, container_id: &str) -> Result<()> {
    let path = checked_file(project);
    stigmer_stack::files::write_atomically(&path, format!("{container_id}\n").as_bytes())
}

pub fn forget_checked(project: &Project) -> Result<()> {
    let path = checked_file(project);
    stigmer_stack::files::remove_if_present(&path)
}

/// `cargo xtask smoke`.
#[derive(Args)]
pub struct Smoke {}

impl Smoke {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        progress.phase("Checking Docker", |_| check_engine(&docker))?;
        run_checks(&docker, project, &mut progress, None)?;
        println!("smoke checks passed");
        Ok(())
    }
}
