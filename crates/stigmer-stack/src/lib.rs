//! The local Stigmer stack, in one place for `cargo xtask` and the `stigmer` CLI: Temporal,
//! stigmer-server and the agent-runner container, and the edges they are driven through.
//!
//! - [`stack`]: the stack as one thing: its settings, `up`, `down`, `status`, `logs`, the data
//!   directory and the lock that serialises commands on it;
//! - [`runner`]: the agent-runner container (spec, image inputs, lifecycle);
//! - [`server`]: stigmer-server as a managed process, and its HTTP API's client;
//! - [`temporal`]: the Temporal dev server, or an existing Temporal;
//! - [`process`]: host processes with PID files, checked against their start time;
//! - [`docker`]: the docker client, the engine, `docker inspect`'s output, registries;
//! - [`exec`]: the one place that spawns a process;
//! - [`tools`]: official binaries fetched once (the Temporal CLI, Compose v2);
//! - [`http`]: the loopback HTTP client; [`files`]: atomic writes; [`ui`]: progress, Ctrl-C;
//! - `util` (private to the crate): docker's time stamps read, durations written for status.
//!
//! Three layers at every edge: plain data, pure functions from data to argument lists and from
//! output to typed state (tested as exact lists and on captured output), and a thin spawn
//! layer.

pub mod docker;
pub mod exec;
pub mod files;
pub mod http;
pub mod process;
pub mod runner;
pub mod server;
pub mod stack;
pub mod temporal;
pub mod tools;
pub mod ui;
mod util;
