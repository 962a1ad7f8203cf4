//! Idempotent start, readiness, stop and log access for the agent-runner container.
//!
//! The daemon is the source of truth: the container is found by exact name or ID with
//! `docker inspect` and judged by its labels; the ID file beside `daemon.pid` is only a
//! cache. A container that merely has our name but not our label is never stopped or
//! removed: the caller gets an error that says what to do. With several engines on one
//! machine (`DOCKER_HOST`, docker contexts), the ID file and the containers' labels name the
//! engine they came from, and nothing recorded against one engine is acted on in another.
//!
//! A file each: `find.rs` looks containers and images up and decides which container is this
//! stack's (with the ID file that caches it), `start_stop.rs` starts, replaces and stops it,
//! and `readiness.rs` waits for it to answer, reloads it in place and reads its logs.
//! Everything is re-exported here, so callers name `runner::lifecycle::...` only.

mod find;
mod readiness;
mod start_stop;

pub use find::{
    claim, find_ours, foreign_container_message, inspect_container, inspect_image,
    other_engine_message, other_stack_message, read_id_file, IdRecord,
};
pub use readiness::{log_tail, logs_args, reload, wait_until_ready, Generations, Reloaded};
pub use start_stop::{
    ensure_running, prepare_workspace, remove_container, replacement_reason, start, stop,
    StartOutcome, StopOutcome,
};
