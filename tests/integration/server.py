"""Start the real service (`bentoml serve`) as a child process on a free loopback port."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from hndsr_service.local_server import launch, stop, wait_ready
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


class Server:
    def __init__(self, env: dict[str, str], log: Path, target: str = "service:HNDSR", cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = launch(self.port, {"DEVICE": "cpu", **env}, log, "--timeout-graceful-shutdown", "30",
                              target=target, cwd=cwd)

    def wait_ready(self, timeout: float = 120.0) -> None:
        wait_ready(self.url, self.process, timeout, self.log)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        stop(self.process, timeout_s=40)


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, **options: Path | str) -> Iterator[Server]:
    """A ready server for the block (a fixture's ``with serving(...) as srv: yield srv``), stopped after it."""
    server = Server(env, log, **options)  # type: ignore[arg-type]
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def serving_in(folder: Path, env: dict[str, str]) -> contextlib.AbstractContextManager[Server]:
    """:func:`serving` with its jobs folder and log in ``folder``."""
    return serving({**env, "JOBS_DIR": str(folder / "jobs")}, folder / "server.log")
