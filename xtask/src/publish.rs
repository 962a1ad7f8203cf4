//! `cargo xtask publish-runner`, and the other side of it in `cargo xtask dev`: pulling the
//! working tree's image from the registry instead of building it (the base image it was built
//! on is pulled where every base image is chosen, in [`crate::base_image`]).
//!
//! Publishing pushes the base image under its own name in the registry, then the agent-runner
//! image under two tags: the digest of its inputs, which `dev` asks for, and the project's
//! version, which the `stigmer` CLI of that version asks for. The OCI labels describing the
//! publication are stamped on a configuration-only child of the built image, so they never
//! touch the inputs or the rebuild decision (see `stigmer_stack::docker::registry`).

use std::ffi::OsStr;
use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use stigmer_stack::docker::engine::check_engine;
use stigmer_stack::docker::inspect::Image;
use stigmer_stack::docker::registry::{self, InputsPull};
use stigmer_stack::docker::{short_id, Docker};
use stigmer_stack::exec;
use stigmer_stack::runner::lifecycle::inspect_image;
use stigmer_stack::ui::progress::{seconds, Progress};

use crate::config::FileConfig;
use crate::image::{self, Plan};
use crate::Project;

/// The `org.opencontainers.image.source` label when stigmer.toml does not name one.
const DEFAULT_SOURCE: &str = "https://github.com/stigmer/stigmer";

/// `cargo xtask publish-runner` (the registry comes from `--registry`, `STIGMER_REGISTRY` or
/// stigmer.toml).
#[derive(Args)]
pub struct PublishRunner {}

impl PublishRunner {
    pub fn run(self, project: &Project) -> Result<()> {
        let registry = project.registry.clone().context(
            "no registry to publish to: pass --registry HOST[:PORT]/PATH, set STIGMER_REGISTRY, \
             or set runner.registry in stigmer.toml",
        )?;
        let docker = crate::docker()?;
        let mut progress = Progress::new();
        let engine = progress.phase("Checking Docker", |_| check_engine(&docker))?;
        let plan = image::plan(&docker, project, &mut progress)?;
        progress.note(&format!("agent-runner image: {}", plan.reason(project)));
        let built = match (&plan.image, plan.decision.needs_build()) {
            (Some(current), false) => current.clone(),
            _ => {
                let built = image::build(&docker, project, &engine, &plan, false, &mut progress)?;
                image::remove_replaced(&docker, plan.image.as_ref(), &built);
                built
            }
        };
        let labels = registry::oci_labels(
            &FileConfig::read(&project.root)?
                .runner
                .source
                .unwrap_or_else(|| DEFAULT_SOURCE.to_string()),
            &revision(project, &progress),
            env!("CARGO_PKG_VERSION"),
            &rfc3339_utc(created_seconds()),
        );
        if let Some(mirror) = registry.mirror_reference(&plan.base.reference) {
            progress.phase(&format!("Pushing the base image as {mirror}"), |phase| {
                registry::push(&docker, &plan.base.reference, &mirror, |line| {
                    phase.line(line)
                })?;
                registry::forget(&docker, &mirror);
                Ok(())
            })?;
        }
        let tags = [
            registry.runner_reference(&plan.manifest.digest()),
            registry.runner_reference(env!("CARGO_PKG_VERSION")),
        ];
        let stamped = progress.phase("Labelling the publication", |_| {
            stamp(&docker, project, &built, &labels, &tags, &plan)
        })?;
        let pushed = progress.phase("Pushing the agent-runner image", |phase| {
            for tag in &tags {
                registry::push(&docker, tag, tag, |line| phase.line(line))?;
            }
            Ok(())
        });
        for tag in &tags {
            registry::forget(&docker, tag);
        }
        pushed?;
        progress.summary();
        println!(
            "published {} and {} (image {}, built as {})",
            tags[0],
            tags[1],
            short_id(&stamped.id),
            short_id(&built.id)
        );
        Ok(())
    }
}

/// The configuration-only child of `built` carrying the publication's labels, checked to carry
/// exactly the inputs `plan` decided on.
fn stamp(
    docker: &Docker,
    project: &Project,
    built: &Image,
    labels: &[(String, String)],
    tags: &[String],
    plan: &Plan,
) -> Result<Image> {
    let context = project.cache_dir().join("publish");
    fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let dockerfile = context.join("Dockerfile");
    fs::write(&dockerfile, registry::stamp_dockerfile(&built.id))
        .with_context(|| format!("writing {}", dockerfile.display()))?;
    let context = context.display().to_string();
    docker
        .checked(&registry::stamp_args(&context, labels, tags))
        .context("adding the OCI labels to the agent-runner image")?;
    let stamped = inspect_image(docker, &tags[0])?.context("the labelled image is not there")?;
    if let Some(reason) = registry::input_mismatch(&stamped.labels, &plan.manifest) {
        anyhow::bail!("the labelled image's inputs differ from the build's ({reason}); this is a bug in publish-runner");
    }
    Ok(stamped)
}

/// The commit the publication comes from, for the revision label; says so when the runner's
/// files differ from it (the inputs digest still names exactly what was built).
fn revision(project: &Project, progress: &Progress) -> String {
    let head = exec::read("git", &["rev-parse", "HEAD"], &project.root)
        .map(|head| head.trim().to_string());
    let Ok(head) = head else {
        progress.warn("not a git checkout: the revision label says `unknown`");
        return "unknown".to_string();
    };
    let status = [
        OsStr::new("status"),
        OsStr::new("--porcelain"),
        OsStr::new("--"),
        project.runner_dir.as_os_str(),
    ];
    let dirty = exec::read("git", &status, &project.root)
        .map(|status| !status.trim().is_empty())
        .unwrap_or(false);
    if dirty {
        progress.warn(&format!(
            "the agent-runner's files differ from commit {}: its revision label names that commit",
            &head[..head.len().min(12)]
        ));
    }
    head
}

/// Now, or `SOURCE_DATE_EPOCH` when a reproducible pipeline sets it
/// (https://reproducible-builds.org/specs/source-date-epoch/).
fn created_seconds() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0)
        })
}

/// RFC 3339 UTC time of `seconds` since the Unix epoch, for the `created` label.
pub fn rfc3339_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm (http://howardhinnant.github.io/date_algorithms.html).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// For `dev` before a build: the working tree's image from the registry, checked and tagged
/// locally; `None` (after one line saying why) when there is no registry, or it is
/// unreachable, lacks the image, or offers one whose inputs differ.
pub fn pull_instead_of_building(
    docker: &Docker,
    project: &Project,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<Option<Image>> {
    let Some(registry) = &project.registry else {
        return Ok(None);
    };
    let pulled = registry::pull_for_inputs(
        docker,
        registry,
        &plan.manifest,
        &project.stack.runner.image,
    )?;
    match pulled {
        InputsPull::Adopted {
            image,
            reference,
            elapsed,
        } => {
            progress.note(&format!(
                "pulled {reference} in {} instead of building: its input labels match the working tree",
                seconds(elapsed)
            ));
            Ok(Some(image))
        }
        InputsPull::Unavailable { reference, reason } => {
            progress.note(&format!(
                "registry: {reference} not pulled ({reason}): building locally"
            ));
            Ok(None)
        }
        InputsPull::Refused { reference, reason } => {
            progress.warn(&format!(
                "registry: refused {reference}, its labels do not match the working tree ({reason}): building locally"
            ));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_times_are_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        // The other side of stigmer-stack's docker_timestamps test, which reads this time back.
        assert_eq!(rfc3339_utc(1_795_717_420), "2026-11-26T18:23:40Z");
    }
}
