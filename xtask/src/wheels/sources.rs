//! The sources the image's builder stage builds (path dependencies, source archives, local
//! files): their build requirements (`[build-system]`, PEP 517/518) and whether they hold
//! native code, so the builder installs compilers only when one needs them.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stigmer_stack::exec;

use super::fetch::python_on_host;
use super::lock::Install;
use super::markers;

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

/// A source the builder stage builds: a path dependency, a source archive or a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    pub name: String,
    /// Where the build context keeps it, relative to `wheels/local/`.
    pub context_path: String,
    pub build: BuildSystem,
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
pub fn local_sources(installs: &[Install], cache: &Path) -> Result<Vec<LocalSource>> {
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
                let files = stigmer_stack::runner::inputs::path_dependency_files(dir)?;
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
                let build = cached_archive_build_system(&cache.join(&artifact.file), cache)
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
                    archive_build_system(path, cache)
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
fn cached_archive_build_system(archive: &Path, cache: &Path) -> Result<BuildSystem> {
    let mut name = archive.as_os_str().to_owned();
    name.push(".build-system.json");
    let cached = PathBuf::from(name);
    if let Some(build) = fs::read(&cached)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    {
        return Ok(build);
    }
    let build = archive_build_system(archive, cache)?;
    // Only a cache: without it the archive is read again next time.
    let _ = fs::write(&cached, serde_json::to_vec(&build).unwrap_or_default());
    Ok(build)
}

/// The build system of a source archive and its file list, read by the host's Python
/// (`tarfile` and `zipfile`), run in the wheels cache `cache`: `python -c` puts its working
/// directory first on `sys.path`, and only there is no stray `json.py` of the user's.
fn archive_build_system(archive: &Path, cache: &Path) -> Result<BuildSystem> {
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
    let python = python_on_host()?;
    let output = exec::read(
        &python,
        &[OsStr::new("-c"), OsStr::new(READ), archive.as_os_str()],
        cache,
    )
    .with_context(|| format!("reading pyproject.toml inside {}", archive.display()))?;
    let (text, files): (Option<String>, Vec<String>) =
        serde_json::from_str(&output).context("reading the host Python's answer")?;
    BuildSystem::from_pyproject(
        text.as_deref(),
        has_native_sources(files.iter().map(String::as_str)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The host's Python reads a real archive (made with `tar`): its `pyproject.toml` and,
    /// from its file list, that it holds C code.
    #[test]
    fn the_host_python_reads_a_source_archive() {
        let dir = std::env::temp_dir().join(format!("sources-archive-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let package = dir.join("tree/pkg-1.0");
        fs::create_dir_all(package.join("pkg")).unwrap();
        fs::write(
            package.join("pyproject.toml"),
            "[build-system]\nrequires = [\"flit_core>=3.2\"]\nbuild-backend = \"flit_core.buildapi\"\n",
        )
        .unwrap();
        fs::write(package.join("pkg/_speedups.c"), "int x;\n").unwrap();
        let cache = dir.join("cache");
        fs::create_dir_all(&cache).unwrap();
        let archive = cache.join("pkg-1.0.tar.gz");
        exec::run(
            "tar",
            &[
                OsStr::new("-czf"),
                archive.as_os_str(),
                OsStr::new("-C"),
                dir.join("tree").as_os_str(),
                OsStr::new("pkg-1.0"),
            ],
            &dir,
            &[],
        )
        .unwrap();
        let build = archive_build_system(&archive, &cache).unwrap();
        assert_eq!(
            build,
            BuildSystem {
                requires: vec!["flit_core>=3.2".into()],
                backend: "flit_core.buildapi".into(),
                compiles: true
            }
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
