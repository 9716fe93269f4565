"""Everything `create_app` builds once, reachable from handlers through one typed key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from authgate.admission import Admission
from authgate.assertion import AssertionSigner
from authgate.audit import AuditLog
from authgate.connection_sync import ConnectionSync
from authgate.connections import Connections
from authgate.headers import IdentityHeaders
from authgate.metrics import Metrics
from authgate.secrets import SecretBox
from authgate.session.cookies import CookiePolicy
from authgate.session.kv import KeyValueStore
from authgate.session.login_state import LoginStateStore
from authgate.session.replay import ReplayCache
from authgate.session.sessions import SessionStore
from authgate.settings import Settings
from authgate.status import ConnectionStatus
from authgate.upstream import Upstream
from authgate.urls import PublicPaths, RedirectPolicy
from authgate.users import UserStore
from authgate.web.client_info import TrustedProxies
from authgate.web.pages import Pages


@dataclass
class State:
    settings: Settings
    kv: KeyValueStore
    sessions: SessionStore
    login_state: LoginStateStore
    replay: ReplayCache
    users: UserStore
    admission: Admission
    status: ConnectionStatus
    audit: AuditLog
    metrics: Metrics
    headers: IdentityHeaders
    cookies: CookiePolicy
    redirects: RedirectPolicy
    public_paths: PublicPaths
    connections: Connections
    connection_sync: ConnectionSync
    box: SecretBox
    pages: Pages
    trusted: TrustedProxies
    signer: AssertionSigner | None = None
    upstream: Upstream | None = None

    def url(self, path: str) -> str:
        """An authgate endpoint path under the configured prefix."""
        return self.settings.prefix + path


STATE: web.AppKey[State] = web.AppKey("authgate_state", State)


def state(request: web.Request) -> State:
    return request.app[STATE]
