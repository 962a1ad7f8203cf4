//! stigmer-server: the local backend of Stigmer, as a library so that the `stigmer` program
//! runs it in-process (`stigmer server run`): one binary is all a user installs.
//!
//! It keeps executions and their events in a SQLite database under the data directory, starts
//! each execution as a Temporal workflow (see `temporal`), records how it ended, and serves the
//! HTTP API (see `http`) on a loopback address. [`serve`] opens the database, resumes watching
//! the executions a previous run left unfinished, and serves until SIGTERM or SIGINT.

mod clock;
mod executions;
mod http;
mod ids;
mod log;
mod store;
mod temporal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::executions::Executions;
use crate::log::{error, info};
pub use crate::temporal::TemporalTarget;

pub const DATABASE_FILE: &str = "stigmer.db";

/// How to run the server: the command line of `stigmer server run` and of `stigmer-server`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// Where stigmer.db lives.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The loopback IP:PORT to serve on (port 0 picks one and logs it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7234", value_parser = parse_loopback)]
    pub listen: SocketAddr,
    /// Temporal's HTTP API, where executions are started as workflows.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7243", value_parser = parse_http_base)]
    pub temporal_http: String,
    /// The Temporal namespace of the workflows.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub temporal_namespace: String,
    /// The task queue the agent-runner polls.
    #[arg(long, value_name = "NAME", default_value = "agent_execution_runner")]
    pub task_queue: String,
}

fn parse_loopback(text: &str) -> Result<SocketAddr> {
    let address: SocketAddr = text
        .parse()
        .with_context(|| format!("{text:?} is not an IP:PORT such as 127.0.0.1:7234"))?;
    if !address.ip().is_loopback() {
        bail!(
            "refusing to listen on {address}: stigmer-server has no authentication and serves \
             only this machine; use a loopback address such as 127.0.0.1:7234"
        );
    }
    Ok(address)
}

fn parse_http_base(text: &str) -> Result<String> {
    let trimmed = text.trim_end_matches('/');
    if !trimmed.starts_with("http://") || trimmed.len() <= "http://".len() {
        bail!("{text:?} is not an http:// URL such as http://127.0.0.1:7243");
    }
    Ok(trimmed.to_owned())
}

/// Serves until SIGTERM or SIGINT, on a runtime of its own. A fatal error is returned for the
/// caller to print (on stderr, which the stack sends to the server's log file).
pub fn serve(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let ServeArgs {
        data_dir,
        listen,
        temporal_http,
        temporal_namespace,
        task_queue,
    } = args;
    info!(
        "stigmer-server {} starting: data dir {}, Temporal {temporal_http} namespace {temporal_namespace}",
        env!("CARGO_PKG_VERSION"),
        data_dir.display(),
    );
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("create the data directory {}", data_dir.display()))?;
    let database_path = data_dir.join(DATABASE_FILE);
    let database = store::open(&database_path)
        .with_context(|| format!("open the database {}", database_path.display()))?;
    let temporal = temporal::Temporal::new(TemporalTarget {
        http_base: temporal_http,
        namespace: temporal_namespace,
        task_queue,
    })?;
    let executions = Executions::new(database, temporal);
    let resumed = executions
        .resume()
        .await
        .context("watch the executions a previous run left unfinished")?;
    if resumed > 0 {
        info!("watching {resumed} unfinished execution(s) from the previous run");
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen} (is another stigmer-server running?)"))?;
    let bound = listener.local_addr().context("read the bound address")?;
    info!("listening on http://{bound}");

    let shutdown = Arc::clone(&executions);
    axum::serve(listener, http::router(Arc::clone(&executions)))
        .with_graceful_shutdown(async move {
            wait_for_shutdown_signal().await;
            shutdown.begin_shutdown();
        })
        .await
        .context("serve HTTP")?;
    executions.close().await?;
    info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("stigmer-server").chain(args.iter().copied()))
            .map(|command| command.serve)
    }

    #[test]
    fn defaults_and_both_flag_spellings() {
        let args = parse(&["--data-dir", "/d"]).unwrap();
        assert_eq!(
            args,
            ServeArgs {
                data_dir: PathBuf::from("/d"),
                listen: "127.0.0.1:7234".parse().unwrap(),
                temporal_http: "http://127.0.0.1:7243".to_owned(),
                temporal_namespace: "default".to_owned(),
                task_queue: "agent_execution_runner".to_owned(),
            }
        );
        let moved = parse(&[
            "--data-dir=/e",
            "--listen=[::1]:9000",
            "--temporal-http",
            "http://127.0.0.1:9/",
        ])
        .unwrap();
        assert_eq!(moved.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(moved.temporal_http, "http://127.0.0.1:9");
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for args in [
            &["--data-dir", "/d", "--listen", "0.0.0.0:7234"][..],
            &["--data-dir", "/d", "--listen", "192.168.1.2:7234"],
            &["--data-dir", "/d", "--listen", "localhost"],
            &["--data-dir", "/d", "--temporal-http", "127.0.0.1:7243"],
            &["--data-dir", "/d", "--verbose"],
            &[],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
