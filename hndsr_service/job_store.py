"""Durable records of scene jobs: one SQLite file under ``JOBS_DIR``.

SQLite's locking makes each state change atomic, so a job is claimed by exactly one worker even when
several processes share the folder, and records survive restarts. A running job's ``heartbeat_at``
moves with every tile; a job whose heartbeat stopped (its process died) goes back to the queue.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    tiles_done INTEGER NOT NULL DEFAULT 0,
    tiles_total INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0
)
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    params: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any]
    tiles_done: int
    tiles_total: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict[str, str] | None
    cancel_requested: bool
    expired: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(row["id"], row["status"], json.loads(row["params"]), json.loads(row["input"]),
                   json.loads(row["output"]), row["tiles_done"], row["tiles_total"], row["created_at"],
                   row["started_at"], row["finished_at"], json.loads(row["error"]) if row["error"] else None,
                   bool(row["cancel_requested"]), bool(row["expired"]))

    def to_json(self) -> dict[str, Any]:
        fraction = self.tiles_done / self.tiles_total if self.tiles_total else float(self.status == "succeeded")
        return {"job_id": self.id, "status": self.status,
                "progress": {"tiles_done": self.tiles_done, "tiles_total": self.tiles_total,
                             "fraction": round(fraction, 4)},
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "error": self.error, "input": self.input,
                "output": self.output, "expired": self.expired,
                "status_url": f"/jobs/{self.id}", "result_url": f"/jobs/{self.id}/result"}


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "jobs.sqlite"
        self._keeper: sqlite3.Connection | None = None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode: every statement is its own atomic transaction."""
        if self._keeper is None:  # on first use, so importing the service creates no folder
            self._open()
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
            db.row_factory = sqlite3.Row
            yield db

    def _open(self) -> None:
        """Create the database, and keep one connection open for the store's life. SQLite deletes the WAL and
        shared-memory files when its last connection closes, and every later connection must create them
        again: on a full disk that fails, and even reading a job's status failed (a 500 on GET /jobs/<id>
        while a job's result filled the disk). While this connection lives, they stay."""
        self.folder.mkdir(parents=True, exist_ok=True)
        keeper = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        keeper.execute("PRAGMA journal_mode=WAL")
        keeper.execute(SCHEMA)
        self._keeper = keeper

    def job_dir(self, job_id: str) -> Path:
        return self.folder / job_id

    def create(self, job_id: str, params: dict[str, Any], input: dict[str, Any], output: dict[str, Any],
               tiles_total: int) -> Job:
        with self._db() as db:
            db.execute("INSERT INTO jobs (id, status, params, input, output, tiles_total, created_at) "
                       "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                       (job_id, json.dumps(params), json.dumps(input), json.dumps(output), tiles_total, time.time()))
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def count(self, *statuses: str) -> int:
        with self._db() as db:
            marks = ",".join("?" * len(statuses))
            return db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses).fetchone()[0]

    def claim_next(self) -> Job | None:
        """The oldest queued job, now running; None when the queue is empty."""
        now = time.time()
        with self._db() as db:
            row = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, tiles_done = 0 "
                "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at LIMIT 1) "
                "AND status = 'queued' RETURNING *", (now, now)).fetchone()
        return Job.from_row(row) if row else None

    def progress(self, job_id: str, tiles_done: int) -> bool:
        """Record progress and the heartbeat; returns whether a cancel was requested."""
        with self._db() as db:
            row = db.execute("UPDATE jobs SET tiles_done = ?, heartbeat_at = ? WHERE id = ? "
                             "RETURNING cancel_requested", (tiles_done, time.time(), job_id)).fetchone()
        return bool(row and row[0])

    def beat(self, job_id: str) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND status = 'running'", (time.time(), job_id))

    def requeue(self, job_id: str) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET status = 'queued', started_at = NULL, tiles_done = 0 WHERE id = ?", (job_id,))

    def finish(self, job_id: str, status: str, error: dict[str, str] | None = None) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                       (status, time.time(), json.dumps(error) if error else None, job_id))

    def request_cancel(self, job_id: str) -> Job | None:
        """Queued jobs are cancelled at once; running ones are flagged for their worker."""
        with self._db() as db:
            db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                       (time.time(), job_id))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
        return self.get(job_id)

    def requeue_stale(self, stale_after_s: float) -> list[str]:
        """Running jobs whose process stopped beating go back to the queue (they restart from the top)."""
        with self._db() as db:
            rows = db.execute("UPDATE jobs SET status = 'queued', started_at = NULL, tiles_done = 0 "
                              "WHERE status = 'running' AND heartbeat_at < ? RETURNING id",
                              (time.time() - stale_after_s,)).fetchall()
        return [row[0] for row in rows]

    def expire(self, older_than_s: float) -> list[str]:
        """Finished jobs past retention are marked expired; the caller deletes their files."""
        with self._db() as db:
            rows = db.execute("UPDATE jobs SET expired = 1 WHERE expired = 0 AND finished_at < ? "
                              "AND status IN ('succeeded', 'failed', 'cancelled') RETURNING id",
                              (time.time() - older_than_s,)).fetchall()
        return [row[0] for row in rows]

    def mark_expired(self, job_id: str) -> None:
        with self._db() as db:
            db.execute("UPDATE jobs SET expired = 1 WHERE id = ?", (job_id,))
