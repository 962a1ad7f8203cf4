//! The realistic fixture built into an image, against the real Docker engine.
//!
//! A service directory is assembled the way the original monorepo laid it out: the real
//! runner's `Dockerfile`, `.dockerignore` and `src/`, with the fixture's `pyproject.toml`,
//! `poetry.lock` (about 80 packages locked by Poetry) and the two path dependencies under
//! `backend/libs/python/`. The built `xtask` binary builds it with `rebuild-runner
//! --runner-dir`, the code path of `cargo xtask dev`, once per test run; the tests then read
//! one report from inside the image. Without an engine they fail: nothing here is skipped.
//! The image keeps its tag between runs so Docker's layer cache makes the next build quick.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use support::{assert_success, copy_tree, docker, stderr, unique_dir};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const IMAGE: &str = "stigmer-agent-runner:wheels-realistic-test";
const CHECK_CONTAINER: &str = "stigmer-wheels-realistic-check";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/realistic/backend")
}

/// The fixture's main-group packages as `(name, version, marker)`; the marker is the
/// main group's own when Poetry wrote one per group.
fn locked_main_packages() -> Vec<(String, String, Option<String>)> {
    let text = fs::read_to_string(fixture().join("services/agent-runner/poetry.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g.as_str() == Some("main"))
        })
        .map(|p| {
            let marker = match p.get("markers") {
                Some(toml::Value::String(marker)) => Some(marker.clone()),
                Some(toml::Value::Table(per_group)) => per_group
                    .get("main")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
                _ => None,
            };
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
                marker,
            )
        })
        .collect()
}

/// Runs inside the image: what is installed, what the lock says should be (markers judged
/// by `packaging`, the reference implementation, not by xtask's own evaluator), whether the
/// modules import, and how many bytes the installed files take.
const REPORT: &str = r#"import importlib, json, os, sys
import importlib.metadata as md
from packaging.markers import Marker
from packaging.utils import canonicalize_name

locked = json.loads(sys.argv[1])
installed = {canonicalize_name(d.metadata["Name"]): d.version for d in md.distributions()}
expected = {
    canonicalize_name(name): version
    for name, version, marker in locked
    if marker is None or Marker(marker).evaluate()
}
imports = {}
for module in ["graphton", "stigmer_api_stubs", "grpc", "grpc_reflection.v1alpha.reflection",
               "pydantic_core._pydantic_core", "cryptography.hazmat.bindings._rust",
               "google.protobuf.struct_pb2", "langgraph.graph", "temporalio.worker", "daytona",
               "docopt"]:
    try:
        importlib.import_module(module)
        imports[module] = "ok"
    except Exception as error:
        imports[module] = repr(error)
try:
    from multipart import MultipartSegment
    imports["from multipart import MultipartSegment"] = "ok"
except Exception as error:
    imports["from multipart import MultipartSegment"] = repr(error)

def file_bytes(top):
    total = 0
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total

print(json.dumps({
    "installed": installed,
    "expected": expected,
    "imports": imports,
    "venv_bytes": file_bytes("/opt/venv") + file_bytes("/opt/local"),
    "app_bytes": file_bytes("/app"),
    "graphton_file": getattr(sys.modules.get("graphton"), "__file__", None),
}))
"#;

struct Built {
    report: serde_json::Value,
    image_bytes: u64,
    base_bytes: u64,
    size_json: serde_json::Value,
}

/// Builds the image once per test run and reads the report from it.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = unique_dir("wheels-realistic", "fixture");
        let runner = root.join("backend/services/agent-runner");
        let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backend/services/agent-runner");
        fs::create_dir_all(&runner).unwrap();
        for file in ["Dockerfile", ".dockerignore"] {
            fs::copy(real.join(file), runner.join(file)).unwrap();
        }
        copy_tree(&real.join("src"), &runner.join("src"));
        for file in ["pyproject.toml", "poetry.lock"] {
            fs::copy(
                fixture().join("services/agent-runner").join(file),
                runner.join(file),
            )
            .unwrap();
        }
        copy_tree(&fixture().join("libs"), &root.join("backend/libs"));

        let xtask = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
                .arg("--registry")
                .arg("none")
                .arg("--runner-dir")
                .arg(&runner)
                .args(args)
                .env("STIGMER_HOME", root.join("home"))
                .env("STIGMER_RUNNER_IMAGE", IMAGE)
                .env(
                    "STIGMER_RUNNER_CONTAINER",
                    "stigmer-wheels-realistic-runner",
                )
                .output()
                .expect("xtask runs")
        };
        let build = xtask(&["rebuild-runner"]);
        assert_success(&build);
        let text = stderr(&build);
        assert!(
            text.contains("1 source archive, 2 path dependencies"),
            "the plan names the source archive and the path dependencies:\n{text}"
        );
        let size = xtask(&["size", "--json"]);
        assert_success(&size);
        let size_json: serde_json::Value = serde_json::from_slice(&size.stdout).unwrap();

        let locked = serde_json::to_string(&locked_main_packages()).unwrap();
        let _ = docker(&["rm", "--force", CHECK_CONTAINER]);
        let run = docker(&[
            "run",
            "--rm",
            "--name",
            CHECK_CONTAINER,
            "--network",
            "none",
            "--entrypoint",
            "python",
            IMAGE,
            "-c",
            REPORT,
            &locked,
        ]);
        assert_success(&run);
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();

        let size_of = |reference: &str| -> u64 {
            let out = docker(&["image", "inspect", "--format", "{{.Size}}", reference]);
            assert_success(&out);
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let manifest = docker(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"dev.stigmer.inputs.manifest\"}}",
            IMAGE,
        ]);
        assert_success(&manifest);
        let manifest: BTreeMap<String, String> = serde_json::from_slice(&manifest.stdout).unwrap();
        let _ = fs::remove_dir_all(&root);
        Built {
            report,
            image_bytes: size_of(IMAGE),
            base_bytes: size_of(&manifest["base image"]),
            size_json,
        }
    })
}

#[test]
fn every_main_group_package_is_installed_at_its_locked_version() {
    let report = &built().report;
    let installed = report["installed"].as_object().unwrap();
    let expected = report["expected"].as_object().unwrap();
    assert!(expected.len() >= 70, "{expected:?}");
    for (name, version) in expected {
        assert_eq!(
            installed.get(name),
            Some(version),
            "{name} is not installed at its locked version"
        );
    }
    // Nothing else either: no pip, no setuptools, no build requirement left in the venv.
    let extra: Vec<&String> = installed
        .keys()
        .filter(|name| !expected.contains_key(*name))
        .collect();
    assert!(
        extra.is_empty(),
        "installed but not locked for the image: {extra:?}"
    );
}

#[test]
fn dev_group_and_windows_only_packages_are_absent() {
    let installed = built().report["installed"].as_object().unwrap();
    for absent in [
        "pytest",
        "iniconfig",
        "pluggy",
        "pygments",
        "colorama",
        "pip",
        "setuptools",
    ] {
        assert!(!installed.contains_key(absent), "{absent} is in the image");
    }
    // Present because the image's Python decides, not the host's: on Debian's 3.11.2
    // `python_full_version < "3.11.3"` holds; on python:3.11-slim it does not.
    let expected = built().report["expected"].as_object().unwrap();
    assert_eq!(
        installed.contains_key("async-timeout"),
        expected.contains_key("async-timeout")
    );
}

#[test]
fn path_dependencies_source_archives_native_modules_and_multipart_import() {
    let imports = built().report["imports"].as_object().unwrap();
    let failed: Vec<String> = imports
        .iter()
        .filter(|(_, result)| result.as_str() != Some("ok"))
        .map(|(module, result)| format!("{module}: {result}"))
        .collect();
    assert!(failed.is_empty(), "imports failed in the image: {failed:?}");
    assert_eq!(imports.len(), 12);
    // Installed as distributions (in /opt/local, beside the venv), not as editable links
    // back to a host path.
    let installed = built().report["installed"].as_object().unwrap();
    assert_eq!(installed["graphton"], "0.3.0");
    assert_eq!(installed["stigmer-api-stubs"], "0.1.0");
    let file = built().report["graphton_file"].as_str().unwrap_or_default();
    assert!(file.starts_with("/opt/local/graphton/"), "{file}");
}

#[test]
fn the_image_is_its_base_plus_the_installed_dependencies() {
    let built = built();
    let installed =
        built.report["venv_bytes"].as_u64().unwrap() + built.report["app_bytes"].as_u64().unwrap();
    let overhead = built.image_bytes as i64 - built.base_bytes as i64 - installed as i64;
    eprintln!(
        "image {} B = base {} B + venv and app files {} B + {} B",
        built.image_bytes, built.base_bytes, installed, overhead
    );
    assert!(
        overhead < 5_000_000,
        "the image holds {overhead} B beyond its base and installed files: look at `cargo xtask size`"
    );
    // `cargo xtask size` accounts for every byte of the same image.
    let size = &built.size_json;
    assert_eq!(
        size["image_bytes"].as_u64(),
        Some(built.image_bytes),
        "{size}"
    );
    assert_eq!(
        size["base_bytes"].as_u64(),
        Some(built.base_bytes),
        "{size}"
    );
    let parts = size["base_bytes"].as_i64().unwrap()
        + size["dependencies_bytes"].as_i64().unwrap()
        + size["source_bytes"].as_i64().unwrap()
        + size["other_bytes"].as_i64().unwrap();
    assert_eq!(parts, built.image_bytes as i64, "{size}");
    let largest = size["largest_distributions"].as_array().unwrap();
    assert_eq!(largest.len(), 10, "{size}");
    assert!(
        largest
            .windows(2)
            .all(|w| w[0]["bytes"].as_u64() >= w[1]["bytes"].as_u64()),
        "{size}"
    );
}
