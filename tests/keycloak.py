"""Keycloak (Maven Central's keycloak-quarkus-dist) as an independent OIDC provider and SAML IdP.

`tests/idp/keycloak/install.sh` (a `.ci/run` phase) unpacks it, records a
Java 21+ home beside it and runs Keycloak's build step once, so one
`kc.sh start --optimized` (start-dev would rebuild first, 40 s more) serves
the whole test session on a free loopback port, plain HTTP, with the realm of
tests/fixtures/keycloak/ imported at start: two OIDC clients (`authgate`
with back-channel logout, `kcf` with front-channel logout) and SAML clients
(signed assertions, `kc`; signed and encrypted, `kce`; SOAP logout, `kcs`;
HTTP-Artifact, `kca`), whose URLs are those of an authgate on `sp_port`
(one port for the session, since Keycloak matches redirect and logout URLs
exactly). Each session runs from a home of its own: the parts Keycloak
writes to (its build, data, config) are copied, the 170 MB of jars are
links, so concurrent runs never share a database or a build. A missing
Keycloak or Java is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from string import Template
from typing import Any

import aiohttp
from yarl import URL

from tests.servers import free_port
from tests.simplesamlphp import HTML, Browser

VERSION = "26.7.3"
FIXTURES = Path(__file__).parent / "fixtures" / "keycloak"
REALM = "authgate"
OIDC_CLIENT, OIDC_SECRET = "authgate", "keycloak-test-secret"
FRONT_CHANNEL_CLIENT = "kcf"
USER, PASSWORD = "alice", "alice-password"
START_WITHIN = 120.0
# Copied into each session's home: what start-dev writes to (lib/quarkus is its build output).
COPIED = ("bin", "conf", "lib/quarkus", "lib/app", "lib/quarkus-run.jar")
LINKED = ("lib/lib", "themes", "providers")


def install_dir() -> Path:
    default = Path.home() / ".cache" / "authgate" / f"keycloak-{VERSION}"
    home = Path(os.environ.get("KEYCLOAK_HOME", default))
    if not all((home / name).is_file() for name in ("bin/kc.sh", "java-home", "tests-build")):
        raise RuntimeError(
            f"Keycloak {VERSION} is not installed in {home}:"
            " run `bash .ci/run` or `bash tests/idp/keycloak/install.sh`"
        )
    return home


def _cert_body(cert_pem: bytes) -> str:
    lines = cert_pem.decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def realm(sp_base: str, sp_cert_pem: bytes) -> dict[str, Any]:
    """The fixture realm with authgate's URLs and certificate filled in."""
    values = {"SP_BASE": sp_base, "SP_CERT": _cert_body(sp_cert_pem), "OIDC_SECRET": OIDC_SECRET}

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            return Template(node).substitute(values)
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        return node

    data = fill(json.loads((FIXTURES / "realm.json").read_text()))
    mappers = json.loads((FIXTURES / "saml-mappers.json").read_text())
    for client in data["clients"]:
        if client["protocol"] == "saml":
            client["protocolMappers"] = mappers
    return data


class Keycloak:
    """One server for the session, trusting the authgate that tests run on `sp_port`."""

    def __init__(self, sp_cert_pem: bytes) -> None:
        self.install = install_dir()
        self.java_home = (self.install / "java-home").read_text().strip()
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.origin}/realms/{REALM}"
        self.saml_metadata_url = f"{self.issuer}/protocol/saml/descriptor"
        self.sp_port = free_port()
        self.sp_base = f"http://127.0.0.1:{self.sp_port}"
        self.dir = Path(tempfile.mkdtemp(prefix="authgate-keycloak-"))
        self.home = self.dir / "home"
        self.log_path = self.dir / "keycloak.log"
        self.started_in = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self._realm = realm(self.sp_base, sp_cert_pem)

    def _make_home(self) -> None:
        for part in COPIED:
            source, target = self.install / part, self.home / part
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target)
        for part in LINKED:
            (self.home / part).symlink_to(self.install / part)
        imports = self.home / "data" / "import"
        imports.mkdir(parents=True)
        (imports / f"{REALM}.json").write_text(json.dumps(self._realm))

    def start(self) -> Keycloak:
        self._make_home()
        env = {**os.environ, "JAVA_HOME": self.java_home, "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx768m"}
        command = [
            str(self.home / "bin" / "kc.sh"),
            "start",
            "--optimized",
            "--import-realm",
            "--http-enabled=true",
            "--hostname-strict=false",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            f"--http-management-port={free_port()}",
            # Each test starts its own authgate on `sp_port`. Keycloak's pool would reuse
            # a connection the previous test's authgate closed, and Apache's client checks
            # a pooled connection only after 2 s idle: a back-channel logout sent sooner
            # fails with NoHttpResponseException and is not retried.
            "--spi-connections-http-client--default--reuse-connections=false",
        ]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        self.started_in = time.monotonic() - started
        return self

    def _wait_ready(self) -> None:
        """Ready once the realm's discovery document is served (the import has finished)."""
        deadline = time.monotonic() + START_WITHIN
        url = self.issuer + "/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"Keycloak exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Keycloak not ready after {START_WITHIN}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class _Forms(HTMLParser):
    """Every form of a page: its action and its inputs' values (tag and attribute names
    arrive lower-cased, so Keycloak's upper-case SAML POST page reads like its login page)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((values.get("action", ""), {}))
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1][1][values["name"]] = values.get("value", "")


class _Frames(HTMLParser):
    """The `src` of every iframe of a page (Keycloak's front-channel logout page)."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        src = dict(attrs).get("src")
        if tag == "iframe" and src:
            self.sources.append(src)


def iframe_sources(page: str) -> list[str]:
    parser = _Frames()
    parser.feed(page)
    return parser.sources


def only_form(page: str) -> tuple[str, dict[str, str]]:
    parser = _Forms()
    parser.feed(page)
    assert len(parser.forms) == 1, page[:3000]
    return parser.forms[0]


class KeycloakBrowser(Browser):
    """The interop browser, taught Keycloak's login form and its SAML POST page. Keycloak
    marks its cookies Secure; a browser sends them to a loopback origin over HTTP too."""

    def __init__(self, keycloak: Keycloak) -> None:
        super().__init__(secure_origins=(keycloak.origin,))
        self.posted: list[dict[str, str]] = []

    async def submit(
        self, resp: aiohttp.ClientResponse, fields: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """Post the page's one form (with `fields` filled in), following any redirects;
        what was posted is kept in `posted`."""
        action, values = only_form(await resp.text())
        target = resp.url.join(URL(action, encoded=True))
        data = {**values, **(fields or {})}
        self.posted.append(data)
        post = await self.http.post(target, data=data, allow_redirects=False, headers=HTML)
        if post.status in (301, 302, 303):
            return await self.follow(post.headers["Location"], str(post.url))
        return post

    async def sign_in_at_keycloak(
        self, resp: aiohttp.ClientResponse, user: str = USER, password: str = PASSWORD
    ) -> aiohttp.ClientResponse:
        page = await resp.text()
        assert resp.status == 200 and 'name="password"' in page, page[-3000:]
        return await self.submit(resp, {"username": user, "password": password})
