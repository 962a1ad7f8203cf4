//! The build context's dependencies: what `poetry.lock` pins for the image, fetched by the
//! host and laid out in `wheels/` beside the Dockerfile.
//!
//! Containers on our build machines cannot reach PyPI over TLS (the egress proxy's CA is
//! only in the host's trust store), so `docker build` downloads nothing: the host decides
//! from the lock what the image needs, judged against the image's interpreter and never the
//! host's (see [`target`], [`markers`], [`tags`]), fetches exactly those files with pip into a
//! cache per platform (`target/xtask/wheels/linux-amd64/`, so switching architecture fetches
//! again and switching back does not), checks them against the lock's SHA-256 hashes, and
//! gives the build context exactly the selected files:
//!
//! | in `wheels/` | what | installed by the builder stage |
//! | --- | --- | --- |
//! | `index/*.whl`, `index/requirements.txt` | index wheels, one `name==version --hash` line each | into `/opt/venv` by `pip install --require-hashes` (their hashes checked a second time) |
//! | `local/sdist/` | source archives of packages with no wheel for the image | built, into `/opt/local` |
//! | `local/path/<name>/` | path dependencies, copied | built, into `/opt/local`, non-editable |
//! | `local/files/` | `{file = ...}` archives | into `/opt/local` |
//! | `local/build/` | wheels of their build requirements (`[build-system] requires`) | pip's build isolation, from `--find-links` |
//! | `local/local.txt` | `name /wheels/local/...` for each of the three above | |
//! | `local/compilers.txt` | Debian packages a source build needs (empty when every one is pure Python) | `apt-get`, builder stage only |
//!
//! `index/` and `local/` are copied and installed in separate steps, and `/opt/local` (on
//! `sys.path` through a `.pth` file) reaches the runtime stage late, so an edit in a path
//! dependency reuses the venv layer.
//! The same layout serves `docker-compose build` once xtask has prepared it.

pub mod lock;
pub mod markers;
pub mod tags;
pub mod target;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use runner_container::docker::Docker;
use runner_container::inputs::sha256_hex;
use runner_container::progress::Phase;
use xshell::{cmd, Shell};

pub use lock::{check_lock_is_fresh, read_lock, requirements, Install, LockedArtifact};
use tags::Arch;
use target::Target;

/// The build context's directory for dependencies, beside the Dockerfile; the Dockerfile
/// copies it to `/wheels/`.
pub const CONTEXT_DIR: &str = "wheels";
/// The files and directories in [`CONTEXT_DIR`] the Dockerfile reads by name (a test checks
/// that it does, and that `.dockerignore` lets them through).
const INDEX_DIR: &str = "index";
const LOCAL_DIR: &str = "local";
const REQUIREMENTS: &str = "index/requirements.txt";
const LOCAL_LIST: &str = "local/local.txt";
const COMPILERS_LIST: &str = "local/compilers.txt";
const BUILD_DIR: &str = "local/build";

/// File extensions of sources a compiler turns into extension modules (C, C++, Cython,
/// Fortran). A source with none of them builds without a compiler whatever its backend.
const NATIVE_SOURCES: [&str; 8] = [".c", ".cc", ".cpp", ".cxx", ".pyx", ".f", ".f90", ".rs"];

/// Whether a file list holds native sources.
pub fn has_native_sources<'a>(files: impl IntoIterator<Item = &'a str>) -> bool {
    files.into_iter().any(|file| {
        NATIVE_SOURCES
            .iter()
            .any(|ext| file.to_ascii_lowercase().ends_with(ext))
    })
}

/// Debian packages the builder stage installs when a source may compile C.
const COMPILERS: &str = "gcc libc6-dev\n";

/// Where wheels and targets are cached: `target/xtask/wheels/`.
pub fn cache_root(project_cache_dir: &Path) -> PathBuf {
    project_cache_dir.join("wheels")
}

/// Makes `runner_dir/wheels/` hold exactly what the image installs for `base_image_id` on
/// the engine's `platform`, fetching into the cache only what it lacks.
pub fn prepare(
    sh: &Shell,
    docker: &Docker,
    project_cache_dir: &Path,
    runner_dir: &Path,
    base_image_id: &str,
    platform: &str,
    phase: &Phase,
) -> Result<()> {
    check_lock_is_fresh(runner_dir)?;
    let packages = read_lock(runner_dir)?;
    let arch = Arch::from_docker_platform(platform)?;
    let root = cache_root(project_cache_dir);
    let target =
        target::probe(docker, base_image_id, arch, &root)?.with_extras(&root_extras(runner_dir)?);
    let installs = lock::plan(&packages, &["main"], &target, runner_dir)?;
    phase.line(&format!(
        "{} packages for {}: {}",
        installs.len(),
        target.describe(),
        summary(&installs)
    ));
    let cache = root.join(arch.cache_name());
    let started = Instant::now();
    let fetched = fetch_missing(sh, &cache, &installs, &target, phase)?;
    let local_sources = local_sources(sh, &installs, &cache)?;
    let build_requirements: Vec<String> = {
        let mut all: Vec<String> = local_sources
            .iter()
            .flat_map(|s| s.build.requires.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let build_dir = fetch_build_requirements(sh, &cache, &build_requirements, &target, phase)?;
    let fetch_time = started.elapsed();
    if fetched > 0 {
        phase.line(&format!(
            "fetched {fetched} files in {:.1} s",
            fetch_time.as_secs_f64()
        ));
    }
    write_context(
        runner_dir,
        &cache,
        &installs,
        &local_sources,
        build_dir.as_deref(),
    )
}

/// `12 wheels, 1 source archive, 2 path dependencies`.
fn summary(installs: &[Install]) -> String {
    let count = |f: fn(&Install) -> bool| installs.iter().filter(|i| f(i)).count();
    let parts = [
        (count(|i| matches!(i, Install::Wheel(_))), "wheel", "wheels"),
        (
            count(|i| matches!(i, Install::Sdist(_))),
            "source archive",
            "source archives",
        ),
        (
            count(|i| matches!(i, Install::Path { .. })),
            "path dependency",
            "path dependencies",
        ),
        (
            count(|i| matches!(i, Install::File { .. })),
            "local file",
            "local files",
        ),
    ];
    parts
        .iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The root project's extras the image installs: `[tool.stigmer.image] extras` in
/// `pyproject.toml` (an input of the rebuild decision), none by default.
pub fn root_extras(runner_dir: &Path) -> Result<Vec<String>> {
    let path = runner_dir.join("pyproject.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let pyproject: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let extras = pyproject
        .get("tool")
        .and_then(|t| t.get("stigmer"))
        .and_then(|s| s.get("image"))
        .and_then(|i| i.get("extras"));
    match extras {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_string).with_context(|| {
                    format!(
                        "[tool.stigmer.image] extras in {} must be a list of names",
                        path.display()
                    )
                })
            })
            .collect(),
        Some(_) => bail!(
            "[tool.stigmer.image] extras in {} must be a list of names",
            path.display()
        ),
    }
}

/// The index artifacts the cache lacks, fetched with pip and checked against the lock.
fn fetch_missing(
    sh: &Shell,
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
    let python = python_on_host(sh)?;
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
        cmd!(sh, "{python} -m pip {args...}")
            .quiet()
            .run()
            .with_context(|| {
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
fn target_args(target: &Target) -> Vec<String> {
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

/// A source the builder stage builds: a path dependency, a source archive or a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalSource {
    name: String,
    /// Where the build context keeps it, relative to `wheels/local/`.
    context_path: String,
    build: BuildSystem,
}

/// A source's `[build-system]` table (PEP 517/518) and whether building it compiles.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildSystem {
    pub requires: Vec<String>,
    pub backend: String,
    /// Whether the source holds native code, so the builder stage needs a compiler.
    pub compiles: bool,
}

impl BuildSystem {
    /// From a `pyproject.toml`'s text; PEP 517's defaults (setuptools' legacy backend) when it
    /// has none or no `[build-system]`
    /// (https://pip.pypa.io/en/stable/reference/build-system/pyproject-toml/#fallback-behaviour).
    pub fn from_pyproject(text: Option<&str>, compiles: bool) -> Result<BuildSystem> {
        let pyproject: toml::Value = match text {
            Some(text) => toml::from_str(text).context("reading pyproject.toml")?,
            None => toml::Value::Table(Default::default()),
        };
        let system = pyproject.get("build-system");
        let mut requires: Vec<String> = match system
            .and_then(|s| s.get("requires"))
            .and_then(|r| r.as_array())
        {
            Some(items) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
            None => vec!["setuptools>=40.8.0".to_string()],
        };
        let backend = system
            .and_then(|s| s.get("build-backend"))
            .and_then(|b| b.as_str())
            .unwrap_or("setuptools.build_meta:__legacy__")
            .to_string();
        // setuptools before 70.1 asks for `wheel` when building one; offering it is harmless.
        if backend.starts_with("setuptools") && !requires.iter().any(|r| r.starts_with("wheel")) {
            requires.push("wheel".to_string());
        }
        Ok(BuildSystem {
            requires,
            backend,
            compiles,
        })
    }
}

/// Reads the build system of every source the builder stage builds.
fn local_sources(sh: &Shell, installs: &[Install], cache: &Path) -> Result<Vec<LocalSource>> {
    let mut sources = Vec::new();
    for install in installs {
        let (name, context_path, build) = match install {
            Install::Wheel(_) => continue,
            Install::Path { name, dir, .. } => {
                if !dir.join("pyproject.toml").is_file() && !dir.join("setup.py").is_file() {
                    bail!(
                        "the path dependency {name} points at {}, which has no pyproject.toml or setup.py: \
                         fix its path in pyproject.toml and run `poetry lock`",
                        dir.display()
                    );
                }
                let text = fs::read_to_string(dir.join("pyproject.toml")).ok();
                let files = runner_container::inputs::path_dependency_files(dir)?;
                let compiles = has_native_sources(files.iter().filter_map(|f| f.to_str()));
                let build =
                    BuildSystem::from_pyproject(text.as_deref(), compiles).with_context(|| {
                        format!("reading the build system of the path dependency {name}")
                    })?;
                (
                    name.clone(),
                    format!("path/{}", markers::normalize_name(name)),
                    build,
                )
            }
            Install::Sdist(artifact) => {
                let build = cached_archive_build_system(sh, &cache.join(&artifact.file))
                    .with_context(|| {
                        format!(
                            "reading the build system of {} {}",
                            artifact.name, artifact.version
                        )
                    })?;
                (
                    artifact.name.clone(),
                    format!("sdist/{}", artifact.file),
                    build,
                )
            }
            Install::File { name, path, .. } => {
                let file = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let build = if file.ends_with(".whl") {
                    BuildSystem {
                        requires: Vec::new(),
                        backend: String::new(),
                        compiles: false,
                    }
                } else {
                    archive_build_system(sh, path)
                        .with_context(|| format!("reading the build system of {name}"))?
                };
                (name.clone(), format!("files/{file}"), build)
            }
        };
        sources.push(LocalSource {
            name,
            context_path,
            build,
        });
    }
    Ok(sources)
}

/// [`archive_build_system`], kept beside the archive in the cache: an archive checked
/// against the lock never changes, and reading it costs a Python start.
fn cached_archive_build_system(sh: &Shell, archive: &Path) -> Result<BuildSystem> {
    let mut name = archive.as_os_str().to_owned();
    name.push(".build-system.json");
    let cached = PathBuf::from(name);
    if let Some(build) = fs::read(&cached)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        return Ok(build);
    }
    let build = archive_build_system(sh, archive)?;
    // Only a cache: without it the archive is read again next time.
    let _ = fs::write(&cached, serde_json::to_vec(&build).unwrap_or_default());
    Ok(build)
}

/// The build system of a source archive and its file list, read by the host's Python
/// (`tarfile` and `zipfile`).
fn archive_build_system(sh: &Shell, archive: &Path) -> Result<BuildSystem> {
    const READ: &str = r#"import json, sys, tarfile, zipfile
path = sys.argv[1]
if path.endswith(".zip"):
    z = zipfile.ZipFile(path)
    files = z.namelist()
    read = lambda name: z.read(name)
else:
    t = tarfile.open(path)
    files = [m.name for m in t.getmembers() if m.isfile()]
    read = lambda name: t.extractfile(name).read()
top = [n for n in files if n.count("/") == 1 and n.endswith("/pyproject.toml")]
text = read(top[0]).decode() if top else None
print(json.dumps([text, files]))
"#;
    let python = python_on_host(sh)?;
    let output = cmd!(sh, "{python} -c {READ} {archive}")
        .quiet()
        .read()
        .with_context(|| format!("reading pyproject.toml inside {}", archive.display()))?;
    let (text, files): (Option<String>, Vec<String>) =
        serde_json::from_str(&output).context("reading the host Python's answer")?;
    BuildSystem::from_pyproject(
        text.as_deref(),
        has_native_sources(files.iter().map(String::as_str)),
    )
}

/// Wheels of `requirements` (and what they need) for the image, fetched once per distinct
/// set into the cache. They are not in `poetry.lock` (Poetry locks what a project runs, not
/// what builds it), so unlike the locked files they carry no hash to check.
fn fetch_build_requirements(
    sh: &Shell,
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
    let python = python_on_host(sh)?;
    let target_args = target_args(target);
    cmd!(sh, "{python} -m pip download --quiet --disable-pip-version-check {target_args...} --dest {dir} {requirements...}")
        .quiet()
        .run()
        .context("fetching the build requirements of the path dependencies and source archives with pip")?;
    fs::write(&done, requirements.join("\n"))
        .with_context(|| format!("writing {}", done.display()))?;
    Ok(Some(dir))
}

/// Lays out [`CONTEXT_DIR`] from the cache: exactly the selected files, nothing stale.
fn write_context(
    runner_dir: &Path,
    cache: &Path,
    installs: &[Install],
    local_sources: &[LocalSource],
    build_dir: Option<&Path>,
) -> Result<()> {
    let context = runner_dir.join(CONTEXT_DIR);
    // Rebuilt whole each time: hard links make that cheap, and Docker's build cache compares
    // file contents, not times, so an unchanged set keeps every cached layer.
    let _ = fs::remove_dir_all(&context);
    let index = context.join(INDEX_DIR);
    let local = context.join(LOCAL_DIR);
    for dir in [&index, &local] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut requirements =
        String::from("# Generated by `cargo xtask` from poetry.lock: do not edit.\n");
    for install in installs {
        match install {
            Install::Wheel(artifact) => {
                link_or_copy(&cache.join(&artifact.file), &index.join(&artifact.file))?;
                requirements.push_str(&format!(
                    "{}=={} --hash=sha256:{}\n",
                    artifact.name, artifact.version, artifact.sha256
                ));
            }
            Install::Sdist(artifact) => {
                let dir = local.join("sdist");
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                link_or_copy(&cache.join(&artifact.file), &dir.join(&artifact.file))?;
            }
            Install::Path { name, dir, .. } => {
                copy_source_tree(dir, &local.join("path").join(markers::normalize_name(name)))
                    .with_context(|| {
                        format!("copying the path dependency {name} into the build context")
                    })?;
            }
            Install::File {
                name, path, sha256, ..
            } => {
                let bytes = fs::read(path).with_context(|| {
                    format!("reading {} (the file dependency {name}): fix its path and run `poetry lock`", path.display())
                })?;
                if !sha256.is_empty() && sha256_hex(&bytes) != *sha256 {
                    bail!("{} (the file dependency {name}) differs from poetry.lock: run `poetry lock`", path.display());
                }
                let dir = local.join("files");
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                let file = path.file_name().context("a file dependency names a file")?;
                fs::write(dir.join(file), bytes)
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    let write = |name: &str, text: &str| {
        let path = context.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(REQUIREMENTS, &requirements)?;
    write(LOCAL_LIST, &local_list(local_sources))?;
    let compiles = local_sources.iter().any(|s| s.build.compiles);
    write(COMPILERS_LIST, if compiles { COMPILERS } else { "" })?;
    let build = context.join(BUILD_DIR);
    fs::create_dir_all(&build).with_context(|| format!("creating {}", build.display()))?;
    if let Some(dir) = build_dir {
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.context("listing the build requirements")?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".whl") {
                link_or_copy(&entry.path(), &build.join(&name))?;
            }
        }
    }
    Ok(())
}

/// `local.txt`: `name /wheels/local/<path>` per source, in lock order.
fn local_list(sources: &[LocalSource]) -> String {
    sources
        .iter()
        .map(|s| format!("{} /{CONTEXT_DIR}/{LOCAL_DIR}/{}\n", s.name, s.context_path))
        .collect()
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// Copies a path dependency's source: the files [`runner_container::inputs`] hashes for the
/// rebuild decision, so what is built is what was decided on.
fn copy_source_tree(from: &Path, to: &Path) -> Result<()> {
    for file in runner_container::inputs::path_dependency_files(from)? {
        let target = to.join(&file);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::copy(from.join(&file), &target)
            .with_context(|| format!("copying {}", from.join(&file).display()))?;
    }
    Ok(())
}

pub fn python_on_host(sh: &Shell) -> Result<String> {
    for candidate in ["python3", "python"] {
        if cmd!(sh, "{candidate} -m pip --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
        {
            return Ok(candidate.to_string());
        }
    }
    bail!("no Python 3 with pip on PATH: install it (`apt-get install python3-pip`, or python.org) so the locked wheels can be fetched")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn build_systems_and_native_sources() {
        let poetry = BuildSystem::from_pyproject(
            Some("[build-system]\nrequires = [\"poetry-core>=2.0.0,<3.0.0\"]\nbuild-backend = \"poetry.core.masonry.api\"\n"),
            false,
        )
        .unwrap();
        assert_eq!(
            poetry,
            BuildSystem {
                requires: vec!["poetry-core>=2.0.0,<3.0.0".into()],
                backend: "poetry.core.masonry.api".into(),
                compiles: false
            }
        );
        let setuptools = BuildSystem::from_pyproject(
            Some("[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n"),
            true,
        )
        .unwrap();
        assert_eq!(setuptools.requires, ["setuptools>=61", "wheel"]);
        // docopt 0.6.2: a setup.py and no pyproject.toml.
        assert_eq!(
            BuildSystem::from_pyproject(None, false).unwrap(),
            BuildSystem {
                requires: vec!["setuptools>=40.8.0".into(), "wheel".into()],
                backend: "setuptools.build_meta:__legacy__".into(),
                compiles: false
            }
        );
        assert!(has_native_sources([
            "pkg-1.0/setup.py",
            "pkg-1.0/src/_speedups.C"
        ]));
        assert!(has_native_sources(["pkg-1.0/pkg/_fast.pyx"]));
        assert!(!has_native_sources([
            "docopt-0.6.2/setup.py",
            "docopt-0.6.2/docopt.py",
            "docopt-0.6.2/README.rst"
        ]));
    }

    #[test]
    fn the_dockerfile_and_dockerignore_read_the_context_this_module_writes() {
        let runner = crate::project_root().join("backend/services/agent-runner");
        let dockerfile = fs::read_to_string(runner.join("Dockerfile")).unwrap();
        let dockerignore = fs::read_to_string(runner.join(".dockerignore")).unwrap();
        for dir in [INDEX_DIR, LOCAL_DIR] {
            assert!(dockerfile.contains(&format!(
                "COPY {CONTEXT_DIR}/{dir}/ /{CONTEXT_DIR}/{dir}/\n"
            )));
        }
        for name in [REQUIREMENTS, LOCAL_LIST, COMPILERS_LIST, BUILD_DIR] {
            assert!(
                dockerfile.contains(&format!("/{CONTEXT_DIR}/{name}")),
                "the Dockerfile does not read /{CONTEXT_DIR}/{name}"
            );
        }
        assert!(dockerignore
            .lines()
            .any(|line| line == format!("!{CONTEXT_DIR}/")));
    }

    #[test]
    fn root_extras_come_from_pyproject() {
        let dir = std::env::temp_dir().join(format!("wheels-extras-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("pyproject.toml"), "[project]\nname = \"x\"\n").unwrap();
        assert_eq!(root_extras(&dir).unwrap(), Vec::<String>::new());
        fs::write(
            dir.join("pyproject.toml"),
            "[tool.stigmer.image]\nextras = [\"s3\", \"gcs\"]\n",
        )
        .unwrap();
        assert_eq!(root_extras(&dir).unwrap(), ["s3", "gcs"]);
        fs::write(
            dir.join("pyproject.toml"),
            "[tool.stigmer.image]\nextras = \"s3\"\n",
        )
        .unwrap();
        let err = root_extras(&dir).unwrap_err();
        assert!(
            format!("{err:#}").contains("must be a list of names"),
            "{err:#}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn local_list_names_each_source() {
        let pure = BuildSystem {
            requires: vec![],
            backend: "hatchling.build".into(),
            compiles: false,
        };
        let sources = [
            LocalSource {
                name: "graphton".into(),
                context_path: "path/graphton".into(),
                build: pure.clone(),
            },
            LocalSource {
                name: "pure-sdist".into(),
                context_path: "sdist/pure_sdist-1.0.tar.gz".into(),
                build: pure,
            },
        ];
        assert_eq!(
            local_list(&sources),
            "graphton /wheels/local/path/graphton\npure-sdist /wheels/local/sdist/pure_sdist-1.0.tar.gz\n"
        );
    }

    #[test]
    fn summaries_count_each_kind() {
        let artifact = LockedArtifact {
            name: "a".into(),
            version: "1".into(),
            file: "a-1-py3-none-any.whl".into(),
            sha256: String::new(),
            index: None,
        };
        let installs = [
            Install::Wheel(artifact.clone()),
            Install::Wheel(artifact.clone()),
            Install::Sdist(artifact),
            Install::Path {
                name: "graphton".into(),
                version: "0.3.0".into(),
                dir: PathBuf::from("/x"),
            },
        ];
        assert_eq!(
            summary(&installs),
            "2 wheels, 1 source archive, 1 path dependency"
        );
    }
}
