"""Branding settings and the pages they shape: readable colours, local logos, accessible markup."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from authgate.settings import ConfigError, contrast_ratio, parse_settings
from authgate.web.pages import GENERIC, HINTS, Pages, with_code

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><rect width="1" height="1"/></svg>'
)
SVG_URI = "data:image/svg+xml;base64," + base64.b64encode(SVG).decode()
REASONS = (
    "weak_alg", "replayed", "protocol_mismatch", "id_token_invalid", "decrypt_failed",
    "signature_invalid", "audience_mismatch", "issuer_mismatch", "expired", "not_yet_valid",
    "state_mismatch", "state_expired", "nonce_mismatch", "email_unverified",
    "domain_not_allowed", "user_not_provisioned", "user_disabled", "email_conflict",
    "groups_overage", "idp_error", "metadata_unavailable",
)  # fmt: skip


def settings(**branding: Any) -> Any:
    return parse_settings(
        {
            "public_url": "https://app.example.com",
            "upstream": {"url": "http://127.0.0.1:9"},
            "branding": branding,
        },
        "test.yaml",
    )


def problems(**branding: Any) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        settings(**branding)
    return refused.value.problems


def test_wcag_contrast_is_computed_as_specified():
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)
    assert contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)


def test_defaults_are_readable():
    brand = settings().branding
    assert (brand.title, brand.accent_color, brand.logo_uri) == ("authgate", "#1f5fbf", None)


@pytest.mark.parametrize(
    ("branding", "message"),
    [
        (
            {"accent_color": "#ffcc00"},
            "test.yaml: branding: accent_color #ffcc00 gives 1.5:1 contrast with"
            " white button text; at least 4.5:1 is needed to stay readable (WCAG AA)",
        ),
        (
            {"background_color": "#333333"},
            "test.yaml: branding: background_color #333333 gives 1.3:1 contrast"
            " with the page text; at least 4.5:1 is needed to stay readable (WCAG AA)",
        ),
        (
            {"accent_color": "blue"},
            "test.yaml: branding.accent_color: expected a colour as #rrggbb, for example #1f5fbf",
        ),
        (
            {"accent_color": "#12345"},
            "test.yaml: branding.accent_color: expected a colour as #rrggbb, for example #1f5fbf",
        ),
        ({"title": ""}, "test.yaml: branding.title: String should have at least 1 character"),
    ],
)
def test_unreadable_or_malformed_colours_are_refused(branding: dict[str, Any], message: str):
    assert problems(**branding) == [message]


@pytest.mark.parametrize(
    "logo",
    [
        "https://cdn.example.com/logo.svg",
        "//cdn.example.com/logo.svg",
        "data:text/html;base64,PGgxPmhpPC9oMT4=",
        "data:image/svg+xml,<svg/>",
        "javascript:alert(1)",
        "data:image/png;base64,not base64!",
    ],
)
def test_a_logo_must_be_a_local_image_data_uri(logo: str):
    [problem] = problems(logo=logo)
    assert problem.startswith("test.yaml: branding.logo: expected a data: URI")


def test_an_oversized_logo_is_refused():
    huge = "data:image/png;base64," + base64.b64encode(b"\0" * (64 * 1024 + 1)).decode()
    assert problems(logo=huge) == ["test.yaml: branding.logo: the logo is larger than 64 KiB"]


def test_a_logo_file_becomes_a_data_uri(tmp_path: Path):
    path = tmp_path / "logo.svg"
    path.write_bytes(SVG)
    assert settings(logo_file=str(path)).branding.logo_uri == SVG_URI


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        ("logo.exe", 10, "logo_file must be one of .gif, .jpeg, .jpg, .png, .svg, .webp"),
        ("logo.png", 64 * 1024 + 1, "logo_file is larger than 64 KiB"),
    ],
)
def test_bad_logo_files_are_refused(tmp_path: Path, name: str, size: int, expected: str):
    path = tmp_path / name
    path.write_bytes(b"\0" * size)
    assert problems(logo_file=str(path)) == [f"test.yaml: branding: {expected}"]


def test_logo_and_logo_file_are_exclusive(tmp_path: Path):
    path = tmp_path / "logo.svg"
    path.write_bytes(SVG)
    assert problems(logo=SVG_URI, logo_file=str(path)) == [
        "test.yaml: branding: set logo or logo_file, not both"
    ]


def test_pages_carry_the_brand_and_load_nothing_from_elsewhere():
    brand = settings(
        title="Acme Portal", logo=SVG_URI, accent_color="#0B6E4F", support="Help: it@acme.example"
    ).branding
    page = Pages(brand, "/_authgate/login").render("signed_out.html", login_url="/_authgate/login")
    html = page.text or ""
    assert "<title>Signed out · Acme Portal</title>" in html
    assert f'<img class="logo" src="{SVG_URI}" alt="">' in html
    assert "--accent: #0b6e4f;" in html
    assert "<p>Help: it@acme.example</p>" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "img-src data:;" in policy
    assert "frame-ancestors 'none'" in policy


def test_the_hover_shade_keeps_white_text_readable():
    pages = Pages(settings(accent_color="#1f5fbf").branding)
    html = pages.render("signed_out.html", login_url="/")
    dark = re.search(r"--accent-dark: (#[0-9a-f]{6});", html.text or "")
    assert dark is not None
    assert contrast_ratio(dark.group(1), "#ffffff") > contrast_ratio("#1f5fbf", "#ffffff")


def test_every_reason_code_has_words_for_the_person_and_the_operator():
    for reason in REASONS:
        hint = HINTS[reason]
        assert hint.person and hint.operator, reason
    assert "SHA-256" in HINTS["weak_alg"].operator


@pytest.mark.parametrize(
    ("status", "reason", "heading", "retry"),
    [
        (403, "domain_not_allowed", "We couldn't let you in", True),
        (503, "store_unavailable", "Something went wrong", False),
        (400, "made_up_reason", "We couldn't let you in", True),
    ],
)
def test_the_error_page_explains_and_identifies_the_failure(
    status: int, reason: str, heading: str, retry: bool
):
    page = Pages(settings().branding, "/_authgate/login").error(status, reason, "c0ffee")
    html = page.text or ""
    hint = HINTS.get(reason, GENERIC)
    assert page.status == status
    assert f"<h1>{heading}</h1>" in html
    assert f'<code id="reason">{reason}</code>' in html
    assert '<code id="correlation-id">c0ffee</code>' in html
    assert hint.person.replace("'", "&#39;") in html
    assert str(with_code(hint.operator)) in html
    assert ('href="/_authgate/login"' in html) is retry


@pytest.mark.parametrize("reason", sorted(HINTS))
def test_hints_show_commands_and_settings_as_code_not_backticks(reason: str):
    html = Pages(settings().branding, "/_authgate/login").error(400, reason, "c0ffee").text or ""
    assert "`" not in html, reason


def test_the_metadata_error_page_shows_the_command_as_code():
    page = Pages(settings().branding).error(503, "metadata_unavailable", "c0ffee")
    hint = re.search(r'<p id="operator-hint">(.*?)</p>', page.text or "")
    assert hint is not None
    assert "<code>authgate test CONNECTION</code> shows the details" in hint.group(1)


def test_code_in_a_hint_is_still_escaped():
    assert str(with_code("run `a <b>` & <i>")) == "run <code>a &lt;b&gt;</code> &amp; &lt;i&gt;"


LOGIN_CONTEXT = {
    "connections": [{"name": "Corp", "url": "/x?rd=%2F"}],
    "discovery": True,
    "login_url": "/l",
    "rd": "/",
    "message": "No way",
}
ERROR_CONTEXT = {
    "reason": "expired",
    "correlation_id": "c",
    "hint": GENERIC,
    "code": 403,
    "server_side": False,
    "retry_label": "Start again",
    "retry_url": "/l",
}


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("login.html", LOGIN_CONTEXT),
        ("error.html", ERROR_CONTEXT),
        ("expired.html", {"correlation_id": "c", "retry_url": "/l"}),
        ("signed_out.html", {"login_url": "/l"}),
    ],
)
def test_pages_have_the_accessible_structure(template: str, context: dict[str, Any]):
    html = Pages().render(template, **context).text or ""
    assert '<html lang="en">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert len(re.findall(r"<main>", html)) == 1
    assert len(re.findall(r"<h1>", html)) == 1
    assert ":focus-visible" in html
    for field in re.findall(r'<input id="([^"]+)"', html):
        assert f'<label for="{field}">' in html
    if template == "login.html":
        assert '<nav aria-label="Sign-in methods">' in html
        assert '<p class="alert" role="alert" id="discovery-message">No way</p>' in html
