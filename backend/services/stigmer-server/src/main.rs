//! `stigmer-server`: the local backend of Stigmer. It keeps executions and their events in a
//! SQLite database under the data directory and serves the HTTP API (see `http`) on a loopback
//! address, where the `stigmer` CLI creates executions and the agent-runner container polls for
//! them. This file reads the command line and the environment once, opens the database, recovers
//! from a previous run, and serves until SIGTERM or SIGINT.

mod clock;
mod http;
mod ids;
mod log;
mod queue;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::log::{error, info, warning};
use crate::queue::Queue;

const USAGE: &str = "\
usage: stigmer-server [--data-dir DIR] [--listen 127.0.0.1:7234] [--lease-seconds 30]

  --data-dir DIR       where stigmer.db lives (default $STIGMER_HOME/data, else ~/.stigmer/data)
  --listen ADDR        loopback IP:PORT to serve on (default 127.0.0.1:7234; port 0 picks one)
  --lease-seconds N    how long a runner holds a task without a heartbeat (default 30)";

const DEFAULT_LISTEN: &str = "127.0.0.1:7234";
const DEFAULT_LEASE_SECONDS: u64 = 30;
const DATABASE_FILE: &str = "stigmer.db";

/// The environment variables the server reads, gathered once in `main`.
struct Environment {
    stigmer_home: Option<PathBuf>,
    home: Option<PathBuf>,
}

impl Environment {
    fn capture() -> Self {
        let non_empty = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        Self {
            stigmer_home: non_empty("STIGMER_HOME"),
            home: non_empty("HOME").or_else(|| non_empty("USERPROFILE")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Options {
    data_dir: PathBuf,
    listen: SocketAddr,
    lease_duration: Duration,
}

enum Command {
    Serve(Options),
    Help,
    Version,
}

fn parse_command_line(args: &[String], environment: &Environment) -> Result<Command> {
    let mut data_dir = None;
    let mut listen = DEFAULT_LISTEN.to_owned();
    let mut lease_seconds = DEFAULT_LEASE_SECONDS.to_string();
    let mut remaining = args.iter();
    while let Some(arg) = remaining.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| remaining.next().cloned())
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--listen" => listen = value()?,
            "--lease-seconds" => lease_seconds = value()?,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => default_data_dir(environment)?,
    };
    let listen: SocketAddr = listen.parse().with_context(|| {
        format!("--listen {listen:?} is not an IP:PORT such as {DEFAULT_LISTEN}")
    })?;
    if !listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {listen}: stigmer-server has no authentication and serves \
             only this machine; use a loopback address such as {DEFAULT_LISTEN}"
        );
    }
    let lease_seconds: u64 = lease_seconds
        .parse()
        .ok()
        .filter(|seconds| (1..=86_400).contains(seconds))
        .with_context(|| {
            format!("--lease-seconds {lease_seconds:?} must be a whole number from 1 to 86400")
        })?;
    Ok(Command::Serve(Options {
        data_dir,
        listen,
        lease_duration: Duration::from_secs(lease_seconds),
    }))
}

fn default_data_dir(environment: &Environment) -> Result<PathBuf> {
    if let Some(stigmer_home) = &environment.stigmer_home {
        return Ok(stigmer_home.join("data"));
    }
    let home = environment
        .home
        .as_ref()
        .context("neither STIGMER_HOME nor HOME is set; pass --data-dir")?;
    Ok(home.join(".stigmer").join("data"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let environment = Environment::capture();
    let options = match parse_command_line(&args, &environment) {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("stigmer-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(usage_error) => {
            error!("{usage_error:#}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            error!("{fatal:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(serve_async(options))
}

async fn serve_async(options: Options) -> Result<()> {
    let Options {
        data_dir,
        listen,
        lease_duration,
    } = options;
    info!(
        "stigmer-server {} starting: data dir {}, lease {} s",
        env!("CARGO_PKG_VERSION"),
        data_dir.display(),
        lease_duration.as_secs()
    );
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    let database_path = data_dir.join(DATABASE_FILE);
    let database = store::open(&database_path)
        .with_context(|| format!("open the database {}", database_path.display()))?;
    let queue = Queue::new(database, lease_duration);
    // Executions left running by a previous run whose lease has run out go back in the queue
    // now; live leases (stored in the database) are honoured until they expire.
    let recovered = queue
        .requeue_expired_leases()
        .await
        .context("requeue executions whose lease expired while the server was down")?;
    if !recovered.is_empty() {
        info!(
            "recovered {} execution(s) from the previous run",
            recovered.len()
        );
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen} (is another stigmer-server running?)"))?;
    let bound = listener.local_addr().context("read the bound address")?;
    info!("listening on http://{bound}");

    let sweeper = queue.spawn_lease_sweeper();
    let shutdown_queue = Arc::clone(&queue);
    axum::serve(listener, http::router(Arc::clone(&queue)))
        .with_graceful_shutdown(async move {
            wait_for_shutdown_signal().await;
            shutdown_queue.begin_shutdown();
        })
        .await
        .context("serve HTTP")?;
    if let Err(join_error) = sweeper.await {
        warning!("the lease sweeper ended abnormally: {join_error}");
    }
    queue.close().await?;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere than Unix).
async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut terminate, mut interrupt) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(signal_error), _) | (_, Err(signal_error)) => {
                error!("cannot listen for shutdown signals: {signal_error}");
                return std::future::pending().await;
            }
        };
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!("{name} received: finishing in-flight requests");
    }
    #[cfg(not(unix))]
    {
        if let Err(signal_error) = tokio::signal::ctrl_c().await {
            error!("cannot listen for Ctrl-C: {signal_error}");
            return std::future::pending().await;
        }
        info!("Ctrl-C received: finishing in-flight requests");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> Environment {
        Environment {
            stigmer_home: None,
            home: Some(PathBuf::from("/home/dev")),
        }
    }

    fn parse(args: &[&str], environment: &Environment) -> Result<Options> {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        match parse_command_line(&args, environment)? {
            Command::Serve(options) => Ok(options),
            Command::Help | Command::Version => bail!("not a serve command"),
        }
    }

    #[test]
    fn defaults_follow_the_environment() -> Result<()> {
        let options = parse(&[], &environment())?;
        assert_eq!(options.data_dir, PathBuf::from("/home/dev/.stigmer/data"));
        assert_eq!(options.listen, "127.0.0.1:7234".parse()?);
        assert_eq!(options.lease_duration, Duration::from_secs(30));
        let moved = Environment {
            stigmer_home: Some(PathBuf::from("/tmp/st")),
            ..environment()
        };
        assert_eq!(parse(&[], &moved)?.data_dir, PathBuf::from("/tmp/st/data"));
        Ok(())
    }

    #[test]
    fn flags_are_read_in_both_spellings() -> Result<()> {
        let options = parse(
            &[
                "--data-dir",
                "/d",
                "--listen=[::1]:9000",
                "--lease-seconds",
                "1",
            ],
            &environment(),
        )?;
        assert_eq!(options.data_dir, PathBuf::from("/d"));
        assert_eq!(options.listen, "[::1]:9000".parse()?);
        assert_eq!(options.lease_duration, Duration::from_secs(1));
        Ok(())
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for args in [
            &["--listen", "0.0.0.0:7234"][..],
            &["--listen", "192.168.1.2:7234"],
            &["--listen", "localhost"],
            &["--lease-seconds", "0"],
            &["--lease-seconds"],
            &["--verbose"],
        ] {
            assert!(parse(args, &environment()).is_err(), "{args:?}");
        }
    }
}
