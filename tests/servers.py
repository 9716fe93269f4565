"""Real servers for tests: redis-server and nginx on free loopback ports.

Under CI=true a missing binary is a failure, never a skip: `.ci/run` installs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run `bash .ci/run` or install it with apt-get"
        )
    return path


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """One throw-away redis-server; `stop()`/`start()` simulate an outage on the same port."""

    def __init__(self, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = require_binary("redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="authgate-redis-")
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer ends it: nothing is written on the way out."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def flush(self) -> None:
        cli = shutil.which("redis-cli")
        if cli:
            subprocess.run(
                [cli, "-p", str(self.port), "FLUSHALL"], check=True, stdout=subprocess.DEVNULL
            )


class Nginx:
    """nginx in the foreground with a config written for the test (no root needed)."""

    def __init__(self, config_body: str) -> None:
        self.binary = require_binary("nginx")
        self.dir = Path(tempfile.mkdtemp(prefix="authgate-nginx-"))
        self.port = free_port()
        (self.dir / "logs").mkdir()
        conf = f"""
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
{config_body.replace("LISTEN_PORT", str(self.port))}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError((self.dir / "logs/error.log").read_text()) from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def _redis_cli(port: int, *args: str) -> str:
    cli = require_binary("redis-cli")
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} after {timeout}s")


class RedisSentinel:
    """A real master, `replicas` replicas of it and one `redis-server --sentinel` watching
    them, as SentinelSettings see it. `failover()` needs at least one replica."""

    master_name = "authgate"

    def __init__(self, replicas: int = 0) -> None:
        self.binary = require_binary("redis-server")
        # A replica syncs at once, not after the 5 s a master waits for more of them.
        at_once = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(extra=at_once)
        follow = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replicas = [RedisServer(extra=(*at_once, *follow)) for _ in range(replicas)]
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="authgate-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{self.port}"]

    def master_port(self) -> int:
        """The master's port as the sentinel reports it (what a client is sent to)."""
        reply = _redis_cli(self.port, "SENTINEL", "get-master-addr-by-name", self.master_name)
        return int(reply.split()[1])

    def _master_known(self) -> bool:
        return self.master_port() == self.master.port

    def _replicas_known(self) -> bool:
        reply = _redis_cli(self.port, "SENTINEL", "replicas", self.master_name)
        return all(str(r.port) in reply for r in self.replicas) and "disconnected" not in reply

    def start(self) -> RedisSentinel:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} 5000\n"
        )
        try:
            for replica in self.replicas:
                _wait_until(lambda r=replica: _in_sync(r.port), "a replica does not sync")
            self.proc = subprocess.Popen(
                [self.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_for_port(self.port)
            _wait_until(self._master_known, "the sentinel does not report its master")
            _wait_until(self._replicas_known, "the sentinel does not list the replicas")
        except RuntimeError:
            self.stop()
            raise
        return self

    def failover(self, promoted: Callable[[], object] = lambda: None) -> float:
        """`SENTINEL FAILOVER`: a replica becomes master and the old master its replica.

        Calls `promoted` once the sentinel names the new master; returns once it
        answers as master and the old one replicates from it, with the seconds
        that took. Sentinel demotes the old master ~10 s after the promotion.
        """
        started = time.monotonic()
        old = self.master
        _redis_cli(self.port, "SENTINEL", "FAILOVER", self.master_name)
        _wait_until(lambda: self.master_port() != old.port, "the sentinel keeps the old master")
        promoted()
        new = next(r for r in self.replicas if r.port == self.master_port())
        _wait_until(lambda: "role:master" in _info(new.port), "the new master is not master")
        _wait_until(lambda: _in_sync(old.port), "the old master does not follow the new one")
        self.replicas = [old if r is new else r for r in self.replicas]
        self.master = new
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        for server in (self.master, *self.replicas):
            server.stop()

    def flush(self) -> None:
        self.master.flush()


def _info(port: int) -> str:
    return _redis_cli(port, "INFO", "replication")


def _in_sync(port: int) -> bool:
    """A replica whose link to its master is up (the initial sync is done)."""
    return "master_link_status:up" in _info(port)


CLUSTER_NODE_ARGS = (
    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
    *("--cluster-node-timeout", "5000"),
)


class RedisCluster:
    """Real cluster masters (no replicas), slots split by `redis-cli --cluster create`."""

    def __init__(self, size: int = 3) -> None:
        self.servers = [
            RedisServer(
                extra=(*CLUSTER_NODE_ARGS, "--cluster-port", str(free_port())),
            )
            for _ in range(size)
        ]

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def _healthy(self) -> bool:
        return all(
            "cluster_state:ok" in _redis_cli(s.port, "CLUSTER", "INFO") for s in self.servers
        )

    def start(self) -> RedisCluster:
        try:
            for server in self.servers:
                server.start()
            create = ("--cluster", "create", *self.nodes, "--cluster-replicas", "0")
            _redis_cli(self.servers[0].port, *create, "--cluster-yes")
            _wait_until(self._healthy, "the cluster does not report cluster_state:ok")
        except (RuntimeError, subprocess.SubprocessError):
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def flush(self) -> None:
        for server in self.servers:
            server.flush()
