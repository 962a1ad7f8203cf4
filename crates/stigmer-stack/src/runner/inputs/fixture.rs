//! A throwaway service directory for the inputs' tests: the four input files, a source tree
//! with a byte-code cache in it, and the build arguments the tests hash it with.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// The fixture's source tree, beside its four input files.
pub const SOURCE_DIR: &str = "src";

pub fn service_dir() -> (PathBuf, impl Drop) {
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "inputs-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    fs::create_dir_all(dir.join("src/agent_runner/__pycache__")).unwrap();
    for (name, text) in [
        ("Dockerfile", "FROM x\n"),
        (".dockerignore", "*\n"),
        ("pyproject.toml", "[tool]\n"),
        ("poetry.lock", "# lock\n"),
    ] {
        fs::write(dir.join(name), text).unwrap();
    }
    fs::write(dir.join("src/agent_runner/__init__.py"), "").unwrap();
    fs::write(dir.join("src/agent_runner/main.py"), "print('hi')\n").unwrap();
    fs::write(
        dir.join("src/agent_runner/__pycache__/main.cpython-311.pyc"),
        "junk",
    )
    .unwrap();
    (dir.clone(), Cleanup(dir))
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn args() -> BTreeMap<String, String> {
    BTreeMap::from([("BASE_IMAGE".to_string(), "python:3.11-slim".to_string())])
}
