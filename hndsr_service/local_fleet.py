"""A fleet's real components for tests and the fleet soak: Postgres from Debian's package and an S3 API server
(moto's, from PyPI, installed with the test extras), each private on a free loopback port, and able to be
stopped, paused and started again."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hndsr_service.local_server import free_port, wait_for_port

PG_USER = "postgres"  # Debian's package runs the server as this user; the tests run as root
S3_ENV = {"AWS_ACCESS_KEY_ID": "hndsr-test", "AWS_SECRET_ACCESS_KEY": "hndsr-test-secret",
          "AWS_REGION": "us-east-1"}
BUCKET = "hndsr-jobs"


def pg_bindir() -> Path | None:
    """Debian's Postgres programs (the newest version installed), or None when Postgres is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found and shutil.which("runuser") else None


class Postgres:
    """A throwaway Postgres cluster in a temporary folder (``initdb``, ``pg_ctl``), as the ``postgres`` user."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise FileNotFoundError("Postgres is not installed (Debian's postgresql; .ci/run installs it)")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="hndsr-pg-"))
        shutil.chown(self.folder, PG_USER)
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://hndsr:hndsr-secret@127.0.0.1:{self.port}/postgres"
        self._as_postgres("initdb", "-D", str(self.data), "-U", "hndsr", "-A", "md5", "--pwfile",
                          str(self._password_file()), "--no-sync")

    def _password_file(self) -> Path:
        path = self.folder / "password"
        path.write_text("hndsr-secret\n")
        shutil.chown(path, PG_USER)
        return path

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", PG_USER, "--", str(self.bindir / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.folder)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        wait_for_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


class S3Server:
    """moto's S3 API server with one bucket; :attr:`env` configures a client (or a replica) for it."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        wait_for_port(self.port)
        self.client().create_bucket(Bucket=BUCKET)

    def client(self):  # noqa: ANN201  (boto3 clients are built at run time)
        import boto3

        return boto3.session.Session(aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                                     aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                                     region_name=S3_ENV["AWS_REGION"]).client("s3", endpoint_url=self.endpoint)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def pause(self) -> None:
        """Unreachable as a hung server is: connections open, nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def running_s3_server(log: Path) -> Iterator[S3Server]:
    server = S3Server(log)
    try:
        yield server
    finally:
        server.stop()
