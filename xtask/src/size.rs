//! `cargo xtask size`: where the agent-runner image's bytes go.
//!
//! The image's size (`docker image inspect`) is split into its base image (the ID its
//! `dev.stigmer.inputs.manifest` label records), the dependencies (every file under
//! `/opt/venv` and `/opt/local`, with the ten largest distributions by installed size as
//! their `RECORD` files list them), the project's source (`/app`) and everything else,
//! which is what the Dockerfile adds beyond those three: a second copy of the venv,
//! compilers or a wheels layer left in the runtime stage would all show there, with the
//! layers that hold them.
//! The in-image part runs the image's own Python once, with no network.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use stigmer_stack::docker::{args, short_id, Docker};
use stigmer_stack::runner::inputs::{InputManifest, BASE_IMAGE_INPUT};
use stigmer_stack::runner::lifecycle::inspect_image;

use crate::Project;

/// How many distributions the breakdown names.
const LARGEST: usize = 10;
/// Beyond the base, the dependencies and the source, more than this is called waste.
const WASTE_THRESHOLD: i64 = 5_000_000;

/// Prints one JSON object: the distributions in the venv and the bytes under each tree.
const MEASURE: &str = r#"import importlib.metadata as md, json, os, sys

def file_bytes(top):
    total = 0
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return total

site = [p for p in sys.path if p.startswith("/opt/venv/") and p.endswith("site-packages")]
site.append("/opt/local")
distributions = []
for dist in md.distributions(path=site):
    total = 0
    for file in dist.files or []:
        path = str(file.locate())
        if os.path.isfile(path) and not os.path.islink(path):
            total += os.lstat(path).st_size
    distributions.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": total})
print(json.dumps({
    "distributions": distributions,
    "venv_bytes": file_bytes("/opt/venv") + file_bytes("/opt/local"),
    "source_bytes": file_bytes("/app"),
}))
"#;

#[derive(Args)]
pub struct Size {
    /// Print the breakdown as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What the image's own Python reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Measured {
    pub distributions: Vec<Distribution>,
    pub venv_bytes: u64,
    pub source_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub name: String,
    pub version: String,
    pub bytes: u64,
}

/// One layer the Dockerfile added on top of the base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    pub bytes: u64,
    pub created_by: String,
}

/// The breakdown `cargo xtask size` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breakdown {
    pub image: String,
    pub image_bytes: u64,
    pub base: String,
    pub base_bytes: u64,
    pub dependencies_bytes: u64,
    pub distributions: usize,
    pub largest_distributions: Vec<Distribution>,
    /// Venv files no distribution's `RECORD` lists (the interpreter links, `pyvenv.cfg`).
    pub unowned_venv_bytes: u64,
    pub source_bytes: u64,
    /// The image less the three parts above; negative when Docker counts a layer smaller
    /// than its files (it does not count directory entries).
    pub other_bytes: i64,
    pub layers: Vec<Layer>,
}

impl Breakdown {
    /// Pure: the parts from what docker and the image reported.
    pub fn new(
        image: &str,
        image_bytes: u64,
        base: &str,
        base_bytes: u64,
        measured: Measured,
        layers: Vec<Layer>,
    ) -> Breakdown {
        let mut distributions = measured.distributions;
        distributions.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        let owned: u64 = distributions.iter().map(|d| d.bytes).sum();
        let count = distributions.len();
        distributions.truncate(LARGEST);
        Breakdown {
            image: image.to_string(),
            image_bytes,
            base: base.to_string(),
            base_bytes,
            dependencies_bytes: measured.venv_bytes,
            distributions: count,
            largest_distributions: distributions,
            unowned_venv_bytes: measured.venv_bytes.saturating_sub(owned),
            source_bytes: measured.source_bytes,
            other_bytes: image_bytes as i64
                - base_bytes as i64
                - measured.venv_bytes as i64
                - measured.source_bytes as i64,
            layers,
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mb = |bytes: i64| format!("{:>8.1} MB", bytes as f64 / 1e6);
        let share = |bytes: i64| {
            format!(
                "{:>5.1}%",
                100.0 * bytes as f64 / self.image_bytes.max(1) as f64
            )
        };
        let mut out = format!("{:<64}{}\n", self.image, mb(self.image_bytes as i64));
        let mut row = |label: String, bytes: i64| {
            out.push_str(&format!("  {label:<62}{}  {}\n", mb(bytes), share(bytes)));
        };
        row(format!("base image {}", self.base), self.base_bytes as i64);
        row(
            format!(
                "dependencies ({} distributions in /opt/venv and /opt/local)",
                self.distributions
            ),
            self.dependencies_bytes as i64,
        );
        let named: u64 = self.largest_distributions.iter().map(|d| d.bytes).sum();
        let mut rows = Vec::new();
        for d in &self.largest_distributions {
            rows.push((format!("  {} {}", d.name, d.version), d.bytes as i64));
        }
        let rest = self
            .distributions
            .saturating_sub(self.largest_distributions.len());
        if rest > 0 {
            let others = self
                .dependencies_bytes
                .saturating_sub(named + self.unowned_venv_bytes);
            rows.push((format!("  {rest} other distributions"), others as i64));
        }
        rows.push((
            "  not owned by a distribution".to_string(),
            self.unowned_venv_bytes as i64,
        ));
        for (label, bytes) in rows {
            row(label, bytes);
        }
        row(
            "project source (/app)".to_string(),
            self.source_bytes as i64,
        );
        row("everything else".to_string(), self.other_bytes);
        out.push_str("layers above the base image:\n");
        for layer in &self.layers {
            let what: String = layer.created_by.chars().take(72).collect();
            out.push_str(&format!("  {}  {what}\n", mb(layer.bytes as i64)));
        }
        if self.other_bytes > WASTE_THRESHOLD {
            out.push_str(&format!(
                "⚠ {:.1} MB beyond the base, the dependencies and the source: look at the layers above\n",
                self.other_bytes as f64 / 1e6
            ));
        }
        out
    }
}

/// `docker history --human=false --no-trunc --format '{{.Size}}\t{{.CreatedBy}}'`, newest
/// first, as layers; the last `base_layers` rows are the base image's own.
pub fn parse_history(text: &str, base_layers: usize) -> Result<Vec<Layer>> {
    let rows: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let ours = rows.len().saturating_sub(base_layers);
    rows[..ours]
        .iter()
        .filter_map(|line| {
            let (bytes, created_by) = line.split_once('\t')?;
            Some((bytes, created_by))
        })
        .map(|(bytes, created_by)| {
            Ok(Layer {
                bytes: bytes.trim().parse().with_context(|| {
                    format!("reading the layer size `{bytes}` docker history printed")
                })?,
                created_by: readable_step(created_by),
            })
        })
        .filter(|layer| !matches!(layer, Ok(Layer { bytes: 0, .. })))
        .collect()
}

/// A history row's command as a reader wants it: without the legacy builder's `/bin/sh -c
/// #(nop)` prefix, and with the 64-digit content digests of `COPY dir:…` shortened, so the
/// destination (`in /opt/venv`) stays visible.
fn readable_step(created_by: &str) -> String {
    let step = created_by
        .trim()
        .trim_start_matches("/bin/sh -c ")
        .trim_start_matches("#(nop) ")
        .trim();
    step.split(' ')
        .map(|word| match word.split_once(':') {
            Some((kind @ ("dir" | "file" | "multi"), digest)) if digest.len() > 12 => {
                format!("{kind}:{}…", &digest[..12])
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `docker history --human=false --no-trunc --format '{{.Size}}\t{{.CreatedBy}}'`, newest first.
pub fn history(docker: &Docker, reference: &str) -> Result<String> {
    docker.checked(&args([
        "history",
        "--human=false",
        "--no-trunc",
        "--format",
        "{{.Size}}\t{{.CreatedBy}}",
        reference,
    ]))
}

impl Size {
    pub fn run(self, project: &Project) -> Result<()> {
        let docker = crate::docker()?;
        let breakdown = breakdown(&docker, &project.stack.runner.image)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&breakdown)?);
        } else {
            print!("{}", breakdown.table());
        }
        Ok(())
    }
}

/// The breakdown of the image `reference` (built by cargo xtask: it records its base).
pub fn breakdown(docker: &Docker, reference: &str) -> Result<Breakdown> {
    {
        let Some(image) = inspect_image(docker, reference)? else {
            bail!("there is no image {reference}: build it with `cargo xtask dev` or `cargo xtask rebuild-runner`");
        };
        let Some(base_id) = InputManifest::from_labels(&image.labels)
            .and_then(|manifest| manifest.entries.get(BASE_IMAGE_INPUT).cloned())
        else {
            bail!("{reference} does not record its base image (it was not built by cargo xtask): rebuild it with `cargo xtask rebuild-runner`");
        };
        let base = inspect_image(docker, &base_id)?.with_context(|| {
            format!(
                "the base image {} is gone: rebuild with `cargo xtask rebuild-runner`",
                short_id(&base_id)
            )
        })?;
        let base_name = base
            .tags
            .first()
            .cloned()
            .unwrap_or_else(|| short_id(&base_id).to_string());
        let base_layers = history(docker, &base_id)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        let layers = parse_history(&history(docker, &image.id)?, base_layers)?;
        let measure = args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python",
            &image.id,
            "-c",
            MEASURE,
        ]);
        let measured = docker
            .checked(&measure)
            .context("measuring the image's files with its own Python")?;
        let measured: Measured = serde_json::from_str(measured.trim())
            .context("reading what the image's Python measured")?;
        Ok(Breakdown::new(
            reference,
            image.size,
            &format!("{base_name} ({})", short_id(&base_id)),
            base.size,
            measured,
            layers,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker history --human=false --no-trunc --format '{{.Size}}\t{{.CreatedBy}}'` of an
    /// image built from the realistic fixture on stigmer-python-base:3.11-bookworm.
    const HISTORY: &str = "0\t/bin/sh -c #(nop)  LABEL dev.stigmer.poetry-lock.sha256=fe4a\n\
53138\t/bin/sh -c #(nop) COPY dir:71045268d1e2a31e8a090a174e8d6f6ef39a26377de508185ace9e557c346fac in /app/agent_runner \n\
0\t/bin/sh -c #(nop)  ARG STIGMER_INPUTS_MANIFEST=\n\
0\t/bin/sh -c #(nop)  CMD [\"python\" \"-m\" \"agent_runner\"]\n\
219077731\t/bin/sh -c #(nop) COPY dir:21437e1a0484 in /opt/venv \n\
3940\t/bin/sh -c groupadd --gid 10001 runner     && useradd --uid 10001\n\
170379809\t\n";

    #[test]
    fn history_rows_above_the_base_become_layers() {
        assert_eq!(
            parse_history(HISTORY, 1).unwrap(),
            [
                Layer {
                    bytes: 53138,
                    created_by: "COPY dir:71045268d1e2… in /app/agent_runner".into()
                },
                Layer {
                    bytes: 219077731,
                    created_by: "COPY dir:21437e1a0484 in /opt/venv".into()
                },
                Layer {
                    bytes: 3940,
                    created_by: "groupadd --gid 10001 runner     && useradd --uid 10001".into()
                },
            ]
        );
        assert!(parse_history("12x\tRUN\n", 0).is_err());
    }

    fn measured() -> Measured {
        let distributions = (0..12)
            .map(|i| Distribution {
                name: format!("d{i:02}"),
                version: "1".into(),
                bytes: 1_000_000 * (i + 1),
            })
            .collect();
        Measured {
            distributions,
            venv_bytes: 78_000_000 + 500,
            source_bytes: 60_000,
        }
    }

    #[test]
    fn the_breakdown_adds_up_to_the_image() {
        let breakdown = Breakdown::new("img", 300_000_000, "base", 170_000_000, measured(), vec![]);
        assert_eq!(breakdown.distributions, 12);
        let names: Vec<&str> = breakdown
            .largest_distributions
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["d11", "d10", "d09", "d08", "d07", "d06", "d05", "d04", "d03", "d02"]
        );
        assert_eq!(breakdown.unowned_venv_bytes, 500);
        assert_eq!(
            breakdown.other_bytes,
            300_000_000 - 170_000_000 - 78_000_500 - 60_000
        );
        assert_eq!(
            breakdown.base_bytes as i64
                + breakdown.dependencies_bytes as i64
                + breakdown.source_bytes as i64
                + breakdown.other_bytes,
            300_000_000
        );
        let table = breakdown.table();
        assert!(table.contains("  2 other distributions"), "{table}");
        assert!(table.contains("⚠ 51.9 MB beyond the base"), "{table}");
    }

    #[test]
    fn no_warning_without_waste() {
        let breakdown = Breakdown::new("img", 248_100_000, "base", 170_000_000, measured(), vec![]);
        assert_eq!(breakdown.other_bytes, 39_500);
        assert!(!breakdown.table().contains('⚠'));
    }
}
