//! `stigmer server start|stop|status|logs|run`: the display of the stack layer
//! (`stigmer_stack::stack`), which starts Temporal, stigmer-server and the agent-runner
//! container in that order and stops them in the reverse one. `run` is the server itself, in
//! the foreground: the stack starts it as `stigmer server run`, so this one program is all a
//! user installs.

use anyhow::{bail, Result};
use stigmer_stack::docker::engine;
use stigmer_stack::docker::registry::{self, Registry};
use stigmer_stack::docker::{short_id, Docker};
use stigmer_stack::runner::lifecycle;
use stigmer_stack::runner::spec::HostUser;
use stigmer_stack::stack::StackLock;
use stigmer_stack::stack::{
    self, image_missing_message, Component, ComponentStart, LogSource, RunnerStop, StackConfig,
    UpRequest,
};
use stigmer_stack::ui::interrupt;
use stigmer_stack::ui::progress::{seconds, Progress};
use stigmer_stack::{server, temporal};

pub fn start(config: &StackConfig, restart: bool) -> Result<()> {
    let data_dir = &config.data_dir;
    let mut progress = Progress::new();
    interrupt::install()?;
    let docker = Docker::new()?;
    // Docker and the image are checked before anything is written or started: without them
    // the command fails and leaves the machine as it found it.
    let engine = progress.phase("Checking Docker", |phase| {
        let info = engine::check_engine(&docker)?;
        phase.line(&format!(
            "Docker {} ({})",
            info.server_version,
            info.platform()
        ));
        Ok(info)
    })?;
    let registry = Registry::from_process_env()?;
    let image = progress.phase("Checking the agent-runner image", |_| {
        match lifecycle::inspect_image(&docker, &config.runner.image)? {
            Some(image) => Ok(image),
            // Never built implicitly: a build takes minutes and belongs to the dev loop. The
            // image published for this version is pulled when a registry is configured.
            None => pull_published_image(&docker, registry.as_ref(), &config.runner.image),
        }
    })?;
    let lock = progress.phase("Setting up data directory", |phase| {
        phase.line(&data_dir.root().display().to_string());
        StackLock::acquire(data_dir, "stigmer server start", |holder| {
            phase.line(&format!("waiting for {holder} to finish with this stack"));
        })
    })?;
    if restart {
        progress.phase("Stopping the running stack", |_| {
            let report = stack::down(config, &docker)?;
            if let RunnerStop::Refused { message } = report.runner {
                bail!(message);
            }
            Ok(())
        })?;
    }
    let program = std::env::current_exe()
        .map_err(|err| anyhow::anyhow!("finding this program to run the server with: {err}"))?;
    let request = UpRequest {
        engine: &engine,
        image: &image,
        program,
        replace_outdated_server: false,
        host_user: HostUser::current(),
        on_runner_started: &|| {},
    };
    let report = stack::up(config, &docker, &request, &lock, &mut progress)?;
    if let Some(ready) = report.runner_ready_after {
        progress.note(&format!(
            "agent runner ready {} after start",
            seconds(ready)
        ));
    }
    let headline = if report.started_something() {
        "✓ Stigmer is running"
    } else {
        "✓ Stigmer is already running (use `stigmer server start --restart` to restart it)"
    };
    let temporal_line = match &report.temporal {
        ComponentStart::External { address } => format!("existing Temporal at {address}"),
        start => format!(
            "pid {}, {} (HTTP {}), log {}",
            start.pid().unwrap_or_default(),
            config.temporal.frontend_address(),
            config.temporal.http_base(),
            data_dir.log_file(temporal::COMPONENT).display()
        ),
    };
    let id = report.runner.id();
    println!(
        "{headline}\n  temporal        {temporal_line}{ui}\n  stigmer-server  pid {pid}, {url}, log {log}\n  agent-runner    container {name} ({short}), image {image}, health {health}\n  data directory  {data}\n  logs            stigmer server logs [--component temporal|stigmer-server|agent-runner] [-f]",
        ui = config
            .temporal
            .ui_url()
            .map(|url| format!(", Web UI {url}"))
            .unwrap_or_default(),
        pid = report.server.pid().unwrap_or_default(),
        url = server::url(config.server_port),
        log = data_dir.log_file(server::COMPONENT).display(),
        name = config.runner.container_name,
        short = short_id(id),
        image = config.runner.image,
        health = config.runner.health_url(),
        data = data_dir.root().display(),
    );
    Ok(())
}

/// The image published for this CLI's version in `registry`, tagged as `image`; the build
/// hint when no registry is configured or the pull fails.
fn pull_published_image(
    docker: &Docker,
    registry: Option<&Registry>,
    image: &str,
) -> Result<stigmer_stack::docker::inspect::Image> {
    let Some(registry) = registry else {
        bail!(image_missing_message(image));
    };
    registry::pull_for_version(docker, registry, env!("CARGO_PKG_VERSION"), image).map_err(|err| {
        anyhow::anyhow!(
            "{}\n(the registry {} ({}) did not help: {err:#})",
            image_missing_message(image),
            registry.as_str(),
            registry::REGISTRY_ENV
        )
    })
}

pub fn stop(config: &StackConfig) -> Result<()> {
    let docker = Docker::new()?;
    let _lock = StackLock::acquire_if_present(&config.data_dir, "stigmer server stop", |holder| {
        eprintln!("ℹ waiting for {holder} to finish with this stack");
    })?;
    let report = stack::down(config, &docker)?;
    eprint!("{report}");
    if report.runner == RunnerStop::EngineUnavailable {
        bail!("the agent-runner container could not be checked: Docker does not answer; run `stigmer server stop` again once it does");
    }
    Ok(())
}

pub fn status(config: &StackConfig, json: bool) -> Result<()> {
    let docker = Docker::new()?;
    let status = stack::status(config, &docker);
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

pub fn logs(config: &StackConfig, component: Component, follow: bool, tail: u32) -> Result<()> {
    interrupt::install()?;
    let docker = Docker::new()?;
    match stack::log_source(config, &docker, component)? {
        LogSource::File(path) => stack::print_file(&path, follow, tail, &mut std::io::stdout()),
        LogSource::Container(id) => {
            docker.passthrough(&lifecycle::logs_args(&id, follow, Some(tail)))
        }
    }
}
