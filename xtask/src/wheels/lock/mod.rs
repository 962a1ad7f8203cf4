//! `poetry.lock`: its packages and their sources, its freshness against `pyproject.toml`, and
//! the install plan for the image.
//!
//! Poetry writes one `[[package]]` per locked distribution with its groups, its marker (one
//! string, or one per group when groups disagree) and, for packages that do not come from a
//! package index, a `[package.source]` of type `directory` (a path dependency), `file`, `url`
//! or `git` (https://python-poetry.org/docs/dependency-specification/). [`plan`] turns that
//! into what the image installs: for each main-group package whose marker holds in the
//! image, the best wheel for the image, else its source archive, else the path dependency's
//! directory; git and URL dependencies are refused by name.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`parse`] | the lock file as typed data, read from disk |
//! | [`content_hash`] | the lock's freshness: Poetry's `content-hash` of `pyproject.toml`, computed here |
//! | [`select`] | what is installed: the image's plan for its target, and `pip` requirement lines for a group |

mod content_hash;
mod parse;
mod select;

pub use content_hash::check_lock_is_fresh;
pub use parse::{path_dependencies, read_lock};
pub use select::{plan, requirements, Install, LockedArtifact};
