"""What every settings section is built from: the frozen model base, durations, URLs, files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from authgate.errors import OperatorError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_CONN_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(OperatorError):
    """A config problem worded for the operator: file, key path, problem, fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m, 8h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30s, 15m, 8h or 7d")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("expected a positive duration")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration)]


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError("expected HOST:PORT, for example 0.0.0.0:4180 or 127.0.0.1:9090")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http:// or https:// URL")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _slug(kind: str) -> Callable[[str], str]:
    """A check for a short lower-case identifier, worded for what it names (`id`, `name`)."""

    def check(value: str) -> str:
        if not _CONN_ID.match(value):
            raise ValueError(f"expected a short lower-case {kind}: letters, digits, '-' and '_'")
        return value

    return check


def _readable_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"file {path} does not exist or is not a regular file")
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
