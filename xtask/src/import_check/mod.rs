//! The in-image import check, as smoke runs it: the project's policy, read from
//! `[tool.stigmer.import-check]` in the runner's `pyproject.toml` (already a rebuild input),
//! turned into the arguments of `python -m agent_runner.import_check`; that command run in the
//! container; the JSON report it prints, parsed; the lines a user reads; and the cache of
//! passed reports, one file per image ID and policy under `target/xtask/import-check/`, so an
//! image is checked once.
//!
//! The Python check decides nothing from configuration files: it reports and sets its exit
//! code from these arguments. Everything here is plain data and pure functions, except
//! reading the policy and the cache, which only touch files, and [`check_image`], the one
//! `docker exec`:
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`plan`] | the policy and the command it becomes, and the cache of passed reports |
//! | [`run`] | the check run in the container, and what a run that hung says |
//! | [`report`] | the report the check prints, and the lines a user reads from it |

mod plan;
mod report;
mod run;

pub use run::check_image;

/// Where the policy lives, for messages.
pub const POLICY_TABLE: &str = "[tool.stigmer.import-check]";

/// How long the passed import check of `image_id` took, from the report it kept (read by the
/// benchmark); `None` when no passed report is kept for that image and policy.
pub fn kept_seconds(
    cache_dir: &std::path::Path,
    runner_dir: &std::path::Path,
    image_id: &str,
    mounted_source: Option<&str>,
) -> Option<f64> {
    let policy = plan::read_policy(runner_dir).ok()?;
    plan::cached_report(&plan::cache_path(
        cache_dir,
        image_id,
        &policy,
        mounted_source,
    ))
    .map(|report| report.seconds)
}
