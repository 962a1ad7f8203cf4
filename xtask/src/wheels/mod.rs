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
//! dependency reuses the venv layer. The same layout serves `docker-compose build` once xtask has prepared it.

mod context;
mod fetch;
pub mod lock;
pub mod markers;
mod sources;
pub mod tags;
pub mod target;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use stigmer_stack::docker::Docker;
use stigmer_stack::ui::progress::Phase;

pub use context::installs_compilers;
use context::write_context;
pub use fetch::python_on_host;
use fetch::{fetch_build_requirements, fetch_missing};
pub use lock::{check_lock_is_fresh, read_lock, requirements, Install};
use sources::local_sources;
use tags::Arch;

/// Where wheels and targets are cached: `target/xtask/wheels/`.
pub fn cache_root(project_cache_dir: &Path) -> PathBuf {
    project_cache_dir.join("wheels")
}

/// Makes `runner_dir/wheels/` hold exactly what the image installs for `base_image_id` on
/// the engine's `platform`, fetching into the cache only what it lacks.
pub fn prepare(
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
    let fetched = fetch_missing(&cache, &installs, &target, phase)?;
    let local_sources = local_sources(&installs, &cache)?;
    let build_requirements: Vec<String> = {
        let mut all: Vec<String> = local_sources
            .iter()
            .flat_map(|s| s.build.requires.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    };
    let build_dir = fetch_build_requirements(&cache, &build_requirements, &target, phase)?;
    if fetched > 0 {
        phase.line(&format!(
            "fetched {fetched} files in {:.1} s",
            started.elapsed().as_secs_f64()
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

#[cfg(test)]
mod tests {
    use super::*;
    use lock::LockedArtifact;

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
