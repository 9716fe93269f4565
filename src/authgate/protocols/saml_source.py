"""Where a connection's IdP metadata comes from, and how it is kept fresh.

A file is read during start-up, a URL is fetched in the background from
start-up on (a slow or unreachable IdP never holds the app back); both are
re-read every `metadata_refresh`. Until a URL's first copy is loaded, tries
are repeated after 1 s, 2 s, 4 s ... 30 s; a failed refresh keeps the last
good copy and is retried every minute. The URL's last good document is also
kept in the store, with the time it was fetched, so a replica starting
during an IdP outage can use it. Readiness reports metadata that is missing,
expired (`validUntil`) or last loaded longer than `metadata_max_age` ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial

import aiohttp

from authgate.bodies import read_capped
from authgate.errors import ProtocolError, StoreUnavailable
from authgate.protocols.freshness import Freshness, retry_delay, span
from authgate.protocols.saml_crypto import XmlSec
from authgate.protocols.saml_metadata import (
    MAX_METADATA_BYTES,
    IdpMetadata,
    MetadataError,
    manual_metadata,
    parse_idp_metadata,
)
from authgate.protocols.saml_xml import iso
from authgate.public_fetch import public_session
from authgate.session.kv import KeyValueStore
from authgate.settings import SamlConnection

log = logging.getLogger("authgate.saml")
FIRST_LOAD_WAIT = 3.0
RETRY_INTERVAL = 60.0
FETCH_TIMEOUT = 10.0


class MetadataSource:
    """The current IdP metadata of one connection, with its freshness."""

    def __init__(
        self,
        conn: SamlConnection,
        http: aiohttp.ClientSession,
        kv: KeyValueStore,
        xmlsec: XmlSec,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn = conn
        self._http = http
        self._kv = kv
        self._xmlsec = xmlsec
        self._clock = clock
        self.current: IdpMetadata | None = None
        self.error: str | None = None
        self.freshness = Freshness(
            "IdP metadata",
            conn.metadata_max_age,
            f"metadata_max_age {span(conn.metadata_max_age)}",
            clock,
        )
        self._task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()

    @property
    def refreshable(self) -> bool:
        return self.conn.idp is None

    async def start(self) -> None:
        """Hand-given values and a file are in use when this returns; a URL loads meanwhile."""
        if not self.refreshable:
            assert self.conn.idp is not None
            self.current = manual_metadata(self.conn.idp)
            self.freshness.succeeded()
            return
        if self.conn.idp_metadata_file is not None:
            await self.refresh()
            self._first_attempt.set()
        self._task = asyncio.create_task(self._run(), name=f"saml-metadata-{self.conn.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        if not self._first_attempt.is_set():
            await self.refresh()
            self._first_attempt.set()
        while True:
            await asyncio.sleep(self._next_wait())
            await self.refresh()

    def _next_wait(self) -> float:
        interval = self.conn.metadata_refresh
        if self.error is None:
            return interval
        if self.current is None:
            return min(interval, retry_delay(self.freshness.failures))
        return min(interval, RETRY_INTERVAL)

    async def refresh(self) -> None:
        """One load attempt; on failure the last good copy stays in use."""
        if not self.refreshable:
            self._reload_hand_given()
            return
        try:
            raw = await self._read()
            metadata = await self._parse(raw)
        except MetadataError as exc:
            self.error = str(exc)
            self.freshness.failed(exc.summary)
            log.warning("connection %s: IdP metadata: %s", self.conn.id, self.error)
            if self.current is None:
                await self._use_stored_copy()
        else:
            self.current, self.error = metadata, None
            self.freshness.succeeded()
            if self.conn.idp_metadata_url:
                await self._keep_copy(raw)
        await self._publish()

    def _reload_hand_given(self) -> None:
        """The `idp` section has nothing to fetch; only its certificate files are read again."""
        assert self.conn.idp is not None
        try:
            metadata = manual_metadata(self.conn.idp)
        except (OSError, ValueError) as exc:
            self.error = f"idp.certificate_files: {exc}"
            self.freshness.failed("file unreadable")
            return
        self.current, self.error = metadata, None
        self.freshness.succeeded()

    async def _parse(self, raw: bytes) -> IdpMetadata:
        parse = partial(
            parse_idp_metadata,
            raw,
            entity_id=self.conn.idp_entity_id,
            signing_certs=self.conn.metadata_signing_certificates,
            xmlsec=self._xmlsec,
            now=self._clock(),
        )
        return await asyncio.get_running_loop().run_in_executor(None, parse)

    async def _read(self) -> bytes:
        if self.conn.idp_metadata_file is not None:
            path = self.conn.idp_metadata_file
            try:
                return await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
            except OSError as exc:
                raise MetadataError(
                    f"cannot read {path}: {exc.strerror}", summary="file unreadable"
                ) from None
        assert self.conn.idp_metadata_url is not None
        return await self._fetch(self.conn.idp_metadata_url)

    def _client(self) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientSession]:
        """A URL a setup-link holder chose gets a client that connects to public addresses only."""
        if self.conn.idp_metadata_public_only:
            return public_session(FETCH_TIMEOUT)
        return contextlib.nullcontext(self._http)

    async def _fetch(self, url: str) -> bytes:
        follow = not self.conn.idp_metadata_public_only
        try:
            async with (
                self._client() as http,
                http.get(
                    url, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT), allow_redirects=follow
                ) as response,
            ):
                if response.status != 200:
                    raise MetadataError(
                        f"GET {url} answered HTTP {response.status}",
                        summary=f"HTTP {response.status}",
                    )
                body = await read_capped(response.content, MAX_METADATA_BYTES)
        except (aiohttp.ClientError, TimeoutError) as exc:
            summary = "timed out" if isinstance(exc, TimeoutError) else "unreachable"
            raise MetadataError(
                f"GET {url} failed: {exc or type(exc).__name__}", summary=summary
            ) from None
        if len(body) > MAX_METADATA_BYTES:
            raise MetadataError(
                f"GET {url}: metadata larger than {MAX_METADATA_BYTES} bytes",
                summary="answer too large",
            )
        return body

    async def _use_stored_copy(self) -> None:
        """A replica starting during an IdP outage uses the copy another one fetched.

        The copy is as old as that fetch (a copy stored without its time, by an
        older authgate, counts as fetched now, as it did then).
        """
        with contextlib.suppress(StoreUnavailable):
            raw = await self._kv.get("saml-metadata-doc:" + self.conn.id)
            if raw is None:
                return
            stored_at = await self._kv.get("saml-metadata-doc-at:" + self.conn.id)
            try:
                self.current = await self._parse(raw)
            except MetadataError as exc:
                log.warning("connection %s: stored metadata unusable: %s", self.conn.id, exc)
                return
            self.freshness.loaded_at = float(stored_at) if stored_at else self._clock()
            log.warning("connection %s: using the stored copy of the IdP metadata", self.conn.id)

    async def _keep_copy(self, raw: bytes) -> None:
        try:
            await self._kv.set("saml-metadata-doc:" + self.conn.id, raw)
            loaded_at = str(self.freshness.loaded_at).encode()
            await self._kv.set("saml-metadata-doc-at:" + self.conn.id, loaded_at)
        except StoreUnavailable:
            log.warning("connection %s: could not keep a copy of the metadata", self.conn.id)

    async def _publish(self) -> None:
        """Freshness for `authgate status`, which reads the store, not this process."""
        fields = {
            "metadata_fetched_at": str(self.freshness.loaded_at or ""),
            "metadata_error": self.error or "",
            "metadata_problem": self.problem() or "",
        }
        with contextlib.suppress(StoreUnavailable):
            await self._kv.hset("saml-metadata:" + self.conn.id, fields)

    def problem(self) -> str | None:
        """None while the metadata is usable and fresh, else the readiness line's reason."""
        if self.current is not None and self.current.expired(self._clock()):
            assert self.current.valid_until is not None
            expiry = iso(self.current.valid_until)
            return f"metadata_unavailable: IdP metadata expired at {expiry} (validUntil)"
        if self.current is None or self.refreshable:
            return self.freshness.problem()
        return None

    async def require(self) -> IdpMetadata:
        """The metadata to use now; a stale copy still serves, a missing or expired one does not.

        A sign-in that arrives while the first fetch is under way waits for it, briefly.
        """
        if self.current is None and self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_attempt.wait(), FIRST_LOAD_WAIT)
        if self.current is None or self.current.expired(self._clock()):
            detail = "; ".join(filter(None, (self.problem(), self.error)))
            raise ProtocolError("metadata_unavailable", detail or "no IdP metadata")
        return self.current
