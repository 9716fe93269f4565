"""Connections made at runtime, as documents in the shared store.

One key per connection (`admin-connection:<id>`) holds a JSON document with
a version that every change increments; a change is a compare-and-set of the
whole document, so two admins editing at once cannot overwrite each other
(the second is told). An index set lists the ids. Secrets inside (the SP
private keys, an OIDC client secret) are sealed with the `authgate secrets`
master key, each bound to its connection and use, and are opened only to
build the connection's settings in memory. No operation spans two keys
atomically, which keeps the store valid on Redis Cluster; the index is
repaired by the reconcile loop, which trusts the documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from authgate.secrets import SecretBox
from authgate.session.kv import KeyValueStore
from authgate.settings import OidcConnection, SamlConnection

DOCUMENT = "admin-connection:"
INDEX = "admin-connections"
CHANGED = "connection-changed:"


class VersionConflict(Exception):
    """Someone else changed (or deleted) the connection since it was read."""


@dataclass(frozen=True, slots=True)
class ConnectionDocument:
    """What the store holds for one connection: plain settings, sealed secrets, state.

    `settings` is a connection mapping as the config file would hold it, minus
    anything that names a file (metadata, keys) or holds a secret; those live
    in `idp_metadata_xml` and `sealed`.
    """

    id: str
    type: str
    settings: dict[str, Any]
    version: int = 1
    active: bool = False
    sealed: dict[str, Any] = field(default_factory=dict)
    idp_metadata_xml: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    updated_by: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {name: getattr(self, name) for name in self.__slots__}, sort_keys=True
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ConnectionDocument:
        return cls(**json.loads(raw))

    def next(self, actor: str, **changes: Any) -> ConnectionDocument:
        """The document after a change: one version later, stamped with who made it."""
        return replace(
            self, **changes, version=self.version + 1, updated_at=time.time(), updated_by=actor
        )


class ConnectionStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def ids(self) -> set[str]:
        return await self.kv.members(INDEX)

    async def read(self, conn_id: str) -> tuple[ConnectionDocument, bytes] | None:
        """The document and the exact bytes it was read from (the compare-and-set token)."""
        raw = await self.kv.get(DOCUMENT + conn_id)
        return (ConnectionDocument.from_json(raw), raw) if raw is not None else None

    async def get(self, conn_id: str) -> ConnectionDocument | None:
        found = await self.read(conn_id)
        return found[0] if found is not None else None

    async def create(self, doc: ConnectionDocument) -> bool:
        """Write a new connection; False when the id is taken."""
        if not await self.kv.set(DOCUMENT + doc.id, doc.to_json(), only_if_new=True):
            return False
        await self.kv.add_member(INDEX, doc.id)
        return True

    async def replace(self, old_raw: bytes, doc: ConnectionDocument) -> None:
        if not await self.kv.replace(DOCUMENT + doc.id, old_raw, doc.to_json()):
            raise VersionConflict(doc.id)

    async def delete(self, conn_id: str, old_raw: bytes) -> None:
        if not await self.kv.delete_if(DOCUMENT + conn_id, old_raw):
            raise VersionConflict(conn_id)
        await self.kv.remove_member(INDEX, conn_id)


def seal_context(conn_id: str, use: str) -> str:
    """Binds a sealed value to one connection and one use: it cannot be moved to another."""
    return f"authgate connection {conn_id} {use}"


class Materialiser:
    """Turns documents into connection settings, writing what xmlsec needs as files.

    xmlsec1 and pysaml2 read keys and metadata from files, so a store
    connection's are written to a private directory (mode 0700, files 0600)
    named by content, shared by the versions that have the same keys, and
    removed with the connection and at shutdown.
    """

    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self._dir: Path | None = None

    def _file(self, conn_id: str, data: bytes, suffix: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="authgate-connections-"))
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = self._dir / f"{conn_id}--{digest}{suffix}"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        return path

    def settings(self, doc: ConnectionDocument) -> OidcConnection | SamlConnection:
        """The connection's settings, secrets opened; ValueError/LoginFailed when unusable."""
        data = {**doc.settings, "id": doc.id, "type": doc.type}
        if doc.type == "oidc":
            if "client_secret" in doc.sealed:
                context = seal_context(doc.id, "client_secret")
                data["client_secret"] = self.box.open(doc.sealed["client_secret"], context)
            return OidcConnection.model_validate(data)
        if doc.idp_metadata_xml is not None:
            data["idp_metadata_file"] = self._file(doc.id, doc.idp_metadata_xml.encode(), ".xml")
        data["sp_keys"] = [self._key_pair(doc.id, pair) for pair in doc.sealed.get("sp_keys", [])]
        return SamlConnection.model_validate(data)

    def _key_pair(self, conn_id: str, pair: dict[str, str]) -> dict[str, Any]:
        key = self.box.open(pair["key"], seal_context(conn_id, "sp_key")).encode()
        return {
            "key_file": self._file(conn_id, key, ".key"),
            "cert_file": self._file(conn_id, pair["cert"].encode(), ".crt"),
            "use": pair.get("use", "both"),
        }

    def forget(self, conn_id: str) -> None:
        """Remove a deleted connection's files (its private keys among them)."""
        if self._dir is not None:
            for path in self._dir.glob(f"{conn_id}--*"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
