//! The stack's figures (issue 10) on `dev`'s warm benchmark stack, with a release-built
//! `stigmer`: `stigmer run echo` end to end (the CLI process included), `stigmer server start`
//! with the image present, each component's idle memory, and the runner image's size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use stigmer_stack::exec::{self, Surroundings};
use stigmer_stack::runner::lifecycle;
use stigmer_stack::ui::progress::Phase;

use super::measure;
use super::report::Report;
use super::scenario::{Peer, Scenario};
use super::session::{Session, UNSET};

const STIGMER_DEADLINE: Duration = Duration::from_secs(120);
/// Idle means nothing asked anything of the stack for this long.
const SETTLE: Duration = Duration::from_secs(5);

/// `target/release/stigmer`, built now (cargo decides whether anything changed).
pub fn release_stigmer(session: &Session) -> Result<PathBuf> {
    exec::run(
        "cargo",
        &["build", "--release", "--quiet", "--package", "stigmer"],
        &session.root,
        &[],
    )
    .context("building the release stigmer")?;
    let debug_dir = session
        .xtask
        .parent()
        .context("the xtask binary has a directory")?;
    let target = debug_dir
        .parent()
        .context("cargo's profile directory has a parent")?;
    Ok(target.join("release/stigmer"))
}

/// Runs `stigmer <args>` against the benchmark's stack; its stdout.
fn stigmer(session: &Session, program: &Path, args: &[&str]) -> Result<String> {
    let env = session.dev.env(&session.base_reference());
    let around = Surroundings {
        env: &env,
        unset: &UNSET,
        dir: Some(&session.scratch),
    };
    let argv: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let Some(captured) = exec::capture_in(
        &program.display().to_string(),
        &argv,
        &around,
        STIGMER_DEADLINE,
    )?
    else {
        bail!(
            "`stigmer {}` did not finish within {} s",
            args.join(" "),
            STIGMER_DEADLINE.as_secs()
        );
    };
    ensure!(
        captured.success,
        "`stigmer {}` failed ({}):\n{}",
        args.join(" "),
        exec::exit_text(captured.code),
        exec::tail_lines(&captured.stderr, 20)
    );
    Ok(captured.stdout)
}

pub fn stack_figures(
    session: &Session,
    report: &mut Report,
    echo_runs: usize,
    start_runs: usize,
    phase: &Phase,
) -> Result<()> {
    let program = release_stigmer(session)?;
    let dev = session.dev.clone();
    measure::wait_answering(dev.health_port, &dev.container, Duration::from_secs(60))?;
    // One untimed run: the first execution warms the worker's caches.
    stigmer(session, &program, &["run", "echo", "--input", "warm-up"])?;
    let mut samples = Vec::new();
    for n in 0..echo_runs {
        let input = format!("bench-{n}");
        let started = Instant::now();
        let printed = stigmer(session, &program, &["run", "echo", "--input", &input])?;
        samples.push(started.elapsed().as_secs_f64());
        ensure!(
            printed.contains(&input),
            "`stigmer run echo --input {input}` printed `{}`",
            printed.trim()
        );
    }
    phase.line(&format!(
        "stigmer run echo: median {:.0} ms over {echo_runs} runs",
        super::report::Stats::of(&samples).map_or(0.0, |s| s.median * 1e3)
    ));
    report.add(
        Scenario::RunEcho,
        Peer::Stigmer,
        &samples,
        "`stigmer run echo --input …` as a new process each time, until it printed the result: \
         create, Temporal workflow, runner activity, result",
    );

    let data = dev.data_dir();
    std::thread::sleep(SETTLE);
    let temporal = measure::process_memory(&data.temporal_pid_file(), "Temporal")?;
    let server = measure::process_memory(&data.server_pid_file(), "stigmer-server")?;
    let runner = measure::idle_container_memory(
        &session.docker,
        &dev.container,
        dev.health_port,
        Duration::ZERO,
        Duration::from_secs(60),
    )?;
    let rss = "resident set size from /proc, idle after the runs above";
    report.add(
        Scenario::IdleMemoryTemporal,
        Peer::Stigmer,
        &[temporal],
        rss,
    );
    report.add(Scenario::IdleMemoryServer, Peer::Stigmer, &[server], rss);
    report.add(
        Scenario::IdleMemoryRunner,
        Peer::Stigmer,
        &[runner],
        "`docker stats` MemUsage, idle after the runs above",
    );
    if let Some(image) = lifecycle::inspect_image(&session.docker, &dev.image)? {
        report.add(
            Scenario::RunnerImageSize,
            Peer::Stigmer,
            &[image.size as f64 / 1e6],
            "`docker image inspect` Size, base included (the runner as shipped)",
        );
    }

    let mut starts = Vec::new();
    for _ in 0..start_runs {
        stigmer(session, &program, &["server", "stop"])?;
        let started = Instant::now();
        stigmer(session, &program, &["server", "start"])?;
        starts.push(started.elapsed().as_secs_f64());
        measure::wait_answering(dev.health_port, &dev.container, Duration::from_secs(60))?;
    }
    phase.line(&format!(
        "stigmer server start: median {:.2} s",
        super::report::Stats::of(&starts).map_or(0.0, |s| s.median)
    ));
    report.add(
        Scenario::ServerStart,
        Peer::Stigmer,
        &starts,
        "after `stigmer server stop`: Temporal, stigmer-server and the runner container (image present) until it returns ready",
    );
    Ok(())
}
