//! The rebuild decision: the working tree's manifest against the labels an image carries,
//! with the one-line reason a user reads ([`RebuildDecision`]'s `Display`).
//!
//! Apart from the manifest because it is pure: two manifests in, a decision out, nothing
//! read from disk or the engine.

use std::collections::BTreeMap;
use std::fmt;

use super::manifest::InputManifest;

/// One input whose digest differs between the image and the working tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InputChange {
    pub input: String,
    pub image: Option<String>,
    pub tree: String,
}

impl fmt::Display for InputChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = self
            .image
            .as_deref()
            .map_or_else(|| "none".to_string(), short);
        write!(f, "{} changed: {old} → {}", self.input, short(&self.tree))
    }
}

/// Abbreviates digests (`3f2a…`) and leaves other values whole.
fn short(value: &str) -> String {
    let digest = value.strip_prefix("sha256:").unwrap_or(value);
    if digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("{}…", &digest[..4])
    } else if value.is_empty() {
        "none".to_string()
    } else {
        value.to_string()
    }
}

/// Whether the image must be rebuilt, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RebuildDecision {
    UpToDate,
    ImageMissing,
    /// The image exists but carries no manifest: it was not built by this tool.
    Unlabelled,
    /// The manifest matches, but these labels do not say what the tree's would: a doctored
    /// or half-labelled image, never taken for current.
    Mislabelled {
        labels: Vec<String>,
    },
    Changed {
        changes: Vec<InputChange>,
    },
}

impl RebuildDecision {
    pub fn decide(
        tree: &InputManifest,
        image_labels: Option<&BTreeMap<String, String>>,
    ) -> RebuildDecision {
        RebuildDecision::decide_ignoring(tree, image_labels, &[])
    }

    /// Like [`RebuildDecision::decide`], with the `ignored` inputs left out of the comparison:
    /// the dev loop mounts the working tree's source over the image's copy, so the source the
    /// image was built with does not matter there. The image's labels must still agree with its
    /// own manifest, so a doctored one is never taken for current.
    pub fn decide_ignoring(
        tree: &InputManifest,
        image_labels: Option<&BTreeMap<String, String>>,
        ignored: &[&str],
    ) -> RebuildDecision {
        let Some(labels) = image_labels else {
            return RebuildDecision::ImageMissing;
        };
        let Some(image) = InputManifest::from_labels(labels) else {
            return RebuildDecision::Unlabelled;
        };
        let compared = |manifest: &InputManifest| -> BTreeMap<String, String> {
            manifest
                .entries
                .iter()
                .filter(|(name, _)| !ignored.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect()
        };
        let (wanted, built) = (compared(tree), compared(&image));
        if wanted == built {
            // Every label the build sets must say what the manifest would, the poetry.lock
            // digest and the inputs digest included, not only the manifest.
            let expected = if ignored.is_empty() { tree } else { &image };
            let mislabelled: Vec<String> = expected
                .labels()
                .into_iter()
                .filter(|(key, value)| labels.get(key) != Some(value))
                .map(|(key, _)| key)
                .collect();
            if mislabelled.is_empty() {
                return RebuildDecision::UpToDate;
            }
            return RebuildDecision::Mislabelled {
                labels: mislabelled,
            };
        }
        let mut changes: Vec<InputChange> = wanted
            .iter()
            .filter(|(name, value)| built.get(*name) != Some(*value))
            .map(|(name, value)| InputChange {
                input: name.clone(),
                image: built.get(name).cloned(),
                tree: value.clone(),
            })
            .collect();
        // An input the image knew of but the tree no longer declares still forces a build.
        changes.extend(
            built
                .iter()
                .filter(|(name, _)| !wanted.contains_key(*name))
                .map(|(name, value)| InputChange {
                    input: name.clone(),
                    image: Some(value.clone()),
                    tree: String::new(),
                }),
        );
        RebuildDecision::Changed { changes }
    }

    pub fn needs_build(&self) -> bool {
        !matches!(self, RebuildDecision::UpToDate)
    }
}

impl fmt::Display for RebuildDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebuildDecision::UpToDate => write!(f, "up to date"),
            RebuildDecision::ImageMissing => write!(f, "no image yet"),
            RebuildDecision::Unlabelled => write!(
                f,
                "the image carries no input labels (not built by cargo xtask)"
            ),
            RebuildDecision::Mislabelled { labels } => {
                write!(f, "labels {} differ", labels.join(", "))
            }
            RebuildDecision::Changed { changes } => {
                let parts: Vec<String> = changes.iter().map(ToString::to_string).collect();
                write!(f, "{}", parts.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::inputs::fixture::{args, service_dir};
    use crate::runner::inputs::{sha256_hex, INPUTS_LABEL, POETRY_LOCK_LABEL, SOURCE_INPUT};
    use std::fs;

    #[test]
    fn touching_a_file_changes_nothing_but_editing_names_it() {
        let (dir, _cleanup) = service_dir();
        let (before, tree_before) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        // Rewriting the same bytes (a touch, a checkout) leaves every digest alone.
        fs::write(dir.join("poetry.lock"), "# lock\n").unwrap();
        fs::write(
            dir.join("src/agent_runner/__pycache__/main.cpython-311.pyc"),
            "other junk",
        )
        .unwrap();
        let (same, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        assert_eq!(
            RebuildDecision::decide(&same, Some(&labels)),
            RebuildDecision::UpToDate
        );

        fs::write(dir.join("src/agent_runner/main.py"), "print('bye')\n").unwrap();
        let (edited, tree_after) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let decision = RebuildDecision::decide(&edited, Some(&labels));
        let RebuildDecision::Changed { changes } = &decision else {
            panic!("{decision:?}")
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].input, "src/");
        assert_eq!(
            tree_after.changed_since(&tree_before),
            vec!["agent_runner/main.py".to_string()]
        );
    }

    #[test]
    fn a_mounted_source_leaves_the_source_out_but_not_the_labels() {
        let (dir, _cleanup) = service_dir();
        let (built, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = built.labels().into_iter().collect();
        fs::write(dir.join("src/agent_runner/main.py"), "print('edited')\n").unwrap();
        let (edited, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let source = SOURCE_INPUT;
        assert!(RebuildDecision::decide(&edited, Some(&labels)).needs_build());
        assert_eq!(
            RebuildDecision::decide_ignoring(&edited, Some(&labels), &[source]),
            RebuildDecision::UpToDate
        );
        // Any other input still counts.
        fs::write(dir.join("poetry.lock"), "# other\n").unwrap();
        let (locked, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let RebuildDecision::Changed { changes } =
            RebuildDecision::decide_ignoring(&locked, Some(&labels), &[source])
        else {
            panic!("a lock change must rebuild")
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].input, "poetry.lock");
        // A doctored inputs label is caught against the image's own manifest.
        let mut doctored = labels.clone();
        doctored.insert(INPUTS_LABEL.to_string(), "0".repeat(64));
        assert!(matches!(
            RebuildDecision::decide_ignoring(&edited, Some(&doctored), &[source]),
            RebuildDecision::Mislabelled { .. }
        ));
    }

    #[test]
    fn the_reason_line_abbreviates_digests() {
        let (dir, _cleanup) = service_dir();
        let (before, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let labels: BTreeMap<String, String> = before.labels().into_iter().collect();
        fs::write(dir.join("poetry.lock"), "# lock 2\n").unwrap();
        let (after, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let old = &sha256_hex(b"# lock\n")[..4];
        let new = &sha256_hex(b"# lock 2\n")[..4];
        assert_eq!(
            RebuildDecision::decide(&after, Some(&labels)).to_string(),
            format!("poetry.lock changed: {old}… → {new}…")
        );
    }

    #[test]
    fn a_doctored_label_is_never_up_to_date() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        let mut labels: BTreeMap<String, String> = manifest.labels().into_iter().collect();
        labels.insert(POETRY_LOCK_LABEL.to_string(), "0".repeat(64));
        let decision = RebuildDecision::decide(&manifest, Some(&labels));
        assert_eq!(
            decision,
            RebuildDecision::Mislabelled {
                labels: vec![POETRY_LOCK_LABEL.to_string()]
            }
        );
        assert!(decision.needs_build());
    }

    #[test]
    fn missing_and_foreign_images() {
        let (dir, _cleanup) = service_dir();
        let (manifest, _) = InputManifest::from_tree(&dir, "sha256:base", &args()).unwrap();
        assert_eq!(
            RebuildDecision::decide(&manifest, None),
            RebuildDecision::ImageMissing
        );
        assert_eq!(
            RebuildDecision::decide(&manifest, Some(&BTreeMap::new())),
            RebuildDecision::Unlabelled
        );
    }
}
