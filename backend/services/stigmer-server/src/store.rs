//! The SQLite store: every SQL statement of the server lives here. Executions are rows of
//! `executions`; progress is the append-only `events` table, numbered per execution by `seq`.
//! Temporal runs the executions (see `executions`); this is the server's own record of them,
//! kept for `stigmer run` and status. Functions take a `&Connection` (or `&mut` when they need
//! a transaction) and the current time in Unix milliseconds, so tests drive the clock. Times
//! are stored as Unix milliseconds and rendered as RFC 3339 only at the HTTP edge.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

/// Bumped whenever `migrate` learns a new step; stored in SQLite's `user_version` pragma.
const SCHEMA_VERSION: i64 = 2;

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

/// Version 2: Temporal holds the task queue, so the lease columns of our own queue go.
/// Executions a version-1 server left queued or running are started as workflows on the next
/// start (see `executions::Executions::resume`).
const SCHEMA_V2: &str = "
ALTER TABLE executions DROP COLUMN lease_id;
ALTER TABLE executions DROP COLUMN lease_expires_at;
ALTER TABLE executions DROP COLUMN runner_id;
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionStatus {
    /// Recorded, its workflow started (or being started) but no runner has picked it up yet.
    Queued,
    /// A runner reported that it runs the agent.
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

/// How an execution ended, as its workflow's close event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { result: String },
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub id: String,
    pub agent: String,
    pub input: String,
    pub status: ExecutionStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    /// How many times a runner started the agent (Temporal's activity attempts).
    pub attempts: i64,
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

/// What became of an event a runner reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerEventOutcome {
    Accepted,
    UnknownExecution,
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
             ({SCHEMA_VERSION}); upgrade stigmer or move the data directory aside"
        );
    }
    for (step, sql) in [(1, SCHEMA_V1), (2, SCHEMA_V2)] {
        if version < step {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql} PRAGMA user_version = {step}; COMMIT;"
            ))
            .with_context(|| format!("bring the schema to version {step}"))?;
        }
    }
    Ok(())
}

const EXECUTION_COLUMNS: &str =
    "id, agent, input, status, result, error, attempts, created_at, updated_at";

fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    Ok(Execution {
        id: row.get(0)?,
        agent: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        result: row.get(4)?,
        error: row.get(5)?,
        attempts: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
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

/// Executions not yet finished, oldest first: their workflows are watched again after a restart.
pub fn unfinished_executions(conn: &Connection) -> Result<Vec<Execution>> {
    let mut statement = conn
        .prepare(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions
             WHERE status IN ('queued', 'running') ORDER BY created_at, rowid"
        ))
        .context("prepare the unfinished-executions query")?;
    let rows = statement
        .query_map([], execution_from_row)
        .context("find unfinished executions")?;
    rows.collect::<rusqlite::Result<_>>()
        .context("read unfinished executions")
}

/// Records an event a runner reported. A `status` event means the runner started the agent:
/// the execution becomes `running` and its attempt count grows.
pub fn append_runner_event(
    conn: &mut Connection,
    execution_id: &str,
    kind: EventKind,
    message: &str,
    now: i64,
) -> Result<RunnerEventOutcome> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the runner-event transaction")?;
    let status: Option<ExecutionStatus> = tx
        .query_row(
            "SELECT status FROM executions WHERE id = ?1",
            [execution_id],
            |row| row.get(0),
        )
        .optional()
        .context("read the execution's status")?;
    match status {
        None => return Ok(RunnerEventOutcome::UnknownExecution),
        Some(status) if status.is_done() => return Ok(RunnerEventOutcome::AlreadyFinished(status)),
        Some(_) => {}
    }
    if kind == EventKind::Status {
        tx.execute(
            "UPDATE executions SET status = 'running', attempts = attempts + 1, updated_at = ?2
             WHERE id = ?1",
            params![execution_id, now],
        )
        .context("mark the execution running")?;
    }
    append_event(&tx, execution_id, kind, message, now)?;
    tx.commit().context("commit the runner event")?;
    Ok(RunnerEventOutcome::Accepted)
}

/// Appends a `status` event of the server's own (Temporal unreachable, for example).
pub fn append_status_event(
    conn: &Connection,
    execution_id: &str,
    message: &str,
    now: i64,
) -> Result<()> {
    append_event(conn, execution_id, EventKind::Status, message, now).map(|_| ())
}

/// Records how an execution ended and its final event; `false` when it had already ended
/// (a second watcher, or a restart that saw the same close event), which changes nothing.
pub fn finish_execution(
    conn: &mut Connection,
    execution_id: &str,
    outcome: &Outcome,
    now: i64,
) -> Result<bool> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("begin the finish transaction")?;
    let (status, result, error, kind, message) = match outcome {
        Outcome::Succeeded { result } => (
            ExecutionStatus::Succeeded,
            Some(result.as_str()),
            None,
            EventKind::Result,
            result.as_str(),
        ),
        Outcome::Failed { error } => (
            ExecutionStatus::Failed,
            None,
            Some(error.as_str()),
            EventKind::Error,
            error.as_str(),
        ),
    };
    let changed = tx
        .execute(
            "UPDATE executions SET status = ?2, result = ?3, error = ?4, updated_at = ?5
             WHERE id = ?1 AND status IN ('queued', 'running')",
            params![execution_id, status.as_str(), result, error, now],
        )
        .context("record how the execution ended")?;
    if changed == 0 {
        return Ok(false);
    }
    append_event(&tx, execution_id, kind, message, now)?;
    tx.commit().context("commit the end of the execution")?;
    Ok(true)
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
    fn runner_status_events_count_attempts_and_mark_running() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 1_000)?;
        for (attempt, at) in [(1, 2_000), (2, 3_000)] {
            let message = format!("running (attempt {attempt})");
            assert_eq!(
                append_runner_event(&mut conn, "exec-a", EventKind::Status, &message, at)?,
                RunnerEventOutcome::Accepted
            );
        }
        append_runner_event(&mut conn, "exec-a", EventKind::Progress, "half way", 3_500)?;
        let execution = get_execution(&conn, "exec-a")?.context("exists")?;
        assert_eq!(execution.status, ExecutionStatus::Running);
        assert_eq!(execution.attempts, 2);
        assert_eq!(execution.updated_at, 3_000);
        assert_eq!(
            append_runner_event(&mut conn, "exec-missing", EventKind::Progress, "x", 4_000)?,
            RunnerEventOutcome::UnknownExecution
        );
        Ok(())
    }

    #[test]
    fn finishing_is_recorded_once_with_its_final_event() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 1_000)?;
        let done = Outcome::Succeeded {
            result: "hi".to_owned(),
        };
        assert!(finish_execution(&mut conn, "exec-a", &done, 2_000)?);
        // A second watcher, or the same close event seen again after a restart.
        assert!(!finish_execution(&mut conn, "exec-a", &done, 3_000)?);
        let failed = Outcome::Failed {
            error: "late".to_owned(),
        };
        assert!(!finish_execution(&mut conn, "exec-a", &failed, 3_000)?);
        let execution = get_execution(&conn, "exec-a")?.context("exists")?;
        assert_eq!(execution.status, ExecutionStatus::Succeeded);
        assert_eq!(execution.result.as_deref(), Some("hi"));
        assert_eq!(execution.error, None);
        let (events, status) = events_after(&mut conn, "exec-a", 0)?.context("exists")?;
        assert_eq!(status, ExecutionStatus::Succeeded);
        assert_eq!(
            kinds_and_messages(&events),
            [(EventKind::Status, "queued"), (EventKind::Result, "hi")]
        );
        assert_eq!(
            append_runner_event(&mut conn, "exec-a", EventKind::Progress, "late", 4_000)?,
            RunnerEventOutcome::AlreadyFinished(ExecutionStatus::Succeeded)
        );
        Ok(())
    }

    #[test]
    fn events_are_numbered_in_order_and_filtered_by_after() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-a", "echo", "hi", 1_000)?;
        create_execution(&mut conn, "exec-b", "echo", "hi", 1_000)?;
        append_runner_event(&mut conn, "exec-a", EventKind::Status, "running", 2_000)?;
        append_runner_event(&mut conn, "exec-a", EventKind::Progress, "one", 2_100)?;
        append_status_event(&conn, "exec-a", "waiting for Temporal", 2_200)?;
        let (events, _) = events_after(&mut conn, "exec-a", 0)?.context("exists")?;
        assert_eq!(
            events.iter().map(|event| event.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let (later, _) = events_after(&mut conn, "exec-a", 2)?.context("exists")?;
        assert_eq!(
            kinds_and_messages(&later),
            [
                (EventKind::Progress, "one"),
                (EventKind::Status, "waiting for Temporal")
            ]
        );
        let (other, _) = events_after(&mut conn, "exec-b", 0)?.context("exists")?;
        assert_eq!(other.len(), 1, "numbering is per execution");
        assert!(events_after(&mut conn, "exec-missing", 0)?.is_none());
        Ok(())
    }

    #[test]
    fn unfinished_executions_are_found_oldest_first() -> Result<()> {
        let mut conn = open_in_memory()?;
        create_execution(&mut conn, "exec-late", "echo", "", 3_000)?;
        create_execution(&mut conn, "exec-done", "echo", "", 1_000)?;
        create_execution(&mut conn, "exec-early", "echo", "", 2_000)?;
        let done = Outcome::Failed {
            error: "x".to_owned(),
        };
        finish_execution(&mut conn, "exec-done", &done, 4_000)?;
        let ids: Vec<String> = unfinished_executions(&conn)?
            .into_iter()
            .map(|execution| execution.id)
            .collect();
        assert_eq!(ids, ["exec-early", "exec-late"]);
        Ok(())
    }

    #[test]
    fn a_version_one_database_is_migrated_and_keeps_its_executions() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("stigmer-store-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("stigmer.db");
        {
            let conn = Connection::open(&path)?;
            conn.execute_batch(&format!(
                "{SCHEMA_V1} PRAGMA user_version = 1;
                 INSERT INTO executions (id, agent, input, status, attempts, lease_id,
                     lease_expires_at, runner_id, created_at, updated_at)
                 VALUES ('exec-old', 'echo', 'hi', 'running', 1, 'lease-x', 5, 'r', 1, 1);"
            ))?;
        }
        let conn = open(&path)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        let unfinished = unfinished_executions(&conn)?;
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].status, ExecutionStatus::Running);
        drop(conn);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA user_version = 99;")?;
        let refused = migrate(&conn).expect_err("a newer schema must be refused");
        assert!(format!("{refused:#}").contains("newer"), "{refused:#}");
        Ok(())
    }
}
