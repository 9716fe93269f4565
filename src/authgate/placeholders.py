"""Values from the example configs that nobody should run with, found in a loaded config.

The examples in conf/ fall back to placeholders (`${OIDC_CLIENT_SECRET:-change-me}`,
`https://idp.example.com`, Microsoft's and Okta's sample ids) so that
`check-config` passes on them with no environment. A copy started the same
way would talk to a made-up IdP with a guessable secret. A placeholder
secret is therefore refused by `authgate run`; every other placeholder is a
warning naming the field and the environment variable to set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SECRET_KEYS = frozenset(
    {"client_secret", "client_secret_encrypted", "token", "password", "sentinel_password"}
)
SECRET_PLACEHOLDERS = frozenset({"change-me", "replace-me"})
SECRET_PLACEHOLDER_PREFIXES = ("change-me-to-", "replace-with-", "v1:replace-")
# RFC 2606 example domains, and the made-up IdP hosts of the Okta examples.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org", "example")
EXAMPLE_HOSTS = frozenset({"example.okta.com", "fabrikam.okta.com"})
# The sample tenant, application, client and group ids of the Entra ID and Okta examples.
EXAMPLE_IDS = (
    "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "6731de76-14a6-49ae-97bc-6eba6914391e",
    "02bd9fd6-8f93-4758-87c3-1fb73740a315",
    "fe6a70bc-00f4-4b60-8576-81bfae175578",
    "0oa1example2AbCdE3f4g5",
    "0oa1fabrikam2AbCdE3f4",
)
EXAMPLE_FILE_SUFFIX = ".example.xml"

# Per key path, the environment variables `${...}` put into that value, with what they gave.
Substitutions = Mapping[str, Sequence[tuple[str, str]]]


def is_placeholder_secret(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in SECRET_PLACEHOLDERS or lowered.startswith(SECRET_PLACEHOLDER_PREFIXES)


def _example_host(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return None
    host = (urlsplit(value).hostname or "").lower()
    if host in EXAMPLE_HOSTS or any(
        host == domain or host.endswith("." + domain) for domain in EXAMPLE_DOMAINS
    ):
        return host
    return None


def example_parts(value: str) -> tuple[str, ...]:
    """The pieces of `value` that come from the examples: a host, ids, a sample file."""
    parts = [part for part in (_example_host(value),) if part]
    parts += [known for known in EXAMPLE_IDS if known in value]
    if value.endswith(EXAMPLE_FILE_SUFFIX) or is_placeholder_secret(value):
        parts.append(value)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One field holding a placeholder: where, what, and which variables would replace it."""

    path: str
    value: str
    secret: bool
    parts: tuple[str, ...]
    variables: tuple[str, ...]

    def _set(self) -> str:
        return "set " + " and ".join(self.variables)

    def warning(self, source: str) -> str:
        if self.secret:
            fix = self._set() if self.variables else "put the real secret in the file"
            return (
                f"{source}: {self.path}: is the placeholder {self.value!r}, not a secret:"
                f" {fix} (authgate run refuses it)"
            )
        values = ("values " if len(self.parts) > 1 else "value ") + ", ".join(self.parts)
        fix = self._set() if self.variables else "replace it in the file"
        return f"{source}: {self.path}: uses the example {values}: {fix}"

    def refusal(self, source: str) -> str:
        fix = (
            f"{self._set()} to the real secret"
            if self.variables
            else "put the real secret in the file"
        )
        return f"{source}: {self.path}: is the placeholder {self.value!r}, not a secret: {fix}"


def _strings(node: Any, path: str = "", key: str = "") -> Iterator[tuple[str, str, str]]:
    """(key path, key, value) of every string, key paths written as config errors write them."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k), str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}[{i}]", key)
    elif isinstance(node, str):
        yield path, key, node


def find(data: Any, substitutions: Substitutions) -> list[Placeholder]:
    """Every placeholder in an interpolated config, in file order."""
    found = []
    for path, key, value in _strings(data):
        secret = key in SECRET_KEYS and is_placeholder_secret(value)
        parts = (value,) if secret else example_parts(value)
        if not parts:
            continue
        variables = tuple(
            dict.fromkeys(
                name
                for name, given in substitutions.get(path, ())
                if any(part in given for part in parts)
            )
        )
        found.append(Placeholder(path, value, secret, parts, variables))
    return found
