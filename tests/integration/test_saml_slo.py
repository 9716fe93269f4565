"""Single logout with the test IdP: SP-initiated (LogoutRequest out, LogoutResponse back) and
IdP-initiated (federated sign-out), both bindings, signatures verified, sessions gone in Redis."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from lxml import etree
from signxml import XMLVerifier
from yarl import URL

from authgate.web.state import STATE
from tests.integration.test_saml_hostile import _sp_cert, signed
from tests.saml_gate import JSON, SLO_URL, SP_ENTITY, SamlBrowser, decode_redirect
from tests.saml_idp import (
    DS,
    POST,
    RSA_SHA1,
    SAML,
    SAMLP,
    KeyPair,
    TestIdp,
    encode,
    redirect_query,
)
from tests.simplesamlphp import TYPED

SLO_PATH = "/_authgate/saml/corp/slo"


async def signed_in(browser: SamlBrowser, idp: TestIdp) -> None:
    rid = await browser.start()
    assert (await browser.post(encode(signed(idp, rid)))).status == 302
    assert (await browser.whoami()).status == 200


def slo(browser: SamlBrowser, query: str, **kw):
    """GET the SLO endpoint with the query exactly as built (yarl would re-quote a plain str,
    and HTTP-Redirect signatures cover the raw octets, as a real browser sends them)."""
    url = URL(f"{browser.gate.make_url(SLO_PATH)}?{query}", encoded=True)
    return browser.gate.session.get(url, **kw)


async def user_sessions(browser: SamlBrowser) -> int:
    st = browser.gate.app[STATE]
    user = await st.users.by_link("corp", "alice@example.com")
    assert user is not None
    return await st.sessions.count_for_user(user.id)


async def error_of(resp) -> str:
    return (await resp.json())["error"]


# --- SP-initiated -----------------------------------------------------------------------------


async def test_sp_initiated_logout_round_trip(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    await signed_in(browser, saml_idp)
    out = await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    location = out.headers["Location"]
    assert location.startswith(saml_idp.slo_url + "?")
    assert "Signature" in parse_qs(urlsplit(location).query)
    request = decode_redirect(location)
    assert request.tag == SAMLP + "LogoutRequest"
    assert request.findtext(SAML + "NameID") == "alice@example.com"
    assert request.findtext(SAMLP + "SessionIndex").startswith("_session-")
    assert (await browser.whoami()).status == 401
    assert await user_sessions(browser) == 0

    answer = saml_idp.logout_response(request.get("ID"), SLO_URL)
    back = redirect_query("SAMLResponse", answer, keys=saml_idp.keys)
    done = await slo(browser, back, headers={"Accept": "text/html"})
    assert done.status == 200
    assert "signed out" in (await done.text()).lower()
    again = await slo(browser, back, headers=JSON)
    assert await error_of(again) == "state_expired"


async def test_logout_response_answering_nothing_we_sent(saml_gate, saml_idp):
    browser = await saml_gate()
    answer = saml_idp.logout_response("id-not-ours", SLO_URL)
    resp = await browser.gate.get(
        f"{SLO_PATH}?{redirect_query('SAMLResponse', answer)}", headers=JSON
    )
    assert await error_of(resp) == "state_expired"


async def test_logout_response_signed_by_an_untrusted_key(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    out = await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    request = decode_redirect(out.headers["Location"])
    answer = saml_idp.logout_response(request.get("ID"), SLO_URL)
    forged = redirect_query("SAMLResponse", answer, keys=KeyPair.create("impostor"))
    resp = await slo(browser, forged, headers=JSON)
    assert await error_of(resp) == "signature_invalid"


async def test_sp_initiated_logout_to_a_post_only_idp(saml_gate, saml_idp, sp_keys, tmp_path):
    root = etree.fromstring(saml_idp.metadata())
    slo = root.find(".//{urn:oasis:names:tc:SAML:2.0:metadata}SingleLogoutService")
    slo.set("Binding", POST)
    metadata = tmp_path / "post-slo.xml"
    metadata.write_bytes(etree.tostring(root))
    browser = await saml_gate(sp_keys=[sp_keys], idp_metadata_file=str(metadata))
    await signed_in(browser, saml_idp)
    out = await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    assert out.headers["Location"].startswith(SLO_PATH + "?send=")
    page = await (await browser.gate.get(out.headers["Location"])).text()
    assert f'action="{saml_idp.slo_url}"' in page
    assert re.search(r'name="SAMLRequest" value="[^"]+"', page)


# --- IdP-initiated ----------------------------------------------------------------------------


async def test_idp_initiated_logout_ends_the_session_on_every_replica(saml_gate, saml_idp):
    browser = await saml_gate()
    replica = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    query = redirect_query("SAMLRequest", request, relay_state="r1", keys=saml_idp.keys)
    resp = await slo(replica, query, allow_redirects=False)
    assert resp.status == 302
    location = resp.headers["Location"]
    assert location.startswith(saml_idp.slo_url + "?")
    assert parse_qs(urlsplit(location).query)["RelayState"] == ["r1"]
    answer = decode_redirect(location, "SAMLResponse")
    assert answer.get("InResponseTo") == request.get("ID")
    assert answer.find(f"{SAMLP}Status/{SAMLP}StatusCode").get("Value").endswith("Success")
    assert await user_sessions(browser) == 0
    assert (await browser.whoami()).status == 401


async def signed_in_at(browser: SamlBrowser, idp: TestIdp, user: str = "alice@example.com") -> str:
    """Sign in as `user`; the SessionIndex the IdP gave this sign-in."""
    rid = await browser.start()
    root = signed(idp, rid, name_id=user, attributes={"email": [user]})
    assert (await browser.post(encode(root))).status == 302
    assert (await browser.whoami()).status == 200
    return next(root.iter(SAML + "AuthnStatement")).get("SessionIndex")


async def idp_logout(browser: SamlBrowser, idp: TestIdp, user: str, *indexes: str) -> None:
    """The IdP's signed LogoutRequest for `user` naming `indexes`, answered with Success."""
    request = idp.logout_request(user, SLO_URL)
    for index in indexes:
        etree.SubElement(request, SAMLP + "SessionIndex").text = index
    query = redirect_query("SAMLRequest", request, keys=idp.keys)
    resp = await slo(browser, query, allow_redirects=False)
    assert resp.status == 302
    answer = decode_redirect(resp.headers["Location"], "SAMLResponse")
    assert answer.find(f"{SAMLP}Status/{SAMLP}StatusCode").get("Value").endswith("Success")


async def test_idp_logout_ends_only_the_sessions_its_session_index_names(saml_gate, saml_idp):
    first, second, third = await saml_gate(), await saml_gate(), await saml_gate()
    index_1 = await signed_in_at(first, saml_idp)
    index_2 = await signed_in_at(second, saml_idp)
    await signed_in_at(third, saml_idp)
    assert await user_sessions(first) == 3
    await idp_logout(third, saml_idp, "alice@example.com", index_1, index_2)
    assert (await first.whoami()).status == 401
    assert (await second.whoami()).status == 401
    assert await user_sessions(first) == 1


async def test_idp_logout_naming_an_unknown_session_index_ends_nothing(saml_gate, saml_idp):
    browser, idp_side = await saml_gate(), await saml_gate()
    await signed_in_at(browser, saml_idp)
    await idp_logout(idp_side, saml_idp, "alice@example.com", "_session-not-issued")
    assert (await browser.whoami()).status == 200
    assert await user_sessions(browser) == 1


async def test_idp_logout_with_another_users_session_index(saml_gate, saml_idp):
    """A SessionIndex counts only together with its NameID: alice's LogoutRequest naming
    bob's sign-in ends neither bob's session nor any of alice's."""
    alice, bob, idp_side = await saml_gate(), await saml_gate(), await saml_gate()
    await signed_in_at(alice, saml_idp)
    bob_index = await signed_in_at(bob, saml_idp, "bob@example.com")
    await idp_logout(idp_side, saml_idp, "alice@example.com", bob_index)
    assert (await bob.whoami()).status == 200
    assert (await alice.whoami()).status == 200


async def test_idp_logout_without_session_index_ends_all_of_the_name_ids_sessions(
    saml_gate, saml_idp
):
    first, second, bob = await saml_gate(), await saml_gate(), await saml_gate()
    await signed_in_at(first, saml_idp)
    await signed_in_at(second, saml_idp)
    await signed_in_at(bob, saml_idp, "bob@example.com")
    await idp_logout(await saml_gate(), saml_idp, "alice@example.com")
    assert (await first.whoami()).status == 401
    assert (await second.whoami()).status == 401
    assert await user_sessions(first) == 0
    assert (await bob.whoami()).status == 200


async def test_idp_logout_finds_the_sessions_of_a_user_linked_by_email(saml_gate, saml_idp):
    """With match_key email the user record is linked by the address, not the NameID; the
    IdP's LogoutRequest names the NameID, and its sessions still end."""
    browser = await saml_gate(match_key="email")
    rid = await browser.start()
    root = signed(saml_idp, rid, name_id="u-4711", name_id_format=None)
    assert (await browser.post(encode(root))).status == 302
    assert await browser.gate.app[STATE].users.by_link("corp", "u-4711") is None
    await idp_logout(await saml_gate(match_key="email"), saml_idp, "u-4711")
    assert (await browser.whoami()).status == 401


async def test_idp_initiated_logout_by_http_post(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.sign(saml_idp.logout_request("alice@example.com", SLO_URL))
    resp = await browser.gate.post(
        SLO_PATH, data={"SAMLRequest": encode(request)}, allow_redirects=False
    )
    assert resp.status == 302
    assert await user_sessions(browser) == 0


async def test_unsigned_logout_request_is_refused(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    resp = await browser.gate.get(
        f"{SLO_PATH}?{redirect_query('SAMLRequest', request)}", headers=JSON
    )
    assert await error_of(resp) == "signature_invalid"
    assert await user_sessions(browser) == 1


async def test_logout_request_signed_by_an_untrusted_key(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    forged = redirect_query("SAMLRequest", request, keys=KeyPair.create("impostor"))
    resp = await slo(browser, forged, headers=JSON)
    assert await error_of(resp) == "signature_invalid"
    assert await user_sessions(browser) == 1


async def test_logout_request_with_the_signed_query_altered(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    query = redirect_query("SAMLRequest", request, relay_state="a", keys=saml_idp.keys)
    resp = await browser.gate.get(
        f"{SLO_PATH}?{query.replace('RelayState=a', 'RelayState=b')}", headers=JSON
    )
    assert await error_of(resp) == "signature_invalid"


async def test_logout_request_signed_with_sha1(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    query = redirect_query("SAMLRequest", request, keys=saml_idp.keys, sig_alg=RSA_SHA1)
    resp = await slo(browser, query, headers=JSON)
    assert await error_of(resp) == "weak_alg"
    assert await user_sessions(browser) == 1


async def test_logout_request_from_another_issuer(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request(
        "alice@example.com", SLO_URL, issuer="https://other-idp.example.test"
    )
    query = redirect_query("SAMLRequest", request, keys=saml_idp.keys)
    resp = await slo(browser, query, headers=JSON)
    assert await error_of(resp) == "issuer_mismatch"


async def test_logout_request_for_another_sp(saml_gate, saml_idp):
    browser = await saml_gate()
    request = saml_idp.logout_request("alice@example.com", "https://other-sp.test/slo")
    query = redirect_query("SAMLRequest", request, keys=saml_idp.keys)
    resp = await slo(browser, query, headers=JSON)
    assert await error_of(resp) == "audience_mismatch"


async def test_replayed_logout_request(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in(browser, saml_idp)
    request = saml_idp.logout_request("alice@example.com", SLO_URL)
    query = redirect_query("SAMLRequest", request, keys=saml_idp.keys)
    assert (await slo(browser, query, allow_redirects=False)).status == 302
    again = await slo(browser, query, headers=JSON)
    assert await error_of(again) == "replayed"


async def test_oidc_parameters_at_the_slo_endpoint(saml_gate):
    browser = await saml_gate()
    resp = await browser.gate.get(f"{SLO_PATH}?state=x&code=y", headers=JSON)
    assert await error_of(resp) == "protocol_mismatch"


# --- IdP-initiated, back-channel (SOAP binding) -----------------------------------------------

SOAP_PATH = SLO_PATH + "/soap"
SOAP_URL = SLO_URL + "/soap"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP = f"{{{SOAP_NS}}}"


def envelope(*content: etree._Element, header: etree._Element | None = None) -> bytes:
    root = etree.Element(SOAP + "Envelope", nsmap={"soap": SOAP_NS})
    if header is not None:
        etree.SubElement(root, SOAP + "Header").append(header)
    body = etree.SubElement(root, SOAP + "Body")
    for node in content:
        body.append(node)
    return etree.tostring(root)


def soap_request(idp: TestIdp, *indexes: str, **kw) -> etree._Element:
    """The IdP's LogoutRequest for alice, to the SOAP endpoint, naming `indexes`, unsigned."""
    kw.setdefault("destination", SOAP_URL)
    request = idp.logout_request("alice@example.com", kw.pop("destination"), **kw)
    for index in indexes:
        etree.SubElement(request, SAMLP + "SessionIndex").text = index
    return request


def soap_post(browser: SamlBrowser, body: bytes, content_type: str = "text/xml"):
    """The IdP's server calling: no browser cookies, a SOAP body, JSON errors for the test."""
    headers = {"Content-Type": content_type, "Accept": "application/json", "SOAPAction": ""}
    return browser.gate.post(SOAP_PATH, data=body, headers=headers)


async def soap_refused(browser: SamlBrowser, body: bytes, status: int, reason: str, **kw) -> None:
    resp = await soap_post(browser, body, **kw)
    assert resp.status == status
    assert await error_of(resp) == reason


async def test_soap_logout_ends_the_named_session_and_answers_signed(saml_gate, saml_idp, sp_keys):
    first, second = await saml_gate(sp_keys=[sp_keys]), await saml_gate(sp_keys=[sp_keys])
    index = await signed_in_at(first, saml_idp)
    await signed_in_at(second, saml_idp)
    request = saml_idp.sign(soap_request(saml_idp, index))
    resp = await soap_post(await saml_gate(sp_keys=[sp_keys]), envelope(request))
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    answer = etree.fromstring(await resp.read())
    assert answer.tag == SOAP + "Envelope"
    (response,) = answer.find(SOAP + "Body")
    assert response.tag == SAMLP + "LogoutResponse"
    assert response.get("InResponseTo") == request.get("ID")
    assert response.find(f"{SAMLP}Status/{SAMLP}StatusCode").get("Value").endswith("Success")
    assert response.findtext(SAML + "Issuer") == SP_ENTITY
    signature = response.find(DS + "Signature")
    assert signature is not None
    XMLVerifier().verify(response, x509_cert=_sp_cert(sp_keys).decode())
    assert (await first.whoami()).status == 401
    assert (await second.whoami()).status == 200


async def test_soap_logout_without_signing_keys_answers_unsigned(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in_at(browser, saml_idp)
    resp = await soap_post(await saml_gate(), envelope(saml_idp.sign(soap_request(saml_idp))))
    assert resp.status == 200
    (response,) = etree.fromstring(await resp.read()).find(SOAP + "Body")
    assert response.find(DS + "Signature") is None
    assert (await browser.whoami()).status == 401


async def test_soap_logout_request_unsigned(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in_at(browser, saml_idp)
    await soap_refused(browser, envelope(soap_request(saml_idp)), 400, "signature_invalid")
    assert (await browser.whoami()).status == 200


async def test_soap_logout_request_signed_by_an_untrusted_key(saml_gate, saml_idp):
    browser = await saml_gate()
    await signed_in_at(browser, saml_idp)
    forged = saml_idp.sign(soap_request(saml_idp), keys=KeyPair.create("impostor"))
    await soap_refused(browser, envelope(forged), 400, "signature_invalid")
    assert (await browser.whoami()).status == 200


async def test_soap_logout_request_for_the_front_channel_endpoint(saml_gate, saml_idp):
    """Signed for the browser endpoint, replayed to the SOAP one: the Destination decides."""
    browser = await saml_gate()
    request = saml_idp.sign(soap_request(saml_idp, destination=SLO_URL))
    await soap_refused(browser, envelope(request), 400, "audience_mismatch")


async def test_soap_logout_request_replayed(saml_gate, saml_idp):
    browser = await saml_gate()
    body = envelope(saml_idp.sign(soap_request(saml_idp)))
    assert (await soap_post(browser, body)).status == 200
    await soap_refused(await saml_gate(), body, 400, "replayed")


async def test_soap_logout_request_with_its_session_index_altered(saml_gate, saml_idp):
    browser = await saml_gate()
    index = await signed_in_at(browser, saml_idp)
    request = saml_idp.sign(soap_request(saml_idp, "_session-other"))
    request.find(SAMLP + "SessionIndex").text = index
    await soap_refused(browser, envelope(request), 400, "signature_invalid")
    assert (await browser.whoami()).status == 200


async def test_soap_body_that_is_no_envelope(saml_gate, saml_idp):
    browser = await saml_gate()
    bare = etree.tostring(saml_idp.sign(soap_request(saml_idp)))
    await soap_refused(browser, bare, 400, "invalid_request")


async def test_soap_body_with_two_messages(saml_gate, saml_idp):
    browser = await saml_gate()
    body = envelope(saml_idp.sign(soap_request(saml_idp)), saml_idp.sign(soap_request(saml_idp)))
    await soap_refused(browser, body, 400, "invalid_request")


async def test_soap_header_that_must_be_understood(saml_gate, saml_idp):
    browser = await saml_gate()
    header = etree.Element("{urn:example:ext}Ext")
    header.set(SOAP + "mustUnderstand", "1")
    body = envelope(saml_idp.sign(soap_request(saml_idp)), header=header)
    await soap_refused(browser, body, 400, "invalid_request")


async def test_soap_endpoint_given_a_logout_response(saml_gate, saml_idp):
    browser = await saml_gate()
    answer = saml_idp.sign(saml_idp.logout_response("id-x", SOAP_URL))
    await soap_refused(browser, envelope(answer), 400, "invalid_request")


async def test_soap_endpoint_given_a_form(saml_gate, saml_idp):
    browser = await saml_gate()
    request = encode(saml_idp.sign(soap_request(saml_idp)))
    body = f"SAMLRequest={request}".encode()
    await soap_refused(
        browser, body, 400, "invalid_request", content_type="application/x-www-form-urlencoded"
    )


async def test_soap_body_larger_than_the_limit(saml_gate, saml_idp):
    browser = await saml_gate(max_response_size=4096)
    padding = etree.Element("{urn:example:ext}Pad")
    padding.text = "x" * 9000
    body = envelope(saml_idp.sign(soap_request(saml_idp)), header=padding)
    await soap_refused(browser, body, 400, "invalid_request")
