//! `stigmer-server`: the local backend on its own, for running and testing it apart from the
//! `stigmer` program (which runs the same library as `stigmer server run`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "stigmer-server", version, about = "The local Stigmer backend")]
struct Command {
    #[command(flatten)]
    serve: stigmer_server::ServeArgs,
}

fn main() -> ExitCode {
    match stigmer_server::serve(Command::parse().serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("✗ {fatal:#}");
            ExitCode::FAILURE
        }
    }
}
