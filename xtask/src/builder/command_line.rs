//! The build as plain data and what each builder runs for it: [`BuildRequest`] (context,
//! Dockerfile, tag, build arguments, network), then `docker build`, `docker buildx build` or a
//! generated compose file and `docker compose build`, as [`BuildCommand`]s compared as exact
//! lists in tests. [`command`] writes the generated files the chosen builder needs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stigmer_stack::docker;
use stigmer_stack::runner::inputs::sha256_hex;

use super::legacy::legacy_dockerfile;
use super::{Builder, ComposeClient, TARGET_STAGE};

/// What the build's `RUN` steps may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildNetwork {
    /// No network at all: every file comes from the build context, so an install that
    /// tries to download fails at once instead of fetching, and the steps need neither the
    /// engine's bridge nor its DNS.
    None,
    /// The engine's default network, for a build that installs compilers with apt-get.
    Default,
}

/// One image build, as every builder gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    pub tag: String,
    /// Every build argument, those that become labels included.
    pub build_args: BTreeMap<String, String>,
    pub network: BuildNetwork,
    pub no_cache: bool,
}

/// The program a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The docker client of [`Docker`].
    Docker,
    /// Another binary (the pinned Compose).
    Binary(PathBuf),
}

/// A process to start: program, arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCommand {
    pub program: Program,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// `docker build`'s flags shared by the legacy builder and buildx, after the subcommand.
fn build_flags(request: &BuildRequest, dockerfile: &Path) -> Vec<String> {
    let mut args = vec![
        "--file".to_string(),
        dockerfile.display().to_string(),
        "--target".to_string(),
        TARGET_STAGE.to_string(),
        "--tag".to_string(),
        request.tag.clone(),
    ];
    for (key, value) in &request.build_args {
        args.extend(["--build-arg".to_string(), format!("{key}={value}")]);
    }
    if request.network == BuildNetwork::None {
        args.extend(["--network".to_string(), "none".to_string()]);
    }
    if request.no_cache {
        args.push("--no-cache".to_string());
    }
    args.push(request.context.display().to_string());
    args
}

/// `docker build` with the derived Dockerfile. `DOCKER_BUILDKIT=0` keeps the legacy builder
/// even where the user's environment says 1 (which, without buildx, makes the CLI refuse).
pub fn legacy_command(request: &BuildRequest, legacy_dockerfile: &Path) -> BuildCommand {
    let mut args = vec!["build".to_string()];
    args.extend(build_flags(request, legacy_dockerfile));
    BuildCommand {
        program: Program::Docker,
        args,
        env: vec![("DOCKER_BUILDKIT".to_string(), "0".to_string())],
    }
}

/// `docker buildx build --load`: the image goes into the engine's image store, with plain
/// progress lines (one per step and log line, as a log wants them).
pub fn buildx_command(request: &BuildRequest) -> BuildCommand {
    let mut args = docker::args(["buildx", "build", "--load", "--progress", "plain"]);
    args.extend(build_flags(request, &request.dockerfile));
    BuildCommand {
        program: Program::Docker,
        args,
        env: Vec::new(),
    }
}

/// The compose project and service names of the generated file.
const COMPOSE_PROJECT: &str = "stigmer-agent-runner-build";
const COMPOSE_SERVICE: &str = "agent-runner";

/// The compose file that builds `request`: JSON, which is YAML too, so nothing needs
/// quoting. Compose interpolates `$NAME` and `${NAME}` in every value
/// (https://docs.docker.com/reference/compose-file/interpolation/), so each `$` is written
/// `$$`. Labels travel as build arguments, as for every builder, so the image's labels are the
/// Dockerfile's `LABEL` alone and the rebuild decision cannot tell the builders apart.
pub fn compose_file(request: &BuildRequest) -> String {
    let escape = |text: &str| serde_json::Value::String(text.replace('$', "$$"));
    let args: serde_json::Map<String, serde_json::Value> = request
        .build_args
        .iter()
        .map(|(key, value)| (key.clone(), escape(value)))
        .collect();
    let mut build = serde_json::json!({
        "context": escape(&request.context.display().to_string()),
        "dockerfile": escape(&request.dockerfile.display().to_string()),
        "target": TARGET_STAGE,
        "args": args,
    });
    if request.network == BuildNetwork::None {
        build["network"] = serde_json::json!("none");
    }
    let file = serde_json::json!({
        "name": COMPOSE_PROJECT,
        "services": {
            COMPOSE_SERVICE: {
                "build": build,
                "image": escape(&request.tag),
            }
        }
    });
    // A `json!` value always serializes.
    serde_json::to_string_pretty(&file).unwrap_or_default() + "\n"
}

/// `docker compose build` (or the pinned binary) on the generated file. `DOCKER_BUILDKIT=1`
/// because Compose honours a 0 in the user's environment by using the legacy builder, which
/// cannot parse the cache mount. Compose 2.40 first looks for buildx's bake and, without
/// buildx (the only case it runs here), says so in one warning line and builds itself.
pub fn compose_command(
    client: &ComposeClient,
    compose_file: &Path,
    no_cache: bool,
) -> BuildCommand {
    let (program, mut args) = match client {
        ComposeClient::Plugin => (Program::Docker, vec!["compose".to_string()]),
        ComposeClient::Pinned { binary } => (Program::Binary(binary.clone()), Vec::new()),
    };
    args.extend([
        "--ansi".to_string(),
        "never".to_string(),
        "--progress".to_string(),
        "plain".to_string(),
        "--file".to_string(),
        compose_file.display().to_string(),
        "build".to_string(),
    ]);
    if no_cache {
        args.push("--no-cache".to_string());
    }
    BuildCommand {
        program,
        args,
        env: vec![("DOCKER_BUILDKIT".to_string(), "1".to_string())],
    }
}

/// Writes `text` under `dir` with a name made of `stem` and its digest (so concurrent runs
/// of different checkouts or inputs never share a file, and equal content is written once),
/// through a temporary file and a rename.
fn write_generated(dir: &Path, stem: &str, extension: &str, text: &str) -> Result<PathBuf> {
    let digest = sha256_hex(text.as_bytes());
    let path = dir.join(format!("{stem}-{}{extension}", &digest[..16]));
    if fs::read_to_string(&path).is_ok_and(|existing| existing == text) {
        return Ok(path);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!(".{stem}-{}.partial", std::process::id()));
    fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The command that builds `request` with `builder`, writing what it needs (the legacy
/// Dockerfile, the compose file) under `generated_dir` (in `target/xtask/`).
pub fn command(
    builder: &Builder,
    request: &BuildRequest,
    generated_dir: &Path,
) -> Result<BuildCommand> {
    Ok(match builder {
        Builder::Buildx => buildx_command(request),
        Builder::Legacy => {
            let text = fs::read_to_string(&request.dockerfile)
                .with_context(|| format!("reading {}", request.dockerfile.display()))?;
            let derived = legacy_dockerfile(&text).with_context(|| {
                format!(
                    "deriving the legacy builder's Dockerfile from {}",
                    request.dockerfile.display()
                )
            })?;
            let file = write_generated(generated_dir, "Dockerfile.legacy", "", &derived)?;
            legacy_command(request, &file)
        }
        Builder::Compose(client) => {
            let file = write_generated(generated_dir, "compose", ".json", &compose_file(request))?;
            compose_command(client, &file, request.no_cache)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::tests::PINNED;

    fn request(no_cache: bool) -> BuildRequest {
        BuildRequest {
            network: if no_cache {
                BuildNetwork::Default
            } else {
                BuildNetwork::None
            },
            context: PathBuf::from("/src/runner"),
            dockerfile: PathBuf::from("/src/runner/Dockerfile"),
            tag: "stigmer-agent-runner:local".to_string(),
            build_args: BTreeMap::from([
                ("BASE_IMAGE".to_string(), "python:3.11-slim".to_string()),
                (
                    "STIGMER_INPUTS_MANIFEST".to_string(),
                    "src/=ab $HOME ${X}".to_string(),
                ),
            ]),
            no_cache,
        }
    }

    #[test]
    fn legacy_and_buildx_command_lines() {
        let legacy = legacy_command(&request(true), Path::new("/t/Dockerfile.legacy-1"));
        assert_eq!(legacy.program, Program::Docker);
        assert_eq!(
            legacy.args,
            [
                "build",
                "--file",
                "/t/Dockerfile.legacy-1",
                "--target",
                "runtime",
                "--tag",
                "stigmer-agent-runner:local",
                "--build-arg",
                "BASE_IMAGE=python:3.11-slim",
                "--build-arg",
                "STIGMER_INPUTS_MANIFEST=src/=ab $HOME ${X}",
                "--no-cache",
                "/src/runner",
            ]
        );
        assert_eq!(
            legacy.env,
            [("DOCKER_BUILDKIT".to_string(), "0".to_string())]
        );
        let buildx = buildx_command(&request(false));
        assert_eq!(
            buildx.args,
            [
                "buildx",
                "build",
                "--load",
                "--progress",
                "plain",
                "--file",
                "/src/runner/Dockerfile",
                "--target",
                "runtime",
                "--tag",
                "stigmer-agent-runner:local",
                "--build-arg",
                "BASE_IMAGE=python:3.11-slim",
                "--build-arg",
                "STIGMER_INPUTS_MANIFEST=src/=ab $HOME ${X}",
                "--network",
                "none",
                "/src/runner",
            ]
        );
        assert!(buildx.env.is_empty());
    }

    #[test]
    fn the_compose_file_and_its_command() {
        assert_eq!(
            compose_file(&request(false)),
            r#"{
  "name": "stigmer-agent-runner-build",
  "services": {
    "agent-runner": {
      "build": {
        "args": {
          "BASE_IMAGE": "python:3.11-slim",
          "STIGMER_INPUTS_MANIFEST": "src/=ab $$HOME $${X}"
        },
        "context": "/src/runner",
        "dockerfile": "/src/runner/Dockerfile",
        "network": "none",
        "target": "runtime"
      },
      "image": "stigmer-agent-runner:local"
    }
  }
}
"#
        );
        assert!(!compose_file(&request(true)).contains("network"));
        let plugin = compose_command(&ComposeClient::Plugin, Path::new("/t/c.json"), true);
        assert_eq!(plugin.program, Program::Docker);
        assert_eq!(
            plugin.args,
            [
                "compose",
                "--ansi",
                "never",
                "--progress",
                "plain",
                "--file",
                "/t/c.json",
                "build",
                "--no-cache"
            ]
        );
        let standalone = compose_command(
            &ComposeClient::Pinned {
                binary: PathBuf::from(PINNED),
            },
            Path::new("/t/c.json"),
            false,
        );
        assert_eq!(standalone.program, Program::Binary(PathBuf::from(PINNED)));
        assert_eq!(
            standalone.args,
            [
                "--ansi",
                "never",
                "--progress",
                "plain",
                "--file",
                "/t/c.json",
                "build"
            ]
        );
        assert_eq!(
            standalone.env,
            [("DOCKER_BUILDKIT".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn generated_files_are_named_by_their_content() {
        let dir = std::env::temp_dir().join(format!("builder-generated-{}", std::process::id()));
        let first = write_generated(&dir, "compose", ".json", "{}\n").unwrap();
        assert_eq!(fs::read_to_string(&first).unwrap(), "{}\n");
        assert_eq!(
            write_generated(&dir, "compose", ".json", "{}\n").unwrap(),
            first
        );
        let other = write_generated(&dir, "compose", ".json", "{ }\n").unwrap();
        assert_ne!(other, first);
        let name = first.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("compose-") && name.ends_with(".json"),
            "{name}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
