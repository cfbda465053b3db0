"""The job records' state machine on both stores (SQLite, and a real Postgres), and the files' owner on both
backends (a folder, and a real S3 API server): claims, leases and their fencing, cancels, retention."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hndsr_service.jobs.files import JobFiles, LocalFiles, S3Files, StorageUnavailable
from hndsr_service.jobs.model import JobStatus
from hndsr_service.jobs.store import SCHEMA_VERSION, JobStore, PostgresJobStore, SqliteJobStore, StoreUnavailable
from tests.fleet import BUCKET, postgres, s3_server


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "sqlite":
        return SqliteJobStore(tmp_path / "jobs")
    store = PostgresJobStore(request.getfixturevalue("pg_url"))
    store._rows("DELETE FROM jobs")  # one cluster for the module: each test starts empty
    return store


def queue(store: JobStore, job_id: str) -> None:
    store.create(job_id, {"scale_factor": 2}, {"width": 8}, {"width": 16}, tiles_total=4)


def test_jobs_are_claimed_oldest_first_once_each(store: JobStore) -> None:
    for job_id in ("a" * 32, "b" * 32):
        queue(store, job_id)
    first, second = store.claim("r1", 30), store.claim("r2", 30)
    assert (first.id, second.id) == ("a" * 32, "b" * 32) and store.claim("r3", 30) is None
    assert (first.status, first.runner, first.attempts) == (JobStatus.RUNNING, "r1", 1)
    assert store.count(JobStatus.RUNNING) == 2 and store.count(JobStatus.QUEUED) == 0
    assert store.get(first.id).to_json()["runner"] == "r1"


def test_concurrent_claims_never_share_a_job(store: JobStore) -> None:
    for n in range(12):
        queue(store, f"{n:032x}")
    claimed: list[str] = []

    def claim_all(runner: str) -> None:
        while (job := store.claim(runner, 30)) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"r{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [f"{n:032x}" for n in range(12)]


def test_an_expired_lease_is_taken_over_and_the_old_runner_is_fenced_off(store: JobStore) -> None:
    queue(store, "c" * 32)
    old = store.claim("r1", 30)
    assert store.checkpoint(old, 2, 2) is False and store.claim("r2", 30) is None  # held, renewed
    time.sleep(1.2)
    new = store.claim("r2", 1.0)  # its lease ran out after 1 s
    assert (new.runner, new.attempts, new.rows_done, new.tiles_done) == ("r2", 2, 2, 2)
    # The old runner comes back: every write of its attempt is refused.
    assert store.renew(old) is None and store.checkpoint(old, 3, 3) is None
    assert not store.finish(old, JobStatus.SUCCEEDED)
    assert store.checkpoint(new, 3, 3) is False and store.finish(new, JobStatus.SUCCEEDED)
    done = store.get(new.id)
    assert (done.status, done.rows_done, done.attempts) == (JobStatus.SUCCEEDED, 3, 2)


def test_a_released_job_is_resumed_from_its_checkpoint(store: JobStore) -> None:
    queue(store, "d" * 32)
    job = store.claim("r1", 30)
    store.checkpoint(job, 1, 2)
    store.release(job)
    again = store.claim("r2", 30)
    assert (again.status, again.rows_done, again.attempts, again.started_at) == (JobStatus.RUNNING, 1, 2,
                                                                                  job.started_at)


def test_cancel_is_immediate_when_queued_and_flagged_for_the_runner_otherwise(store: JobStore) -> None:
    queue(store, "e" * 32)
    queue(store, "f" * 32)
    running = store.claim("r1", 30)
    assert store.request_cancel("f" * 32).status == JobStatus.CANCELLED
    assert store.request_cancel(running.id).status == JobStatus.RUNNING
    assert store.renew(running) is True and store.checkpoint(running, 1, 1) is True
    assert store.finish(running, JobStatus.CANCELLED) and store.get(running.id).status == JobStatus.CANCELLED


def test_a_cancel_and_a_release_cannot_miss_each_other(store: JobStore) -> None:
    queue(store, "5" * 32)
    job = store.claim("r1", 30)
    flagged = store.request_cancel(job.id)
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.RUNNING, True)
    store.release(job)  # its replica shuts down: back in the queue, still flagged for whoever claims it
    assert store.claim("r2", 30).cancel_requested
    queue(store, "6" * 32)
    cancelled = store.request_cancel("6" * 32)
    assert cancelled.status == JobStatus.CANCELLED and cancelled.finished_at is not None


def test_parameters_are_fixed_by_the_lease_holder_only(store: JobStore) -> None:
    queue(store, "8" * 32)
    old = store.claim("r1", 30)
    assert store.fix_params(old, {**old.params, "band_stats": {"1": [0.0, 1.0, 0.5]}})
    store._rows("UPDATE jobs SET heartbeat_at = 0 WHERE id = %s", (old.id,))  # its lease ran out
    new = store.claim("r2", 30)
    assert new.params["band_stats"] == {"1": [0.0, 1.0, 0.5]}
    assert not store.fix_params(old, {"scale_factor": 9}) and store.get(old.id).params == new.params


def test_retention_gives_each_expired_jobs_files_to_one_caller_until_they_are_deleted(store: JobStore) -> None:
    queue(store, "1" * 32)
    queue(store, "2" * 32)
    job = store.claim("r1", 30)
    store.finish(job, JobStatus.FAILED, {"error": "io_error", "detail": "x"})
    time.sleep(0.05)
    store.expire(0.01)
    assert store.get(job.id).expired and not store.get("2" * 32).expired
    assert [store.claim_purges(60), store.claim_purges(60)] == [[job.id], []]
    time.sleep(0.05)  # the first caller's storage failed: past the retry time, the files are given out again
    assert store.claim_purges(0.01) == [job.id]
    store.mark_purged(job.id)
    time.sleep(0.05)
    assert store.claim_purges(0.01) == []


def test_a_job_deleted_while_running_is_purged_only_once_it_has_finished(store: JobStore) -> None:
    queue(store, "3" * 32)
    job = store.claim("r1", 30)
    store.mark_expired(job.id, purged=False)
    assert store.claim_purges(0) == []  # its runner deletes the files when it stops
    store.finish(job, JobStatus.CANCELLED, None)
    assert store.claim_purges(0) == [job.id]  # if it could not, a sweep does


def test_a_sqlite_store_from_before_versioning_is_migrated(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    with sqlite3.connect(folder / "jobs.sqlite") as db:  # the schema of hndsr's first job store
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, params TEXT NOT NULL, "
                   "input TEXT NOT NULL, output TEXT NOT NULL, tiles_done INTEGER NOT NULL DEFAULT 0, tiles_total "
                   "INTEGER NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL, heartbeat_at "
                   "REAL, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL "
                   "DEFAULT 0)")
        db.execute("INSERT INTO jobs (id, status, params, input, output, tiles_total, created_at) "
                   "VALUES (?, 'queued', '{}', '{}', '{}', 3, 1.0)", ("9" * 32,))
    store = SqliteJobStore(folder)
    job = store.claim("r1", 30)
    assert (job.id, job.attempts, job.rows_done) == ("9" * 32, 1, 0)
    assert store._rows("SELECT version FROM hndsr_schema") == [{"version": SCHEMA_VERSION}]


def test_an_unreachable_database_is_store_unavailable_then_recovers(tmp_path: Path) -> None:
    with postgres() as server:
        store = PostgresJobStore(server.url)
        queue(store, "7" * 32)
        server.stop()
        with pytest.raises(StoreUnavailable) as caught:
            store.get("7" * 32)
        assert "hndsr-secret" not in str(caught.value)  # the URL's password is never in a message
        server.start()
        assert store.get("7" * 32).status == JobStatus.QUEUED


@pytest.fixture(params=["local", "s3"])
def files(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobFiles]:
    if request.param == "local":
        yield LocalFiles(tmp_path / "jobs")
        return
    with s3_server(tmp_path / "moto.log") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield S3Files(tmp_path / "scratch", f"s3://{BUCKET}/fleet", patience_s=3)


def test_files_keep_input_rows_and_result_and_delete_everything(files: JobFiles) -> None:
    job_id = "a" * 32
    upload = files.scratch(job_id, 0) / "upload"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"raster")
    files.store_input(job_id, upload)
    files.drop_scratch(job_id, 0)
    assert files.input(job_id, 1).read_bytes() == b"raster"
    files.put_row(job_id, 0, b"row zero")
    files.put_row(job_id, 1, b"row one")
    assert files.get_row(job_id, 1) == b"row one"
    product = files.scratch(job_id, 1) / "result.tif"
    product.parent.mkdir(parents=True, exist_ok=True)
    product.write_bytes(bytes(range(256)) * 4)
    files.store_result(job_id, product)
    assert files.get_row(job_id, 0) == b"row zero"  # until the success is recorded, a run may resume from them
    files.drop_checkpoints(job_id)
    with pytest.raises(Exception):  # noqa: B017  (FileNotFoundError here, S3's NoSuchKey there)
        files.get_row(job_id, 0)
    stored = files.result(job_id)
    assert stored is not None and stored.size == 1024
    if stored.read_range is not None:
        assert b"".join(stored.read_range(10, 19)) == bytes(range(10, 20))
    assert list(files.scratch_folders()) == [(job_id, 1)]
    assert files.scratch_idle_s(job_id, 1) < 60 and files.scratch_idle_s(job_id, 7) == 0
    for path in (files.scratch(job_id, 1), *files.scratch(job_id, 1).rglob("*")):
        os.utime(path, (time.time() - 7200, time.time() - 7200))  # a killed replica's, two hours on
    assert files.scratch_idle_s(job_id, 1) > 3600
    files.drop_scratch(job_id, 1)
    files.delete(job_id)
    assert files.result(job_id) is None
    assert not (files.jobs_dir / job_id).exists()


def test_a_result_read_cut_off_mid_stream_goes_on_where_it_stopped(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ResponseStreamingError

    with s3_server(tmp_path / "moto.log") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        files = S3Files(tmp_path / "scratch", f"s3://{BUCKET}/fleet", patience_s=5)
        product = tmp_path / "result.tif"
        product.write_bytes(bytes(range(256)) * 40)
        files.store_result("c" * 32, product)
        stored = files.result("c" * 32)
        assert stored is not None and stored.etag and stored.read_range is not None
        get_object, calls = files.client.get_object, []

        def cut_off_once(**kwargs: object) -> dict:
            answer = get_object(**kwargs)
            calls.append(kwargs["Range"])
            if len(calls) == 1:  # the first body breaks after its first chunk, as a reset connection does
                chunks = answer["Body"].iter_chunks(1000)

                def broken(_size: int) -> Iterator[bytes]:
                    yield next(chunks)
                    raise ResponseStreamingError(error="connection reset")

                answer["Body"].iter_chunks = broken
            return answer

        monkeypatch.setattr(files.client, "get_object", cut_off_once)
        assert b"".join(stored.read_range(5, 9999)) == (bytes(range(256)) * 40)[5:10_000]
        assert calls == ["bytes=5-9999", "bytes=1005-9999"]


def test_unreachable_storage_is_retried_then_storage_unavailable(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with s3_server(tmp_path / "moto.log") as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        files = S3Files(tmp_path / "scratch", f"s3://{BUCKET}/fleet", patience_s=20)
        files.put_row("b" * 32, 0, b"before")
        server.pause()
        resumer = threading.Timer(4, server.resume)  # back within the patience: the call just waits
        resumer.start()
        files.put_row("b" * 32, 1, b"during")
        assert files.get_row("b" * 32, 1) == b"during"
        server.pause()
        files.patience_s = 2
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="did not answer") as caught:
            files.get_row("b" * 32, 0)
        assert time.monotonic() - started < 60 and "hndsr-test-secret" not in str(caught.value)
        server.resume()
