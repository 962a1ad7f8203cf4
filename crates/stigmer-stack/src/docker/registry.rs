//! Runner images in a container registry: CI builds an image once and pushes it, every other
//! machine pulls exactly that image instead of building it.
//!
//! An image is published under the digest of its inputs (the same
//! [`InputManifest::digest`] the rebuild decision compares), so `cargo xtask dev` can ask the
//! registry for the image of the working tree by name, and under the project's version, so an
//! installed `stigmer` CLI can ask for the image of its own release. A pulled image is used only
//! when its input labels equal the working tree's exactly: a tag is a name anyone can push, the
//! labels are what the rebuild decision trusts.
//!
//! The manifest holds the base image's ID, so two machines only agree on a digest when they
//! start from the very same base image. An image ID is the digest of its configuration, which a
//! push and a pull carry unchanged (the registry manifest's `config.digest`,
//! https://distribution.github.io/distribution/spec/manifest-v2-2/), so publishing also pushes
//! the base image and a machine without one pulls it from the registry first: everyone then
//! resolves the same base ID. Labels that describe a publication (OCI `source`, `revision`,
//! `version`, `created`, https://github.com/opencontainers/image-spec/blob/main/annotations.md)
//! are outputs: they are stamped on a configuration-only child image at publish time and never
//! enter the manifest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::docker::inspect::Image;
use crate::docker::{args, Docker};
use crate::runner::inputs::{InputManifest, RebuildDecision, INPUTS_LABEL};
use crate::runner::lifecycle::inspect_image;

/// The environment variable naming the registry, for `cargo xtask` and the `stigmer` CLI.
pub const REGISTRY_ENV: &str = "STIGMER_REGISTRY";
/// The repository name of the agent-runner image under the registry's path.
pub const RUNNER_REPOSITORY: &str = "stigmer-agent-runner";
/// The value that turns a configured registry off (`--registry none`).
pub const NO_REGISTRY: &str = "none";

pub const SOURCE_LABEL: &str = "org.opencontainers.image.source";
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";
pub const CREATED_LABEL: &str = "org.opencontainers.image.created";

/// A registry and a path in it: `HOST[:PORT][/PATH]`, as docker writes the front of a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    prefix: String,
}

impl Registry {
    /// Parses `HOST[:PORT][/PATH]`; `none` (or nothing) means no registry.
    pub fn parse(text: &str) -> Result<Option<Registry>> {
        let text = text.trim().trim_end_matches('/');
        if text.is_empty() || text == NO_REGISTRY {
            return Ok(None);
        }
        if text.contains("://") {
            bail!(
                "a registry is written HOST[:PORT]/PATH without a scheme (docker chooses HTTPS, or HTTP for \
                 an insecure registry), got `{text}`"
            );
        }
        let host = text.split('/').next().unwrap_or_default();
        // Docker reads the first component as a registry host only when it has a dot or a
        // port or is `localhost`; otherwise `name/x` would mean Docker Hub's user `name`.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            bail!(
                "the registry `{text}` must start with a host (`registry.example.com/team`, \
                 `127.0.0.1:5000`), or docker would read `{host}` as a Docker Hub account"
            );
        }
        let path_ok = text.split('/').skip(1).all(|component| {
            !component.is_empty()
                && component
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
        if !path_ok || text.chars().any(char::is_whitespace) {
            bail!("the registry path in `{text}` may only hold lowercase letters, digits, `.`, `_` and `-` between slashes");
        }
        Ok(Some(Registry {
            prefix: text.to_string(),
        }))
    }

    /// Reads [`REGISTRY_ENV`] through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Registry>> {
        match lookup(REGISTRY_ENV) {
            None => Ok(None),
            Some(text) => Registry::parse(&text).with_context(|| format!("reading {REGISTRY_ENV}")),
        }
    }

    pub fn from_process_env() -> Result<Option<Registry>> {
        Registry::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    /// `<registry>/stigmer-agent-runner:<tag>`.
    pub fn runner_reference(&self, tag: &str) -> String {
        format!("{}/{RUNNER_REPOSITORY}:{tag}", self.prefix)
    }

    /// Where the registry keeps its copy of a local base image: the last path component and
    /// tag of `local` under the registry (`python:3.11-slim` → `<registry>/python:3.11-slim`).
    /// `None` for a reference pinned by digest, which resolves to the same ID everywhere.
    pub fn mirror_reference(&self, local: &str) -> Option<String> {
        if local.contains('@') {
            return None;
        }
        let last = super::normalized_tag(local.rsplit('/').next().unwrap_or(local));
        Some(format!("{}/{last}", self.prefix))
    }
}

pub fn pull_args(reference: &str) -> Vec<String> {
    args(["pull", "--quiet", reference])
}

pub fn push_args(reference: &str) -> Vec<String> {
    args(["push", reference])
}

pub fn tag_args(source: &str, target: &str) -> Vec<String> {
    args(["tag", source, target])
}

/// Removes one name; the image goes only when it was its last name.
pub fn untag_args(reference: &str) -> Vec<String> {
    args(["image", "rm", reference])
}

/// The OCI labels of a publication, in a fixed order.
pub fn oci_labels(
    source: &str,
    revision: &str,
    version: &str,
    created: &str,
) -> Vec<(String, String)> {
    [
        (SOURCE_LABEL, source),
        (REVISION_LABEL, revision),
        (VERSION_LABEL, version),
        (CREATED_LABEL, created),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// The Dockerfile of the configuration-only child that carries the publication's labels.
pub fn stamp_dockerfile(image_id: &str) -> String {
    format!("FROM {image_id}\n")
}

/// `docker build` of [`stamp_dockerfile`] in `context`: no step runs, so it takes a moment and
/// adds no layer, and the input labels are inherited unchanged.
pub fn stamp_args(context: &str, labels: &[(String, String)], tags: &[String]) -> Vec<String> {
    let mut build = args(["build", "--quiet", "--file"]);
    build.push(format!("{context}/Dockerfile"));
    for (key, value) in labels {
        build.extend(["--label".to_string(), format!("{key}={value}")]);
    }
    for tag in tags {
        build.extend(["--tag".to_string(), tag.clone()]);
    }
    build.push(context.to_string());
    build
}

/// Why a pulled image may not stand for the working tree; `None` when its input labels equal
/// the tree's exactly (every label the build sets, not only the digest a tag could lie about).
pub fn input_mismatch(labels: &BTreeMap<String, String>, tree: &InputManifest) -> Option<String> {
    let decision = RebuildDecision::decide(tree, Some(labels));
    decision.needs_build().then(|| decision.to_string())
}

/// The outcome of one `docker pull`.
#[derive(Debug)]
pub enum Pulled {
    Image(Image),
    /// The registry is unreachable, lacks the tag or refused: the last line docker printed.
    Failed(String),
}

/// Pulls `reference`; a failed pull is an outcome, not an error, because every caller falls
/// back to something else.
pub fn pull(docker: &Docker, reference: &str) -> Result<Pulled> {
    let captured = docker.capture(&pull_args(reference))?;
    if !captured.success {
        let reason = captured
            .stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("docker pull failed")
            .trim()
            .trim_start_matches("Error response from daemon: ")
            .to_string();
        return Ok(Pulled::Failed(reason));
    }
    let image = inspect_image(docker, reference)?
        .with_context(|| format!("{reference} was pulled but the engine does not list it"))?;
    Ok(Pulled::Image(image))
}

/// Gives the pulled image its local name and drops the registry's name, so the engine holds
/// one name per image as after a local build.
pub fn adopt(docker: &Docker, pulled: &str, local: &str) -> Result<()> {
    docker
        .checked(&tag_args(pulled, local))
        .with_context(|| format!("tagging {pulled} as {local}"))?;
    forget(docker, pulled);
    Ok(())
}

/// Drops the registry's name for an image (removing the image when nothing else names it).
pub fn forget(docker: &Docker, reference: &str) {
    // Only tidiness: a name left behind does no harm.
    let _ = docker.capture(&untag_args(reference));
}

/// What looking for the working tree's image in the registry came to.
#[derive(Debug)]
pub enum InputsPull {
    /// Pulled, checked and tagged locally.
    Adopted {
        image: Image,
        reference: String,
        elapsed: Duration,
    },
    /// Unreachable registry or no such tag.
    Unavailable { reference: String, reason: String },
    /// Pulled, but its labels are not the working tree's: removed again.
    Refused { reference: String, reason: String },
}

/// Looks for the image of `tree`'s inputs in `registry` and, when its labels match, tags it as
/// `local_image`.
pub fn pull_for_inputs(
    docker: &Docker,
    registry: &Registry,
    tree: &InputManifest,
    local_image: &str,
) -> Result<InputsPull> {
    let reference = registry.runner_reference(&tree.digest());
    let started = Instant::now();
    let image = match pull(docker, &reference)? {
        Pulled::Image(image) => image,
        Pulled::Failed(reason) => return Ok(InputsPull::Unavailable { reference, reason }),
    };
    if let Some(reason) = input_mismatch(&image.labels, tree) {
        forget(docker, &reference);
        return Ok(InputsPull::Refused { reference, reason });
    }
    adopt(docker, &reference, local_image)?;
    Ok(InputsPull::Adopted {
        image,
        reference,
        elapsed: started.elapsed(),
    })
}

/// Pulls the image published for `version` and tags it as `local_image`, for a CLI without a
/// working tree: it must carry input labels (built by `cargo xtask`) and say it is `version`.
pub fn pull_for_version(
    docker: &Docker,
    registry: &Registry,
    version: &str,
    local_image: &str,
) -> Result<Image> {
    let reference = registry.runner_reference(version);
    let image = match pull(docker, &reference)? {
        Pulled::Image(image) => image,
        Pulled::Failed(reason) => bail!("pulling {reference} failed: {reason}"),
    };
    let labelled_version = image.labels.get(VERSION_LABEL).map(String::as_str);
    if !image.labels.contains_key(INPUTS_LABEL) || labelled_version != Some(version) {
        forget(docker, &reference);
        bail!(
            "{reference} is not an agent-runner image published for version {version} \
             (its {VERSION_LABEL} label is {})",
            labelled_version.unwrap_or("missing")
        );
    }
    adopt(docker, &reference, local_image)?;
    inspect_image(docker, local_image)?.context("the image just tagged is not there")
}

/// Tags `source` as `target` and pushes it, handing docker's lines to `on_line`.
pub fn push(docker: &Docker, source: &str, target: &str, on_line: impl FnMut(&str)) -> Result<()> {
    if source != target {
        docker
            .checked(&tag_args(source, target))
            .with_context(|| format!("tagging {source} as {target}"))?;
    }
    docker.stream(&push_args(target), &[], on_line).with_context(|| {
        format!("pushing {target}: is the registry reachable, and are you logged in (`docker login`)?")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Registry {
        Registry::parse(text).unwrap().unwrap()
    }

    #[test]
    fn registries_are_host_and_path() {
        assert_eq!(
            registry("127.0.0.1:5000/team/").runner_reference("abc"),
            "127.0.0.1:5000/team/stigmer-agent-runner:abc"
        );
        assert_eq!(
            registry("ghcr.io").runner_reference("0.1.0"),
            "ghcr.io/stigmer-agent-runner:0.1.0"
        );
        assert_eq!(Registry::parse(" ").unwrap(), None);
        assert_eq!(Registry::parse("none").unwrap(), None);
        for bad in [
            "http://127.0.0.1:5000",
            "team/images",
            "ghcr.io/Team",
            "ghcr.io//x",
        ] {
            assert!(Registry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_names_the_variable_in_errors() {
        let err = Registry::from_lookup(|_| Some("nohost".to_string())).unwrap_err();
        assert!(format!("{err:#}").contains(REGISTRY_ENV), "{err:#}");
        assert_eq!(Registry::from_lookup(|_| None).unwrap(), None);
    }

    #[test]
    fn base_images_are_mirrored_under_their_last_name() {
        let registry = registry("localhost:5000/t");
        assert_eq!(
            registry.mirror_reference("python:3.11-slim").as_deref(),
            Some("localhost:5000/t/python:3.11-slim")
        );
        assert_eq!(
            registry
                .mirror_reference("docker.io/library/debian")
                .as_deref(),
            Some("localhost:5000/t/debian:latest")
        );
        assert_eq!(registry.mirror_reference("python@sha256:00"), None);
    }

    #[test]
    fn argument_lists() {
        assert_eq!(pull_args("r/x:1"), ["pull", "--quiet", "r/x:1"]);
        assert_eq!(push_args("r/x:1"), ["push", "r/x:1"]);
        assert_eq!(tag_args("a", "b"), ["tag", "a", "b"]);
        assert_eq!(untag_args("a"), ["image", "rm", "a"]);
        let labels = oci_labels("https://s", "abc", "0.1.0", "2024-01-02T03:04:05Z");
        assert_eq!(
            stamp_args(
                "/ctx",
                &labels[..1],
                &["r/x:1".to_string(), "r/x:2".to_string()]
            ),
            [
                "build",
                "--quiet",
                "--file",
                "/ctx/Dockerfile",
                "--label",
                "org.opencontainers.image.source=https://s",
                "--tag",
                "r/x:1",
                "--tag",
                "r/x:2",
                "/ctx"
            ]
        );
        assert_eq!(stamp_dockerfile("sha256:ab"), "FROM sha256:ab\n");
    }

    #[test]
    fn only_the_exact_input_labels_are_accepted() {
        let tree = InputManifest {
            entries: BTreeMap::from([
                ("poetry.lock".to_string(), "11".to_string()),
                ("src/".to_string(), "22".to_string()),
            ]),
        };
        let mut labels: BTreeMap<String, String> = tree.labels().into_iter().collect();
        labels.insert(VERSION_LABEL.to_string(), "0.1.0".to_string());
        assert_eq!(input_mismatch(&labels, &tree), None);

        // A doctored image: the digest a tag names, a manifest of other inputs.
        let mut doctored = labels.clone();
        let other = InputManifest {
            entries: BTreeMap::from([
                ("poetry.lock".to_string(), "11".to_string()),
                ("src/".to_string(), "33".to_string()),
            ]),
        };
        for (key, value) in other.labels() {
            if key != INPUTS_LABEL {
                doctored.insert(key, value);
            }
        }
        assert_eq!(
            input_mismatch(&doctored, &tree).as_deref(),
            Some("src/ changed: 33 → 22")
        );

        // The manifest agrees but another label does not.
        let mut lock_label = labels.clone();
        lock_label.insert(
            crate::runner::inputs::POETRY_LOCK_LABEL.to_string(),
            "x".to_string(),
        );
        assert_eq!(
            input_mismatch(&lock_label, &tree).as_deref(),
            Some("labels dev.stigmer.poetry-lock.sha256 differ")
        );
        assert!(input_mismatch(&BTreeMap::new(), &tree).is_some());
    }
}
