//! One `cargo xtask dev`, `stigmer server start` or stop at a time per data directory.
//!
//! An advisory `flock` on `<data>/stack.lock`: the kernel releases it when its holder exits,
//! however it exits (SIGKILL included), so a crash never leaves the stack locked. The file
//! itself is never removed (removing a lock file lets two holders lock two different files).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;

use anyhow::{Context, Result};

use crate::stack::DataDir;

/// Held for as long as it lives.
pub struct StackLock {
    _file: File,
}

impl StackLock {
    /// Takes the lock, calling `on_wait` with who holds it when it must wait.
    pub fn acquire(
        data_dir: &DataDir,
        holder: &str,
        on_wait: impl FnOnce(&str),
    ) -> Result<StackLock> {
        fs::create_dir_all(data_dir.root())
            .with_context(|| format!("creating {}", data_dir.root().display()))?;
        let path = data_dir.stack_lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
            let current = holder_of(&mut file);
            on_wait(if current.is_empty() {
                "another command"
            } else {
                &current
            });
            flock(&file, libc::LOCK_EX)?;
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| {
                file.write_all(format!("{holder} (pid {})\n", std::process::id()).as_bytes())
            })
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(StackLock { _file: file })
    }
}

impl StackLock {
    /// For commands that only take things down: a data directory that does not exist holds
    /// nothing to protect, and is not created just to lock it.
    pub fn acquire_if_present(
        data_dir: &DataDir,
        holder: &str,
        on_wait: impl FnOnce(&str),
    ) -> Result<Option<StackLock>> {
        if !data_dir.root().exists() {
            return Ok(None);
        }
        StackLock::acquire(data_dir, holder, on_wait).map(Some)
    }
}

/// Who holds the lock, as the holder wrote it. A holder that has just taken the lock writes
/// its name a moment later (the file is empty in between), so an empty file is read again for
/// up to 100 ms; empty after that, the holder is not known.
fn holder_of(file: &mut File) -> String {
    for _ in 0..50 {
        let mut current = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut current).is_ok() {
            let current = current.trim();
            if !current.is_empty() {
                return current.to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    String::new()
}

/// `true` when the lock was taken, `false` when a non-blocking attempt found it held.
fn flock(file: &File, operation: i32) -> Result<bool> {
    loop {
        // SAFETY: flock only acts on the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            // A signal (Ctrl-C handled elsewhere) interrupted the wait: wait again.
            Some(libc::EINTR) => continue,
            _ => return Err(err).context("locking the stack"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_and_learns_who_holds_it() {
        let root = std::env::temp_dir().join(format!("stack-lock-{}", std::process::id()));
        let data_dir = DataDir::at(root.clone());
        let first = StackLock::acquire(&data_dir, "cargo xtask dev", |_| {
            panic!("nothing holds it yet")
        })
        .unwrap();
        let (sender, receiver) = mpsc::channel();
        let waiter = {
            let data_dir = data_dir.clone();
            std::thread::spawn(move || {
                let _second = StackLock::acquire(&data_dir, "stigmer server start", |holder| {
                    sender.send(holder.to_string()).unwrap();
                })
                .unwrap();
            })
        };
        let holder = receiver.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(holder.starts_with("cargo xtask dev (pid "), "{holder}");
        drop(first);
        waiter.join().unwrap();
        fs::remove_dir_all(root).unwrap();
    }
}
