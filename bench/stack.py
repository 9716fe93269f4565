"""The processes a benchmark run needs, all on loopback and all stopped by their own pid.

nginx serves the fixed 1 KiB page (the upstream) and the three front ends;
redis-server holds the sessions; the test OpenID Provider and authgate run as
separate Python processes, so none of them shares an event loop or a core
budget with the load generator's own client.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGE_SIZE = 1024
SHIPPED_SITE = ROOT / "conf" / "nginx" / "authgate-auth-request.conf"
AUTH_PROXY_PASS = (
    "proxy_pass http://authgate/_authgate/auth?allowed_groups=$authgate_allowed_groups;"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if found is None:
        raise SystemExit(f"{name} is not installed (apt-get install redis-server nginx-light wrk)")
    return found


def page() -> bytes:
    """Exactly PAGE_SIZE bytes of HTML: what every path must return before it is measured."""
    head = b"<!doctype html><title>bench</title><p>"
    tail = b"</p>\n"
    return head + b"x" * (PAGE_SIZE - len(head) - len(tail)) + tail


@dataclass
class Process:
    """A child process logging to a file in the run's directory."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
            )

    def check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def wait_http(process: Process, url: str, timeout: float = 60.0) -> None:
    """Until `url` answers at all (any status): the server is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_running()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{process.name} does not answer {url} after {timeout}s:\n{process.tail()}")


def nginx_conf(work: Path, name: str, body: str, workers: str) -> Path:
    """A whole nginx.conf for a foreground nginx that needs no root and no system paths."""
    base = work / name
    (base / "logs").mkdir(parents=True, exist_ok=True)
    conf = base / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes {workers};
pid {base}/nginx.pid;
error_log {base}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {base}/body;
  proxy_temp_path {base}/proxy;
  fastcgi_temp_path {base}/fastcgi;
  uwsgi_temp_path {base}/uwsgi;
  scgi_temp_path {base}/scgi;
{body}
}}
"""
    )
    return conf


def upstream_site(port: int, docroot: Path) -> str:
    """The application: the same 1 KiB page for every path."""
    (docroot / "page.html").write_bytes(page())
    return f"""
  server {{
    listen 127.0.0.1:{port};
    root {docroot};
    default_type text/html;
    location / {{ try_files /page.html =404; }}
  }}
"""


def shipped_site(listen: int, authgate: int, app: int) -> str:
    """conf/nginx/authgate-auth-request.conf with only its addresses changed."""
    text = SHIPPED_SITE.read_text()
    for example, actual in (
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("server 127.0.0.1:4180;", f"server 127.0.0.1:{authgate};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{app};"),
    ):
        if text.count(example) != 1:
            raise RuntimeError(f"{SHIPPED_SITE} must contain {example!r} exactly once")
        text = text.replace(example, actual)
    return text


def return_200_site(listen: int, authgate: int, app: int) -> str:
    """Baseline C: the shipped site, its auth location answering 200 itself.

    Only the question changes; everything nginx does around it (the headers
    it copies, the keep-alive pools, the proxying) stays as shipped.
    """
    text = shipped_site(listen, authgate, app)
    if text.count(AUTH_PROXY_PASS) != 1:
        raise RuntimeError(f"{SHIPPED_SITE} must contain {AUTH_PROXY_PASS!r} exactly once")
    return text.replace(AUTH_PROXY_PASS, "return 200;")


def proxy_pass_site(listen: int, app: int) -> str:
    """Baseline B: nginx alone in front of the same upstream, with keep-alive to it."""
    return f"""
  upstream app_b {{
    server 127.0.0.1:{app};
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://app_b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
"""


def authgate_config(
    path: Path,
    *,
    port: int,
    upstream: int,
    redis_url: str,
    op_issuer: str,
    saml_metadata: Path,
    workers: int,
    audit: Path,
) -> None:
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "public_url": f"http://127.0.0.1:{port}",
        "upstream": {"url": f"http://127.0.0.1:{upstream}"},
        "session": {"store": "redis", "redis": {"url": redis_url}},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "audit": {"output": str(audit)},
        "workers": workers,
        "connections": [
            {
                "id": "corp",
                "name": "Corp OIDC",
                "type": "oidc",
                "issuer": op_issuer,
                "client_id": "authgate",
                "client_secret": "bench-secret",
            },
            {
                "id": "saml",
                "name": "Corp SAML",
                "type": "saml",
                "idp_metadata_file": str(saml_metadata),
            },
        ],
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class Stack:
    """Everything started for one run; `stop` ends it all, newest first."""

    work: Path
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def create(cls) -> Stack:
        """A fresh directory, readable by nginx's workers (which drop root to `nobody`)."""
        work = Path(tempfile.mkdtemp(prefix="authgate-bench-"))
        work.chmod(0o755)
        return cls(work)

    def add(self, process: Process) -> Process:
        process.start()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def python(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        return self.add(Process(name, [sys.executable, *args], self.work, env or {}))
