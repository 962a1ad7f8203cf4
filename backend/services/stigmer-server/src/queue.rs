//! The live side of the task queue: the shared database handle, the wake-up signals that let
//! long polls sleep instead of spinning, the lease clock, and the background sweeper that puts
//! executions with expired leases back in the queue. HTTP handlers call these methods; the SQL
//! itself stays in `store`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rusqlite::Connection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::log::{error, info};
use crate::store::{self, Event, Execution, ExecutionStatus, FinalStatus, LeaseOutcome, Task};
use crate::{clock, ids};

/// The only task queue this server has (the agent-runner's `STIGMER_TASK_QUEUE`).
pub const QUEUE_NAME: &str = "agent_execution_runner";

pub struct Queue {
    /// One connection behind a std `Mutex`, always used inside `spawn_blocking`: SQLite
    /// serialises writers anyway, each statement here takes well under a millisecond plus one
    /// fsync, and a local dev server sees a handful of clients, so a pool would buy nothing.
    /// `None` once `close` has run.
    database: Mutex<Option<Connection>>,
    lease_duration: Duration,
    /// Bumped when an execution becomes queued (created or requeued): wakes runner polls.
    tasks_changed: watch::Sender<u64>,
    /// Bumped when any execution gets an event: wakes client event polls, which re-read their
    /// own execution (few clients, so waking them all is cheaper than per-execution channels).
    events_changed: watch::Sender<u64>,
    /// Set once at shutdown so long polls return at once instead of holding shutdown up.
    shutting_down: watch::Sender<bool>,
}

impl Queue {
    pub fn new(database: Connection, lease_duration: Duration) -> Arc<Self> {
        Arc::new(Self {
            database: Mutex::new(Some(database)),
            lease_duration,
            tasks_changed: watch::Sender::new(0),
            events_changed: watch::Sender::new(0),
            shutting_down: watch::Sender::new(false),
        })
    }

    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    fn lease_millis(&self) -> i64 {
        i64::try_from(self.lease_duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs `operation` on the connection on tokio's blocking pool, so fsyncs never stall the
    /// async workers.
    async fn with_database<T, F>(self: &Arc<Self>, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let queue = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut guard = queue
                .database
                .lock()
                .map_err(|_| anyhow!("the database lock was poisoned by a panic"))?;
            let connection = guard.as_mut().context("the database is already closed")?;
            operation(connection)
        })
        .await
        .context("run a database operation")?
    }

    fn wake_runners(&self) {
        self.tasks_changed
            .send_modify(|generation| *generation += 1);
    }

    fn wake_event_readers(&self) {
        self.events_changed
            .send_modify(|generation| *generation += 1);
    }

    pub async fn create_execution(
        self: &Arc<Self>,
        agent: String,
        input: String,
    ) -> Result<Execution> {
        let id = ids::execution_id()?;
        let execution = self
            .with_database(move |conn| {
                store::create_execution(conn, &id, &agent, &input, clock::now_unix_millis())
            })
            .await?;
        self.wake_runners();
        self.wake_event_readers();
        Ok(execution)
    }

    pub async fn execution(self: &Arc<Self>, id: String) -> Result<Option<Execution>> {
        self.with_database(move |conn| store::get_execution(conn, &id))
            .await
    }

    /// Hands the oldest queued execution to `runner_id`, waiting up to `wait` for one to arrive.
    pub async fn poll_task(
        self: &Arc<Self>,
        runner_id: String,
        wait: Duration,
    ) -> Result<Option<Task>> {
        let deadline = Instant::now() + wait;
        let mut tasks_changed = self.tasks_changed.subscribe();
        let mut shutting_down = self.shutting_down.subscribe();
        loop {
            // Marked seen before looking, so a task queued after the look still wakes us.
            tasks_changed.mark_unchanged();
            let lease_id = ids::lease_id()?;
            let lease_millis = self.lease_millis();
            let runner = runner_id.clone();
            // If the client goes away while this runs, the claim still commits and the task
            // simply waits out its lease; nothing is lost.
            let task = self
                .with_database(move |conn| {
                    let now = clock::now_unix_millis();
                    store::claim_oldest_queued(conn, &runner, &lease_id, now + lease_millis, now)
                })
                .await?;
            if let Some(task) = task {
                self.wake_event_readers();
                return Ok(Some(task));
            }
            tokio::select! {
                changed = tasks_changed.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(None),
                () = shutdown_requested(&mut shutting_down) => return Ok(None),
            }
        }
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
        lease_id: String,
        kind: store::EventKind,
        message: String,
    ) -> Result<LeaseOutcome> {
        let lease_millis = self.lease_millis();
        let outcome = self
            .with_database(move |conn| {
                let now = clock::now_unix_millis();
                store::append_runner_event(
                    conn,
                    &execution_id,
                    &lease_id,
                    kind,
                    &message,
                    now + lease_millis,
                    now,
                )
            })
            .await?;
        if outcome == LeaseOutcome::Accepted {
            self.wake_event_readers();
        }
        Ok(outcome)
    }

    pub async fn heartbeat(
        self: &Arc<Self>,
        execution_id: String,
        lease_id: String,
    ) -> Result<LeaseOutcome> {
        let lease_millis = self.lease_millis();
        self.with_database(move |conn| {
            let now = clock::now_unix_millis();
            store::renew_lease(conn, &execution_id, &lease_id, now + lease_millis, now)
        })
        .await
    }

    pub async fn complete(
        self: &Arc<Self>,
        execution_id: String,
        lease_id: String,
        status: FinalStatus,
        result: Option<String>,
        error: Option<String>,
    ) -> Result<LeaseOutcome> {
        let outcome = self
            .with_database(move |conn| {
                store::complete_execution(
                    conn,
                    &execution_id,
                    &lease_id,
                    status,
                    result.as_deref(),
                    error.as_deref(),
                    clock::now_unix_millis(),
                )
            })
            .await?;
        if outcome == LeaseOutcome::Accepted {
            self.wake_event_readers();
        }
        Ok(outcome)
    }

    /// Requeues executions whose lease has expired, waking runners and readers if any were.
    pub async fn requeue_expired_leases(self: &Arc<Self>) -> Result<Vec<String>> {
        let requeued = self
            .with_database(|conn| store::requeue_expired_leases(conn, clock::now_unix_millis()))
            .await?;
        if !requeued.is_empty() {
            info!("lease expired, queued again: {}", requeued.join(", "));
            self.wake_runners();
            self.wake_event_readers();
        }
        Ok(requeued)
    }

    /// Every second until shutdown, requeue executions whose lease expired.
    pub fn spawn_lease_sweeper(self: &Arc<Self>) -> JoinHandle<()> {
        let queue = Arc::clone(self);
        let mut shutting_down = self.shutting_down.subscribe();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if let Err(sweep_error) = queue.requeue_expired_leases().await {
                            error!("lease sweep failed: {sweep_error:#}");
                        }
                    }
                    () = shutdown_requested(&mut shutting_down) => return,
                }
            }
        })
    }

    /// Ends long polls and the sweeper; in-flight requests still finish normally.
    pub fn begin_shutdown(&self) {
        self.shutting_down.send_replace(true);
    }

    /// Checkpoints the WAL into the main file and closes the connection.
    pub async fn close(self: &Arc<Self>) -> Result<()> {
        let queue = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let connection = queue
                .database
                .lock()
                .map_err(|_| anyhow!("the database lock was poisoned by a panic"))?
                .take();
            if let Some(connection) = connection {
                connection
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .context("checkpoint the write-ahead log")?;
                connection
                    .close()
                    .map_err(|(_, close_error)| close_error)
                    .context("close the database")?;
            }
            Ok(())
        })
        .await
        .context("close the database")?
    }
}

/// Resolves once `begin_shutdown` has run (at once if it already has).
async fn shutdown_requested(shutting_down: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means the server is stopping.
    let _ = shutting_down.wait_for(|stop| *stop).await;
}
