"""Reading and validating a config: interpolation, pydantic, problems worded for the operator."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authgate import placeholders
from authgate.placeholders import Placeholder
from authgate.settings.base import ConfigError
from authgate.settings.interpolation import _interpolate
from authgate.settings.model import Settings

# Where the container image mounts the config; `--config` and $AUTHGATE_CONFIG override it.
DEFAULT_CONFIG_PATH = "/etc/authgate/authgate.yaml"


def _location(loc: tuple[int | str, ...], single_sync: bool = False) -> str:
    """`a.b[0].c`; the single-mapping `directory_sync` is named as written, without `[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int) and single_sync and out == "directory_sync":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("oidc", "saml") and out.endswith("]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are refused)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return "unknown type (expected 'oidc' or 'saml')"
    if kind == "union_tag_not_found":
        return "type is missing (expected 'oidc' or 'saml')"
    return msg.removeprefix("Value error, ")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Valid settings, and the example placeholders still in them (see placeholders.py)."""

    settings: Settings
    source: str
    placeholders: tuple[Placeholder, ...]

    def placeholder_secrets(self) -> list[str]:
        """Why `authgate run` refuses this config; empty when it does not."""
        return [p.refusal(self.source) for p in self.placeholders if p.secret]

    def warnings(self) -> list[str]:
        return [p.warning(self.source) for p in self.placeholders]


def parse_config(raw: Any, source: str = "<config>") -> LoadedConfig:
    """Validate an already-loaded mapping; every problem found is reported at once."""
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the file must hold a YAML mapping of settings"])
    missing: list[str] = []
    given: dict[str, list[tuple[str, str]]] = defaultdict(list)
    data = _interpolate(raw, "", missing, given)
    if missing:
        raise ConfigError([f"{source}: {m}" for m in missing])
    single_sync = isinstance(data.get("directory_sync"), dict)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            [f"{source}: {_location(e['loc'], single_sync)}: {_describe(e)}" for e in exc.errors()]
        ) from None
    return LoadedConfig(settings, source, tuple(placeholders.find(data, given)))


def parse_settings(raw: Any, source: str = "<config>") -> Settings:
    return parse_config(raw, source).settings


def load_settings(path: str | Path) -> Settings:
    return load_config(path).settings


def default_config_path() -> str:
    """`--config` when none is given: $AUTHGATE_CONFIG, else where the image mounts it."""
    return os.environ.get("AUTHGATE_CONFIG", DEFAULT_CONFIG_PATH)


def load_config(path: str | Path) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                f"{path}: no such config file: pass --config FILE or set AUTHGATE_CONFIG"
                " (examples to start from are in conf/)"
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    return parse_config(raw, str(path))
