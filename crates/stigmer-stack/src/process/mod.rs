//! A background process the stack manages on the host (stigmer-server, the Temporal dev
//! server): started detached with a PID file and a log file, checked, stopped.
//!
//! A PID file holds `"<pid> <start time>"`, the start time being field 22 of `/proc/<pid>/stat`
//! (clock ticks after boot). A PID alone is not proof: after the process died the kernel may
//! hand its number to any other process. A PID file whose process is gone, whose start time
//! differs (PID reuse) or that does not parse is stale: it is removed, and no signal is ever
//! sent to the process it names. A port that already answers before a start belongs to someone
//! else: it is reported, with the process holding it when `/proc` tells, and never touched.
//!
//! A file each: `procfs.rs` reads PID files and checks them against `/proc` (and finds who
//! holds a port), `control.rs` launches a process, waits until it answers and stops it.
//! Everything is re-exported here, so callers name `process::...` only.

mod control;
mod procfs;

pub use control::{
    is_executable, launch, port_answers, start, stop, Launch, Launched, ProcessSpec, StartOutcome,
    StopOutcome,
};
pub use procfs::{
    listening_inode, parse_proc_stat, port_holder, remove_stale, resident_bytes,
    runs_outdated_binary, state, status, uptime_of, PidRecord, ProcStat, ProcessState,
    ProcessStatus,
};
