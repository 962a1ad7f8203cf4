//! The base image the Dockerfile starts from, chosen here and nowhere else ([`choose`]): the
//! configured one (`python:3.11-slim` by default) or the stand-in made earlier when the engine
//! has it; else the registry's copy, when a registry is configured (so every machine resolves
//! the same base image ID, hence the same inputs digest); else the configured one pulled from
//! its own registry; else an equivalent made here from Debian's packages.
//!
//! Machines without a registry still reach Debian's archive, so `mmdebstrap` builds a
//! bookworm root file system with Debian's Python 3.11 and `docker import` turns it into an
//! image, the documented way to make a base image
//! (https://docs.docker.com/build/building/base-images/#create-a-base-image). It is made
//! once and reused; on a laptop that can pull `python:3.11-slim` none of this runs.

use std::path::Path;

use anyhow::{bail, Context, Result};
use stigmer_stack::docker::inspect::Image;
use stigmer_stack::docker::registry::{self, Pulled, Registry};
use stigmer_stack::docker::{self, args, Docker};
use stigmer_stack::exec;
use stigmer_stack::runner::lifecycle::inspect_image;

use crate::Project;
use stigmer_stack::ui::progress::{Phase, Progress};

pub const DEFAULT_BASE: &str = "python:3.11-slim";
/// The stand-in for [`DEFAULT_BASE`] made from Debian's packages.
pub const MADE_BASE: &str = "stigmer-python-base:3.11-bookworm";

/// Debian bookworm ships Python 3.11, the version of `python:3.11-slim`; `python3-venv`
/// brings the `venv` module that the slim image has built in.
const PACKAGES: &str = "python3,python3-venv,ca-certificates";
const SOURCES: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

/// The base image a build uses.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: String,
    pub id: String,
}

/// Finds the configured base image, or the one made here, among images the engine already
/// has; `None` when neither is present. Costs one `docker image inspect`.
pub fn find_present(project: &Project, present: &[Image]) -> Option<BaseImage> {
    let mut candidates = vec![project.configured_base.as_str()];
    if project.configured_base == DEFAULT_BASE {
        candidates.push(MADE_BASE);
    }
    candidates.into_iter().find_map(|reference| {
        let tag = docker::normalized_tag(reference);
        present
            .iter()
            .find(|image| image.tags.contains(&tag))
            .map(|image| BaseImage {
                reference: reference.to_string(),
                id: image.id.clone(),
            })
    })
}

/// The references [`find_present`] looks for, for the caller's single inspect.
pub fn candidate_references(project: &Project) -> Vec<String> {
    let mut references = vec![project.configured_base.clone()];
    if project.configured_base == DEFAULT_BASE {
        references.push(MADE_BASE.to_string());
    }
    references
}

/// The base image a build uses: one of the [`candidate_references`] among the images the
/// engine has (`present`, from the caller's single inspect), else [`obtain`]ed.
pub fn choose(
    docker: &Docker,
    project: &Project,
    present: &[Image],
    progress: &mut Progress,
) -> Result<BaseImage> {
    match find_present(project, present) {
        Some(base) => Ok(base),
        None => obtain(docker, project, progress),
    }
}

/// The base image when the engine has none: the registry's copy, else the configured one
/// pulled, else the stand-in made from Debian's packages.
pub fn obtain(docker: &Docker, project: &Project, progress: &mut Progress) -> Result<BaseImage> {
    if let Some(registry) = &project.registry {
        if let Some(base) = pull_from_registry(docker, registry, project, progress)? {
            return Ok(base);
        }
    }
    let reference = project.configured_base.clone();
    progress.note(&format!("{reference} is not present: trying to pull it"));
    let pulled = docker.capture(&args(["pull", &reference]))?;
    if !pulled.success {
        progress.note(&format!(
            "pulling {reference} failed: {}",
            pulled.stderr_tail().trim()
        ));
    }
    let pulled = pulled.success;
    if pulled {
        let image =
            inspect_image(docker, &reference)?.context("the pulled base image is not there")?;
        return Ok(BaseImage {
            reference,
            id: image.id,
        });
    }
    if reference != DEFAULT_BASE {
        bail!(
            "the base image {reference} (STIGMER_BASE_IMAGE) is neither present nor pullable; \
             load it with `docker load`, or unset STIGMER_BASE_IMAGE to use {DEFAULT_BASE} or the one made from Debian's packages"
        );
    }
    progress.note(&format!("{reference} cannot be pulled here: making {MADE_BASE} from Debian's packages (once; later runs reuse it)"));
    progress.phase(&format!("Making {MADE_BASE}"), |phase| {
        make(docker, project, phase)
    })?;
    let image =
        inspect_image(docker, MADE_BASE)?.context("the base image just made is not there")?;
    Ok(BaseImage {
        reference: MADE_BASE.to_string(),
        id: image.id,
    })
}

/// For a machine without the base image: the registry's copy, so that it resolves the same
/// base image ID (and so the same inputs digest) as the machine that published
/// (`cargo xtask publish-runner` pushes it under [`Registry::mirror_reference`]).
fn pull_from_registry(
    docker: &Docker,
    registry: &Registry,
    project: &Project,
    progress: &Progress,
) -> Result<Option<BaseImage>> {
    let mut reasons = Vec::new();
    for reference in candidate_references(project) {
        let Some(mirror) = registry.mirror_reference(&reference) else {
            continue;
        };
        match registry::pull(docker, &mirror)? {
            Pulled::Image(image) => {
                registry::adopt(docker, &mirror, &reference)?;
                progress.note(&format!("pulled the base image {reference} from {mirror}"));
                return Ok(Some(BaseImage {
                    reference,
                    id: image.id,
                }));
            }
            Pulled::Failed(reason) => reasons.push(format!("{mirror}: {reason}")),
        }
    }
    if !reasons.is_empty() {
        progress.note(&format!(
            "registry has no base image ({}): obtaining it without the registry",
            reasons.join("; ")
        ));
    }
    Ok(None)
}

/// Builds the root file system with mmdebstrap into a tarball, then `docker import`s it.
fn make(docker: &Docker, project: &Project, phase: &Phase) -> Result<()> {
    ensure_mmdebstrap(phase)?;
    let work = project.cache_dir().join("base-image");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let tarball = work.join("rootfs.tar");
    let result = build_tarball(&tarball, phase).and_then(|()| import(docker, &tarball, phase));
    // The tarball is only a step on the way; a failed run must not leave 150 MB behind.
    let _ = std::fs::remove_file(&tarball);
    result
}

fn build_tarball(tarball: &Path, phase: &Phase) -> Result<()> {
    let mut mmdebstrap = vec![
        "--variant=minbase".to_string(),
        format!("--include={PACKAGES}"),
        // Documentation, manuals and translations are dead weight in a service image.
        "--dpkgopt=path-exclude=/usr/share/doc/*".to_string(),
        "--dpkgopt=path-exclude=/usr/share/man/*".to_string(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".to_string(),
        "--dpkgopt=path-include=/usr/share/locale/locale.alias".to_string(),
        "--dpkgopt=path-exclude=/usr/share/info/*".to_string(),
        "bookworm".to_string(),
        tarball.display().to_string(),
    ];
    mmdebstrap.extend(SOURCES.map(String::from));
    exec::stream("mmdebstrap", &mmdebstrap, &[], |line| phase.line(line))
        .context("making the base file system with mmdebstrap")
}

fn import(docker: &Docker, tarball: &Path, phase: &Phase) -> Result<()> {
    let tarball = tarball.display().to_string();
    let import = args([
        "import",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        "LABEL dev.stigmer.base-image=debian-bookworm-mmdebstrap",
        "--change",
        "CMD [\"python3\"]",
        &tarball,
        MADE_BASE,
    ]);
    docker
        .stream(&import, &[], |line| phase.line(line))
        .context("importing the base file system")
}

/// mmdebstrap comes from Debian's packages; root installs it, anyone else is told how.
fn ensure_mmdebstrap(phase: &Phase) -> Result<()> {
    if exec::succeeds("mmdebstrap", &["--version"]) {
        return Ok(());
    }
    crate::apt::install(
        &["mmdebstrap"],
        &format!(
            "making the base image (or a {DEFAULT_BASE} made available to docker with `docker pull` or `docker load`)"
        ),
        phase,
    )
}
