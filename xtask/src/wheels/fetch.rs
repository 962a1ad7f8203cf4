//! Fetching with the host's pip: the locked files the cache lacks, checked against the
//! lock's hashes, and the wheels of the build requirements of sources built in the image.
//! pip is asked for the image's interpreter and platform, never the host's.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stigmer_stack::exec;
use stigmer_stack::runner::inputs::sha256_hex;
use stigmer_stack::ui::progress::Phase;

use super::lock::{Install, LockedArtifact};
use super::target::Target;

/// The index artifacts the cache lacks, fetched with pip and checked against the lock.
pub fn fetch_missing(
    cache: &Path,
    installs: &[Install],
    target: &Target,
    phase: &Phase,
) -> Result<usize> {
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let missing: Vec<&LockedArtifact> = installs
        .iter()
        .filter_map(|install| match install {
            Install::Wheel(artifact) | Install::Sdist(artifact) => Some(artifact),
            _ => None,
        })
        .filter(|artifact| !cache.join(&artifact.file).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    phase.line(&format!("fetching {} locked files with pip", missing.len()));
    let incoming = cache.join(".incoming");
    let _ = fs::remove_dir_all(&incoming);
    fs::create_dir_all(&incoming).with_context(|| format!("creating {}", incoming.display()))?;
    let python = python_on_host()?;
    // One pip run per index and kind: wheels are fetched for the image's tags, source
    // archives as they are.
    let mut groups: BTreeMap<(Option<String>, bool), Vec<&LockedArtifact>> = BTreeMap::new();
    for artifact in &missing {
        let is_wheel = artifact.file.ends_with(".whl");
        groups
            .entry((artifact.index.clone(), is_wheel))
            .or_default()
            .push(artifact);
    }
    for ((index, is_wheel), artifacts) in groups {
        let requirements_path = incoming.join("requirements.txt");
        fs::write(&requirements_path, download_requirements(&artifacts))
            .with_context(|| format!("writing {}", requirements_path.display()))?;
        let args = pip_download_args(
            &incoming,
            &requirements_path,
            index.as_deref(),
            is_wheel.then_some(target),
        );
        // In the cache, which holds only our files: `python -m` puts its working directory
        // first on `sys.path`, so a `pip/` in the user's directory would run instead.
        let mut pip = vec!["-m".to_string(), "pip".to_string()];
        pip.extend(args);
        exec::run(&python, &pip, cache, &[]).with_context(|| {
            format!(
                "fetching {} with pip (the host needs Python 3 with pip and access to {})",
                artifacts
                    .iter()
                    .map(|a| a.file.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                index.as_deref().unwrap_or("PyPI")
            )
        })?;
    }
    for artifact in &missing {
        let from = incoming.join(&artifact.file);
        let bytes = fs::read(&from).with_context(|| {
            format!(
                "pip did not fetch {} for {} {}: check that the index still serves it",
                artifact.file, artifact.name, artifact.version
            )
        })?;
        let found = sha256_hex(&bytes);
        if found != artifact.sha256 {
            bail!(
                "{} does not match poetry.lock (sha256 {}…, the lock says {}…): the index serves other bytes \
                 than were locked; run `poetry lock` again if the change is expected",
                artifact.file,
                &found[..12],
                &artifact.sha256[..artifact.sha256.len().min(12)]
            );
        }
        fs::rename(&from, cache.join(&artifact.file))
            .with_context(|| format!("moving {} into the cache", artifact.file))?;
    }
    let _ = fs::remove_dir_all(&incoming);
    Ok(missing.len())
}

/// `name==version --hash=sha256:...` for exactly the chosen file: pip keeps only the
/// candidates whose hash is allowed, so it fetches that file and no other.
pub fn download_requirements(artifacts: &[&LockedArtifact]) -> String {
    artifacts
        .iter()
        .map(|a| format!("{}=={} --hash=sha256:{}\n", a.name, a.version, a.sha256))
        .collect()
}

/// `pip download` arguments; with a target, for the image's interpreter and platform (every
/// tag it accepts, since pip takes `--platform` literally: given `manylinux_2_36_x86_64`
/// alone it refuses a `manylinux_2_17` wheel), else for source archives.
pub fn pip_download_args(
    dest: &Path,
    requirements: &Path,
    index: Option<&str>,
    wheels_for: Option<&Target>,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--require-hashes",
    ]
    .map(String::from)
    .to_vec();
    if let Some(index) = index {
        args.extend(["--index-url".to_string(), index.to_string()]);
    }
    match wheels_for {
        Some(target) => args.extend(target_args(target)),
        None => args.extend(["--no-binary=:all:".to_string()]),
    }
    args.extend([
        "--dest".to_string(),
        dest.display().to_string(),
        "--requirement".to_string(),
        requirements.display().to_string(),
    ]);
    args
}

/// pip's options for "wheels for the image's interpreter", whatever the host runs.
pub fn target_args(target: &Target) -> Vec<String> {
    let (major, minor) = target.platform.python;
    let mut args: Vec<String> = vec![
        "--only-binary=:all:".into(),
        "--python-version".into(),
        format!("{major}.{minor}"),
        "--implementation".into(),
        "cp".into(),
    ];
    for abi in [format!("cp{major}{minor}"), "abi3".into(), "none".into()] {
        args.extend(["--abi".to_string(), abi]);
    }
    for platform in target.platform.platform_tags() {
        args.extend(["--platform".to_string(), platform]);
    }
    args
}

/// Wheels of `requirements` (and what they need) for the image, fetched once per distinct
/// set into the cache. They are not in `poetry.lock` (Poetry locks what a project runs, not
/// what builds it), so unlike the locked files they carry no hash to check.
pub fn fetch_build_requirements(
    cache: &Path,
    requirements: &[String],
    target: &Target,
    phase: &Phase,
) -> Result<Option<PathBuf>> {
    if requirements.is_empty() {
        return Ok(None);
    }
    let key = sha256_hex(requirements.join("\n").as_bytes());
    let dir = cache.join("build").join(&key[..16]);
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(Some(dir));
    }
    phase.line(&format!(
        "fetching build requirements: {}",
        requirements.join(", ")
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let python = python_on_host()?;
    let mut pip: Vec<String> = [
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
    ]
    .map(String::from)
    .to_vec();
    pip.extend(target_args(target));
    pip.extend(["--dest".to_string(), dir.display().to_string()]);
    pip.extend(requirements.iter().cloned());
    exec::run(&python, &pip, cache, &[]).context(
        "fetching the build requirements of the path dependencies and source archives with pip",
    )?;
    fs::write(&done, requirements.join("\n"))
        .with_context(|| format!("writing {}", done.display()))?;
    Ok(Some(dir))
}

pub fn python_on_host() -> Result<String> {
    for candidate in ["python3", "python"] {
        if exec::succeeds(candidate, &["-m", "pip", "--version"]) {
            return Ok(candidate.to_string());
        }
    }
    bail!("no Python 3 with pip on PATH: install it (`apt-get install python3-pip`, or python.org) so the locked wheels can be fetched")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wheels::target;

    #[test]
    fn pip_is_asked_for_the_image_not_the_host() {
        let target = target::tests::bookworm_arm64();
        let args = pip_download_args(
            Path::new("/cache/.incoming"),
            Path::new("/cache/.incoming/requirements.txt"),
            Some("https://pypi.org/simple"),
            Some(&target),
        );
        let mut expected: Vec<String> = [
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--require-hashes",
            "--index-url",
            "https://pypi.org/simple",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        .map(String::from)
        .to_vec();
        for minor in (17..=36).rev() {
            expected.extend(["--platform".into(), format!("manylinux_2_{minor}_aarch64")]);
        }
        expected.extend(["--platform".into(), "manylinux2014_aarch64".into()]);
        expected.extend(
            [
                "--dest",
                "/cache/.incoming",
                "--requirement",
                "/cache/.incoming/requirements.txt",
            ]
            .map(String::from),
        );
        assert_eq!(args, expected);
    }

    #[test]
    fn source_archives_are_fetched_as_they_are() {
        let args = pip_download_args(Path::new("/d"), Path::new("/r"), None, None);
        assert_eq!(
            args,
            [
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--require-hashes",
                "--no-binary=:all:",
                "--dest",
                "/d",
                "--requirement",
                "/r"
            ]
        );
    }

    #[test]
    fn download_requirements_pin_the_chosen_file() {
        let artifact = LockedArtifact {
            name: "cffi".into(),
            version: "2.1.1".into(),
            file: "cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl".into(),
            sha256: "ab".repeat(32),
            index: None,
        };
        assert_eq!(
            download_requirements(&[&artifact]),
            format!("cffi==2.1.1 --hash=sha256:{}\n", "ab".repeat(32))
        );
    }
}
