"""N API replicas behind HAProxy on one host, sharing their limits through Redis (`scripts/serve --replicas N`).

- HAProxy (Debian's package) listens on $HOST:$PORT, health-checks each replica's /ready every second and
  balances to the least busy; with TLS_CERT and TLS_KEY it terminates TLS there (plain HTTP is refused).
  A request a replica could not answer (it died, or it is draining and said 503) is retried once on another
  replica when it fits HAProxy's buffer (RETRY_BUFFER_BYTES); otherwise the client gets a 503 with
  Retry-After, never a bare 502.
- The replicas are `bentoml serve` processes on free loopback ports with REDIS_URL set, so the per-client rate
  limit and the queue depth hold across them; they trust HAProxy's X-Forwarded-For (TRUSTED_PROXIES gets
  127.0.0.1), so the limit applies to the real client address.
- Redis is REDIS_URL when set, else a private redis-server (Debian's package) on a free loopback port.
- Scene jobs: the replicas share JOBS_DIR (SQLite and the files, one host); with JOBS_DATABASE_URL and
  JOBS_STORAGE_URL set they share those instead, and each replica gets a scratch folder of its own
  (JOBS_DIR/replica<i>), as replicas on separate machines would have.
- SIGTERM or Ctrl-C: every replica drains (in-flight requests finish, new ones are refused with 503), then
  HAProxy and Redis stop. Exit status 0 after a clean drain.

Run through scripts/serve, which prepares .venv and the model store first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hndsr_service.local_server import free_port, launch, wait_for_port
from hndsr_service.settings import load_settings

RETRY_BUFFER_BYTES = 1 << 18  # requests up to 256 KiB are retried on another replica (HAProxy's tune.bufsize)
UNAVAILABLE = (
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Retry-After: 2\r\n"
    "X-Error-Code: upstream_unavailable\r\n"
    "Cache-Control: no-cache\r\n"
    "Connection: close\r\n"
    "\r\n"
    '{"error": "upstream_unavailable", "detail": "no replica could answer this request; retry shortly"}\n'
)


def log(message: str) -> None:
    print(f"[replicas] {message}", file=sys.stderr, flush=True)


def need(program: str) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None)
    if path is None:
        sys.exit(f"{program} is not installed (apt-get install {'haproxy' if program == 'haproxy' else 'redis-server'})")
    return path


def haproxy_config(host: str, port: int, backends: list[int], work: Path, pem: Path | None, timeout_s: float,
                   keep_forwarded_for: bool = False) -> str:
    """HAProxy's configuration; X-Forwarded-For from clients is dropped unless a proxy in front is trusted."""
    (work / "503.http").write_text(UNAVAILABLE)
    forwarded = "" if keep_forwarded_for else "  http-request del-header X-Forwarded-For\n"
    bind = f"{host}:{port}" + (f" ssl crt {pem}" if pem else "")
    servers = "\n".join(f"  server replica{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, 1))
    return f"""global
  maxconn 1000
  tune.bufsize {RETRY_BUFFER_BYTES}
  ssl-default-bind-options ssl-min-ver TLSv1.2
  stats socket {work / 'haproxy.sock'} mode 600 level user

defaults
  mode http
  timeout connect 2s
  timeout client {int(timeout_s)}s
  timeout server {int(timeout_s)}s
  timeout http-request 30s
  option forwardfor
  retries 2
  option redispatch 1
  # the service answers 503 before doing any work (draining, overloaded, loading); a crashed replica sent nothing
  retry-on conn-failure empty-response 503
  errorfile 502 {work / '503.http'}
  errorfile 503 {work / '503.http'}
  errorfile 504 {work / '503.http'}

frontend api
  bind {bind}
{forwarded}  http-request set-header X-Forwarded-Proto {'https' if pem else 'http'}
  default_backend replicas

backend replicas
  balance leastconn
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 1s fall 1 rise 2
{servers}
"""


class Replicas:
    def __init__(self, count: int, host: str, port: int, extra: list[str], log_dir: Path | None = None) -> None:
        self.count, self.host, self.port, self.extra = count, host, port, extra
        self.keep = log_dir is not None
        self.work = log_dir or Path(tempfile.mkdtemp(prefix="hndsr-replicas-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.reported: set[str] = set()
        self.redis: subprocess.Popen | None = None
        self.haproxy: subprocess.Popen | None = None
        self.replicas: list[subprocess.Popen] = []
        self.stopping = False

    def start(self) -> None:
        redis_url = os.environ.get("REDIS_URL") or self._start_redis()
        drain = os.environ.get("DRAIN_TIMEOUT_S", "30")
        trusted = ",".join(filter(None, [os.environ.get("TRUSTED_PROXIES", ""), "127.0.0.1/32"]))
        ports = [free_port() for _ in range(self.count)]
        settings = load_settings()
        fleet = settings.jobs_database_url is not None and settings.jobs_storage_url is not None
        for i, port in enumerate(ports, 1):
            # One BENTOML_HOME for all: each server keeps its metrics in a folder of its own
            # (hndsr_service.metrics.setup_multiprocess_store).
            env = {"REDIS_URL": redis_url, "TRUSTED_PROXIES": trusted, "REPLICA_ID": f"replica{i}"}
            if fleet:
                env["JOBS_DIR"] = str(settings.jobs_dir / f"replica{i}")
            self.replicas.append(launch(port, env, self.work / f"replica{i}.log", "--timeout-graceful-shutdown",
                                        drain, *self.extra, append=True))
            log(f"replica{i} pid {self.replicas[-1].pid} on 127.0.0.1:{port} (log {self.work}/replica{i}.log)")
        pem = self._pem()
        timeout_s = settings.request_timeout_s + 30  # as the service's own BentoML timeout
        config = self.work / "haproxy.cfg"
        config.write_text(haproxy_config(self.host, self.port, ports, self.work, pem, timeout_s,
                                         keep_forwarded_for=bool(os.environ.get("TRUSTED_PROXIES"))))
        subprocess.run([need("haproxy"), "-c", "-q", "-f", str(config)], check=True)
        self.haproxy = subprocess.Popen([need("haproxy"), "-db", "-f", str(config)], start_new_session=True,
                                        stdout=(self.work / "haproxy.log").open("ab"), stderr=subprocess.STDOUT)
        scheme = "https" if pem else "http"
        log(f"HAProxy pid {self.haproxy.pid} on {scheme}://{self.host}:{self.port} -> {self.count} replicas "
            f"(config {config})")

    def _start_redis(self) -> str:
        port = free_port()
        self.redis = subprocess.Popen(
            [need("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(self.work)],
            stdout=(self.work / "redis.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(port)
        log(f"redis-server pid {self.redis.pid} on 127.0.0.1:{port}")
        return f"redis://127.0.0.1:{port}/0"

    def _pem(self) -> Path | None:
        cert, key = os.environ.get("TLS_CERT"), os.environ.get("TLS_KEY")
        if not cert and not key:
            return None
        if not (cert and key and Path(cert).is_file() and Path(key).is_file()):
            sys.exit("TLS needs both TLS_CERT and TLS_KEY, each a readable PEM file")
        pem = self.work / "tls.pem"
        pem.touch(mode=0o600)
        pem.write_text(Path(cert).read_text().rstrip() + "\n" + Path(key).read_text())
        return pem

    def servers_up(self) -> int:
        """How many replicas HAProxy's health checks have marked UP (from its stats socket)."""
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(str(self.work / "haproxy.sock"))
                sock.sendall(b"show stat\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
        except OSError:
            return 0
        rows = [line.split(",") for line in data.decode().splitlines() if line.startswith("replicas,replica")]
        return sum(1 for row in rows if row[17] == "UP")

    def watch(self) -> int:
        announced = False
        while not self.stopping:
            if self.haproxy and self.haproxy.poll() is not None:
                log(f"HAProxy exited with {self.haproxy.returncode}; stopping")
                self.stop()
                return 1
            for i, replica in enumerate(self.replicas, 1):
                if f"replica{i}" not in self.reported and replica.poll() is not None:
                    self.reported.add(f"replica{i}")
                    log(f"replica{i} exited with {replica.returncode}; HAProxy routes around it")
            if self.redis and self.redis.poll() is not None and "redis" not in self.reported:
                self.reported.add("redis")
                log(f"redis-server exited with {self.redis.returncode}; the replicas fall back to per-replica limits")
            if not announced and self.servers_up() == self.count:
                announced = True
                log(f"all {self.count} replicas ready")
            time.sleep(0.5)
        return 0

    def stop(self, *_: object) -> None:
        """Drain every replica, then stop HAProxy and Redis."""
        if self.stopping:
            return
        self.stopping = True
        log("draining replicas")
        for replica in self.replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + float(os.environ.get("DRAIN_TIMEOUT_S", "30")) + 15
        for replica in self.replicas:
            try:
                replica.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(replica.pid, signal.SIGKILL)
                replica.wait()
        for name, process in (("HAProxy", self.haproxy), ("redis-server", self.redis)):
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                log(f"{name} stopped")
        (self.work / "tls.pem").unlink(missing_ok=True)
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, required=True, metavar="N")
    parser.add_argument("--log-dir", type=Path, help="keep the replicas', HAProxy's and Redis's logs here")
    args, extra = parser.parse_known_args()
    if not 1 <= args.replicas <= 64:
        sys.exit("--replicas must be in 1..64")
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    replicas = Replicas(args.replicas, host, port, extra, args.log_dir)
    signal.signal(signal.SIGTERM, replicas.stop)
    signal.signal(signal.SIGINT, replicas.stop)
    try:
        replicas.start()
        status = replicas.watch()
    finally:
        replicas.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
