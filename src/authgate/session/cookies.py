"""Cookie names and flags derived once from the public URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from authgate.settings import Settings


class CookieSetter(Protocol):
    """The part of a response this module writes to (aiohttp's `StreamResponse` is one),
    so the session package never imports the web framework."""

    def set_cookie(
        self,
        name: str,
        value: str,
        *,
        max_age: int,
        path: str,
        secure: bool,
        httponly: bool,
        samesite: str,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """`__Host-` prefixed names when served over https, which pins them to our origin."""

    session_name: str
    login_name: str
    secure: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CookiePolicy:
        prefix = "__Host-" if settings.https else ""
        name = settings.session.cookie_name or f"{prefix}authgate"
        return cls(session_name=name, login_name=f"{prefix}authgate_login", secure=settings.https)

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.session_name, self.login_name})

    def _set(
        self, response: CookieSetter, name: str, value: str, max_age: int, same_site: str
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite=same_site,
        )

    @property
    def _login_same_site(self) -> str:
        """SAML's ACS is a cross-site POST from the IdP: a Lax cookie would not come back."""
        return "None" if self.secure else "Lax"

    def set_session(self, response: CookieSetter, sid: str, max_age: float) -> None:
        self._set(response, self.session_name, sid, int(max_age), "Lax")

    def clear_session(self, response: CookieSetter) -> None:
        self._set(response, self.session_name, "", 0, "Lax")

    def set_login(self, response: CookieSetter, browser_id: str, max_age: float) -> None:
        self._set(response, self.login_name, browser_id, int(max_age), self._login_same_site)
