"""Export lines from a template of Graph user properties: `{mail} {mobilePhone}`.

`{name}` is a property's value, `{a|b}` the first of them that is not empty,
`{name:lower}` the value in lower case; `{{` and `}}` are literal braces and
everything else is copied as it stands (`* {userPrincipalName:lower} <reg> - 0`).
Values lose tabs, newlines and other control characters, so one member is
always one line whatever the directory holds.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

_PROPERTY = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Field:
    """One `{...}` of a template: alternative property names, and whether to lower-case."""

    names: tuple[str, ...]
    lower: bool

    def value(self, properties: Mapping[str, str]) -> str:
        found = next((v for n in self.names if (v := properties.get(n))), "")
        clean = _CONTROL.sub(" ", found).strip()
        return clean.lower() if self.lower else clean


@dataclass(frozen=True, slots=True)
class LineTemplate:
    pieces: tuple[str | Field, ...]

    @classmethod
    def parse(cls, text: str) -> LineTemplate:
        """The template, or ValueError saying which part is wrong."""
        if "\n" in text or "\r" in text:
            raise ValueError("a template is one line: it may not contain a newline")
        pieces: list[str | Field] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError:
            raise ValueError("unbalanced { or } (write {{ or }} for a literal brace)") from None
        for literal, name, spec, conversion in parsed:
            if literal:
                pieces.append(literal)
            if name is None:
                continue
            names = tuple(name.split("|"))
            if conversion or spec not in ("", "lower") or not all(map(_PROPERTY.fullmatch, names)):
                raise ValueError(
                    f"{{{name}}} is not a field: expected {{property}}, {{a|b}} or"
                    " {property:lower} with Graph property names such as mail"
                )
            pieces.append(Field(names, spec == "lower"))
        if not any(isinstance(p, Field) for p in pieces):
            raise ValueError("the template names no property, such as {mail}")
        return cls(tuple(pieces))

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(p for p in self.pieces if isinstance(p, Field))

    @property
    def properties(self) -> set[str]:
        return {n for f in self.fields for n in f.names}

    def render(self, properties: Mapping[str, str], keys: tuple[Field, ...]) -> str | None:
        """The line for one member, or None when one of its `keys` fields is empty."""
        if any(not key.value(properties) for key in keys):
            return None
        return "".join(p if isinstance(p, str) else p.value(properties) for p in self.pieces)

    def key_fields(self, names: list[str] | None) -> tuple[Field, ...]:
        """The fields that must not be empty: those naming one of `names`, else the first."""
        if names is None:
            return self.fields[:1]
        return tuple(f for f in self.fields if set(f.names) & set(names))
