"""Branding of authgate's own pages, with the WCAG contrast check that keeps them readable."""

from __future__ import annotations

import base64
import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from authgate.settings.base import ReadableFile, _Model

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_LOGO_TYPES = {
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
_DATA_URI = re.compile(
    r"^data:(image/(?:svg\+xml|png|jpeg|gif|webp));base64,([A-Za-z0-9+/]+={0,2})$"
)
MAX_LOGO_BYTES = 64 * 1024
MIN_CONTRAST = 4.5
PAGE_TEXT_COLOUR = "#1b1f24"


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a #rrggbb colour."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(first: str, second: str) -> float:
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _colour(value: str) -> str:
    if not _HEX_COLOUR.match(value):
        raise ValueError("expected a colour as #rrggbb, for example #1f5fbf")
    return value.lower()


Colour = Annotated[str, AfterValidator(_colour)]


def _logo_uri(value: str | None) -> str | None:
    if value is None:
        return None
    match = _DATA_URI.match(value.strip())
    if not match:
        raise ValueError(
            "expected a data: URI such as data:image/svg+xml;base64,... (pages load nothing"
            " from other sites; for a file use logo_file)"
        )
    if len(base64.b64decode(match.group(2))) > MAX_LOGO_BYTES:
        raise ValueError(f"the logo is larger than {MAX_LOGO_BYTES // 1024} KiB")
    return value.strip()


class BrandingSettings(_Model):
    """Title, logo and colours of the sign-in, error and signed-out pages.

    The pages load nothing from elsewhere (their CSP forbids it), so a logo is a
    data: URI or a small image file read at start-up. White button text sits on
    the accent colour and page text on the background, so both must keep the
    WCAG AA contrast of 4.5:1.
    """

    title: str = Field(default="authgate", min_length=1, max_length=80)
    logo: Annotated[str | None, AfterValidator(_logo_uri)] = None
    logo_file: ReadableFile | None = None
    accent_color: Colour = "#1f5fbf"
    background_color: Colour = "#f6f8fa"
    support: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _consistent(self) -> BrandingSettings:
        if self.logo and self.logo_file:
            raise ValueError("set logo or logo_file, not both")
        if self.logo_file is not None:
            if self.logo_file.suffix.lower() not in _LOGO_TYPES:
                raise ValueError(f"logo_file must be one of {', '.join(sorted(_LOGO_TYPES))}")
            if self.logo_file.stat().st_size > MAX_LOGO_BYTES:
                raise ValueError(f"logo_file is larger than {MAX_LOGO_BYTES // 1024} KiB")
        for name, colour, against in (
            ("accent_color", self.accent_color, "#ffffff"),
            ("background_color", self.background_color, PAGE_TEXT_COLOUR),
        ):
            ratio = contrast_ratio(colour, against)
            if ratio < MIN_CONTRAST:
                what = "white button text" if against == "#ffffff" else "the page text"
                raise ValueError(
                    f"{name} {colour} gives {ratio:.1f}:1 contrast with {what};"
                    f" at least {MIN_CONTRAST}:1 is needed to stay readable (WCAG AA)"
                )
        return self

    @property
    def logo_uri(self) -> str | None:
        """The logo as a data: URI, whichever way it was given."""
        if self.logo_file is None:
            return self.logo
        data = base64.b64encode(self.logo_file.read_bytes()).decode()
        return f"data:{_LOGO_TYPES[self.logo_file.suffix.lower()]};base64,{data}"
