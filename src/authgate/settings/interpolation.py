"""`${VAR}` and `${VAR:-default}` in the YAML, replaced from the environment before validation."""

from __future__ import annotations

import os
import re
from typing import Any

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(
    node: Any, path: str, missing: list[str], given: dict[str, list[tuple[str, str]]]
) -> Any:
    """`node` with `${...}` replaced; `given` records, per key path, each variable and its value."""
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), missing, given)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", missing, given) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                given[path].append((name, os.environ[name]))
                return os.environ[name]
            if default is not None:
                given[path].append((name, default))
                return default
            missing.append(
                f"{path}: environment variable {name} is not set"
                f" (export it, or write ${{{name}:-default}})"
            )
            return ""

        return _ENV_REF.sub(repl, node)
    return node
