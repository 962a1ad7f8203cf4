//! `stigmer`: the command-line program of the local Stigmer stack.
//!
//! `stigmer server start|stop|status|logs` manage the local stack (a Temporal dev server,
//! stigmer-server and the agent-runner container); `stigmer server run` is the server itself,
//! embedded so that this one program is all a user installs; `stigmer run` creates an
//! execution and follows it. This file holds the command line, reads the environment once into
//! a [`stigmer_stack::stack::StackConfig`], and turns errors into `✗ <message>` and a
//! non-zero exit. Results go to stdout, progress to stderr.

mod run;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use stigmer_stack::stack::{Component, StackConfig as Config};

#[derive(Debug, Parser)]
#[command(
    name = "stigmer",
    version,
    about = "Run Stigmer agents on this machine: Temporal, a local server and the agent-runner container.",
    after_help = "Environment: STIGMER_HOME moves the data directory (default ~/.stigmer); \
                  STIGMER_SERVER_PORT (default 7234), STIGMER_TEMPORAL_PORT (default 7233), \
                  STIGMER_TEMPORAL_ADDRESS (use an existing Temporal), STIGMER_TEMPORAL_UI=1, \
                  STIGMER_TEMPORAL_BIN, STIGMER_TOOLS_DIR, STIGMER_RUNNER_IMAGE, \
                  STIGMER_RUNNER_CONTAINER, STIGMER_RUNNER_HEALTH_PORT, STIGMER_LOG_LEVEL."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start, stop and inspect the local stack (Temporal, stigmer-server, the agent-runner).
    #[command(subcommand)]
    Server(ServerCommand),
    /// Run an agent and follow its execution until it ends; the result goes to stdout.
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Start Temporal, stigmer-server and the agent-runner container (what already runs is left alone).
    Start {
        /// Stop what runs and start it again.
        #[arg(long)]
        restart: bool,
    },
    /// Stop the agent-runner container, then stigmer-server, then Temporal.
    Stop,
    /// Show each component's state, health and uptime.
    Status {
        /// Print JSON for programs.
        #[arg(long)]
        json: bool,
    },
    /// Show a component's logs (default: stigmer-server).
    Logs(LogsArgs),
    /// Run stigmer-server in the foreground (what `start` runs in the background).
    Run(stigmer_server::ServeArgs),
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// Which component's logs to show.
    #[arg(long, value_enum, default_value = "stigmer-server")]
    component: Component,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// How many of the last lines to show.
    #[arg(short = 'n', long = "tail", default_value_t = 50)]
    tail: u32,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The agent to run (`echo`, `pr-reviewer`).
    #[arg(required_unless_present = "follow")]
    agent: Option<String>,
    /// The agent's input text.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the agent's input from a file (a unified diff for `pr-reviewer`).
    #[arg(long, value_name = "PATH")]
    input_file: Option<PathBuf>,
    /// Follow an existing execution (after Ctrl-C stopped following it) instead of starting one.
    #[arg(long, value_name = "EXECUTION_ID", conflicts_with_all = ["agent", "input", "input_file"])]
    follow: Option<String>,
}

/// What `stigmer run` was asked to do, with raw flags turned into one typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRequest {
    Start { agent: String, input: RunInput },
    Follow { execution_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunInput {
    Text(String),
    File(PathBuf),
}

impl RunArgs {
    fn into_request(self) -> RunRequest {
        match (self.follow, self.agent) {
            (Some(execution_id), _) => RunRequest::Follow { execution_id },
            (None, agent) => RunRequest::Start {
                // clap guarantees the agent when --follow is absent (required_unless_present).
                agent: agent.unwrap_or_default(),
                input: match self.input_file {
                    Some(path) => RunInput::File(path),
                    None => RunInput::Text(self.input.unwrap_or_default()),
                },
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("✗ {err:#}");
            if stigmer_stack::ui::interrupt::is_interrupted(&err) {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    // `server run` needs none of the stack's settings, only its command line.
    let config = Config::from_process_env;
    match cli.command {
        Command::Server(ServerCommand::Start { restart }) => server::start(&config()?, restart)?,
        Command::Server(ServerCommand::Stop) => server::stop(&config()?)?,
        Command::Server(ServerCommand::Status { json }) => server::status(&config()?, json)?,
        Command::Server(ServerCommand::Logs(args)) => {
            server::logs(&config()?, args.component, args.follow, args.tail)?
        }
        Command::Server(ServerCommand::Run(args)) => stigmer_server::serve(args)?,
        Command::Run(args) => return run::run(&config()?, args.into_request()),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stigmer").chain(args.iter().copied()))
    }

    fn run_request(args: &[&str]) -> RunRequest {
        match parse(args).unwrap().command {
            Command::Run(run) => run.into_request(),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn run_forms() {
        assert_eq!(
            run_request(&["run", "echo", "--input", "hello"]),
            RunRequest::Start {
                agent: "echo".into(),
                input: RunInput::Text("hello".into())
            }
        );
        assert_eq!(
            run_request(&["run", "pr-reviewer", "--input-file", "a.diff"]),
            RunRequest::Start {
                agent: "pr-reviewer".into(),
                input: RunInput::File("a.diff".into())
            }
        );
        assert_eq!(
            run_request(&["run", "echo"]),
            RunRequest::Start {
                agent: "echo".into(),
                input: RunInput::Text(String::new())
            }
        );
        assert_eq!(
            run_request(&["run", "--follow", "exec-1"]),
            RunRequest::Follow {
                execution_id: "exec-1".into()
            }
        );
    }

    #[test]
    fn run_refuses_contradictions() {
        assert!(parse(&["run"]).is_err());
        assert!(parse(&["run", "echo", "--input", "a", "--input-file", "b"]).is_err());
        assert!(parse(&["run", "echo", "--follow", "exec-1"]).is_err());
    }

    #[test]
    fn server_subcommands() {
        assert!(matches!(
            parse(&["server", "start", "--restart"]).unwrap().command,
            Command::Server(ServerCommand::Start { restart: true })
        ));
        assert!(matches!(
            parse(&["server", "status", "--json"]).unwrap().command,
            Command::Server(ServerCommand::Status { json: true })
        ));
        let Command::Server(ServerCommand::Logs(logs)) =
            parse(&["server", "logs"]).unwrap().command
        else {
            panic!("not logs")
        };
        assert_eq!(
            (logs.component, logs.follow, logs.tail),
            (Component::StigmerServer, false, 50)
        );
        let Command::Server(ServerCommand::Logs(logs)) = parse(&[
            "server",
            "logs",
            "--component",
            "agent-runner",
            "-f",
            "-n",
            "5",
        ])
        .unwrap()
        .command
        else {
            panic!("not logs")
        };
        assert_eq!(
            (logs.component, logs.follow, logs.tail),
            (Component::AgentRunner, true, 5)
        );
        let Command::Server(ServerCommand::Logs(logs)) =
            parse(&["server", "logs", "--component", "temporal"])
                .unwrap()
                .command
        else {
            panic!("not logs")
        };
        assert_eq!(logs.component, Component::Temporal);
        assert!(parse(&["server", "logs", "--component", "docker"]).is_err());
        assert!(matches!(
            parse(&["server", "run", "--data-dir", "/d"])
                .unwrap()
                .command,
            Command::Server(ServerCommand::Run(_))
        ));
    }
}
