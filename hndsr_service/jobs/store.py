"""Durable job records, shared by every replica: an embedded SQLite file (one host) or Postgres (a fleet).

Every state change is one SQL statement, so it is atomic in either database. A running job holds a lease:
its runner renews ``heartbeat_at``, and ``JOB_LEASE_S`` after the last renewal any replica may claim it
again. ``attempts`` counts the claims and fences the lease: a runner's writes name the attempt it
claimed, so a runner that lost its lease (paused, cut off) changes nothing once it comes back. Times are
the database's clock, so replicas whose clocks disagree still agree on leases.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from .model import Job, JobStatus

# The schema, as migrations applied in order; the version reached is kept in hndsr_schema.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("""CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        params TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT NOT NULL,
        tiles_done INTEGER NOT NULL DEFAULT 0,
        tiles_total INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        heartbeat_at DOUBLE PRECISION,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        expired INTEGER NOT NULL DEFAULT 0)""",),
    ("ALTER TABLE jobs ADD COLUMN runner TEXT",
     "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
     "ALTER TABLE jobs ADD COLUMN rows_done INTEGER NOT NULL DEFAULT 0",
     "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at)"),
    # Expired jobs whose files are still to be deleted (a sweep that met unreachable storage tries again).
    ("ALTER TABLE jobs ADD COLUMN purged INTEGER NOT NULL DEFAULT 0",
     "ALTER TABLE jobs ADD COLUMN purge_claimed_at DOUBLE PRECISION",
     "UPDATE jobs SET purged = expired"),
)
SCHEMA_VERSION = len(MIGRATIONS)
RUNNING = JobStatus.RUNNING.value
PURGE_BATCH = 100  # expired jobs a sweep takes at once: what it can delete well within the retry time
FINISHED = "('succeeded', 'failed', 'cancelled')"
CLAIMABLE = "(status = 'queued' OR (status = 'running' AND heartbeat_at < {now} - %s))"


class StoreUnavailable(Exception):
    """The job database cannot be reached (restarting, network cut); the request can be retried."""


class JobStore(ABC):
    """The job records; :meth:`_rows` runs one statement (``%s`` parameters, ``{now}`` the database's clock)."""

    now_sql: str
    skip_locked = ""  # how the claim's subquery skips rows another replica is claiming

    @abstractmethod
    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]: ...

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _job(self, sql: str, params: tuple[Any, ...] = ()) -> Job | None:
        row = self._one(sql, params)
        return _from_row(row) if row else None

    def create(self, job_id: str, params: dict[str, Any], input: dict[str, Any], output: dict[str, Any],
               tiles_total: int) -> Job:
        job = self._job("INSERT INTO jobs (id, status, params, input, output, tiles_total, created_at) "
                        "VALUES (%s, 'queued', %s, %s, %s, %s, {now}) RETURNING *",
                        (job_id, json.dumps(params), json.dumps(input), json.dumps(output), tiles_total))
        assert job is not None  # RETURNING a row just inserted
        return job

    def get(self, job_id: str) -> Job | None:
        return self._job("SELECT * FROM jobs WHERE id = %s", (job_id,))

    def count(self, *statuses: JobStatus) -> int:
        marks = ",".join(["%s"] * len(statuses))
        row = self._one(f"SELECT COUNT(*) AS n FROM jobs WHERE status IN ({marks})", tuple(s.value for s in statuses))
        return int(row["n"]) if row else 0

    def claim(self, runner: str, lease_s: float) -> Job | None:
        """The oldest queued job, or a running one whose lease ran out, now running here; None when there is none."""
        return self._job(
            f"UPDATE jobs SET status = 'running', runner = %s, attempts = attempts + 1, heartbeat_at = {{now}}, "
            f"started_at = COALESCE(started_at, {{now}}) WHERE id = (SELECT id FROM jobs WHERE {CLAIMABLE} "
            f"ORDER BY created_at LIMIT 1 {self.skip_locked}) AND {CLAIMABLE} RETURNING *",
            (runner, lease_s, lease_s))

    def renew(self, job: Job) -> bool | None:
        """Renew ``job``'s lease; None when it is no longer held (another replica took the job), else whether a
        cancel was requested."""
        row = self._one("UPDATE jobs SET heartbeat_at = {now} WHERE id = %s AND attempts = %s AND status = %s "
                        "RETURNING cancel_requested", (job.id, job.attempts, RUNNING))
        return None if row is None else bool(row["cancel_requested"])

    def checkpoint(self, job: Job, rows_done: int, tiles_done: int) -> bool | None:
        """Record rows checkpointed in storage (and renew the lease); as :meth:`renew`."""
        row = self._one("UPDATE jobs SET rows_done = %s, tiles_done = %s, heartbeat_at = {now} WHERE id = %s "
                        "AND attempts = %s AND status = %s RETURNING cancel_requested",
                        (rows_done, tiles_done, job.id, job.attempts, RUNNING))
        return None if row is None else bool(row["cancel_requested"])

    def fix_params(self, job: Job, params: dict[str, Any]) -> bool:
        """Replace the parameters of the lease holder's job (what its first run fixed); False when the lease was
        lost."""
        return self._one("UPDATE jobs SET params = %s WHERE id = %s AND attempts = %s AND status = %s RETURNING id",
                         (json.dumps(params), job.id, job.attempts, RUNNING)) is not None

    def finish(self, job: Job, status: JobStatus, error: dict[str, str] | None = None) -> bool:
        """End the lease holder's run; False when the lease was lost (the write is refused)."""
        return self._one("UPDATE jobs SET status = %s, finished_at = {now}, error = %s WHERE id = %s "
                         "AND attempts = %s AND status = %s RETURNING id",
                         (status.value, json.dumps(error) if error else None, job.id, job.attempts, RUNNING)) is not None

    def release(self, job: Job) -> None:
        """Give a running job back to the queue (this replica is shutting down); its checkpoints stay."""
        self._rows("UPDATE jobs SET status = 'queued', heartbeat_at = NULL WHERE id = %s AND attempts = %s "
                   "AND status = %s", (job.id, job.attempts, RUNNING))

    def request_cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one is flagged, for its runner wherever it runs. One
        statement: a job given back to the queue meanwhile (its replica shutting down) cannot slip between."""
        return self._job("UPDATE jobs SET cancel_requested = 1, "
                         "finished_at = CASE WHEN status = 'queued' THEN {now} ELSE finished_at END, "
                         "status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END "
                         "WHERE id = %s AND status IN ('queued', 'running') RETURNING *", (job_id,)) or self.get(job_id)

    def mark_expired(self, job_id: str, purged: bool) -> None:
        """Forget the job (410 from now on). ``purged``: its files are deleted already; else whoever finishes
        it, or a sweep (:meth:`claim_purges`), deletes them."""
        self._rows("UPDATE jobs SET expired = 1, purged = %s WHERE id = %s", (int(purged), job_id))

    def mark_purged(self, job_id: str) -> None:
        self._rows("UPDATE jobs SET purged = 1 WHERE id = %s", (job_id,))

    def expire(self, older_than_s: float) -> None:
        """Mark the finished jobs past retention expired; their files are then :meth:`claim_purges`'."""
        self._rows("UPDATE jobs SET expired = 1, purged = 0 WHERE expired = 0 AND finished_at < {now} - %s "
                   f"AND status IN {FINISHED}", (older_than_s,))

    def claim_purges(self, retry_after_s: float) -> list[str]:
        """Finished, expired jobs whose files are still to be deleted, each returned to one caller only; one
        that has not said :meth:`mark_purged` within ``retry_after_s`` (its storage failed, its replica died)
        is returned again."""
        purgeable = (f"expired = 1 AND purged = 0 AND status IN {FINISHED} AND (purge_claimed_at IS NULL OR "
                     "purge_claimed_at < {now} - %s)")
        rows = self._rows(f"UPDATE jobs SET purge_claimed_at = {{now}} WHERE id IN (SELECT id FROM jobs WHERE "
                          f"{purgeable} LIMIT {PURGE_BATCH} {self.skip_locked}) AND {purgeable} RETURNING id",
                          (retry_after_s, retry_after_s))
        return [row["id"] for row in rows]

    @staticmethod
    def _migrations(version: int) -> Iterator[str]:
        """The statements that take a store at schema ``version`` to :data:`SCHEMA_VERSION`."""
        for statements in MIGRATIONS[version:]:
            yield from statements


def _check_known(version: int) -> None:
    """A store migrated by a newer HNDSR is not written by an older one (a rollback must not undo its schema)."""
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"the job database has schema {version}; this HNDSR knows up to {SCHEMA_VERSION}")


def _from_row(row: dict[str, Any]) -> Job:
    return Job(row["id"], JobStatus(row["status"]), json.loads(row["params"]), json.loads(row["input"]),
               json.loads(row["output"]), row["tiles_done"], row["tiles_total"], row["created_at"],
               row["started_at"], row["finished_at"], json.loads(row["error"]) if row["error"] else None,
               bool(row["cancel_requested"]), bool(row["expired"]), row["runner"], row["attempts"], row["rows_done"])


class SqliteJobStore(JobStore):
    """One SQLite file, ``JOBS_DIR/jobs.sqlite``: the default, for the replicas of one host."""

    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "jobs.sqlite"
        self._keeper: sqlite3.Connection | None = None
        self._opening = threading.Lock()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._db() as db:
            return [dict(row) for row in db.execute(sql.replace("%s", "?").format(now=self.now_sql), params)]

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode: every statement is its own atomic transaction."""
        with self._opening:
            if self._keeper is None:  # on first use, so importing the service creates no folder
                self._keeper = self._open()
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            yield db

    def _open(self) -> sqlite3.Connection:
        """Create or migrate the database, and keep one connection open for the store's life. SQLite deletes
        the WAL and shared-memory files when its last connection closes, and every later connection must create
        them again: on a full disk that fails, and even reading a job's status failed (a 500 on GET /jobs/<id>
        while a job's result filled the disk). While this connection lives, they stay."""
        self.folder.mkdir(parents=True, exist_ok=True)
        keeper = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        keeper.execute("PRAGMA journal_mode=WAL")
        keeper.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then find it done
        try:
            keeper.execute("CREATE TABLE IF NOT EXISTS hndsr_schema (version INTEGER NOT NULL)")
            version = keeper.execute("SELECT MAX(version) FROM hndsr_schema").fetchone()[0]
            if version is None:  # a store from before versioning has the first migration's table, or nothing
                version = 0
            _check_known(version)
            for statement in self._migrations(version):
                if not _has_column(keeper, statement):
                    keeper.execute(statement)
            keeper.execute("DELETE FROM hndsr_schema")
            keeper.execute("INSERT INTO hndsr_schema VALUES (?)", (SCHEMA_VERSION,))
            keeper.execute("COMMIT")
        except BaseException:
            keeper.execute("ROLLBACK")
            raise
        return keeper


def _has_column(db: sqlite3.Connection, statement: str) -> bool:
    """Whether ``statement`` adds a column the table has (a store from before versioning may have it)."""
    if " ADD COLUMN " not in statement:
        return False
    column = statement.split(" ADD COLUMN ")[1].split()[0]
    return any(row[1] == column for row in db.execute("PRAGMA table_info(jobs)"))


class PostgresJobStore(JobStore):
    """Postgres (psycopg 3), ``JOBS_DATABASE_URL``: the records every replica of a fleet shares."""

    now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    skip_locked = "FOR UPDATE SKIP LOCKED"
    CONNECT_TIMEOUT_S = 5
    MIGRATION_LOCK = 0x686E647372  # pg_advisory_xact_lock key: replicas starting together migrate one at a time

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: Any = None
        self._lock = threading.Lock()  # one statement at a time on the shared connection
        self._migrated = False

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        import psycopg

        with self._lock:
            try:
                connection = self._connect()
                with connection.cursor() as cursor:
                    cursor.execute(sql.format(now=self.now_sql), params)
                    return list(cursor.fetchall()) if cursor.description else []
            except psycopg.OperationalError as exc:
                self._close()
                raise StoreUnavailable(f"the job database cannot be reached ({type(exc).__name__})") from None

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self._url, autocommit=True, row_factory=dict_row,
                                               connect_timeout=self.CONNECT_TIMEOUT_S,
                                               keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                               keepalives_count=3)  # a dead peer is noticed, not waited on
            if not self._migrated:
                try:
                    self._migrate(self._connection)
                except BaseException:  # no statement runs on an unmigrated schema: the next call tries again
                    self._close()
                    raise
                self._migrated = True
        return self._connection

    def _migrate(self, connection: Any) -> None:
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.MIGRATION_LOCK,))
            cursor.execute("CREATE TABLE IF NOT EXISTS hndsr_schema (version INTEGER NOT NULL)")
            cursor.execute("SELECT MAX(version) AS version FROM hndsr_schema")
            version = cursor.fetchone()["version"] or 0
            _check_known(version)
            for statement in self._migrations(version):
                cursor.execute(statement)
            cursor.execute("DELETE FROM hndsr_schema")
            cursor.execute("INSERT INTO hndsr_schema VALUES (%s)", (SCHEMA_VERSION,))

    def _close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def open_store(database_url: str | None, jobs_dir: Path) -> JobStore:
    """``JOBS_DATABASE_URL`` (Postgres), else the SQLite file in ``JOBS_DIR``; nothing is opened yet."""
    return PostgresJobStore(database_url) if database_url else SqliteJobStore(jobs_dir)
