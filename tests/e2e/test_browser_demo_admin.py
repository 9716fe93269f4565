"""`authgate demo`: a newcomer adds a third connection in the admin pages and signs in with it.

Its own demo run (a fresh store), so bob has no account yet: authgate never
merges accounts across connections, and bob signing in through another
connection first would rightly meet `email_conflict`.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from authgate.demo import SAML_ID
from tests.browser import shot
from tests.e2e.conftest import RunningDemo
from tests.e2e.test_browser_demo import SAML_BUTTON, expect_app, sign_in_at_idp, start


def idp_continue(page: Page, email: str) -> None:
    """The IdP remembers whoever signed in there: continue as them, or sign in afresh."""
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sign in to continue")
    if page.locator("#continue-as").count():
        page.locator("#continue-as").click()
    else:
        sign_in_at_idp(page, email)


def test_a_newcomer_adds_a_third_connection_in_the_admin_pages_and_signs_in_with_it(
    page: Page, demo: RunningDemo
):
    start(page, demo, SAML_BUTTON)
    sign_in_at_idp(page, "alice@example.com")
    expect_app(page, demo, "alice@example.com", SAML_ID)
    page.goto(demo.url + "/_authgate/admin/")
    page.locator("#new-saml").click()
    page.get_by_label("Name (shown on the sign-in button)").fill("My new connection")
    page.get_by_label("Connection id (optional)").fill("mine")
    page.get_by_label("Federation metadata URL").fill(demo.idp_url + "/saml/metadata")
    page.locator("#save").click()
    expect(page.locator("#conn-status")).to_contain_text("Inactive")
    shot(page, "demo-admin-new-connection")
    metadata_url = page.locator("#sp-metadata_url").inner_text()
    page.goto(demo.idp_url + "/")
    page.get_by_label("SP metadata URL").fill(metadata_url)
    page.locator("#register-saml-submit").click()
    expect(page.locator("#sp-entity-id")).to_have_text(demo.url + "/_authgate/saml/mine")
    page.goto(demo.url + "/_authgate/admin/connections/mine")
    page.locator("#test-signin").click()
    idp_continue(page, "alice@example.com")
    expect(page.locator("#test-outcome")).to_contain_text("would be let in")
    shot(page, "demo-admin-test-signin")
    page.get_by_role("link", name="Back to the connection").click()
    page.locator("#activate").click()
    expect(page.locator("#conn-status")).to_contain_text("Active")
    page.context.clear_cookies()
    page.goto(demo.url + "/_authgate/login?rd=/")
    page.get_by_role("link", name="Log in using My new connection").click()
    sign_in_at_idp(page, "bob@example.com")
    expect_app(page, demo, "bob@example.com", "mine")
    shot(page, "demo-signed-in-through-the-new-connection")
    page.context.clear_cookies()
    start(page, demo, SAML_BUTTON)
    sign_in_at_idp(page, "alice@example.com")
    expect_app(page, demo, "alice@example.com", SAML_ID)
    page.goto(demo.url + "/_authgate/admin/connections/mine")
    page.locator("#confirm-delete").check()
    page.locator("#delete").click()
    expect(page.locator("#connection-mine")).to_have_count(0)
