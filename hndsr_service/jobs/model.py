"""What a scene job is: its status, its record, its id. Shared by the store, the worker and the routes."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


@dataclass(frozen=True)
class Job:
    id: str
    status: JobStatus
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
    runner: str | None = None  # the replica running it, or that ran it last
    attempts: int = 0  # times it was started; also the fencing token of its current lease
    rows_done: int = 0  # tile rows of the product checkpointed in storage

    def to_json(self) -> dict[str, Any]:
        fraction = self.tiles_done / self.tiles_total if self.tiles_total else float(self.status == "succeeded")
        return {"job_id": self.id, "status": self.status.value,
                "progress": {"tiles_done": self.tiles_done, "tiles_total": self.tiles_total,
                             "fraction": round(fraction, 4)},
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "error": self.error, "input": self.input,
                "output": self.output, "expired": self.expired, "runner": self.runner, "attempts": self.attempts,
                "status_url": f"/jobs/{self.id}", "result_url": f"/jobs/{self.id}/result"}
