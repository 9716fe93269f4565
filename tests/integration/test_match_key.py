"""Which user a SAML sign-in links to: the connection's match key, and the user the same
connection provisioned (Entra's SCIM requests replayed, then an Entra-shaped assertion)."""

from __future__ import annotations

import pytest

from authgate.web.state import STATE
from tests.integration.test_saml_hostile import signed
from tests.saml_idp import encode
from tests.scim_support import SCIM, bearer, fixture, scim_json

pytestmark = pytest.mark.integration

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
PAIRWISE_ID = "Ab3kZ9qXvL0rT7yWm2Nc5Pd8Fh1Js4Gu6Ke0Xo"
EPPN = "B.Simon@contoso.com"
UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
EMAIL_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
# Entra's create_user body (tests/fixtures/scim/entra.json): userName is the UPN,
# externalId the mailNickname, emails[work] the mail.
SCIM_USER_NAME = "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1"
SCIM_EXTERNAL_ID = "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"
SCIM_EMAIL = "Test_User_fd0ea19b-0777-472c-9f96-4f70d2226f2e@testuser.com"


async def sign_in(browser, idp, attributes: dict[str, list[str]], name_id: str = PAIRWISE_ID):
    rid = await browser.start()
    root = signed(idp, rid, name_id=name_id, name_id_format=PERSISTENT, attributes=attributes)
    return await browser.post(encode(root))


async def reason(resp) -> str:
    return (await resp.json())["error"]


SECTIGO_CLAIMS = {"eduPersonPrincipalName": [EPPN], "mail": ["b.simon@contoso.com"]}


async def test_eppn_match_key_links_a_precreated_user_despite_a_persistent_name_id(
    saml_gate, saml_idp
):
    browser = await saml_gate(
        provisioning="preprovisioned", match_key="attribute:eduPersonPrincipalName"
    )
    st = browser.gate.app[STATE]
    made = await st.users.create("corp", EPPN, "b.simon@contoso.com", source="csv")
    resp = await sign_in(browser, saml_idp, SECTIGO_CLAIMS)
    assert resp.status == 302, await resp.text()
    assert (await (await browser.whoami()).json())["user_id"] == made.id
    assert (await st.users.get(made.id)).linked


async def test_without_the_match_key_the_persistent_name_id_finds_no_user(saml_gate, saml_idp):
    browser = await saml_gate(provisioning="preprovisioned")
    await browser.gate.app[STATE].users.create("corp", EPPN, "b.simon@contoso.com", source="csv")
    resp = await sign_in(browser, saml_idp, SECTIGO_CLAIMS)
    assert await reason(resp) == "user_not_provisioned"


async def test_an_assertion_without_the_match_key_attribute_is_refused(saml_gate, saml_idp):
    browser = await saml_gate(match_key="attribute:eduPersonPrincipalName")
    resp = await sign_in(browser, saml_idp, {"mail": ["b.simon@contoso.com"]})
    assert await reason(resp) == "user_not_provisioned"
    assert await browser.gate.app[STATE].users.all_ids() == set()


async def entra_provisioned(browser) -> str:
    """POST /Users exactly as Entra's provisioning service sends it; returns the user's id."""
    client = browser.gate
    headers = await bearer(client)
    created = await client.post(
        SCIM + "/Users", json=fixture("entra", "create_user"), headers=headers
    )
    return (await scim_json(created, 201))["id"]


@pytest.mark.parametrize(
    ("match_key", "claims"),
    [
        ("name_id", {}),
        (f"attribute:{UPN_CLAIM}", {UPN_CLAIM: [SCIM_USER_NAME]}),
        ("attribute:mailNickname", {"mailNickname": [SCIM_EXTERNAL_ID]}),
        ("email", {}),
    ],
    ids=["name_id-is-upn", "upn-claim", "mailnickname-claim", "email"],
)
async def test_first_saml_sign_in_links_the_user_entra_provisioned(
    saml_gate, saml_idp, match_key, claims
):
    browser = await saml_gate(
        top={"scim": {"enabled": True}}, provisioning="preprovisioned", match_key=match_key
    )
    uid = await entra_provisioned(browser)
    name_id = SCIM_USER_NAME if match_key == "name_id" else PAIRWISE_ID
    resp = await sign_in(browser, saml_idp, {EMAIL_CLAIM: [SCIM_EMAIL], **claims}, name_id)
    assert resp.status == 302, await resp.text()
    me = await (await browser.whoami()).json()
    assert me["user_id"] == uid
    st = browser.gate.app[STATE]
    assert len(await st.users.all_ids()) == 1
    assert (await st.users.get(uid)).linked
    again = await sign_in(browser, saml_idp, {EMAIL_CLAIM: [SCIM_EMAIL], **claims}, name_id)
    assert again.status == 302


async def test_a_match_key_value_nobody_was_provisioned_with_is_not_linked(saml_gate, saml_idp):
    browser = await saml_gate(
        top={"scim": {"enabled": True}},
        provisioning="preprovisioned",
        match_key=f"attribute:{UPN_CLAIM}",
    )
    await entra_provisioned(browser)
    resp = await sign_in(
        browser, saml_idp, {EMAIL_CLAIM: [SCIM_EMAIL], UPN_CLAIM: ["someone.else@testuser.com"]}
    )
    assert await reason(resp) == "user_not_provisioned"


async def test_jit_sign_in_with_the_provisioned_email_still_conflicts_without_agreement(
    saml_gate, saml_idp
):
    """A JIT connection whose match value agrees with nothing provisioned: the SCIM user's
    email is not taken over by a new record."""
    browser = await saml_gate(top={"scim": {"enabled": True}}, match_key="attribute:mailNickname")
    await entra_provisioned(browser)
    resp = await sign_in(
        browser, saml_idp, {EMAIL_CLAIM: [SCIM_EMAIL], "mailNickname": ["another-nickname"]}
    )
    assert await reason(resp) == "email_conflict"
