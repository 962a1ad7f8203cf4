//! The SQLite store: every SQL statement of the server lives here. Executions are rows of
//! `executions`; the task queue is simply the executions whose status is `queued`, oldest first;
//! progress is the append-only `events` table, numbered per execution by `seq`. Functions take a
//! `&Connection` (or `&mut` when they need a transaction) and the current time in Unix
//! milliseconds, so tests drive the clock and need no sleeping. Times are stored as Unix
//! milliseconds and rendered as RFC 3339 only at the HTTP edge.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

/// Bumped whenever `migrate` learns a new step; stored in SQLite's `user_version` pragma.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    agent            TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    result           TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_id         TEXT,
    lease_expires_at INTEGER,
    runner_id        TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX executions_by_status ON executions (status, created_at);
CREATE TABLE events (
    execution_id TEXT NOT NULL REFERENCES executions (id),
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('status', 'progress', 'result', 'error')),
    message      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            other => bail!("unknown execution status {other:?} in the database"),
        })
    }

    pub fn is_done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Status,
    Progress,
    Result,
    Error,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Progress => "progress",
            Self::Result => "result",
            Self::Error => "error",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "status" => Self::Status,
            "progress" => Self::Progress,
            "result" => Self::Result,
            "error" => Self::Error,
            other => bail!("unknown event kind {other:?} in the database"),
        })
    }
}

/// Reads the status and kind columns; the `CHECK` constraints keep other text out of them.
macro_rules! from_sql_via_parse {
    ($type:ty) => {
        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                <$type>::parse(value.as_str()?).map_err(|error| FromSqlError::Other(error.into()))
            }
        }
    };
}
from_sql_via_parse!(ExecutionStatus);
from_sql_via_parse!(EventKind);

/// The two ways a runner may finish an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Succeeded,
    Failed,
}

impl FinalStatus {
    fn execution_status(self) -> ExecutionStatus {
        match self {
            Self::Succeeded => ExecutionStatus::Succeeded,
            Self::Failed => ExecutionStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub id: String,
    pub agent: String,
    pub input: String,
    pub status: ExecutionStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    pub attempts: i64,
    pub lease_id: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub runner_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub kind: EventKind,
    pub message: String,
    pub at: i64,
}

/// An execution handed to a runner under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub execution_id: String,
    pub agent: String,
    pub input: String,
    pub lease_id: String,
    pub attempt: i64,
}

/// What became of a runner's request made under a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    Accepted,
    UnknownExecution,
    /// The lease is not the execution's current one, or it has expired.
    LeaseNotCurrent,
    /// Completing again under the same lease but with another status.
    AlreadyFinished(ExecutionStatus),
}

/// Opens (creating if needed) the database file with the durability settings the server relies
/// on, and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    // WAL lets readers proceed during a write; synchronous=FULL makes every commit reach the
    // disk before the HTTP response is sent, so a SIGKILL loses nothing acknowledged
    // (https://www.sqlite.org/pragma.html#pragma_synchronous).
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .context("switch the database to WAL mode")?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        bail!("the database refused WAL mode (journal_mode is {journal_mode})");
    }
    configure_and_migrate(&conn)?;
    Ok(conn)
}

#[cfg(test)]
pub fn open_in_memory() -> Result<Connection> {
    let conn = Connection::open_in_memory().context("open an in-memory database")?;
    configure_and_migrate(&conn)?;
    Ok(conn)
}

fn configure_and_migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .context("set synchronous=FULL and foreign_keys=ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .context("set the busy timeout")?;
    migrate(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .context("read the schema version")?;
    if version > SCHEMA_VERSION {
        bail!(
            "the database has schema version {version}, newer than this server knows \
             ({SCHEMA_VERSION}); upgrade stigmer-server or move the data directory aside"
        );
    }
    if version < 1 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
        ))
        .context("create the schema (version 1)")?;
    }
    Ok(())
}

const EXECUTION_COLUMNS: &str = "id, agent, input, status, result, error, attempts, lease_id, \
     lease_expires_at, runner_id, created_at, updated_at";

fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    Ok(Execution {
        id: row.get(0)?,
        agent: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        result: row.get(4)?,
        error: row.get(5)?,
        attempts: row.get(6)?,
        lease_id: row.get(7)?,
        lease_expires_at: row.get(8)?,
        runner_id: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

/// Inserts a queued execution and its first `status` event.
pub fn create_execution(
    conn: &mut Connection,
    id: &str,
    agent: &str,
    input: &str,
    now: i64,
) -> Result<Execution> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the create transaction")?;
    tx.execute(
        "INSERT INTO executions (id, agent, input, status, attempts, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?4)",
        params![id, agent, input, now],
    )
    .context("insert the execution")?;
    append_event(&tx, id, EventKind::Status, "queued", now)?;
    tx.commit().context("commit the new execution")?;
    get_execution(conn, id)?.context("read back the execution just inserted")
}

pub fn get_execution(conn: &Connection, id: &str) -> Result<Option<Execution>> {
    conn.query_row(
        &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1"),
        [id],
        execution_from_row,
    )
    .optional()
    .context("read the execution")
}

/// Hands the oldest queued execution to `runner_id` under `lease_id` until `lease_expires_at`.
pub fn claim_oldest_queued(
    conn: &mut Connection,
    runner_id: &str,
    lease_id: &str,
    lease_expires_at: i64,
    now: i64,
) -> Result<Option<Task>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the claim transaction")?;
    let oldest: Option<(String, String, String, i64)> = tx
        .query_row(
            "SELECT id, agent, input, attempts FROM executions
             WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()
        .context("find the oldest queued execution")?;
    let Some((execution_id, agent, input, attempts)) = oldest else {
        return Ok(None);
    };
    let attempt = attempts + 1;
    tx.execute(
        "UPDATE executions SET status = 'running', attempts = ?2, lease_id = ?3,
             lease_expires_at = ?4, runner_id = ?5, updated_at = ?6
         WHERE id = ?1",
        params![
            execution_id,
            attempt,
            lease_id,
            lease_expires_at,
            runner_id,
            now
        ],
    )
    .context("lease the execution")?;
    append_event(
        &tx,
        &execution_id,
        EventKind::Status,
        &format!("running on runner {runner_id} (attempt {attempt})"),
        now,
    )?;
    tx.commit().context("commit the claim")?;
    Ok(Some(Task {
        execution_id,
        agent,
        input,
        lease_id: lease_id.to_owned(),
        attempt,
    }))
}

/// Puts every running execution whose lease expired at or before `now` back in the queue, with
/// a `status` event saying so. Returns the IDs requeued. Run every second and once at start.
pub fn requeue_expired_leases(conn: &mut Connection, now: i64) -> Result<Vec<String>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the requeue transaction")?;
    let expired: Vec<(String, Option<String>, i64)> = {
        let mut statement = tx
            .prepare(
                "SELECT id, runner_id, attempts FROM executions
                 WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)",
            )
            .context("prepare the expired-lease query")?;
        let rows = statement
            .query_map([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .context("find expired leases")?;
        rows.collect::<rusqlite::Result<_>>()
            .context("read expired leases")?
    };
    for (id, runner_id, attempts) in &expired {
        tx.execute(
            "UPDATE executions SET status = 'queued', lease_id = NULL, lease_expires_at = NULL,
                 runner_id = NULL, updated_at = ?2
             WHERE id = ?1",
            params![id, now],
        )
        .context("requeue an execution")?;
        let runner = runner_id.as_deref().unwrap_or("unknown");
        append_event(
            &tx,
            id,
            EventKind::Status,
            &format!("lease of runner {runner} expired on attempt {attempts}; queued again"),
            now,
        )?;
    }
    tx.commit().context("commit the requeue")?;
    Ok(expired.into_iter().map(|(id, _, _)| id).collect())
}

/// Whether `lease_id` is the current, unexpired lease of a running execution.
fn check_lease(
    conn: &Connection,
    execution_id: &str,
    lease_id: &str,
    now: i64,
) -> Result<LeaseOutcome> {
    let row: Option<(ExecutionStatus, Option<String>, Option<i64>)> = conn
        .query_row(
            "SELECT status, lease_id, lease_expires_at FROM executions WHERE id = ?1",
            [execution_id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .context("read the execution's lease")?;
    let Some((status, current_lease, expires_at)) = row else {
        return Ok(LeaseOutcome::UnknownExecution);
    };
    let current = status == ExecutionStatus::Running
        && current_lease.as_deref() == Some(lease_id)
        && expires_at.is_some_and(|expires_at| expires_at > now);
    Ok(if current {
        LeaseOutcome::Accepted
    } else {
        LeaseOutcome::LeaseNotCurrent
    })
}

/// A runner's progress or status message; also renews the lease (it doubles as a heartbeat).
pub fn append_runner_event(
    conn: &mut Connection,
    execution_id: &str,
    lease_id: &str,
    kind: EventKind,
    message: &str,
    lease_expires_at: i64,
    now: i64,
) -> Result<LeaseOutcome> {
    renew_lease_with(
        conn,
        execution_id,
        lease_id,
        lease_expires_at,
        now,
        Some((kind, message)),
    )
}

pub fn renew_lease(
    conn: &mut Connection,
    execution_id: &str,
    lease_id: &str,
    lease_expires_at: i64,
    now: i64,
) -> Result<LeaseOutcome> {
    renew_lease_with(conn, execution_id, lease_id, lease_expires_at, now, None)
}

/// Renews a current lease and records `event` with it, in one transaction.
fn renew_lease_with(
    conn: &mut Connection,
    execution_id: &str,
    lease_id: &str,
    lease_expires_at: i64,
    now: i64,
    event: Option<(EventKind, &str)>,
) -> Result<LeaseOutcome> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the lease transaction")?;
    let outcome = check_lease(&tx, execution_id, lease_id, now)?;
    if outcome == LeaseOutcome::Accepted {
        renew(&tx, execution_id, lease_expires_at, now)?;
        if let Some((kind, message)) = event {
            append_event(&tx, execution_id, kind, message, now)?;
        }
        tx.commit().context("commit the lease renewal")?;
    }
    Ok(outcome)
}

fn renew(conn: &Connection, execution_id: &str, lease_expires_at: i64, now: i64) -> Result<()> {
    conn.execute(
        "UPDATE executions SET lease_expires_at = ?2, updated_at = ?3 WHERE id = ?1",
        params![execution_id, lease_expires_at, now],
    )
    .context("renew the lease")?;
    Ok(())
}

/// Finishes an execution under its current lease and appends the final `result` or `error`
/// event. Completing again under the same lease with the same status is accepted and changes
/// nothing, so a runner may retry a completion whose response it never saw.
pub fn complete_execution(
    conn: &mut Connection,
    execution_id: &str,
    lease_id: &str,
    status: FinalStatus,
    result: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<LeaseOutcome> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the completion transaction")?;
    let row: Option<(ExecutionStatus, Option<String>)> = tx
        .query_row(
            "SELECT status, lease_id FROM executions WHERE id = ?1",
            [execution_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .context("read the execution")?;
    let Some((current_status, current_lease)) = row else {
        return Ok(LeaseOutcome::UnknownExecution);
    };
    if current_status.is_done() {
        // The lease ID is kept on a finished execution precisely for this check.
        return Ok(if current_lease.as_deref() != Some(lease_id) {
            LeaseOutcome::LeaseNotCurrent
        } else if current_status == status.execution_status() {
            LeaseOutcome::Accepted
        } else {
            LeaseOutcome::AlreadyFinished(current_status)
        });
    }
    let outcome = check_lease(&tx, execution_id, lease_id, now)?;
    if outcome != LeaseOutcome::Accepted {
        return Ok(outcome);
    }
    tx.execute(
        "UPDATE executions SET status = ?2, result = ?3, error = ?4, lease_expires_at = NULL,
             updated_at = ?5
         WHERE id = ?1",
        params![
            execution_id,
            status.execution_status().as_str(),
            result,
            error,
            now
        ],
    )
    .context("record the completion")?;
    let (kind, message) = match status {
        FinalStatus::Succeeded => (EventKind::Result, result.unwrap_or("")),
        FinalStatus::Failed => (EventKind::Error, error.unwrap_or("failed")),
    };
    append_event(&tx, execution_id, kind, message, now)?;
    tx.commit().context("commit the completion")?;
    Ok(LeaseOutcome::Accepted)
}

fn append_event(
    conn: &Connection,
    execution_id: &str,
    kind: EventKind,
    message: &str,
    now: i64,
) -> Result<i64> {
    let seq: i64 = conn
        .query_row(
            "INSERT INTO events (execution_id, seq, kind, message, at)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE execution_id = ?1),
                     ?2, ?3, ?4)
             RETURNING seq",
            params![execution_id, kind.as_str(), message, now],
            |row| row.get(0),
        )
        .context("append an event")?;
    Ok(seq)
}

/// The events of an execution with `seq > after`, in order, and the execution's status; `None`
/// when the execution does not exist. Both come from one read transaction, so a caller that sees
/// a finished status also sees the final event.
pub fn events_after(
    conn: &mut Connection,
    execution_id: &str,
    after: i64,
) -> Result<Option<(Vec<Event>, ExecutionStatus)>> {
    let tx = conn.transaction().context("begin the events read")?;
    let status: Option<ExecutionStatus> = tx
        .query_row(
            "SELECT status FROM executions WHERE id = ?1",
            [execution_id],
            |row| row.get(0),
        )
        .optional()
        .context("read the execution status")?;
    let Some(status) = status else {
        return Ok(None);
    };
    let mut statement = tx
        .prepare(
            "SELECT seq, kind, message, at FROM events
             WHERE execution_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .context("prepare the events query")?;
    let rows = statement
        .query_map(params![execution_id, after], |row| {
            Ok(Event {
                seq: row.get(0)?,
                kind: row.get(1)?,
                message: row.get(2)?,
                at: row.get(3)?,
            })
        })
        .context("read events")?;
    let events = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("read an event")?;
    Ok(Some((events, status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE_MILLIS: i64 = 30_000;

    fn kinds_and_messages(events: &[Event]) -> Vec<(EventKind, &str)> {
        events
            .iter()
            .map(|event| (event.kind, event.message.as_str()))
            .collect()
    }

    #[test]
    fn create_then_get_round_trips() -> Result<()> {
        let mut conn = open_in_memory()?;
        let created = create_execution(&mut conn, "exec-a", "echo", "hello", 1_000)?;
        assert_eq!(created.status, ExecutionStatus::Queued);
        assert_eq!(created.attempts, 0);
        assert_eq!(created.created_at, 1_000);
        assert_eq!(get_execution(&conn, "exec-a")?, Some(created));
        assert_eq!(get_execution(&conn, "exec-missing")?, None);
        Ok(())
    }

    #[test]
    fn poll_hands_out_the_oldest_first_and_each_once() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-second", "echo", "2", 2_000)?;
        create_execution(&mut conn, "exec-first", "echo", "1", 1_000)?;
        create_execution(&mut conn, "exec-third", "echo", "3", 2_000)?;
        let mut handed = Vec::new();
        while let Some(task) = claim_oldest_queued(&mut conn, "r1", "lease", 99_000, 3_000)? {
            assert_eq!(task.attempt, 1);
            handed.push(task.execution_id);
        }
        assert_eq!(handed, ["exec-first", "exec-second", "exec-third"]);
        let running = get_execution(&conn, "exec-first")?.context("exists")?;
        assert_eq!(running.status, ExecutionStatus::Running);
        assert_eq!(running.runner_id.as_deref(), Some("r1"));
        assert_eq!(running.lease_expires_at, Some(99_000));
        Ok(())
    }

    #[test]
    fn expired_lease_requeues_and_the_old_lease_is_refused() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 0)?;
        let first =
            claim_oldest_queued(&mut conn, "r1", "lease-1", LEASE_MILLIS, 0)?.context("task")?;
        assert!(requeue_expired_leases(&mut conn, LEASE_MILLIS - 1)?.is_empty());
        assert_eq!(requeue_expired_leases(&mut conn, LEASE_MILLIS)?, ["exec-a"]);
        let queued = get_execution(&conn, "exec-a")?.context("exists")?;
        assert_eq!(queued.status, ExecutionStatus::Queued);
        assert_eq!(queued.attempts, 1);
        assert_eq!(queued.lease_id, None);

        let outcome = complete_execution(
            &mut conn,
            "exec-a",
            &first.lease_id,
            FinalStatus::Succeeded,
            Some("late"),
            None,
            LEASE_MILLIS + 1,
        )?;
        assert_eq!(outcome, LeaseOutcome::LeaseNotCurrent);

        let second = claim_oldest_queued(&mut conn, "r2", "lease-2", 2 * LEASE_MILLIS, 40_000)?
            .context("task handed out again")?;
        assert_eq!(second.attempt, 2);
        assert_eq!(
            append_runner_event(
                &mut conn,
                "exec-a",
                "lease-1",
                EventKind::Progress,
                "stale",
                99_999,
                40_001
            )?,
            LeaseOutcome::LeaseNotCurrent
        );
        Ok(())
    }

    #[test]
    fn events_and_heartbeats_renew_the_lease() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 0)?;
        claim_oldest_queued(&mut conn, "r1", "lease-1", 1_000, 0)?;
        assert_eq!(
            renew_lease(&mut conn, "exec-a", "lease-1", 2_000, 900)?,
            LeaseOutcome::Accepted
        );
        assert_eq!(
            append_runner_event(
                &mut conn,
                "exec-a",
                "lease-1",
                EventKind::Progress,
                "p",
                3_000,
                1_900
            )?,
            LeaseOutcome::Accepted
        );
        assert!(requeue_expired_leases(&mut conn, 2_999)?.is_empty());
        assert_eq!(
            renew_lease(&mut conn, "exec-a", "lease-1", 9_000, 3_000)?,
            LeaseOutcome::LeaseNotCurrent,
            "a lease that has run out is not renewed, even before the sweeper runs"
        );
        assert_eq!(
            renew_lease(&mut conn, "exec-missing", "lease-1", 9_000, 0)?,
            LeaseOutcome::UnknownExecution
        );
        Ok(())
    }

    #[test]
    fn complete_is_idempotent_for_the_same_lease_and_status() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 0)?;
        claim_oldest_queued(&mut conn, "r1", "lease-1", LEASE_MILLIS, 0)?;
        let complete = |conn: &mut Connection, lease: &str, status, now| {
            complete_execution(conn, "exec-a", lease, status, Some("out"), None, now)
        };
        assert_eq!(
            complete(&mut conn, "lease-1", FinalStatus::Succeeded, 10)?,
            LeaseOutcome::Accepted
        );
        // Retried long after the lease would have expired: still the same answer.
        assert_eq!(
            complete(
                &mut conn,
                "lease-1",
                FinalStatus::Succeeded,
                10 * LEASE_MILLIS
            )?,
            LeaseOutcome::Accepted
        );
        assert_eq!(
            complete(&mut conn, "lease-1", FinalStatus::Failed, 20)?,
            LeaseOutcome::AlreadyFinished(ExecutionStatus::Succeeded)
        );
        assert_eq!(
            complete(&mut conn, "lease-other", FinalStatus::Succeeded, 20)?,
            LeaseOutcome::LeaseNotCurrent
        );
        let done = get_execution(&conn, "exec-a")?.context("exists")?;
        assert_eq!(done.status, ExecutionStatus::Succeeded);
        assert_eq!(done.result.as_deref(), Some("out"));
        let (events, _) = events_after(&mut conn, "exec-a", 0)?.context("exists")?;
        let finals = events
            .iter()
            .filter(|e| e.kind == EventKind::Result)
            .count();
        assert_eq!(
            finals, 1,
            "a repeated completion adds no second result event"
        );
        assert!(requeue_expired_leases(&mut conn, 100 * LEASE_MILLIS)?.is_empty());
        Ok(())
    }

    #[test]
    fn events_are_numbered_in_order_and_filtered_by_after() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 0)?;
        create_execution(&mut conn, "exec-b", "echo", "other", 0)?;
        claim_oldest_queued(&mut conn, "r1", "lease-1", LEASE_MILLIS, 1)?;
        for (now, message) in [(2, "one"), (3, "two")] {
            append_runner_event(
                &mut conn,
                "exec-a",
                "lease-1",
                EventKind::Progress,
                message,
                LEASE_MILLIS,
                now,
            )?;
        }
        complete_execution(
            &mut conn,
            "exec-a",
            "lease-1",
            FinalStatus::Failed,
            None,
            Some("boom"),
            4,
        )?;
        let (events, status) = events_after(&mut conn, "exec-a", 0)?.context("exists")?;
        assert_eq!(status, ExecutionStatus::Failed);
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            kinds_and_messages(&events),
            [
                (EventKind::Status, "queued"),
                (EventKind::Status, "running on runner r1 (attempt 1)"),
                (EventKind::Progress, "one"),
                (EventKind::Progress, "two"),
                (EventKind::Error, "boom"),
            ]
        );
        let (later, _) = events_after(&mut conn, "exec-a", 3)?.context("exists")?;
        assert_eq!(later.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        let (other, status) = events_after(&mut conn, "exec-b", 0)?.context("exists")?;
        assert_eq!((other.len(), status), (1, ExecutionStatus::Queued));
        assert!(events_after(&mut conn, "exec-missing", 0)?.is_none());
        Ok(())
    }

    #[test]
    fn a_reopened_database_keeps_executions_and_honours_live_leases() -> Result<()> {
        let dir = std::env::temp_dir().join(format!(
            "stigmer-store-test-{}-{}",
            std::process::id(),
            crate::clock::now_unix_millis()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("stigmer.db");
        {
            let mut conn = open(&path)?;
            create_execution(&mut conn, "exec-running", "echo", "1", 0)?;
            create_execution(&mut conn, "exec-queued", "echo", "2", 1)?;
            claim_oldest_queued(&mut conn, "r1", "lease-1", LEASE_MILLIS, 2)?;
            // Dropped without any shutdown step, as after a crash.
        }
        let mut conn = open(&path)?;
        assert!(
            requeue_expired_leases(&mut conn, LEASE_MILLIS - 1)?.is_empty(),
            "a lease stored before the restart is honoured until it expires"
        );
        assert_eq!(
            renew_lease(&mut conn, "exec-running", "lease-1", 2 * LEASE_MILLIS, 10)?,
            LeaseOutcome::Accepted
        );
        assert_eq!(
            requeue_expired_leases(&mut conn, 2 * LEASE_MILLIS)?,
            ["exec-running"]
        );
        let handed = claim_oldest_queued(&mut conn, "r2", "lease-2", 3 * LEASE_MILLIS, 70_000)?
            .context("task")?;
        assert_eq!(
            (handed.execution_id.as_str(), handed.attempt),
            ("exec-running", 2)
        );
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        drop(conn);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA user_version = 99")?;
        let error = configure_and_migrate(&conn).expect_err("newer schema refused");
        assert!(format!("{error:#}").contains("schema version 99"));
        Ok(())
    }
}
