"""The processes a benchmark run needs, all on loopback and all stopped by their own pid.

nginx serves the fixed 1 KiB page (the upstream) and the front ends;
redis-server holds the sessions; the test OpenID Provider and authgate run as
separate Python processes, so none of them shares an event loop or a core
budget with the load generator's own client. The peer, oauth2-proxy, is the
Go binary `bench/install-tools.sh` builds, signed in to the same test OP.
"""

from __future__ import annotations

import base64
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
INSTALL_TOOLS = "bash bench/install-tools.sh"


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


def find_go_binary(name: str) -> str | None:
    """A tool `bench/install-tools.sh` put in GOBIN (default ~/go/bin), else one on PATH.

    GOBIN first: that copy is the pinned version, whatever else PATH holds.
    """
    gopath = os.environ.get("GOPATH") or os.path.join(os.path.expanduser("~"), "go")
    pinned = Path(os.environ.get("GOBIN") or os.path.join(gopath, "bin")) / name
    return str(pinned) if pinned.exists() else shutil.which(name)


def go_binary(name: str) -> str:
    found = find_go_binary(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: run {INSTALL_TOOLS}")
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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


def oauth2_proxy_site(listen: int, oauth2_proxy: int, app: int) -> str:
    """nginx `auth_request` → oauth2-proxy `/oauth2/auth`: the shipped site, another question.

    The same keep-alive pools, headers and proxying as in front of authgate
    (its `authgate` upstream block now names oauth2-proxy's port), so the
    two rows differ in the auth server alone.
    """
    text = shipped_site(listen, oauth2_proxy, app)
    if text.count(AUTH_PROXY_PASS) != 1:
        raise RuntimeError(f"{SHIPPED_SITE} must contain {AUTH_PROXY_PASS!r} exactly once")
    return text.replace(AUTH_PROXY_PASS, "proxy_pass http://authgate/oauth2/auth;")


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


def oauth2_proxy_argv(
    binary: str,
    *,
    port: int,
    upstream: int,
    op_issuer: str,
    client_secret: str,
    redis_url: str | None,
) -> list[str]:
    """oauth2-proxy as OIDC client of the test OP: reverse proxy to the upstream and /oauth2/auth.

    Request and auth logging are off (authgate logs no request either); the
    session lives in the cookie (oauth2-proxy's default) or, with
    `redis_url`, in Redis behind a ticket cookie. Plain http on loopback,
    so the cookie is not `Secure`; no refresh period, as authgate's bench
    sessions have no refresh due.
    """
    argv = [
        binary,
        f"--http-address=127.0.0.1:{port}",
        "--provider=oidc",
        f"--oidc-issuer-url={op_issuer}",
        "--client-id=authgate",
        f"--client-secret={client_secret}",
        f"--redirect-url=http://127.0.0.1:{port}/oauth2/callback",
        f"--upstream=http://127.0.0.1:{upstream}/",
        f"--cookie-secret={base64.urlsafe_b64encode(os.urandom(32)).decode()}",
        "--cookie-secure=false",
        "--email-domain=*",
        "--code-challenge-method=S256",
        "--skip-provider-button",
        "--set-xauthrequest",
        "--request-logging=false",
        "--auth-logging=false",
    ]
    if redis_url is None:
        return [*argv, "--session-store-type=cookie"]
    return [*argv, "--session-store-type=redis", f"--redis-connection-url={redis_url}"]


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
