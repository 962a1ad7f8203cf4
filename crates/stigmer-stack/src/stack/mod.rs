//! The local stack as one thing: Temporal, stigmer-server and the agent-runner container,
//! brought up in that order and down in the reverse one, with one status and one way to read
//! each component's logs. `stigmer server ...` and `cargo xtask ...` only display what these
//! return; neither starts or stops a component itself.

mod config;
mod down;
pub mod lock;
mod logs;
mod paths;
mod status;
mod up;

pub use config::{parse_dotenv, StackConfig};
pub use down::{down, DownReport, RunnerStop};
pub use lock::StackLock;
pub use logs::{log_source, print_file, Component, LogSource};
pub use paths::DataDir;
pub use status::{image_missing_message, runner_status, status, RunnerStatus, StackStatus};
pub use up::{up, ComponentStart, UpReport, UpRequest, RUNNER_READY_TIMEOUT};
