"""A real `bentoml serve service:HNDSR` on a free loopback port, and the memory of its processes (Linux /proc).

Shared by the benchmarks and soaks that measure a running server, by ``scripts/replicas.py`` and by the tests:
what ``scripts/serve`` starts, started from Python. Not part of the service itself.
The model comes from the BentoML store: run `scripts/serve` or `python -m hndsr_service.model_store` once first.
Needs no more than the server's own packages (the GPU machine has no pytest).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKER_MODULE = "_bentoml_impl.worker.service"  # what BentoML runs in each worker process
BENTOML = (sys.executable, "-m", "bentoml")  # also where the package was installed with --target, without scripts


@functools.cache
def bento_env() -> dict[str, str]:
    """The process environment the Bento (and scripts/serve) gives the server, from ``bentofile.yaml``:
    local servers run under the same allocator and OpenMP settings as production."""
    envs = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["envs"]
    return {item["name"]: str(item["value"]) for item in envs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 10) -> None:
    """Return once something accepts TCP connections on the loopback ``port`` (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def local_server(env: dict[str, str], log: Path | None = None, ready_timeout_s: float = 180
                 ) -> Iterator[tuple[str, int]]:
    """``(url, pid)`` of a ready server with ``env`` on top of this process's environment and the Bento's;
    SIGTERM after."""
    port = free_port()
    server = launch(port, {"DEVICE": os.environ.get("DEVICE", "cpu"), **env}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, ready_timeout_s, log)
        yield url, server.pid
    finally:
        stop(server, timeout_s=90)


def launch(port: int, env: dict[str, str], log: Path | None, *options: str, target: str = "service:HNDSR",
           cwd: Path = ROOT, append: bool = False) -> subprocess.Popen:
    """``bentoml serve target`` on the loopback ``port``, in a process group of its own, under the Bento's envs,
    then this process's environment, then ``env``; its output goes to ``log`` (after what it holds: ``append``)."""
    full_env = {**bento_env(), **os.environ, **env, "HOST": "127.0.0.1", "PORT": str(port)}
    with log.open("ab" if append else "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen([*BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port), *options],
                                cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(server: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM to the server's process group (it drains), SIGKILL if it has not exited after ``timeout_s``."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float, log: Path | None = None) -> None:
    """Return once ``/ready`` answers 200; raise with the end of the server's ``log`` if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the server was not ready after {timeout_s:g} s{_tail(log)}")


def _tail(log: Path | None, chars: int = 3000) -> str:
    return f":\n{log.read_text(errors='replace')[-chars:]}" if log and log.exists() else ""


def _processes() -> tuple[dict[int, list[int]], dict[int, int]]:
    """Children of every process, and every process's resident bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return children, rss


def descendants(root_pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    children = children if children is not None else _processes()[0]
    found, todo = [], list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def kill_tree(server: subprocess.Popen) -> None:
    """SIGKILL a server and every process under it, as a machine that dies would. BentoML's workers run in
    sessions of their own, so killing the server's process group alone would leave the worker running."""
    import psutil  # a test dependency, as are the tests and scripts that kill servers

    tree = [server.pid, *descendants(server.pid)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.wait(timeout=30)
    alive = []
    for pid in tree[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.append(psutil.Process(pid))
    psutil.wait_procs(alive, timeout=30)


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    children, rss = _processes()
    return sum(rss.get(pid, 0) for pid in [root_pid, *descendants(root_pid, children)])


def worker_pid(root_pid: int) -> int | None:
    """The server's (first) worker process: the one that loads the model and answers requests."""
    for pid in descendants(root_pid):
        with contextlib.suppress(OSError):
            if WORKER_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return pid
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":  # scripts/serve: the Bento's envs as shell defaults, except where it listens
    for name, value in bento_env().items():
        if name not in ("HOST", "PORT"):
            print(f"[[ -n ${{{name}:-}} ]] || {name}={shlex.quote(value)}; export {name}")
