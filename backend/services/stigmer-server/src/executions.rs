//! The live side of executions: the shared database handle, the wake-up signal that lets event
//! long polls sleep instead of spinning, and one watcher task per unfinished execution that
//! starts its workflow on Temporal and records how it ended. HTTP handlers call these methods;
//! the SQL stays in `store`, the Temporal calls in `temporal`.
//!
//! Nothing accepted is lost: an execution is committed to SQLite before its creation is
//! answered, and its watcher (started again for every unfinished execution when the server
//! starts) keeps trying until Temporal has the workflow and reports its end, whether Temporal,
//! the runner or this server went away in between.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rusqlite::Connection;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::log::{info, warning};
use crate::store::{self, Event, EventKind, Execution, ExecutionStatus, RunnerEventOutcome};
use crate::temporal::{CloseEvent, Started, Temporal, Unreachable};
use crate::{clock, ids};

/// Waits between attempts to reach Temporal: short, because it is usually on loopback and a
/// restart takes well under a second; capped, so a long outage costs little.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub struct Executions {
    /// One connection behind a std `Mutex`, always used inside `spawn_blocking`: SQLite
    /// serialises writers anyway, each statement takes well under a millisecond plus one
    /// fsync, and a local dev server sees a handful of clients. `None` once `close` has run.
    database: Mutex<Option<Connection>>,
    temporal: Temporal,
    /// Bumped when any execution gets an event: wakes event long polls, which re-read their
    /// own execution (few clients, so waking them all is cheaper than per-execution channels).
    events_changed: watch::Sender<u64>,
    /// Set once at shutdown so long polls and watchers end at once.
    shutting_down: watch::Sender<bool>,
}

impl Executions {
    pub fn new(database: Connection, temporal: Temporal) -> Arc<Self> {
        Arc::new(Self {
            database: Mutex::new(Some(database)),
            temporal,
            events_changed: watch::Sender::new(0),
            shutting_down: watch::Sender::new(false),
        })
    }

    pub fn temporal(&self) -> &Temporal {
        &self.temporal
    }

    /// Runs `operation` on the connection on tokio's blocking pool, so fsyncs never stall the
    /// async workers.
    async fn with_database<T, F>(self: &Arc<Self>, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let executions = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut guard = executions
                .database
                .lock()
                .map_err(|_| anyhow!("the database lock was poisoned by a panic"))?;
            let connection = guard.as_mut().context("the database is already closed")?;
            operation(connection)
        })
        .await
        .context("run a database operation")?
    }

    fn wake_event_readers(&self) {
        self.events_changed
            .send_modify(|generation| *generation += 1);
    }

    /// Records a new execution and starts watching it (which starts its workflow).
    pub async fn create(self: &Arc<Self>, agent: String, input: String) -> Result<Execution> {
        let id = ids::execution_id()?;
        let execution = self
            .with_database(move |conn| {
                store::create_execution(conn, &id, &agent, &input, clock::now_unix_millis())
            })
            .await?;
        self.wake_event_readers();
        self.spawn_watcher(execution.clone());
        Ok(execution)
    }

    /// Watches every execution a previous run left unfinished.
    pub async fn resume(self: &Arc<Self>) -> Result<usize> {
        let unfinished = self
            .with_database(|conn| store::unfinished_executions(conn))
            .await?;
        let count = unfinished.len();
        for execution in unfinished {
            self.spawn_watcher(execution);
        }
        Ok(count)
    }

    pub async fn execution(self: &Arc<Self>, id: String) -> Result<Option<Execution>> {
        self.with_database(move |conn| store::get_execution(conn, &id))
            .await
    }

    /// Events with `seq > after` and the execution's status, waiting up to `wait` for at least
    /// one event unless the execution is already done. `None` for an unknown execution.
    pub async fn events_after(
        self: &Arc<Self>,
        execution_id: String,
        after: i64,
        wait: Duration,
    ) -> Result<Option<(Vec<Event>, ExecutionStatus)>> {
        let deadline = Instant::now() + wait;
        let mut events_changed = self.events_changed.subscribe();
        let mut shutting_down = self.shutting_down.subscribe();
        loop {
            // Marked seen before looking, so an event written after the look still wakes us.
            events_changed.mark_unchanged();
            let id = execution_id.clone();
            let found = self
                .with_database(move |conn| store::events_after(conn, &id, after))
                .await?;
            let Some((events, status)) = found else {
                return Ok(None);
            };
            if !events.is_empty() || status.is_done() {
                return Ok(Some((events, status)));
            }
            tokio::select! {
                changed = events_changed.changed() => {
                    if changed.is_err() {
                        return Ok(Some((events, status)));
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Some((events, status))),
                () = shutdown_requested(&mut shutting_down) => return Ok(Some((events, status))),
            }
        }
    }

    pub async fn append_runner_event(
        self: &Arc<Self>,
        execution_id: String,
        kind: EventKind,
        message: String,
    ) -> Result<RunnerEventOutcome> {
        let outcome = self
            .with_database(move |conn| {
                store::append_runner_event(
                    conn,
                    &execution_id,
                    kind,
                    &message,
                    clock::now_unix_millis(),
                )
            })
            .await?;
        if outcome == RunnerEventOutcome::Accepted {
            self.wake_event_readers();
        }
        Ok(outcome)
    }

    fn spawn_watcher(self: &Arc<Self>, execution: Execution) {
        let executions = Arc::clone(self);
        tokio::spawn(async move {
            let mut shutting_down = executions.shutting_down.subscribe();
            let id = execution.id.clone();
            tokio::select! {
                result = executions.watch(execution) => {
                    if let Err(error) = result {
                        warning!("stopped watching {id}: {error:#}");
                    }
                }
                () = shutdown_requested(&mut shutting_down) => {}
            }
        });
    }

    /// Starts the execution's workflow if Temporal does not have it, then waits for its end and
    /// records it. Temporal being unreachable is waited out (with one event saying so); any
    /// other refusal ends the execution as failed with Temporal's message.
    async fn watch(self: &Arc<Self>, execution: Execution) -> Result<()> {
        let id = execution.id.clone();
        let mut retry = RETRY_INITIAL;
        let mut reported_unreachable = false;
        loop {
            // Starting is idempotent (the workflow ID is the execution ID), so every round
            // starts first: after an outage nobody knows whether the last start got through.
            let step = async {
                let started = self
                    .temporal
                    .start_workflow(&id, &execution.agent, &execution.input)
                    .await?;
                if started == Started::New {
                    info!("started workflow {id} ({})", execution.agent);
                }
                self.temporal.wait_for_close(&id).await
            };
            match step.await {
                Ok(CloseEvent::Closed(outcome)) => {
                    let recorded = self
                        .with_database({
                            let id = id.clone();
                            move |conn| {
                                store::finish_execution(
                                    conn,
                                    &id,
                                    &outcome,
                                    clock::now_unix_millis(),
                                )
                            }
                        })
                        .await?;
                    if recorded {
                        info!("{id} finished");
                        self.wake_event_readers();
                    }
                    return Ok(());
                }
                Ok(CloseEvent::Missing) => {
                    warning!("Temporal has no workflow {id}: starting it again");
                }
                Err(error) if error.downcast_ref::<Unreachable>().is_some() => {
                    if !reported_unreachable {
                        reported_unreachable = true;
                        warning!("{error:#}; {id} waits for it");
                        let message = format!("waiting for Temporal: {error:#}");
                        let id = id.clone();
                        self.with_database(move |conn| {
                            store::append_status_event(
                                conn,
                                &id,
                                &message,
                                clock::now_unix_millis(),
                            )
                        })
                        .await?;
                        self.wake_event_readers();
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
                Err(error) => {
                    let outcome = store::Outcome::Failed {
                        error: format!("{error:#}"),
                    };
                    let id = id.clone();
                    self.with_database(move |conn| {
                        store::finish_execution(conn, &id, &outcome, clock::now_unix_millis())
                    })
                    .await?;
                    self.wake_event_readers();
                    return Err(error);
                }
            }
        }
    }

    /// Wakes every long poll and watcher so that graceful shutdown is not held up by them.
    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }

    /// Drops the connection, which checkpoints the WAL.
    pub async fn close(self: &Arc<Self>) -> Result<()> {
        let executions = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if let Ok(mut guard) = executions.database.lock() {
                guard.take();
            }
        })
        .await
        .context("close the database")
    }
}

async fn shutdown_requested(shutting_down: &mut watch::Receiver<bool>) {
    if shutting_down.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
