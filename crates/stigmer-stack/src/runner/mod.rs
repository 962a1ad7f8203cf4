//! The agent-runner container: its spec as plain data and the `docker run` arguments made from
//! it ([`spec`]), the inputs its image is built from and the rebuild decision ([`inputs`]), and
//! its idempotent start, readiness, reload and stop ([`lifecycle`]).

pub mod inputs;
pub mod lifecycle;
pub mod spec;
