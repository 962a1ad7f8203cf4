//! Which of a package's locked wheels the image's interpreter accepts, and which is best.
//!
//! A wheel's file name carries its compatibility tags
//! (https://packaging.python.org/en/latest/specifications/binary-distribution-format/):
//! `cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl`. An interpreter
//! accepts an ordered list of tags, most specific first; pip installs the accepted wheel whose
//! best tag comes first. The list here is the one `packaging.tags.sys_tags()` yields inside the
//! image (https://packaging.python.org/en/latest/specifications/platform-compatibility-tags/):
//! CPython's own ABI, then `abi3` down to 3.2, then `none`; and for the platform every
//! `manylinux_2_x` from the image's glibc down (PEP 600), with the legacy aliases
//! `manylinux2014` (2.17), `manylinux2010` (2.12) and `manylinux1` (2.5) in their places
//! (PEP 599). `linux_<arch>` and `musllinux` wheels are never accepted: the former is not
//! portable, the latter needs musl, and the image runs glibc.

use anyhow::{bail, Result};

/// The processor architectures the image is built for, as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// From Docker's `linux/amd64` style platform.
    pub fn from_docker_platform(platform: &str) -> Result<Arch> {
        match platform {
            "linux/amd64" => Ok(Arch::Amd64),
            "linux/arm64" | "linux/arm64/v8" => Ok(Arch::Arm64),
            other => bail!(
                "the Docker engine's platform {other} is not one the agent-runner image is built for \
                 (linux/amd64, linux/arm64): use an engine on one of those"
            ),
        }
    }

    /// Python's `platform.machine()` inside the image, as used in wheel tags.
    pub fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// The directory name of this platform's wheel cache.
    pub fn cache_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "linux-amd64",
            Arch::Arm64 => "linux-arm64",
        }
    }
}

/// What decides which wheels the image's interpreter accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetPlatform {
    pub arch: Arch,
    /// The image's glibc, `(2, 36)` on Debian bookworm.
    pub glibc: (u32, u32),
    /// The image's CPython, `(3, 11)`.
    pub python: (u32, u32),
}

impl TargetPlatform {
    /// The platform tags, most specific first.
    pub fn platform_tags(&self) -> Vec<String> {
        let machine = self.arch.machine();
        // packaging/_manylinux.py: nothing older than glibc 2.17 exists for aarch64; on x86
        // manylinux goes back to 2.5 (manylinux1).
        let oldest = match self.arch {
            Arch::Amd64 => 5,
            Arch::Arm64 => 17,
        };
        let mut tags = Vec::new();
        if self.glibc.0 != 2 {
            return tags;
        }
        for minor in (oldest..=self.glibc.1).rev() {
            tags.push(format!("manylinux_2_{minor}_{machine}"));
            let legacy = match (minor, self.arch) {
                (17, _) => Some("manylinux2014"),
                (12, Arch::Amd64) => Some("manylinux2010"),
                (5, Arch::Amd64) => Some("manylinux1"),
                _ => None,
            };
            if let Some(legacy) = legacy {
                tags.push(format!("{legacy}_{machine}"));
            }
        }
        tags
    }

    /// Every `python-abi-platform` tag the image accepts, most preferred first, as
    /// `packaging.tags.sys_tags()` orders them for CPython.
    pub fn supported_tags(&self) -> Vec<String> {
        let (major, minor) = self.python;
        let platforms = self.platform_tags();
        let interpreter = format!("cp{major}{minor}");
        let mut tags = Vec::new();
        for abi in [interpreter.as_str(), "abi3", "none"] {
            for platform in &platforms {
                tags.push(format!("{interpreter}-{abi}-{platform}"));
            }
        }
        // abi3 wheels built for an older CPython 3 load on this one (PEP 384).
        for older in (2..minor).rev() {
            for platform in &platforms {
                tags.push(format!("cp{major}{older}-abi3-{platform}"));
            }
        }
        let mut pure = vec![format!("py{major}{minor}"), format!("py{major}")];
        pure.extend((0..minor).rev().map(|older| format!("py{major}{older}")));
        for python in &pure {
            for platform in &platforms {
                tags.push(format!("{python}-none-{platform}"));
            }
        }
        tags.push(format!("{interpreter}-none-any"));
        for python in &pure {
            tags.push(format!("{python}-none-any"));
        }
        tags
    }
}

/// The compressed tag set of a wheel file name, expanded to single tags.
pub fn wheel_tags(file: &str) -> Option<Vec<String>> {
    let stem = file.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) {
        return None;
    }
    let [python, abi, platform] = parts[parts.len() - 3..] else {
        return None;
    };
    let mut tags = Vec::new();
    for python in python.split('.') {
        for abi in abi.split('.') {
            for platform in platform.split('.') {
                tags.push(format!("{python}-{abi}-{platform}"));
            }
        }
    }
    Some(tags)
}

/// The best of `files` for the image: the wheel whose most preferred tag comes first in
/// `supported` (the list [`TargetPlatform::supported_tags`] makes). Ties keep lock order.
pub fn best_wheel<'a>(
    files: impl IntoIterator<Item = &'a str>,
    supported: &[String],
) -> Option<&'a str> {
    files
        .into_iter()
        .filter_map(|file| {
            let rank = wheel_tags(file)?
                .iter()
                .filter_map(|tag| supported.iter().position(|s| s == tag))
                .min()?;
            Some((rank, file))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, file)| file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bookworm(arch: Arch) -> TargetPlatform {
        TargetPlatform {
            arch,
            glibc: (2, 36),
            python: (3, 11),
        }
    }

    #[test]
    fn platform_tags_of_bookworm_on_arm64_are_exact() {
        let tags = bookworm(Arch::Arm64).platform_tags();
        let mut expected: Vec<String> = (17..=36)
            .rev()
            .map(|minor| format!("manylinux_2_{minor}_aarch64"))
            .collect();
        expected.push("manylinux2014_aarch64".into());
        assert_eq!(tags, expected);
    }

    #[test]
    fn platform_tags_of_bookworm_on_amd64_reach_manylinux1() {
        let tags = bookworm(Arch::Amd64).platform_tags();
        assert_eq!(tags.len(), 32 + 3);
        assert_eq!(tags[0], "manylinux_2_36_x86_64");
        assert_eq!(
            tags[19..=20],
            [
                "manylinux_2_17_x86_64".to_string(),
                "manylinux2014_x86_64".to_string()
            ]
        );
        assert_eq!(tags.last().map(String::as_str), Some("manylinux1_x86_64"));
        assert!(tags.contains(&"manylinux2010_x86_64".to_string()));
        assert!(!tags
            .iter()
            .any(|t| t.starts_with("linux_") || t.contains("musllinux")));
    }

    #[test]
    fn supported_tags_are_ordered_like_packaging() {
        let tags = bookworm(Arch::Amd64).supported_tags();
        let platforms = 35;
        assert_eq!(tags[0], "cp311-cp311-manylinux_2_36_x86_64");
        assert_eq!(tags[platforms], "cp311-abi3-manylinux_2_36_x86_64");
        assert_eq!(tags[2 * platforms], "cp311-none-manylinux_2_36_x86_64");
        assert_eq!(tags[3 * platforms], "cp310-abi3-manylinux_2_36_x86_64");
        let tail: Vec<&str> = tags[tags.len() - 14..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "cp311-none-any",
                "py311-none-any",
                "py3-none-any",
                "py310-none-any",
                "py39-none-any",
                "py38-none-any",
                "py37-none-any",
                "py36-none-any",
                "py35-none-any",
                "py34-none-any",
                "py33-none-any",
                "py32-none-any",
                "py31-none-any",
                "py30-none-any",
            ]
        );
        assert!(tags.contains(&"cp32-abi3-manylinux1_x86_64".to_string()));
        assert!(!tags
            .iter()
            .any(|t| t.starts_with("cp312") || t.starts_with("cp311-cp312")));
    }

    #[test]
    fn compressed_tags_expand() {
        assert_eq!(
            wheel_tags("cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"),
            Some(vec![
                "cp311-cp311-manylinux2014_x86_64".to_string(),
                "cp311-cp311-manylinux_2_17_x86_64".to_string()
            ])
        );
        assert_eq!(
            wheel_tags("colorama-0.4.6-py2.py3-none-any.whl"),
            Some(vec!["py2-none-any".to_string(), "py3-none-any".to_string()])
        );
        assert_eq!(
            wheel_tags("pkg-1.0-1build-py3-none-any.whl"),
            Some(vec!["py3-none-any".to_string()])
        );
        assert_eq!(wheel_tags("pkg-1.0.tar.gz"), None);
    }

    /// cffi 2.1.1's wheels as the realistic lock lists them (a selection): the case that
    /// broke when pip was given `--platform manylinux_2_36_x86_64` alone.
    const CFFI: [&str; 8] = [
        "cffi-2.1.1-cp311-cp311-macosx_10_15_x86_64.whl",
        "cffi-2.1.1-cp311-cp311-macosx_11_0_arm64.whl",
        "cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
        "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "cffi-2.1.1-cp311-cp311-musllinux_1_2_x86_64.whl",
        "cffi-2.1.1-cp311-cp311-win_amd64.whl",
        "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "cffi-2.1.1.tar.gz",
    ];

    #[test]
    fn manylinux_2_17_wheels_are_chosen_for_each_arch() {
        assert_eq!(
            best_wheel(CFFI, &bookworm(Arch::Amd64).supported_tags()),
            Some("cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
        );
        assert_eq!(
            best_wheel(CFFI, &bookworm(Arch::Arm64).supported_tags()),
            Some("cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl")
        );
    }

    #[test]
    fn newer_manylinux_beats_older_and_abi3_beats_pure() {
        let files = [
            "cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            "cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl",
            "cryptography-50.0.2-cp311-abi3-manylinux_2_38_x86_64.whl",
        ];
        assert_eq!(
            best_wheel(files, &bookworm(Arch::Amd64).supported_tags()),
            Some("cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl")
        );
        let files = [
            "protobuf-7.36.2-py3-none-any.whl",
            "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
        ];
        assert_eq!(
            best_wheel(files, &bookworm(Arch::Amd64).supported_tags()),
            Some("protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl")
        );
        let files = ["charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl"];
        assert_eq!(
            best_wheel(files, &bookworm(Arch::Amd64).supported_tags()),
            Some(files[0])
        );
    }

    #[test]
    fn nothing_fits_when_only_other_platforms_are_locked() {
        let files = [
            "pkg-1.0-cp311-cp311-win_amd64.whl",
            "pkg-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",
            "pkg-1.0-cp311-cp311-linux_x86_64.whl",
            "pkg-1.0-cp311-cp311-manylinux_2_39_x86_64.whl",
        ];
        assert_eq!(
            best_wheel(files, &bookworm(Arch::Amd64).supported_tags()),
            None
        );
    }

    #[test]
    fn docker_platforms_map_to_arches() {
        assert_eq!(
            Arch::from_docker_platform("linux/amd64").unwrap(),
            Arch::Amd64
        );
        assert_eq!(
            Arch::from_docker_platform("linux/arm64").unwrap(),
            Arch::Arm64
        );
        let err = Arch::from_docker_platform("windows/amd64").unwrap_err();
        assert!(format!("{err}").contains("windows/amd64"));
    }
}
