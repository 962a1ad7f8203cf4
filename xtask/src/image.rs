//! The agent-runner image: the rebuild decision from content hashes, and the build (with the
//! builder [`crate::builder`] picks).
//!
//! A decision costs one `docker image inspect` (the runner image and the base image
//! together) and one hash of the declared inputs; nothing is built when they match the
//! labels the image carries.

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::{check_engine, EngineInfo};
use stigmer_stack::docker::inspect::{parse_images, Image};
use stigmer_stack::docker::{args, short_id, Docker};
use stigmer_stack::runner::inputs::{
    InputManifest, RebuildDecision, SourceTree, INPUTS_LABEL, MANIFEST_LABEL, POETRY_LOCK_LABEL,
    SOURCE_INPUT,
};
use stigmer_stack::runner::lifecycle::inspect_image;

use crate::base_image::{self, BaseImage};
use crate::builder::{self, BuildNetwork, BuildRequest};
use crate::{wheels, Project};
use stigmer_stack::ui::progress::Progress;

/// The rebuild decision and what it was made from.
pub struct Plan {
    pub base: BaseImage,
    pub manifest: InputManifest,
    pub sources: SourceTree,
    pub image: Option<Image>,
    pub decision: RebuildDecision,
    /// How long deciding took, without making or pulling a base image.
    pub decision_time: std::time::Duration,
}

impl Plan {
    /// The one-line reason, naming changed source files when the cache knows them.
    pub fn reason(&self, project: &Project) -> String {
        let RebuildDecision::Changed { changes } = &self.decision else {
            return self.decision.to_string();
        };
        let files = changes
            .iter()
            .find(|change| change.input == SOURCE_INPUT)
            .and_then(|change| read_source_cache(project, change.image.as_deref()?))
            .map(|older| self.sources.changed_since(&older))
            .filter(|files| !files.is_empty());
        match files {
            Some(files) => format!("{} ({})", self.decision, files.join(", ")),
            None => self.decision.to_string(),
        }
    }
}

/// Image label → the Dockerfile's build argument that sets it.
const LABEL_ARGS: [(&str, &str); 3] = [
    (POETRY_LOCK_LABEL, "STIGMER_POETRY_LOCK_SHA256"),
    (INPUTS_LABEL, "STIGMER_INPUTS_SHA256"),
    (MANIFEST_LABEL, "STIGMER_INPUTS_MANIFEST"),
];

/// The build arguments that change what the image holds (the label ones only describe it).
pub fn build_args(base: &BaseImage) -> BTreeMap<String, String> {
    BTreeMap::from([("BASE_IMAGE".to_string(), base.reference.clone())])
}

/// Decides whether the image must be built: what the engine has (one inspect), the base
/// image ([`base_image::choose`], which pulls or makes it when absent), then the decision.
pub fn plan(docker: &Docker, project: &Project, progress: &mut Progress) -> Result<Plan> {
    let started = Instant::now();
    let present = present_images(docker, project)?;
    let inspect_time = started.elapsed();
    let base = base_image::choose(docker, project, &present, progress)?;
    let mut plan = decide(project, base, present)?;
    plan.decision_time += inspect_time;
    Ok(plan)
}

/// The runner image and the base image candidates the engine has, in one call: missing
/// ones are simply absent from the array docker prints.
pub fn present_images(docker: &Docker, project: &Project) -> Result<Vec<Image>> {
    let mut inspect = vec![
        "image".to_string(),
        "inspect".to_string(),
        project.stack.runner.image.clone(),
    ];
    inspect.extend(base_image::candidate_references(project));
    let captured = docker.capture(&inspect)?;
    parse_images(&captured.stdout)
        .with_context(|| format!("inspecting images: {}", captured.stderr_tail()))
}

/// Compares the working tree's inputs on `base` with the image's labels.
pub fn decide(project: &Project, base: BaseImage, present: Vec<Image>) -> Result<Plan> {
    let started = Instant::now();
    let wanted_tag = stigmer_stack::docker::normalized_tag(&project.stack.runner.image);
    let image = present
        .into_iter()
        .find(|image| image.tags.contains(&wanted_tag));
    let (mut manifest, sources) =
        InputManifest::from_tree(&project.runner_dir, &base.id, &build_args(&base))?;
    for (name, dir) in wheels::lock::path_dependencies(&project.runner_dir)? {
        manifest.add_path_dependency(&name, &dir)?;
    }
    // With the working tree's source mounted over the image's copy, the source the image was
    // built with does not matter: a source change needs no build.
    let ignored: &[&str] = if project.stack.runner.source_mount.is_some() {
        &[SOURCE_INPUT]
    } else {
        &[]
    };
    let decision = RebuildDecision::decide_ignoring(
        &manifest,
        image.as_ref().map(|image| &image.labels),
        ignored,
    );
    Ok(Plan {
        base,
        manifest,
        sources,
        image,
        decision,
        decision_time: started.elapsed(),
    })
}

/// Builds the image from `plan`'s inputs and labels it with them, with the builder the engine
/// offers (see [`builder`]), decided here once per build and named in the output.
pub fn build(
    docker: &Docker,
    project: &Project,
    engine: &EngineInfo,
    plan: &Plan,
    no_cache: bool,
    progress: &mut Progress,
) -> Result<Image> {
    progress.phase("Preparing locked wheels", |phase| {
        wheels::prepare(
            docker,
            &project.cache_dir(),
            &project.runner_dir,
            &plan.base.id,
            &engine.platform(),
            phase,
        )
    })?;
    let detected = builder::detect(docker, project.forced_builder, &project.stack.tools_dir)?;
    let chosen = builder::ensure_ready(
        detected,
        project.forced_builder,
        &project.stack.tools_dir,
        progress,
    )?;
    let request = build_request(project, plan, no_cache)?;
    let command = builder::command(&chosen, &request, &project.cache_dir().join("builder"))?;
    progress.phase(
        &format!("Building the agent-runner image with {}", chosen.describe()),
        |phase| {
            builder::run(docker, &command, |line| phase.line(line)).with_context(|| {
                format!("building the agent-runner image with {}", chosen.describe())
            })
        },
    )?;
    write_source_cache(project, &plan.sources)?;
    inspect_image(docker, &project.stack.runner.image)?.context("the image just built is not there")
}

/// What every builder builds: the service's Dockerfile and context, the image's tag, the
/// build arguments and those that carry the input labels, after [`wheels::prepare`] laid out
/// the context.
pub fn build_request(project: &Project, plan: &Plan, no_cache: bool) -> Result<BuildRequest> {
    let mut build_args = build_args(&plan.base);
    // The Dockerfile turns these into the image's labels in a single step.
    for (label, value) in plan.manifest.labels() {
        let Some((_, argument)) = LABEL_ARGS.iter().find(|(known, _)| *known == label) else {
            bail!("no build argument carries the label {label}: add it to LABEL_ARGS and the Dockerfile");
        };
        build_args.insert(argument.to_string(), value);
    }
    // Offline unless a source build installs compilers from Debian's archive.
    let network = if wheels::installs_compilers(&project.runner_dir)? {
        BuildNetwork::Default
    } else {
        BuildNetwork::None
    };
    Ok(BuildRequest {
        context: project.runner_dir.clone(),
        dockerfile: project.runner_dir.join("Dockerfile"),
        tag: project.stack.runner.image.clone(),
        build_args,
        network,
        no_cache,
    })
}

fn source_cache_path(project: &Project, digest: &str) -> std::path::PathBuf {
    project
        .cache_dir()
        .join("sources")
        .join(format!("{digest}.json"))
}

/// Remembers the per-file digests of what was built, so a later decision can name the files
/// that changed. Only a cache: losing it only shortens that message.
fn write_source_cache(project: &Project, sources: &SourceTree) -> Result<()> {
    let path = source_cache_path(project, &sources.digest);
    let dir = path.parent().context("the cache path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(&path, serde_json::to_vec(sources)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_source_cache(project: &Project, digest: &str) -> Option<SourceTree> {
    serde_json::from_slice(&fs::read(source_cache_path(project, digest)).ok()?).ok()
}

/// Removes the image a rebuild replaced once nothing names it any more. An image that
/// still carries a tag (the same build under another name, such as the tests' image) is
/// left alone, and docker itself refuses while a container uses it.
pub fn remove_replaced(docker: &Docker, old: Option<&Image>, new: &Image) {
    let Some(old) = old.filter(|old| old.id != new.id) else {
        return;
    };
    if let Ok(Some(current)) = inspect_image(docker, &old.id) {
        if current.tags.is_empty() {
            let _ = docker.capture(&args(["image", "rm", &old.id]));
        }
    }
}

/// `cargo xtask rebuild-runner`.
#[derive(Args)]
pub struct RebuildRunner {
    /// Do not use Docker's build cache: every step runs again, and BuildKit starts the venv
    /// cache mount over too.
    #[arg(long)]
    no_cache: bool,
}

impl RebuildRunner {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let plan = plan(&docker, project, &mut progress)?;
        progress.note(&format!(
            "forced rebuild; the inputs say: {}",
            plan.reason(project)
        ));
        let image = build(
            &docker,
            project,
            &engine,
            &plan,
            self.no_cache,
            &mut progress,
        )?;
        // Docker keeps an image that a container still uses; `cargo xtask dev` replaces that container.
        remove_replaced(&docker, plan.image.as_ref(), &image);
        progress.summary();
        println!(
            "built {} ({}, {} MB)",
            project.stack.runner.image,
            short_id(&image.id),
            image.size / 1_000_000
        );
        Ok(())
    }
}
