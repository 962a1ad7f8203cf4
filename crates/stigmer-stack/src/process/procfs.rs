//! What `/proc` says about the stack's host processes: PID files holding `<pid> <start time>`
//! checked against `/proc/<pid>/stat`, a process's uptime and memory for status, and the
//! process holding a loopback port (`/proc/net/tcp` and the `/proc/*/fd` links).
//!
//! Apart from launching and stopping because it only reads (removing a stale PID file
//! aside): nothing here spawns or signals a process.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

/// The content of a PID file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
}

impl PidRecord {
    /// Parses `"<pid> <start time>"`; anything else (a bare PID included) is `None`.
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse::<i32>().ok().filter(|pid| *pid > 1)?;
        let start_time = fields.next()?.parse::<u64>().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(PidRecord { pid, start_time })
    }

    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie: exited, not yet reaped) and so on.
    pub state: char,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The second field is the command name in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the last `)`
/// (proc(5)).
pub fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) ... field 22 (starttime): index 19 from here.
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

pub(super) fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `record` names a live process that is the one we started. A process whose main
/// thread has exited shows as a zombie while its other threads are still exiting, and they
/// still hold its open files, listening sockets included (seen with Temporal, a Go program:
/// its port answered after its main thread was a zombie). So it is alive until every thread
/// has exited.
pub(super) fn is_ours_and_alive(record: PidRecord) -> bool {
    matches!(proc_stat(record.pid), Some(stat) if stat.start_time == record.start_time)
        && any_thread_running(record.pid)
}

pub(super) fn any_thread_running(pid: i32) -> bool {
    let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.flatten().any(|thread| {
        fs::read_to_string(thread.path().join("stat"))
            .ok()
            .and_then(|stat| parse_proc_stat(&stat))
            .is_some_and(|stat| !matches!(stat.state, 'Z' | 'X'))
    })
}

/// Seconds a process started `start_time` ticks after boot has been running.
pub fn uptime_of(start_time: u64) -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let system_seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let started = start_time as f64 / ticks_per_second as f64;
    Some((system_seconds - started).max(0.0) as u64)
}

/// Resident memory of a process in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn resident_bytes(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// What a PID file says, checked against `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    Absent,
    /// The file exists but names no process of ours; the reason says why.
    Stale {
        reason: String,
    },
    Running {
        record: PidRecord,
    },
}

/// Reads and checks a PID file without changing anything.
pub fn state(pid_file: &Path) -> ProcessState {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return ProcessState::Absent,
        Err(err) => {
            return ProcessState::Stale {
                reason: format!("it cannot be read ({err})"),
            }
        }
    };
    let Some(record) = PidRecord::parse(&text) else {
        return ProcessState::Stale {
            reason: format!("it does not hold `<pid> <start time>`: {:?}", text.trim()),
        };
    };
    match proc_stat(record.pid) {
        None => ProcessState::Stale {
            reason: format!("process {} is gone", record.pid),
        },
        Some(stat) if stat.start_time != record.start_time => ProcessState::Stale {
            reason: format!(
                "process {} is another program that got the same PID later",
                record.pid
            ),
        },
        Some(_) if !any_thread_running(record.pid) => ProcessState::Stale {
            reason: format!("process {} has exited", record.pid),
        },
        Some(_) => ProcessState::Running { record },
    }
}

/// Whether the running process is an older build than `binary`: cargo replaces the file on a
/// rebuild, so the process's `/proc/<pid>/exe` then reads `… (deleted)` or names another file.
pub fn runs_outdated_binary(record: &PidRecord, binary: &Path) -> bool {
    let Ok(running) = fs::read_link(format!("/proc/{}/exe", record.pid)) else {
        return false;
    };
    let wanted = binary
        .canonicalize()
        .unwrap_or_else(|_| binary.to_path_buf());
    running != wanted
}

/// Removes a stale PID file; returns why it was stale, or `None` when there was nothing to do.
pub fn remove_stale(pid_file: &Path) -> Result<Option<String>> {
    match state(pid_file) {
        ProcessState::Stale { reason } => {
            crate::files::remove_if_present(pid_file)?;
            Ok(Some(reason))
        }
        ProcessState::Absent | ProcessState::Running { .. } => Ok(None),
    }
}

/// The process listening on the loopback TCP `port`, from `/proc/net/tcp` and the `/proc/*/fd`
/// links to its socket inode; `None` when `/proc` does not tell (another user's process).
pub fn port_holder(port: u16) -> Option<(i32, String)> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = fs::read_to_string(table).ok()?;
            listening_inode(&text, port)
        })?;
    let link = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str())
        });
        if owns {
            let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_string()));
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table (state `0A`).
pub fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        let listening = fields.get(3)? == &"0A";
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

/// One managed process's part of a status report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessStatus {
    /// `running`, `stale` or `absent`.
    pub state: &'static str,
    pub pid: Option<i32>,
    pub uptime_seconds: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub stale_reason: Option<String>,
    pub log_file: PathBuf,
}

pub fn status(pid_file: &Path, log_file: &Path) -> ProcessStatus {
    let mut status = ProcessStatus {
        state: "absent",
        pid: None,
        uptime_seconds: None,
        resident_bytes: None,
        stale_reason: None,
        log_file: log_file.to_path_buf(),
    };
    match state(pid_file) {
        ProcessState::Absent => {}
        ProcessState::Stale { reason } => {
            status.state = "stale";
            status.stale_reason = Some(reason);
        }
        ProcessState::Running { record } => {
            status.state = "running";
            status.pid = Some(record.pid);
            status.uptime_seconds = uptime_of(record.start_time);
            status.resident_bytes = resident_bytes(record.pid);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_record_round_trip() {
        let record = PidRecord {
            pid: 4242,
            start_time: 123_456,
        };
        assert_eq!(record.to_line(), "4242 123456\n");
        assert_eq!(PidRecord::parse(&record.to_line()), Some(record));
    }

    #[test]
    fn corrupt_pid_files_are_refused() {
        for text in [
            "",
            "4242",
            "4242 x",
            "abc 1",
            "-1 5",
            "0 5",
            "1 5",
            "4242 5 6",
            "99999999999 5",
        ] {
            assert_eq!(PidRecord::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn proc_stat_fields_after_a_tricky_name() {
        // A real line from /proc/<pid>/stat, with a command name holding `) (` and spaces.
        let stat = "4242 (evil) (name x) S 1 4242 4242 0 -1 4194560 300 0 0 0 2 1 0 0 20 0 1 0 987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        assert_eq!(
            parse_proc_stat(stat),
            Some(ProcStat {
                state: 'S',
                start_time: 987_654
            })
        );
        assert_eq!(parse_proc_stat("4242 (cut) S 1 2"), None);
        assert_eq!(parse_proc_stat("no parenthesis"), None);
    }

    #[test]
    fn own_process_is_alive_and_ours() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let stat = proc_stat(pid).unwrap();
        assert!(is_ours_and_alive(PidRecord {
            pid,
            start_time: stat.start_time
        }));
        // Same PID, another start time: PID reuse, so not ours.
        assert!(!is_ours_and_alive(PidRecord {
            pid,
            start_time: stat.start_time + 1
        }));
        assert!(uptime_of(stat.start_time).is_some());
        assert!(resident_bytes(pid).is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn a_listening_socket_is_found_in_the_tcp_table() {
        // Captured from /proc/net/tcp: a listener on 127.0.0.1:7233 (0x1C41) and a connection.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1C41 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listening_inode(table, 7233), Some(123_456));
        assert_eq!(listening_inode(table, 7234), None);
    }
}
