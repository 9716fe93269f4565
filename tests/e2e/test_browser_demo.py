"""`authgate demo` in a real browser: Debian's Chromium, headless, driven by Playwright.

The demo runs as a newcomer starts it (`authgate demo`, here on free ports)
and one browser serves the whole module (tests/browser.py); each test starts
with no cookies. Every page a person meets is saved under test-artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route, expect

from authgate.demo import OIDC_ID, SAML_ID
from tests.browser import shot
from tests.e2e.conftest import RunningDemo

SAML_BUTTON = "Log in using Development IdP (SAML)"
OIDC_BUTTON = "Log in using Development IdP (OpenID Connect)"


def sign_in_at_idp(page: Page, email: str, screenshot: str | None = None) -> None:
    """On the development IdP's page: pick the test user, type the password, sign in."""
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to continue")
    page.locator(f"input[type=radio][value='{email}']").check()
    page.get_by_label("Password").fill("demo")
    if screenshot:
        shot(page, screenshot)
    page.locator("#sign-in").click()


def start(page: Page, demo: RunningDemo, button: str) -> None:
    page.goto(demo.url + "/")
    expect(page).to_have_url(re.compile(re.escape(demo.url) + r"/_authgate/login\?rd=%2F$"))
    page.get_by_role("link", name=button).click()
    expect(page).to_have_url(re.compile(re.escape(demo.idp_url) + r"/login\?txn="))


def expect_app(page: Page, demo: RunningDemo, user: str, connection: str) -> None:
    expect(page).to_have_url(demo.url + "/")
    expect(page.locator("#x-user")).to_have_text(user)
    expect(page.locator("#x-auth-connection")).to_have_text(connection)
    expect(page.locator("#assertion-status")).to_contain_text("Verified")


def test_saml_sign_in_shows_the_app_then_single_logout(page: Page, demo: RunningDemo):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(demo.url + "/")
    shot(page, "sign-in-mobile")
    page.set_viewport_size({"width": 1280, "height": 800})
    start(page, demo, SAML_BUTTON)
    sign_in_at_idp(page, "bob@example.com", "devidp-sign-in")
    expect_app(page, demo, "bob@example.com", SAML_ID)
    expect(page.locator("#x-roles")).to_have_text("viewer")
    shot(page, "upstream-after-saml-login")
    page.locator("#sign-out").click()
    expect(page).to_have_url(re.compile(rf"/_authgate/saml/{SAML_ID}/slo\?SAMLResponse="))
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    page.goto(demo.url + "/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_oidc_sign_in_shows_the_app_then_sign_out_asks_to_sign_in_again(
    page: Page, demo: RunningDemo
):
    start(page, demo, OIDC_BUTTON)
    shot(page, "devidp-sign-in-oidc")
    sign_in_at_idp(page, "dave@partner.example")
    expect_app(page, demo, "dave@partner.example", OIDC_ID)
    expect(page.locator("#x-roles")).to_have_text("editor")
    shot(page, "upstream-after-oidc-login")
    page.locator("#sign-out").click()
    expect(page).to_have_url(demo.url + "/_authgate/logout")
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    shot(page, "signed-out")
    page.get_by_role("link", name="Sign in again").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto(demo.url + "/reports")
    expect(page).to_have_url(demo.url + "/_authgate/login?rd=%2Freports")
    shot(page, "sign-in")
    page.get_by_role("link", name=OIDC_BUTTON).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to continue")
    expect(page.locator("#continue-as")).to_have_count(0)


def test_disallowed_domain_sees_the_reason_and_the_admin_page_shows_it(
    page: Page, demo: RunningDemo
):
    start(page, demo, OIDC_BUTTON)
    sign_in_at_idp(page, "mallory@evil.example")
    expect(page.locator("#reason")).to_have_text("domain_not_allowed")
    correlation_id = page.locator("#correlation-id").inner_text()
    assert re.fullmatch(r"[0-9a-f]{16}", correlation_id)
    expect(page.locator("#operator-hint")).to_contain_text("allowed_domains")
    shot(page, "error-domain-not-allowed")
    page.context.clear_cookies()
    start(page, demo, SAML_BUTTON)
    sign_in_at_idp(page, "alice@example.com")
    expect_app(page, demo, "alice@example.com", SAML_ID)
    page.get_by_role("link", name="Admin").click()
    row = page.locator(f"#connection-{OIDC_ID}")
    expect(row.locator("code.reason")).to_have_text("domain_not_allowed")
    expect(row).to_contain_text(correlation_id)
    shot(page, "admin")


def test_each_button_signs_in_its_own_user_and_shows_who_it_is(page: Page, demo: RunningDemo):
    """The README's promise: alice with the SAML button, dave with the OpenID Connect one."""
    start(page, demo, SAML_BUTTON)
    expect(offered_users(page)).to_have_count(4)
    expect(page.locator("input[value='dave@partner.example']")).to_have_count(0)
    sign_in_at_idp(page, "alice@example.com")
    expect_app(page, demo, "alice@example.com", SAML_ID)
    expect(page.locator("#x-user-name")).to_have_text("Alice Admin")
    expect(page.locator("#x-roles")).to_have_text(re.compile(r"^(admin,editor|editor,admin)$"))
    shot(page, "upstream-saml-button-alice")
    page.goto(demo.url + "/_authgate/login?rd=%2F")
    page.get_by_role("link", name=OIDC_BUTTON).click()
    expect(page.locator("#continue-as")).to_have_count(0)
    expect(offered_users(page)).to_have_count(3)
    expect(page.locator("input[value='alice@example.com']")).to_have_count(0)
    sign_in_at_idp(page, "dave@partner.example")
    expect_app(page, demo, "dave@partner.example", OIDC_ID)
    expect(page.locator("#x-user-name")).to_have_text("Dave Partner")
    expect(page.locator("#x-roles")).to_have_text("editor")
    shot(page, "upstream-oidc-button-dave")


def offered_users(page: Page):
    return page.locator("input[type=radio][name=email]")


# The heading's widths, and where its text ends against where the card's content box does.
FITS = """h => {
  const card = h.closest("main"), style = getComputedStyle(card), text = document.createRange();
  text.selectNodeContents(h);
  const inner = card.getBoundingClientRect().right - parseFloat(style.borderRightWidth)
    - parseFloat(style.paddingRight);
  return {scroll: h.scrollWidth, own: h.clientWidth, card: card.clientWidth,
          text_right: text.getBoundingClientRect().right, card_inner_right: inner};
}"""


@pytest.mark.parametrize("button", [SAML_BUTTON, OIDC_BUTTON])
def test_the_idp_sign_in_heading_fits_its_card_at_1280(page: Page, demo: RunningDemo, button: str):
    page.set_viewport_size({"width": 1280, "height": 800})
    start(page, demo, button)
    sizes = page.locator("main h1").evaluate(FITS)
    assert sizes["scroll"] <= sizes["card"], sizes
    assert sizes["scroll"] <= sizes["own"], sizes
    assert sizes["text_right"] <= sizes["card_inner_right"], sizes
    shot(page, f"devidp-sign-in-1280-{'saml' if button == SAML_BUTTON else 'oidc'}")


def test_unverified_email_is_refused(page: Page, demo: RunningDemo):
    start(page, demo, OIDC_BUTTON)
    sign_in_at_idp(page, "carol@partner.example")
    expect(page.locator("#reason")).to_have_text("email_unverified")
    expect(page.get_by_role("link", name="Start again")).to_be_visible()


def test_a_stale_sign_in_gets_the_start_again_page(page: Page, demo: RunningDemo):
    page.goto(f"{demo.url}/_authgate/oidc/{OIDC_ID}/callback?state=stale&code=unused")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in expired")
    shot(page, "sign-in-expired")
    page.get_by_role("link", name="Start again").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


# -- sign-out from another site: the person is asked, and only their click signs out --------
# The foreign page is served by Playwright's router, so Chromium itself sets
# `Sec-Fetch-Site: cross-site` on the navigation to the sign-out URL.

ELSEWHERE = "https://elsewhere.example/"


def foreign_page(page: Page, demo: RunningDemo) -> None:
    html = f'<a id="bait" href="{demo.url}/_authgate/logout">Win a prize</a>'

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    page.route(ELSEWHERE, serve)
    page.goto(ELSEWHERE)


def test_a_link_on_another_site_asks_before_signing_out(page: Page, demo: RunningDemo):
    page.set_viewport_size({"width": 1280, "height": 800})
    start(page, demo, SAML_BUTTON)
    sign_in_at_idp(page, "bob@example.com")
    expect_app(page, demo, "bob@example.com", "dev-saml")

    foreign_page(page, demo)
    page.locator("#bait").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign out?")
    shot(page, "logout-confirm")
    page.get_by_role("link", name="Stay signed in").click()
    expect_app(page, demo, "bob@example.com", "dev-saml")

    foreign_page(page, demo)
    page.locator("#bait").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    page.goto(demo.url + "/")
    expect(page).to_have_url(f"{demo.url}/_authgate/login?rd=%2F")


def test_idp_initiated_sign_in_lands_on_the_target_path_and_sign_out_everywhere_ends_it(
    page: Page, demo: RunningDemo
):
    """From the IdP's own page: an unsolicited, encrypted SAML response with the path as
    RelayState; then the back-channel (SOAP) logout ends the authgate session it made."""
    sp = f"{demo.url}/_authgate/saml/{SAML_ID}"
    page.goto(demo.idp_url + "/")
    page.locator("#apps-link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your applications")
    page.get_by_label("Target path (RelayState)").fill("/reports/q3?view=full")
    shot(page, "devidp-apps")
    page.get_by_role("button", name=f"Sign in to {sp}").click()
    sign_in_at_idp(page, "bob@example.com")
    expect(page).to_have_url(demo.url + "/reports/q3?view=full")
    expect(page.locator("#x-user")).to_have_text("bob@example.com")
    expect(page.locator("#x-auth-connection")).to_have_text(SAML_ID)
    shot(page, "upstream-after-idp-initiated")
    page.goto(demo.idp_url + "/apps")
    expect(page.locator("#signed-in-as")).to_contain_text("bob@example.com")
    page.locator("#sign-out-everywhere").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out everywhere")
    expect(page.locator("#logout-results li.ok")).to_contain_text(f"{sp}: signed out")
    shot(page, "devidp-signed-out-everywhere")
    page.goto(demo.url + "/reports/q3")
    expect(page).to_have_url(demo.url + "/_authgate/login?rd=%2Freports%2Fq3")
