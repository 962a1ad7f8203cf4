//! The watch reaction, both ways: `xtask dev --watch --json` (one JSON object per reaction on
//! its stdout) and `compose watch` with `sync+restart` (no machine-readable output: the
//! restart is seen as a new `State.StartedAt`, then the runner answering). Each is timed from
//! the moment the benchmark wrote the edit until the new process answers.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use stigmer_stack::exec::{self, Surroundings};
use stigmer_stack::http::healthz;

use super::fixture::{append_comment, EDITED_SOURCE};
use super::measure;
use super::peer::ComposeSide;
use super::session::{Session, UNSET};

/// Time for a watcher to set itself up after it was started.
const SETTLE: Duration = Duration::from_secs(3);
/// Between edits, so that two edits never fall into one debounced burst.
const PAUSE: Duration = Duration::from_secs(1);
const REACTION_DEADLINE: Duration = Duration::from_secs(60);

/// `dev --watch --json`'s object for one reaction (see `Reaction` in `xtask/src/watch.rs`).
#[derive(Debug, Deserialize)]
pub struct Reaction {
    pub changed: Vec<String>,
    pub action: String,
    pub seconds: f64,
    pub ok: bool,
    pub generation: Option<u64>,
    pub error: Option<String>,
}

/// What the runs of one watcher gave.
#[derive(Debug, Default)]
pub struct Reactions {
    /// From the edit until the new process answered, as the benchmark saw it.
    pub seen: Vec<f64>,
    /// What the tool itself reported (dev only).
    pub reported: Vec<f64>,
    /// Runs where a new process answered.
    pub answered: usize,
    /// What else was seen: other reactions, and reactions that did not check out.
    pub other: Vec<String>,
}

/// A watcher child that is killed however the measurement ends.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Hands each stdout line of `child` to a channel, and drains its stderr.
fn lines(child: &mut Child) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stderr), &mut std::io::sink());
        });
    }
    receiver
}

pub fn dev_watch(session: &mut Session, runs: usize) -> Result<Reactions> {
    let stack = session.dev.clone();
    let argv: Vec<String> = [
        "--registry",
        "none",
        "--runner-dir",
        &session.service_dir.display().to_string(),
        "dev",
        "--watch",
        "--json",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let env = stack.env(&session.base_reference());
    let around = Surroundings {
        env: &env,
        unset: &UNSET,
        dir: Some(&session.root),
    };
    let mut watcher = Watcher(exec::spawn_piped_in(
        &session.xtask.display().to_string(),
        &argv,
        &around,
    )?);
    let reactions = lines(&mut watcher.0);
    measure::wait_answering(stack.health_port, &stack.container, REACTION_DEADLINE)?;
    std::thread::sleep(SETTLE);
    let mut result = Reactions::default();
    for _ in 0..runs {
        let edit = session.next_edit();
        append_comment(&session.service_dir, EDITED_SOURCE, edit)?;
        let started = Instant::now();
        let reaction = loop {
            let line = reactions
                .recv_timeout(REACTION_DEADLINE.saturating_sub(started.elapsed()))
                .context("`xtask dev --watch --json` printed no reaction to an edit within 60 s")?;
            // Only the reaction to this edit (an editor's or a build's file is not ours).
            if let Ok(reaction) = serde_json::from_str::<Reaction>(&line) {
                if reaction
                    .changed
                    .iter()
                    .any(|path| path.ends_with(EDITED_SOURCE))
                {
                    break reaction;
                }
                result.other.push(line);
            }
        };
        result.seen.push(started.elapsed().as_secs_f64());
        result.reported.push(reaction.seconds);
        ensure!(
            reaction.ok,
            "the watch reaction to {:?} failed: {}",
            reaction.changed,
            reaction.error.unwrap_or_default()
        );
        let answering = healthz(stack.health_port, Duration::from_secs(1))
            .ok()
            .and_then(|health| health["generation"].as_u64());
        if reaction.action == "restart" && answering.is_some() && answering == reaction.generation {
            result.answered += 1;
        } else {
            result.other.push(format!(
                "action {}, generation {:?}, answering {answering:?}",
                reaction.action, reaction.generation
            ));
        }
        std::thread::sleep(PAUSE);
    }
    Ok(result)
}

pub fn compose_watch(session: &mut Session, side: &ComposeSide, runs: usize) -> Result<Reactions> {
    let mut watcher = Watcher(exec::spawn_piped_in(
        &side.program[0],
        &side.args(&["watch", "--no-up"]),
        &side.surroundings(),
    )?);
    let _output = lines(&mut watcher.0);
    measure::wait_answering(side.health_port, &side.container, REACTION_DEADLINE)?;
    std::thread::sleep(SETTLE);
    let mut result = Reactions::default();
    for _ in 0..runs {
        if let Some(status) = watcher.0.try_wait().context("checking on compose watch")? {
            bail!("`compose watch` ended ({status}) before the edits");
        }
        let before = measure::started_at(&session.docker, &side.container)?;
        let edit = session.next_edit();
        append_comment(&session.service_dir, EDITED_SOURCE, edit)?;
        let started = Instant::now();
        loop {
            if measure::started_at(&session.docker, &side.container).is_ok_and(|now| now != before)
            {
                break;
            }
            ensure!(
                started.elapsed() < REACTION_DEADLINE,
                "waiting for `compose watch` to restart {} timed out after {} s",
                side.container,
                REACTION_DEADLINE.as_secs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        measure::wait_answering(side.health_port, &side.container, REACTION_DEADLINE)?;
        result.seen.push(started.elapsed().as_secs_f64());
        result.answered += 1;
        std::thread::sleep(PAUSE);
    }
    Ok(result)
}
