"""`authgate demo`: a complete single sign-on in one process, for a newcomer's first minute.

Three loopback servers on one event loop: the development IdP (OpenID Connect
and SAML), an example "legacy" application that only reads headers, and
authgate itself with the memory store and one connection per protocol
pointing at the IdP (the SAML one also takes IdP-initiated sign-in, and the
IdP encrypts its assertion and NameID to it). Sockets are bound first, so
`--port 0` works (tests use it) and every URL in the config is the real one.
The keys of this run live in a temporary directory that is removed on exit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from authgate.app import create_app
from authgate.devidp import PASSWORD as DEMO_PASSWORD
from authgate.devidp import USERS, DevIdp, DevIdpConfig, OidcClient, require_loopback
from authgate.devidp import create_app as create_devidp_app
from authgate.devidp.legacy_app import create_app as create_legacy_app
from authgate.devidp.saml import SpOptions
from authgate.keys import write_pair
from authgate.protocols.saml_config import SpEndpoints, sp_config, sp_metadata
from authgate.secrets import generate_key
from authgate.settings import SamlConnection, Settings, parse_settings

DEFAULT_PORT = 4180
CLIENT_ID = "authgate-demo"
SAML_ID = "dev-saml"
OIDC_ID = "dev-oidc"
PREFIX = "/_authgate"
KEY_BITS = 2048
# The SAML connection's one key pair (use: both) also decrypts: the IdP encrypts to it.
ENCRYPTED = SpOptions(encrypt_assertion=True, encrypt_name_id=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _url_host(host: str) -> str:
    """The host written into URLs: the bind address if it is loopback, else 127.0.0.1.

    With `--force` the servers may listen on every interface (a container with a
    published port), yet the IdP and authgate still call each other on loopback.
    """
    name = host.strip("[]")
    if name == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return "127.0.0.1"
    if not address.is_loopback:
        return "127.0.0.1"
    return f"[{name}]" if address.version == 6 else name


def demo_config(
    listen: str,
    base: str,
    idp: str,
    upstream: str,
    sp_key: Path,
    sp_cert: Path,
    secret: str,
    master_key: Path,
) -> dict[str, Any]:
    """The config `authgate demo` runs with, as an operator would write it in YAML."""
    return {
        "listen": listen,
        "public_url": base,
        "upstream": {"url": upstream},
        "session": {"store": "memory", "lifetime": "8h", "idle_timeout": "1h"},
        "access": {
            "allowed_domains": ["example.com", "partner.example"],
            "default_role": "viewer",
            "role_mappings": [
                {"group": "admins", "roles": ["admin"]},
                {"group": "engineering", "roles": ["editor"]},
            ],
        },
        "connections": [
            {
                "id": SAML_ID,
                "name": "Development IdP (SAML)",
                "type": "saml",
                "domains": ["example.com"],
                "idp_metadata_url": idp + "/saml/metadata",
                "sp_keys": [{"key_file": str(sp_key), "cert_file": str(sp_cert)}],
                "sign_requests": True,
                "name_id_format": "persistent",
                "allow_idp_initiated": True,
            },
            {
                "id": OIDC_ID,
                "name": "Development IdP (OpenID Connect)",
                "type": "oidc",
                "domains": ["partner.example"],
                "issuer": idp + "/oidc",
                "client_id": CLIENT_ID,
                "client_secret": secret,
                "scopes": ["openid", "email", "profile", "groups"],
            },
        ],
        "secrets": {"master_key_file": str(master_key)},
        "metrics": {"enabled": False},
        "branding": {"title": "authgate demo", "support": "Demo only: in-memory sessions."},
    }


# Which sign-in button each test user takes (see devidp/users.py for why not both).
BUTTONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("SAML button", frozenset({"saml"})),
    ("OpenID Connect button", frozenset({"oidc"})),
    ("either button", frozenset({"oidc", "saml"})),
)


def users_by_button() -> str:
    """The banner's list of test users, grouped by the button each one signs in with."""
    groups = []
    for button, protocols in BUTTONS:
        users = [f"{u.email} ({u.tag})" for u in USERS if frozenset(u.protocols) == protocols]
        if users:
            groups.append(f"{button}: " + ", ".join(users))
    return "; ".join(groups)


class Demo:
    """The three servers of one demo run; `start()` then `stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, force: bool = False):
        require_loopback(host, force)
        self.host = host
        self.port = port
        self._keys = tempfile.TemporaryDirectory(prefix="authgate-demo-")
        self._runners: list[web.AppRunner] = []
        self.settings: Settings | None = None
        self.url = ""
        self.idp_url = ""

    def _sockets(self) -> tuple[socket.socket, socket.socket, socket.socket]:
        gate = _bind(self.host, self.port)
        try:
            idp = _bind(self.host, self.port + 1 if self.port else 0)
            upstream = _bind("127.0.0.1", 0)
        except OSError:
            gate.close()
            raise
        return gate, idp, upstream

    def _prepare(self, gate: int, idp: int, upstream: int) -> DevIdp:
        """Blocking set-up: keys, config, SP metadata and the IdP that trusts it."""
        host = _url_host(self.host)
        self.url, self.idp_url = f"http://{host}:{gate}", f"http://{host}:{idp}"
        key_dir = Path(self._keys.name)
        sp_key, sp_cert = key_dir / "sp.key", key_dir / "sp.crt"
        write_pair(sp_key, sp_cert, "authgate demo SP", bits=KEY_BITS)
        secret = secrets.token_urlsafe(32)
        master_key = key_dir / "master.key"
        master_key.write_text(generate_key())
        master_key.chmod(0o600)
        listen = f"[{self.host.strip('[]')}]:{gate}" if ":" in self.host else f"{self.host}:{gate}"
        upstream_url = f"http://127.0.0.1:{upstream}"
        raw = demo_config(
            listen, self.url, self.idp_url, upstream_url, sp_key, sp_cert, secret, master_key
        )
        self.settings = parse_settings(raw, "authgate demo")
        saml = self.settings.connection(SAML_ID)
        assert isinstance(saml, SamlConnection)
        endpoints = SpEndpoints.build(saml, self.settings)
        metadata = sp_metadata(sp_config(saml, endpoints))
        client = OidcClient(
            client_id=CLIENT_ID,
            client_secret=secret,
            redirect_uris=(f"{self.url}{PREFIX}/oidc/{OIDC_ID}/callback",),
            post_logout_redirect_uris=(f"{self.url}{PREFIX}/logout",),
        )
        config = DevIdpConfig(
            base_url=self.idp_url,
            clients=(client,),
            service_providers=(metadata,),
            sp_options={endpoints.entity_id: ENCRYPTED},
        )
        return DevIdp.create(config, key_dir)

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, sock).start()

    async def start(self) -> None:
        """The IdP first: authgate loads its SAML metadata while starting."""
        gate, idp, upstream = self._sockets()
        ports = (s.getsockname()[1] for s in (gate, idp, upstream))
        try:
            dev_idp = await asyncio.to_thread(self._prepare, *ports)
            assert self.settings is not None
            await self._serve(create_devidp_app(dev_idp), idp)
            await self._serve(create_legacy_app(self.url, PREFIX), upstream)
            await self._serve(create_app(self.settings), gate)
        except BaseException:
            await self.stop()
            for sock in (gate, idp, upstream):
                sock.close()
            raise

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        self._keys.cleanup()

    def banner(self) -> str:
        return "\n".join(
            [
                "authgate demo: for trying authgate only (in-memory sessions, development IdP).",
                f"Open {self.url}/ — {users_by_button()}; password for all: {DEMO_PASSWORD}",
                f"  sign-in page:     {self.url}{PREFIX}/login",
                f"  admin page:       {self.url}{PREFIX}/admin/"
                " (sign in as alice@example.com with the SAML button)",
                f"  development IdP:  {self.idp_url}/ (OIDC issuer {self.idp_url}/oidc,"
                f" SAML metadata {self.idp_url}/saml/metadata)",
                f"  IdP-initiated:    {self.idp_url}/apps (SAML sign-in from the IdP with a"
                " target path; sign out everywhere by SOAP back-channel logout)",
                f"  add a connection: admin page → New SAML connection, IdP metadata URL"
                f" {self.idp_url}/saml/metadata; then register its SP metadata URL on"
                f" {self.idp_url}/, test it and activate it",
                "Press Ctrl+C to stop.",
            ]
        )


async def run(host: str, port: int, force: bool) -> None:
    """Serve until cancelled (Ctrl+C)."""
    demo = Demo(host, port, force)
    await demo.start()
    try:
        print(demo.banner(), flush=True)
        await asyncio.Event().wait()
    finally:
        await demo.stop()
