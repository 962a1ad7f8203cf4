//! Writing and removing the files the tools keep (PID, ID and cache files): through a
//! temporary file and a rename, so a reader or a crash never sees half of one, and idempotent
//! removal, since every stop is.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes a file of ours through a temporary file and a rename, so that a reader (or a
/// crash) never sees half of it.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// Removes a file of ours; one that is already gone is fine (every stop is idempotent).
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
