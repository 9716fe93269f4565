"""SimpleSAMLphp (Debian's `simplesamlphp` package) as an independent SAML 2.0 IdP for tests.

It runs under `php -S` on a loopback port with a generated config directory
(`SIMPLESAMLPHP_CONFIG_DIR`): one hosted IdP signing with its own key, one
remote SP (authgate), and `exampleauth:UserPass` users. Under CI=true a
missing php or SimpleSAMLphp is a failure, never a skip (`.ci/run` installs both).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from yarl import URL

from authgate.keys import generate
from tests.servers import free_port, require_binary, wait_for_port

SSP_ROOT = Path("/usr/share/simplesamlphp")
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
HTML = {"Accept": "text/html"}
# What a browser sends for a navigation the person started (address bar, bookmark).
TYPED = {"Sec-Fetch-Site": "none"}

USERS: dict[str, dict[str, list[str]]] = {
    "alice:alice-password": {
        "uid": ["alice"],
        "mail": ["alice@example.com"],
        "displayName": ["Alice Example"],
        "eduPersonAffiliation": ["member", "staff"],
    },
}


def _php(value: Any) -> str:
    """A PHP literal for plain data (JSON strings are valid PHP strings once `$` is escaped)."""
    if isinstance(value, dict):
        items = ", ".join(f"{_php(k)} => {_php(v)}" for k, v in value.items())
        return f"[{items}]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_php(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value)).replace("$", "\\$")


def _cert_body(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(der).decode()


class SimpleSamlPhp:
    """One IdP instance; `sp` describes the authgate connection it trusts."""

    def __init__(
        self,
        sp_entity_id: str,
        acs_url: str,
        slo_url: str,
        sp_cert_pem: bytes,
        encrypt_assertions: bool = False,
    ) -> None:
        self.php = require_binary("php")
        if not (SSP_ROOT / "www" / "saml2" / "idp" / "SSOService.php").is_file():
            raise RuntimeError(
                "SimpleSAMLphp is not installed: run `bash .ci/run` or"
                " `apt-get install simplesamlphp php-cli`"
            )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.entity_id = self.base + "/saml2/idp/metadata.php"
        self.metadata_url = self.entity_id
        self.dir = Path(tempfile.mkdtemp(prefix="authgate-ssp-"))
        self.sp = {
            "entity_id": sp_entity_id,
            "acs": acs_url,
            "slo": slo_url,
            "cert": _cert_body(sp_cert_pem),
            "encrypt": encrypt_assertions,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        for sub in ("config", "metadata", "cert", "tmp", "log", "data", "sessions"):
            (self.dir / sub).mkdir(exist_ok=True)
        key_pem, cert_pem = generate("simplesamlphp-test-idp", days=30, bits=2048)
        (self.dir / "cert" / "idp.key").write_bytes(key_pem)
        (self.dir / "cert" / "idp.crt").write_bytes(cert_pem)
        config = {
            "baseurlpath": self.base + "/",
            "certdir": str(self.dir / "cert") + "/",
            "loggingdir": str(self.dir / "log") + "/",
            "datadir": str(self.dir / "data") + "/",
            "tempdir": str(self.dir / "tmp"),
            "metadatadir": str(self.dir / "metadata") + "/",
            "attributenamemapdir": "/etc/simplesamlphp/attributemap/",
            "secretsalt": secrets.token_hex(16),
            "auth.adminpassword": secrets.token_hex(16),
            "technicalcontact_email": "na@example.org",
            "timezone": "UTC",
            "logging.handler": "file",
            "logging.logfile": "simplesamlphp.log",
            "logging.level": 4,
            "enable.saml20-idp": True,
            "module.enable": {"exampleauth": True, "core": True, "saml": True, "admin": True},
            "store.type": "phpsession",
            "session.cookie.secure": False,
            "session.phpsession.cookiename": "SSPSESSID",
            "session.phpsession.savepath": str(self.dir / "sessions"),
            "language.available": ["en"],
            "trusted.url.domains": [URL(self.sp["acs"]).host, URL(self.sp["acs"]).authority],
        }
        self._php_file("config/config.php", "config", config)
        authsources = {
            "admin": ["core:AdminPassword"],
            "users": {0: "exampleauth:UserPass", **USERS},
        }
        self._php_file("config/authsources.php", "config", authsources)
        idp = {
            "host": "__DEFAULT__",
            "privatekey": "idp.key",
            "certificate": "idp.crt",
            "auth": "users",
            "signature.algorithm": RSA_SHA256,
            "sign.logout": True,
            "redirect.sign": True,
            "authproc": {
                10: {"class": "saml:AttributeNameID", "attribute": "mail", "Format": EMAIL},
            },
        }
        self._php_file("metadata/saml20-idp-hosted.php", "metadata", {"__DYNAMIC:1__": idp})
        sp = {
            "AssertionConsumerService": self.sp["acs"],
            "SingleLogoutService": self.sp["slo"],
            "NameIDFormat": EMAIL,
            "certData": self.sp["cert"],
            "validate.authnrequest": True,
            "validate.logout": True,
            "sign.logout": True,
            "redirect.sign": True,
            "saml20.sign.assertion": True,
            "saml20.sign.response": True,
            "assertion.encryption": bool(self.sp["encrypt"]),
            "signature.algorithm": RSA_SHA256,
        }
        self._php_file("metadata/saml20-sp-remote.php", "metadata", {self.sp["entity_id"]: sp})

    def _php_file(self, name: str, variable: str, value: dict[Any, Any]) -> None:
        """`$config = [...]` for config files, `$metadata[id] = [...]` per metadata entry."""
        if variable == "config":
            lines = [f"$config = {_php(value)};"]
        else:
            lines = [f"${variable}[{_php(k)}] = {_php(v)};" for k, v in value.items()]
        (self.dir / name).write_text("<?php\n" + "\n".join(lines) + "\n")

    def start(self) -> SimpleSamlPhp:
        self._write_config()
        env = {**os.environ, "SIMPLESAMLPHP_CONFIG_DIR": str(self.dir / "config")}
        self.proc = subprocess.Popen(
            [self.php, "-S", f"127.0.0.1:{self.port}", "-t", str(SSP_ROOT / "www")],
            cwd=str(SSP_ROOT / "www"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "log" / "php-server.log").open("wb"),
        )
        wait_for_port(self.port)
        return self

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in sorted((self.dir / "log").glob("*.log"))]
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


class Browser:
    """A browser for the interop flow: follows redirects by hand so that signed query strings
    reach each server byte for byte (aiohttp's own redirect following re-quotes URLs), fills
    SimpleSAMLphp's login form and submits the auto-POST forms a browser would submit."""

    def __init__(self, secure_origins: tuple[str, ...] = ()) -> None:
        """`secure_origins`: loopback origins whose Secure cookies a browser sends over HTTP."""
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=list(secure_origins))
        self.http = aiohttp.ClientSession(cookie_jar=jar)

    async def close(self) -> None:
        await self.http.close()

    async def follow(
        self, url: str, base: str | None = None, typed: bool = False
    ) -> aiohttp.ClientResponse:
        """Follow redirects from `url`; `typed`: the person started it, as with an address bar."""
        headers = {**HTML, **TYPED} if typed else HTML
        while True:
            target = URL(url, encoded=True)
            if not target.is_absolute():
                assert base is not None
                target = URL(base).join(target)
            resp = await self.http.get(target, allow_redirects=False, headers=headers)
            headers = HTML
            if resp.status not in (301, 302, 303, 307):
                return resp
            base, url = str(resp.url), resp.headers["Location"]

    async def submit_auto_post(self, resp: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        """Submit the page's single auto-POST form (a SAML HTTP-POST binding message)."""
        page = await resp.text()
        action = re.search(r'<form[^>]*action="([^"]+)"', page)
        assert action is not None, page[:2000]
        fields = {
            html.unescape(k): html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
        }
        post = await self.http.post(
            html.unescape(action.group(1)), data=fields, allow_redirects=False, headers=HTML
        )
        if post.status in (301, 302, 303):
            return await self.follow(post.headers["Location"], str(post.url))
        return post

    async def sign_in_at_idp(
        self, resp: aiohttp.ClientResponse, user: str, password: str
    ) -> aiohttp.ClientResponse:
        """On SimpleSAMLphp's login page: post the credentials, return the SAML POST page."""
        page = await resp.text()
        state = re.search(r'name="AuthState" value="([^"]+)"', page)
        assert state is not None, page[:2000]
        form = {"username": user, "password": password, "AuthState": html.unescape(state.group(1))}
        post = await self.http.post(resp.url, data=form, allow_redirects=False, headers=HTML)
        if post.status in (301, 302, 303):
            return await self.follow(post.headers["Location"], str(post.url))
        return post
