//! The agent-runner container as plain data, and the `docker run` argument list made from it.
//!
//! Everything that comes from the environment (variables, the host user, the data
//! directory) is gathered into [`RunnerSettings`] and [`HostUser`] before any argument is
//! built, so [`ContainerSpec::run_args`] is a pure function that tests compare exactly.
//!
//! The two sides are a file each: `settings.rs` reads and checks what the environment says,
//! `container.rs` turns settings into a [`ContainerSpec`] and its arguments. Everything is
//! re-exported here, so callers name `runner::spec::...` only.

mod container;
mod settings;

pub use container::{
    ContainerSpec, Mount, CONFIG_LABEL, DATA_DIR_LABEL, ENGINE_LABEL, MANAGED_LABEL, MODE_LABEL,
    SOURCE_IN_CONTAINER, STOP_GRACE_SECONDS, TASK_QUEUE,
};
pub use settings::{
    host_from_container, HostUser, Network, RunnerSettings, Secret, DEFAULT_BACKEND_ENDPOINT,
    DEFAULT_CONTAINER_NAME, DEFAULT_HEALTH_PORT, DEFAULT_IMAGE, DEFAULT_TEMPORAL_ADDRESS,
    HOST_FROM_CONTAINER, IMAGE_USER_ID, PASSTHROUGH_NAMES, SECRET_NAMES,
};
