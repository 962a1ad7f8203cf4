//! The environment the image's interpreter runs in, which every wheel and marker is judged
//! against: never the host's.
//!
//! It is read once per base image from the base image itself (one short `docker run` of its
//! `python3`, with no network) and kept under `target/xtask/wheels/targets/`, because the
//! markers real locks carry depend on more than "Linux, CPython 3.11": the realistic lock
//! needs `async-timeout` only where `python_full_version < "3.11.3"`, which holds on Debian
//! bookworm's Python 3.11.2 and not on `python:3.11-slim`'s 3.11.x. Everything that decides
//! from a [`Target`] is pure, so tests pass one in and need no engine.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use stigmer_stack::docker::{args, Docker};

use super::markers::{normalize_name, MarkerEnvironment};
use super::tags::{Arch, TargetPlatform};

/// The image's interpreter: its wheel tags and its marker values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub platform: TargetPlatform,
    pub markers: MarkerEnvironment,
}

impl Target {
    /// One line for messages: `CPython 3.11.2, glibc 2.36, x86_64`.
    pub fn describe(&self) -> String {
        format!(
            "CPython {}, glibc {}.{}, {}",
            self.markers.python_full_version,
            self.platform.glibc.0,
            self.platform.glibc.1,
            self.platform.arch.machine()
        )
    }

    /// The same interpreter with the root project's `extras` switched on.
    pub fn with_extras(mut self, extras: &[String]) -> Target {
        self.markers.extras = extras.iter().map(|e| normalize_name(e)).collect();
        self
    }
}

/// Prints what [`Target`] needs, from inside the base image. `implementation_version` is
/// PEP 508's `format_full_version(sys.implementation.version)`.
const PROBE: &str = r#"import json, os, platform, sys
info = sys.implementation.version
impl = "%d.%d.%d" % (info.major, info.minor, info.micro)
if info.releaselevel != "final":
    impl += info.releaselevel[0] + str(info.serial)
print(json.dumps({
    "os_name": os.name,
    "sys_platform": sys.platform,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_version": "%d.%d" % sys.version_info[:2],
    "python_full_version": platform.python_version(),
    "implementation_name": sys.implementation.name,
    "implementation_version": impl,
    "glibc": os.confstr("CS_GNU_LIBC_VERSION") or "",
}))
"#;

#[derive(Deserialize)]
struct Probed {
    #[serde(flatten)]
    markers: MarkerEnvironment,
    glibc: String,
}

/// The probe's output → a [`Target`] for the engine's `arch`.
pub fn parse_probe(json: &str, arch: Arch) -> Result<Target> {
    let probed: Probed = serde_json::from_str(json.trim())
        .context("reading what the base image's python3 printed")?;
    let glibc = probed
        .glibc
        .strip_prefix("glibc ")
        .and_then(|version| version.split_once('.'))
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    let Some(glibc) = glibc else {
        bail!(
            "the base image's C library is `{}`, not glibc: the image installs manylinux wheels, \
             which need glibc; use a Debian-based image such as python:3.11-slim",
            probed.glibc
        );
    };
    let python = {
        let (major, minor) = probed
            .markers
            .python_version
            .split_once('.')
            .context("python_version has a dot")?;
        (major.parse()?, minor.parse()?)
    };
    if probed.markers.implementation_name != "cpython" {
        bail!(
            "the base image's python3 is {}, not CPython: use a CPython image such as python:3.11-slim",
            probed.markers.implementation_name
        );
    }
    if probed.markers.platform_machine != arch.machine() {
        bail!(
            "the base image runs as {} on an engine for {}: use a base image of the engine's architecture",
            probed.markers.platform_machine,
            arch.machine()
        );
    }
    Ok(Target {
        platform: TargetPlatform {
            arch,
            glibc,
            python,
        },
        markers: MarkerEnvironment {
            extras: BTreeSet::new(),
            ..probed.markers
        },
    })
}

/// The target of `base_image_id`, probed once and then read from `cache_dir`.
pub fn probe(docker: &Docker, base_image_id: &str, arch: Arch, cache_dir: &Path) -> Result<Target> {
    let key = base_image_id
        .strip_prefix("sha256:")
        .unwrap_or(base_image_id);
    let path = cache_dir.join("targets").join(format!("{key}.json"));
    if let Some(target) = fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Target>(&bytes).ok())
        .filter(|target| target.platform.arch == arch)
    {
        return Ok(target);
    }
    let run = args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python3",
        base_image_id,
        "-c",
        PROBE,
    ]);
    let captured = docker.capture(&run)?;
    if !captured.success {
        bail!(
            "running python3 in the base image failed: {}; the base image must have python3 (python:3.11-slim does)",
            captured.stderr_tail().trim()
        );
    }
    let target = parse_probe(&captured.stdout, arch)?;
    if let Some(dir) = path.parent() {
        // Only a cache: without it the base image is probed again next time.
        let _ = fs::create_dir_all(dir)
            .and_then(|()| fs::write(&path, serde_json::to_vec(&target).unwrap_or_default()));
    }
    Ok(target)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// What the probe printed in `stigmer-python-base:3.11-bookworm` (Debian's Python 3.11.2).
    pub const BOOKWORM_PROBE: &str = r##"{"os_name": "posix", "sys_platform": "linux", "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "6.1.0-28-cloud-amd64", "platform_system": "Linux", "platform_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)", "python_version": "3.11", "python_full_version": "3.11.2", "implementation_name": "cpython", "implementation_version": "3.11.2", "glibc": "glibc 2.36"}"##;

    /// The image built on an amd64 engine from Debian bookworm's Python.
    pub fn bookworm_amd64() -> Target {
        parse_probe(BOOKWORM_PROBE, Arch::Amd64).unwrap()
    }

    /// The same base on an arm64 engine (a Mac with Apple silicon, an arm64 server).
    pub fn bookworm_arm64() -> Target {
        let json = BOOKWORM_PROBE.replace("x86_64", "aarch64");
        parse_probe(&json, Arch::Arm64).unwrap()
    }

    #[test]
    fn the_probe_reads_into_a_target() {
        let target = bookworm_amd64();
        assert_eq!(
            target.platform,
            TargetPlatform {
                arch: Arch::Amd64,
                glibc: (2, 36),
                python: (3, 11)
            }
        );
        assert_eq!(target.markers.python_full_version, "3.11.2");
        assert_eq!(target.describe(), "CPython 3.11.2, glibc 2.36, x86_64");
        assert!(target.markers.extras.is_empty());
    }

    #[test]
    fn musl_other_interpreters_and_other_arches_are_refused() {
        let musl = BOOKWORM_PROBE.replace("glibc 2.36", "");
        assert!(
            format!("{:#}", parse_probe(&musl, Arch::Amd64).unwrap_err()).contains("not glibc")
        );
        let pypy = BOOKWORM_PROBE.replace(
            "\"implementation_name\": \"cpython\"",
            "\"implementation_name\": \"pypy\"",
        );
        assert!(
            format!("{:#}", parse_probe(&pypy, Arch::Amd64).unwrap_err()).contains("not CPython")
        );
        let err = parse_probe(BOOKWORM_PROBE, Arch::Arm64).unwrap_err();
        assert!(
            format!("{err:#}").contains("x86_64 on an engine for aarch64"),
            "{err:#}"
        );
    }
}
