//! The trees the benchmark works on, and the edits it makes to them: a copy of the runner
//! service (or of the realistic fixture, assembled as `xtask/tests/realistic.rs` does), a
//! comment appended to a source file, every file touched without a change, `poetry.lock`
//! with one package more or less, and a fresh BuildKit cache for a first build.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};

/// The file a source-change scenario edits (a comment appended: behaviour is unchanged).
pub const EDITED_SOURCE: &str = "src/agent_runner/agents/echo.py";
/// The venv cache mount's ID in the Dockerfile; a first build gets one of its own.
const VENV_CACHE_ID: &str = "id=stigmer-agent-runner-venv";

/// The packages the lock-change scenario adds, one at a time and a different one for each
/// run of each tool, so that no tool's build can reuse another's (BuildKit shares its cache
/// by content): pure-Python wheels without dependencies, with their hashes as PyPI publishes
/// them. Poetry is not on the benchmark's machines, so the entries are written as Poetry
/// writes them.
const EXTRA_PACKAGES: [(&str, &str, &str, &str); 11] = [
    (
        "six",
        "1.17.0",
        "six-1.17.0-py2.py3-none-any.whl",
        "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
    ),
    (
        "toml",
        "0.10.2",
        "toml-0.10.2-py2.py3-none-any.whl",
        "806143ae5bfb6a3c6e736a764057db0e6a0e05e338b5630894a5f779cabb4f9b",
    ),
    (
        "tabulate",
        "0.9.0",
        "tabulate-0.9.0-py3-none-any.whl",
        "024ca478df22e9340661486f85298cff5f6dcdba14f3813e8830015b9ed1948f",
    ),
    (
        "termcolor",
        "2.5.0",
        "termcolor-2.5.0-py3-none-any.whl",
        "37b17b5fc1e604945c2642c872a3764b5d547a48009871aea3edd3afa180afb8",
    ),
    (
        "blinker",
        "1.9.0",
        "blinker-1.9.0-py3-none-any.whl",
        "ba0efaa9080b619ff2f3459d1d500c57bddea4a6b424b60a91141db6fd2f08bc",
    ),
    (
        "isodate",
        "0.7.2",
        "isodate-0.7.2-py3-none-any.whl",
        "28009937d8031054830160fce6d409ed342816b543597cece116d966c6d99e15",
    ),
    (
        "ply",
        "3.11",
        "ply-3.11-py2.py3-none-any.whl",
        "096f9b8350b65ebd2fd1346b12452efe5b9607f7482813ffca50c22722a807ce",
    ),
    (
        "decorator",
        "5.1.1",
        "decorator-5.1.1-py3-none-any.whl",
        "b8c3f85900b9dc423225913c5aace94729fe1fa9763b38939a95226f02d37186",
    ),
    (
        "itsdangerous",
        "2.2.0",
        "itsdangerous-2.2.0-py3-none-any.whl",
        "c6242fc49e35958c8b15141343aa660db5fc54d4f13a1db01a3f5891b98700ef",
    ),
    (
        "wcwidth",
        "0.2.13",
        "wcwidth-0.2.13-py2.py3-none-any.whl",
        "3da69048e4540d84af32131829ff948f1e022c1c6bdb8d6102117aac784f6859",
    ),
    (
        "pyparsing",
        "3.2.0",
        "pyparsing-3.2.0-py3-none-any.whl",
        "93d9577b88da0bbea8cc8334ee8b918ed014968fd2ec383e868fb8afb1ccef84",
    ),
];

/// Writes `original` (the lock as shipped) with the `index`-th extra package in its main group.
pub fn lock_with_extra_package(
    service: &Path,
    original: &str,
    index: usize,
) -> Result<&'static str> {
    let (name, version, file, hash) = EXTRA_PACKAGES[index % EXTRA_PACKAGES.len()];
    let entry = format!(
        "[[package]]\nname = \"{name}\"\nversion = \"{version}\"\ndescription = \"\"\noptional = false\n\
         python-versions = \"*\"\ngroups = [\"main\"]\nfiles = [\n    {{file = \"{file}\", hash = \"sha256:{hash}\"}},\n]\n\n"
    );
    let at = original
        .find("[metadata]")
        .context("poetry.lock has no [metadata] table")?;
    let mut changed = original.to_string();
    changed.insert_str(at, &entry);
    let path = service.join("poetry.lock");
    fs::write(&path, changed).with_context(|| format!("writing {}", path.display()))?;
    Ok(name)
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
    fn each_lock_change_adds_one_package_to_the_shipped_lock() {
        let dir = scratch("lock");
        let lock = "[[package]]\nname = \"a\"\n\n[metadata]\nlock-version = \"2.1\"\n";
        assert_eq!(lock_with_extra_package(&dir, lock, 0).unwrap(), "six");
        assert_eq!(lock_with_extra_package(&dir, lock, 1).unwrap(), "toml");
        let changed = fs::read_to_string(dir.join("poetry.lock")).unwrap();
        assert!(!changed.contains("six") && changed.contains("name = \"toml\""));
        assert!(changed.ends_with("[metadata]\nlock-version = \"2.1\"\n"));
        let parsed: toml::Value = toml::from_str(&changed).unwrap();
        assert_eq!(parsed["package"].as_array().unwrap().len(), 2);
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
