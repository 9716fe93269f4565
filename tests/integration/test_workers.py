"""`workers: N`: one port served by N processes, a crashed worker comes back, metrics add up.

`authgate run` runs for real (supervisor and spawned workers) against a real
Redis and the echo upstream; workers are found and killed by pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from authgate.settings import ConfigError, parse_settings
from tests.servers import RedisServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_MAIN = (
    "import sys; from aiohttp import web; from tests.upstream_app import create_upstream; "
    "web.run_app(create_upstream(), host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)
API = {"Accept": "application/json"}
UNAUTHENTICATED = re.compile(
    r'^authgate_requests_total\{kind="proxy",outcome="unauthenticated"\} ([0-9.]+)$', re.M
)


def test_memory_store_refuses_several_workers():
    with pytest.raises(ConfigError) as refused:
        parse_settings(
            {"public_url": "http://a.test", "upstream": {"url": "http://b.test"}, "workers": 2},
            "w.yaml",
        )
    (problem,) = refused.value.problems
    assert "workers is 2 but session.store is memory" in problem


def test_workers_must_be_positive():
    with pytest.raises(ConfigError):
        parse_settings(
            {"public_url": "http://a.test", "upstream": {"url": "http://b.test"}, "workers": 0},
            "w.yaml",
        )


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def workers(self) -> list[int]:
        """The live worker processes (a killed one not yet reaped is not)."""
        pids = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:
                continue
        return sorted(pids)

    def get(self, path: str) -> int:
        """One request on a new connection (so the kernel may pick any worker)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=API)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError):
            return 0

    def unauthenticated(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            found = UNAUTHENTICATED.search(resp.read().decode())
        return float(found.group(1)) if found else 0.0


def _wait(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} after {timeout}s")


def _config(path: Path, port: int, metrics: int, upstream: int, redis_url: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "public_url": f"http://127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{upstream}"},
                "session": {"store": "redis", "redis": {"url": redis_url}},
                "metrics": {"listen": f"127.0.0.1:{metrics}"},
                "workers": 2,
            }
        )
    )


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "authgate", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)


@pytest.fixture(scope="module")
def upstream_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM_MAIN, str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield port
    _stop(proc)


@pytest.fixture
def running(tmp_path: Path, upstream_port: int, redis_server: RedisServer) -> Iterator[Running]:
    redis_server.flush()
    port, metrics = free_port(), free_port()
    config = tmp_path / "authgate.yaml"
    _config(config, port, metrics, upstream_port, redis_server.url)
    log = tmp_path / "authgate.log"
    proc = _start(config, log)
    gate = Running(proc, port, metrics, log)
    try:
        _wait(lambda: len(gate.workers()) == 2 and gate.get("/_authgate/healthz") == 200, "ready")
        wait_for_port(metrics)
        yield gate
    finally:
        _stop(proc)


def test_a_killed_worker_is_replaced_and_counts_survive(running: Running):
    for _ in range(20):
        assert running.get("/page") == 401
    _wait(lambda: running.unauthenticated() == 20.0, "the 20 requests counted", timeout=5.0)
    before = running.workers()
    os.kill(before[0], signal.SIGKILL)
    _wait(
        lambda: len(running.workers()) == 2 and running.workers() != before,
        f"no new worker\n{running.log.read_text()}",
    )
    _wait(lambda: running.get("/_authgate/healthz") == 200, "serving again")
    for _ in range(10):
        assert running.get("/page") == 401
    _wait(
        lambda: running.unauthenticated() == 30.0,
        "the killed worker's counts stay in the sum",
        timeout=5.0,
    )
    assert "worker 0" in running.log.read_text() or "worker 1" in running.log.read_text()


def test_every_worker_serves_and_sigterm_stops_them_all(running: Running):
    workers = running.workers()
    served: set[int] = set()
    for _ in range(64):
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            owner = _owner(workers, sock)
        if owner is not None:
            served.add(owner)
        if served == set(workers):
            break
    assert served == set(workers), "the kernel spreads connections over every worker"
    assert _stop(running.proc) == 0
    for pid in workers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def _owner(workers: list[int], client: socket.socket) -> int | None:
    """The worker holding the server end of `client`'s connection."""
    local = client.getsockname()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        for pid in workers:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and (conn.raddr.ip, conn.raddr.port) == local:
                    return pid
        time.sleep(0.02)
    return None


def test_a_port_taken_by_another_program_fails_the_start(
    tmp_path: Path, upstream_port: int, redis_server: RedisServer
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "authgate.yaml"
        _config(config, port, free_port(), upstream_port, redis_server.url)
        proc = _start(config, tmp_path / "authgate.log")
        try:
            code = proc.wait(timeout=60)
        finally:
            _stop(proc)
    assert code != 0
    assert "failed to start" in (tmp_path / "authgate.log").read_text()
