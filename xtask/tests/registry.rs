//! Engine-backed tests of publishing agent-runner images to a registry and pulling them instead
//! of building, against a real registry: Debian's `docker-registry` (the reference
//! implementation) started on a free loopback port with storage of its own, and stopped when
//! the test ends. The engine treats `127.0.0.0/8` as an insecure registry, so plain HTTP works.
//!
//! One test takes the published images to a second Docker engine with no images at all (a
//! `dockerd` of its own, on a socket of its own, as root), where a checkout of the same
//! commit must pull and never build. The others simulate a clean engine by removing only what
//! they made: their own image tag, and their own name for the base image
//! (`STIGMER_BASE_IMAGE` points at it), which the pull path must then get back from the
//! registry. Without an engine, root or `docker-registry` the tests fail with what to do:
//! nothing here is skipped.

// A panic is how a test fails, helpers included.
#![allow(clippy::unwrap_used)]

mod support;

use support::{assert_success, docker, stderr, take_turn, unique_dir, RunnerCopy, StackNames};

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "stigmer-agent-runner:registry-test";
const CONTAINER: &str = "stigmer-agent-runner-registry-test";
const NAMES: StackNames = StackNames {
    image: IMAGE,
    container: CONTAINER,
    health_port: 7351,
    server_port: 7352,
    temporal_port: 17733,
};
/// These tests' own name for the base image made from Debian's packages.
const BASE: &str = "stigmer-registry-test-base:bookworm";
const MADE_BASE: &str = "stigmer-python-base:3.11-bookworm";
const REPOSITORY_PATH: &str = "registry-test";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` on loopback, stopped and its storage removed on drop.
struct RegistryServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl RegistryServer {
    fn start() -> RegistryServer {
        let dir = unique_dir("xtask-registry", "storage");
        fs::create_dir_all(dir.join("store")).unwrap();
        let port = free_port();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("store").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "starting docker-registry failed ({err}): install Debian's package with \
                     `apt-get install docker-registry` (`cargo xtask ci` does so as root)"
                )
            });
        let server = RegistryServer {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_get(port, "/v2/").is_none() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `HOST:PORT/PATH`, as `--registry` takes it.
    fn address(&self) -> String {
        format!("127.0.0.1:{}/{REPOSITORY_PATH}", self.port)
    }

    fn tags(&self) -> Vec<String> {
        let body = http_get(
            self.port,
            &format!("/v2/{REPOSITORY_PATH}/stigmer-agent-runner/tags/list"),
        )
        .expect("the registry answers");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        serde_json::from_value(json["tags"].clone()).unwrap_or_default()
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The body of a 200 answer to `GET path`, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A copy of the runner service and a data directory; the container, the server and this
/// test's image are removed on drop.
struct Sandbox {
    copy: RunnerCopy,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let sandbox = Sandbox {
            copy: RunnerCopy::new("xtask-registry", name),
        };
        // What an earlier, interrupted run left would decide these tests for them.
        let _ = docker(&["rm", "--force", CONTAINER]);
        let _ = docker(&["image", "rm", IMAGE]);
        ensure_base(&sandbox);
        sandbox
    }

    fn xtask(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.copy.xtask(&NAMES, args);
        command.env("STIGMER_BASE_IMAGE", BASE);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("xtask runs")
    }

    fn stigmer(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let binary = Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("stigmer");
        let mut command = Command::new(&binary);
        command.args(args);
        self.copy.stack_env(&NAMES, &mut command);
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", binary.display()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.xtask(&["stop"], &[]);
        let _ = docker(&["image", "rm", IMAGE]);
    }
}

/// Gives the base image made from Debian's packages this tests' own name, making it first
/// (through the dev loop, as any machine would) when the engine has none.
fn ensure_base(sandbox: &Sandbox) {
    if present(BASE) {
        return;
    }
    if !present(MADE_BASE) {
        // The default base cannot be pulled here, so the dev loop makes MADE_BASE.
        let made = sandbox.xtask(
            &["rebuild-runner"],
            &[("STIGMER_BASE_IMAGE", "python:3.11-slim")],
        );
        assert_success(&made);
        let _ = docker(&["image", "rm", IMAGE]);
    }
    assert!(docker(&["tag", MADE_BASE, BASE]).status.success());
}

fn present(reference: &str) -> bool {
    docker(&["image", "inspect", reference]).status.success()
}

fn label(reference: &str, name: &str) -> String {
    let output = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{name}\"}}}}"),
        reference,
    ]);
    assert!(output.status.success(), "{reference} is not there");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[track_caller]
fn assert_no_build(output: &Output) {
    let text = stderr(output);
    for build_phase in ["Preparing locked wheels", "Building the agent-runner image"] {
        assert!(!text.contains(build_phase), "a build ran:\n{text}");
    }
}

#[test]
fn publish_then_a_clean_engine_pulls_instead_of_building() {
    let _turn = take_turn();
    let registry = RegistryServer::start();
    let sandbox = Sandbox::new("publish");
    let with_registry = [("STIGMER_REGISTRY", registry.address())];
    let with_registry: Vec<(&str, &str)> = with_registry
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();

    // The local path, for comparison: a build with no cache on this engine.
    let started = Instant::now();
    assert_success(&sandbox.xtask(&["rebuild-runner", "--no-cache"], &[]));
    let local_build = started.elapsed();
    let digest = label(IMAGE, "dev.stigmer.inputs.sha256");

    let started = Instant::now();
    let published = sandbox.xtask(&["publish-runner"], &with_registry);
    let publish_time = started.elapsed();
    assert_success(&published);
    assert_no_build(&published);
    let mut tags = registry.tags();
    tags.sort();
    let mut expected = vec![digest.clone(), env!("CARGO_PKG_VERSION").to_string()];
    expected.sort();
    assert_eq!(tags, expected);

    // A clean engine: none of this test's images, and not its name for the base image.
    assert!(docker(&["image", "rm", IMAGE]).status.success());
    assert!(docker(&["image", "rm", BASE]).status.success());
    assert!(!present(IMAGE) && !present(BASE));

    let started = Instant::now();
    let up = sandbox.xtask(&["dev"], &with_registry);
    let pull_path = started.elapsed();
    assert_success(&up);
    assert_no_build(&up);
    let text = stderr(&up);
    assert!(text.contains("pulled the base image"), "{text}");
    assert!(text.contains("instead of building"), "{text}");
    assert!(text.contains("Smoke checks"), "{text}");
    assert_eq!(label(IMAGE, "dev.stigmer.inputs.sha256"), digest);
    assert_eq!(
        label(IMAGE, "org.opencontainers.image.version"),
        env!("CARGO_PKG_VERSION")
    );
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        label(IMAGE, "org.opencontainers.image.revision"),
        String::from_utf8_lossy(&head.stdout).trim()
    );
    assert!(!label(IMAGE, "org.opencontainers.image.source").is_empty());
    assert!(label(IMAGE, "org.opencontainers.image.created").ends_with('Z'));
    let again = sandbox.xtask(&["dev"], &with_registry);
    assert_success(&again);
    assert!(
        stderr(&again).contains("agent-runner image: up to date"),
        "{}",
        stderr(&again)
    );

    // The CLI without the image pulls the one published for its version.
    assert_success(&sandbox.xtask(&["stop"], &[]));
    assert!(docker(&["image", "rm", IMAGE]).status.success());
    let started = Instant::now();
    let cli = sandbox.stigmer(&["server", "start"], &with_registry);
    let cli_time = started.elapsed();
    assert_success(&cli);
    assert_eq!(
        label(IMAGE, "org.opencontainers.image.version"),
        env!("CARGO_PKG_VERSION")
    );
    assert_success(&sandbox.stigmer(&["server", "stop"], &[]));

    eprintln!(
        "registry timings: local build without cache {:.1}s; publish {:.1}s; \
         `cargo xtask dev` up from a clean engine through the registry {:.1}s (no build); \
         `stigmer server start` pulling its version {:.1}s",
        local_build.as_secs_f64(),
        publish_time.as_secs_f64(),
        pull_path.as_secs_f64(),
        cli_time.as_secs_f64()
    );
}

/// A second Docker engine with no images: its own `dockerd`, data, socket and bridge. Stopped,
/// and its data and bridge removed, on drop.
struct SecondEngine {
    child: Child,
    dir: PathBuf,
}

/// The second engine's own bridge. Never `--bridge none`: a dockerd started so deletes the
/// host's `docker0`, the first engine's default bridge (seen with 20.10).
const SECOND_BRIDGE: &str = "stigmer-e2";

impl SecondEngine {
    fn start() -> SecondEngine {
        assert_eq!(
            stigmer_stack::runner::spec::HostUser::current().uid,
            0,
            "this test starts a second dockerd, which needs root (CI runs as root)"
        );
        let dir = unique_dir("xtask-engine", "second");
        fs::create_dir_all(&dir).unwrap();
        // An empty configuration: the machine's own daemon.json names the first engine's data.
        fs::write(dir.join("daemon.json"), "{}").unwrap();
        let _ = Command::new("ip")
            .args(["link", "del", SECOND_BRIDGE])
            .output();
        for args in [
            &["link", "add", "name", SECOND_BRIDGE, "type", "bridge"][..],
            &["addr", "add", "10.199.77.1/24", "dev", SECOND_BRIDGE],
            &["link", "set", SECOND_BRIDGE, "up"],
        ] {
            let made = Command::new("ip")
                .args(args)
                .output()
                .expect("`ip` (iproute2)");
            assert!(made.status.success(), "ip {args:?}: {}", stderr(&made));
        }
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args([
                "--bridge",
                SECOND_BRIDGE,
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("dockerd (the Docker engine's daemon) must be installed");
        let engine = SecondEngine { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer: {}",
                fs::read_to_string(engine.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", SECOND_BRIDGE])
            .output();
        // dockerd leaves its network namespace mounted under its exec root (seen with 20.10);
        // mounted, the directory cannot be removed.
        let _ = Command::new("umount")
            .arg(self.dir.join("exec/netns/default"))
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_checkout_of_the_pushed_commit_on_another_engine_pulls_and_never_builds() {
    let _turn = take_turn();
    let registry = RegistryServer::start();
    let sandbox = Sandbox::new("second-engine");
    let address = registry.address();
    assert_success(&sandbox.xtask(&["publish-runner", "--registry", &address], &[]));

    let engine = SecondEngine::start();
    let images = engine.docker(&["images", "--quiet"]);
    assert!(
        String::from_utf8_lossy(&images.stdout).trim().is_empty(),
        "not a clean engine"
    );
    // The same commit checked out anew, on the other engine.
    let checkout = Sandbox::new("second-engine-checkout");
    let host = engine.host();
    let started = Instant::now();
    let up = checkout.xtask(
        &["dev", "--registry", &address],
        &[("DOCKER_HOST", host.as_str())],
    );
    let took = started.elapsed();
    assert_success(&up);
    assert_no_build(&up);
    let text = stderr(&up);
    assert!(text.contains("instead of building"), "{text}");
    assert!(text.contains("Smoke checks"), "{text}");
    // The container runs on the second engine, not the first, and the first keeps its bridge.
    assert!(
        Command::new("ip")
            .args(["link", "show", "docker0"])
            .output()
            .unwrap()
            .status
            .success(),
        "the second engine deleted the first engine's docker0"
    );
    let running = engine.docker(&["inspect", "--format", "{{.State.Status}}", CONTAINER]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "running");
    assert!(!docker(&["inspect", CONTAINER]).status.success());
    assert_success(&checkout.xtask(&["stop"], &[("DOCKER_HOST", host.as_str())]));
    eprintln!(
        "a checkout on a second engine with no images came up through the registry in {:.1}s",
        took.as_secs_f64()
    );
}

#[test]
fn a_registry_that_is_down_means_one_line_and_a_local_build() {
    let _turn = take_turn();
    let sandbox = Sandbox::new("down");
    // A port nothing listens on: the registry is down.
    let address = format!("127.0.0.1:{}/{REPOSITORY_PATH}", free_port());
    let started = Instant::now();
    let up = sandbox.xtask(&["dev", "--registry", &address], &[]);
    let elapsed = started.elapsed();
    assert_success(&up);
    let text = stderr(&up);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&address))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("building locally"), "{text}");
    assert!(text.contains("Building the agent-runner image"), "{text}");
    eprintln!(
        "registry down: `cargo xtask dev` built locally (build cache allowed) in {:.1}s",
        elapsed.as_secs_f64()
    );
}

#[test]
fn an_image_whose_labels_do_not_match_is_refused() {
    let _turn = take_turn();
    let registry = RegistryServer::start();
    let sandbox = Sandbox::new("doctored");
    assert_success(&sandbox.xtask(&["rebuild-runner"], &[]));
    let digest = label(IMAGE, "dev.stigmer.inputs.sha256");

    // Under the working tree's digest tag, an image whose manifest names other sources.
    let doctored = format!("{}/stigmer-agent-runner:{digest}", registry.address());
    let context = unique_dir("xtask-registry", "doctored-context");
    fs::create_dir_all(&context).unwrap();
    fs::write(context.join("Dockerfile"), format!("FROM {IMAGE}\n")).unwrap();
    let manifest = r#"dev.stigmer.inputs.manifest={"src/":"doctored"}"#;
    let built = docker(&[
        "build",
        "--quiet",
        "--label",
        manifest,
        "--tag",
        &doctored,
        context.to_str().unwrap(),
    ]);
    let _ = fs::remove_dir_all(&context);
    assert!(built.status.success(), "{}", stderr(&built));
    assert!(docker(&["push", &doctored]).status.success());
    assert!(docker(&["image", "rm", &doctored]).status.success());
    assert!(docker(&["image", "rm", IMAGE]).status.success());

    // With the image's own source: a mounted one would make the source label not matter.
    let up = sandbox.xtask(&["dev", "--image", "--registry", &registry.address()], &[]);
    assert_success(&up);
    let text = stderr(&up);
    assert!(
        text.contains("labels do not match the working tree"),
        "{text}"
    );
    assert!(text.contains("src/ changed: doctored"), "{text}");
    assert!(text.contains("Building the agent-runner image"), "{text}");
    assert!(!present(&doctored), "the refused image was kept");
    assert_eq!(label(IMAGE, "dev.stigmer.inputs.sha256"), digest);
    assert_ne!(
        label(IMAGE, "dev.stigmer.inputs.manifest"),
        r#"{"src/":"doctored"}"#
    );
}
