//! The agent-runner container, in one place for `xtask` and the `stigmer` CLI.
//!
//! Three layers, as at every docker edge of this project: plain data ([`spec`], [`inputs`]),
//! pure functions from that data to argument lists and from docker's output to typed state
//! ([`spec::ContainerSpec::run_args`], [`inspect`]), and one thin module that spawns
//! processes ([`docker`]). [`lifecycle`] combines them into idempotent start and stop;
//! [`progress`] is how both programs show what they are doing.

pub mod docker;
pub mod engine;
pub mod http;
pub mod ids;
pub mod inputs;
pub mod inspect;
pub mod interrupt;
pub mod lifecycle;
pub mod lock;
pub mod paths;
pub mod process;
pub mod progress;
pub mod registry;
pub mod server_api;
pub mod server_process;
pub mod spec;
pub mod stack;
pub mod temporal;
pub mod time;
pub mod tools;
