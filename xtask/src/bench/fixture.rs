//! The trees the benchmark works on, and the edits it makes to them: a copy of the runner
//! service (or of the realistic fixture, assembled as `xtask/tests/realistic.rs` does), a
//! comment appended to a source file, every file touched without a change, `poetry.lock`
//! with one package more or less, and a fresh BuildKit cache for a first build.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use stigmer_stack::exec;

/// The file a source-change scenario edits (a comment appended: behaviour is unchanged).
pub const EDITED_SOURCE: &str = "src/agent_runner/agents/echo.py";
/// The venv cache mount's ID in the Dockerfile; a first build gets one of its own.
const VENV_CACHE_ID: &str = "id=stigmer-agent-runner-venv";

/// The packages the lock-change scenario adds, one at a time and a different one for each
/// run of each tool, so that no tool's build can reuse another's (BuildKit shares its cache
/// by content): pure-Python wheels without dependencies, none of them in the runner's lock.
const EXTRA_PACKAGES: [(&str, &str); 11] = [
    ("six", "1.17.0"),
    ("toml", "0.10.2"),
    ("tabulate", "0.9.0"),
    ("termcolor", "2.5.0"),
    ("blinker", "1.9.0"),
    ("isodate", "0.7.2"),
    ("ply", "3.11"),
    ("decorator", "5.1.1"),
    ("itsdangerous", "2.2.0"),
    ("wcwidth", "0.2.13"),
    ("pyparsing", "3.2.0"),
];

/// The Poetry the lock changes are made with: the version that wrote the runner's lock.
const POETRY: &str = "poetry==2.5.1";

/// Poetry in a virtual environment under `target/xtask/poetry/`, installed with pip the
/// first time; returns the program.
pub fn poetry(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/xtask/poetry");
    let program = venv.join("bin/poetry");
    let stamp = venv.join("installed");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(POETRY) && program.exists() {
        return Ok(program);
    }
    let python = crate::wheels::python_on_host()?;
    let _ = fs::remove_dir_all(&venv);
    let venv_text = venv.to_string_lossy();
    exec::read(&python, &["-m", "venv", &venv_text], root)
        .context("creating a virtual environment for Poetry")?;
    let pip = venv.join("bin/pip").to_string_lossy().into_owned();
    exec::read(
        &pip,
        &["install", "--quiet", "--disable-pip-version-check", POETRY],
        root,
    )
    .with_context(|| format!("installing {POETRY} from PyPI"))?;
    fs::write(&stamp, POETRY).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(program)
}

/// Puts the shipped `pyproject.toml` and `poetry.lock` back into `service`, then has Poetry
/// add the `index`-th extra package to the main group and lock it (`poetry add --lock`, no
/// install), as a developer changes the lock. Returns the package's name.
pub fn lock_with_extra_package(
    poetry: &Path,
    service: &Path,
    shipped: &ShippedLock,
    index: usize,
) -> Result<&'static str> {
    let (name, version) = EXTRA_PACKAGES[index % EXTRA_PACKAGES.len()];
    shipped.restore(service)?;
    exec::read(
        &poetry.to_string_lossy(),
        &[
            "add",
            "--lock",
            "--no-interaction",
            &format!("{name}=={version}"),
        ],
        service,
    )
    .with_context(|| {
        format!(
            "`poetry add --lock {name}=={version}` in {}",
            service.display()
        )
    })?;
    Ok(name)
}

/// A service's `pyproject.toml` and `poetry.lock` as shipped, to put back before each change.
pub struct ShippedLock {
    pyproject: String,
    lock: String,
}

impl ShippedLock {
    pub fn read(service: &Path) -> Result<ShippedLock> {
        let read = |file: &str| {
            let path = service.join(file);
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(ShippedLock {
            pyproject: read("pyproject.toml")?,
            lock: read("poetry.lock")?,
        })
    }

    pub fn restore(&self, service: &Path) -> Result<()> {
        for (file, text) in [
            ("pyproject.toml", &self.pyproject),
            ("poetry.lock", &self.lock),
        ] {
            let path = service.join(file);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Copies a tree, without virtual environments, caches and built wheels.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let name = entry.file_name();
        if [".venv", "__pycache__", ".pytest_cache", "wheels"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().context("reading a file type")?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The realistic service under `scratch`: the real runner's Dockerfile, `.dockerignore`,
/// compose file and `src/`, the fixture's `pyproject.toml` and `poetry.lock`, and its path
/// dependencies where the lock expects them. Returns the service's directory.
pub fn assemble_realistic(root: &Path, scratch: &Path) -> Result<PathBuf> {
    let fixture = root.join("xtask/tests/fixtures/realistic/backend");
    let real = root.join("backend/services/agent-runner");
    let service = scratch.join("backend/services/agent-runner");
    fs::create_dir_all(&service).with_context(|| format!("creating {}", service.display()))?;
    for file in ["Dockerfile", ".dockerignore", "docker-compose.yml"] {
        fs::copy(real.join(file), service.join(file))
            .with_context(|| format!("copying the runner's {file}"))?;
    }
    copy_tree(&real.join("src"), &service.join("src"))?;
    for file in ["pyproject.toml", "poetry.lock"] {
        fs::copy(
            fixture.join("services/agent-runner").join(file),
            service.join(file),
        )
        .with_context(|| format!("copying the realistic fixture's {file}"))?;
    }
    copy_tree(&fixture.join("libs"), &scratch.join("backend/libs"))?;
    Ok(service)
}

/// Appends a comment line to `file` under `dir`: new bytes, the same behaviour.
pub fn append_comment(dir: &Path, file: &str, edit: u64) -> Result<()> {
    let path = dir.join(file);
    let mut text =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    text.push_str(&format!("# cargo xtask bench edit {edit} {nanos}\n"));
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Gives every file under `dir` a modification time `edit` minutes ahead, bytes unchanged.
pub fn touch_tree(dir: &Path, edit: u64) -> Result<()> {
    let when = SystemTime::now() + Duration::from_secs(60 * edit);
    touch_all(dir, when)
}

fn touch_all(dir: &Path, when: SystemTime) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if entry.file_type().context("reading a file type")?.is_dir() {
            touch_all(&path, when)?;
        } else {
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(when))
                .with_context(|| format!("touching {}", path.display()))?;
        }
    }
    Ok(())
}

/// Points the Dockerfile's venv cache mount at a cache of its own, so the next build starts
/// from an empty one (BuildKit keys cache mounts by ID, across every build on the engine).
pub fn fresh_venv_cache(service: &Path, tag: &str) -> Result<()> {
    let path = service.join("Dockerfile");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let start = text
        .find("id=stigmer-")
        .context("the Dockerfile has no venv cache mount")?;
    let end = start
        + text[start..]
            .find(',')
            .context("the cache mount's options end with a comma")?;
    ensure!(
        text[start..end].starts_with(VENV_CACHE_ID) || text[start..end].contains("bench"),
        "unexpected cache mount `{}`",
        &text[start..end]
    );
    let changed = format!("{}id=stigmer-bench-{tag}{}", &text[..start], &text[end..]);
    fs::write(&path, changed).with_context(|| format!("writing {}", path.display()))
}

/// The Dockerfile the legacy builder (Compose v1) needs beside the real one.
pub fn write_legacy_dockerfile(service: &Path) -> Result<()> {
    let text = fs::read_to_string(service.join("Dockerfile")).context("reading the Dockerfile")?;
    let legacy = crate::builder::legacy_dockerfile(&text)?;
    fs::write(service.join(LEGACY_DOCKERFILE), legacy).context("writing the legacy Dockerfile")
}

/// Its name in the service's directory (the compose file reads `STIGMER_DOCKERFILE`).
pub const LEGACY_DOCKERFILE: &str = "Dockerfile.legacy";

/// The compose file Compose v1 gets: the real one without its `develop:` section, which v1's
/// schema rejects ("Unsupported config option for services.agent-runner: 'develop'").
pub const V1_COMPOSE_FILE: &str = "docker-compose.v1.yml";

/// An override that runs the compose side's runner as root, for `compose watch`: its sync
/// copies files with the container's user, which Docker 20.10 resolves with `getent` and
/// fails for any user but root here (`getent unable to find entry "10001:10001" in passwd
/// database`, measured with the runner's own user, a numeric uid and a name).
pub const WATCH_OVERRIDE: &str = "docker-compose.watch-as-root.yml";

pub fn write_watch_override(service: &Path) -> Result<PathBuf> {
    let path = service.join(WATCH_OVERRIDE);
    fs::write(
        &path,
        "# Written by `cargo xtask bench` for `compose watch` (see xtask/src/bench/fixture.rs).\n\
         services:\n  agent-runner:\n    user: root\n",
    )
    .context("writing the compose override for compose watch")?;
    Ok(path)
}

pub fn write_v1_compose_file(service: &Path) -> Result<()> {
    let text = fs::read_to_string(service.join("docker-compose.yml"))
        .context("reading the service's docker-compose.yml")?;
    fs::write(service.join(V1_COMPOSE_FILE), without_develop(&text))
        .context("writing the compose file for Compose v1")
}

/// `text` without the `develop:` key of its service and everything indented below it.
fn without_develop(text: &str) -> String {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in text.lines() {
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent(line) > level {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == "develop:" {
            skipping = Some(indent(line));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bench-fixture-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_extra_packages_are_distinct_and_new_to_the_runner_lock() {
        // The checkout found at run time, as every xtask path is.
        let lock = fs::read_to_string(
            crate::project_root()
                .unwrap()
                .join("backend/services/agent-runner/poetry.lock"),
        )
        .unwrap();
        let names: std::collections::BTreeSet<_> =
            EXTRA_PACKAGES.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), EXTRA_PACKAGES.len());
        for name in names {
            assert!(!lock.contains(&format!("name = \"{name}\"")), "{name}");
        }
    }

    #[test]
    fn the_shipped_lock_is_put_back_before_each_change() {
        let dir = scratch("shipped");
        fs::write(dir.join("pyproject.toml"), "[project]\n").unwrap();
        fs::write(dir.join("poetry.lock"), "[metadata]\n").unwrap();
        let shipped = ShippedLock::read(&dir).unwrap();
        fs::write(dir.join("pyproject.toml"), "changed").unwrap();
        fs::write(dir.join("poetry.lock"), "changed").unwrap();
        shipped.restore(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("pyproject.toml")).unwrap(),
            "[project]\n"
        );
        assert_eq!(
            fs::read_to_string(dir.join("poetry.lock")).unwrap(),
            "[metadata]\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compose_v1_gets_the_file_without_develop() {
        let text = "services:\n  runner:\n    image: x\n    develop:\n      watch:\n        - action: sync\n    labels:\n      a: b\n";
        assert_eq!(
            without_develop(text),
            "services:\n  runner:\n    image: x\n    labels:\n      a: b\n"
        );
    }

    #[test]
    fn a_fresh_cache_id_replaces_the_venv_cache() {
        let dir = scratch("cache");
        fs::write(
            dir.join("Dockerfile"),
            "RUN --mount=type=cache,id=stigmer-agent-runner-venv,target=/x \\\n    true\n",
        )
        .unwrap();
        fresh_venv_cache(&dir, "1-a").unwrap();
        fresh_venv_cache(&dir, "1-b").unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("Dockerfile")).unwrap(),
            "RUN --mount=type=cache,id=stigmer-bench-1-b,target=/x \\\n    true\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
