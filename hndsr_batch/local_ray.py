"""A Ray cluster of several nodes on this machine, for the tests and the batch benchmark: a head node (no CPUs of
its own, so that the work lands on the workers) and worker nodes, each started by ``ray start --block``, whose
process tree (the raylet and every task's and actor's worker) is killed at once to lose a node as a machine is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hndsr_service.local_server import free_port, kill_tree

START_TIMEOUT_S = 120
JOIN_ATTEMPTS = 3


class LocalRayCluster:
    def __init__(self, folder: Path, workers: int = 2, cpus_per_worker: int = 2, env: dict[str, str] | None = None
                 ) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0"}
        ray = str(Path(sys.executable).with_name("ray"))
        common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats", "--block"]
        self.head = self._start("head", [ray, "start", "--head", f"--port={self.port}", "--num-cpus=0",
                                         "--include-dashboard=false", *common])
        self.workers: list[subprocess.Popen] = []
        try:
            self.wait_for_nodes(1)
            for i in range(workers):  # one at a time: Ray gives a node 30 s to register, which a loaded machine misses
                self.workers.append(self._join(f"worker{i}", [ray, "start", f"--address={self.address}",
                                                              f"--num-cpus={cpus_per_worker}", *common], 2 + i))
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        with (self.folder / f"{name}.log").open("ab") as log:  # the node keeps its own copy of the descriptor
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def _join(self, name: str, command: list[str], nodes: int) -> subprocess.Popen:
        """A worker node, started again if ``ray start`` gave up before the cluster counted it."""
        for _ in range(JOIN_ATTEMPTS):
            node = self._start(name, command)
            deadline = time.monotonic() + START_TIMEOUT_S
            while node.poll() is None and time.monotonic() < deadline:
                if self.alive_nodes() >= nodes:
                    return node
                time.sleep(2)
            kill_tree(node)
        raise RuntimeError(f"{name} did not join the Ray cluster at {self.address}; see {self.folder}")

    def alive_nodes(self) -> int:
        """Nodes the head counts as alive (asked from another process: the caller stays free of ``ray.init``)."""
        probe = (f"import ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))")
        done = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=60)
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.alive_nodes() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster at {self.address} did not reach {count} nodes; see {self.folder}")
            time.sleep(2)

    def kill_worker(self, index: int) -> None:
        """The worker node gone at once, with every process it ran."""
        kill_tree(self.workers[index])

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            kill_tree(node)


@contextlib.contextmanager
def local_ray_cluster(folder: Path, workers: int = 2, cpus_per_worker: int = 2, env: dict[str, str] | None = None
                      ) -> Iterator[LocalRayCluster]:
    cluster = LocalRayCluster(folder, workers, cpus_per_worker, env)
    try:
        yield cluster
    finally:
        cluster.stop()
