"""Hostile SAML responses, one per test, each refused at the ACS with its exact reason.

Responses are built and signed by the test IdP (tests/saml_idp.py: lxml +
signxml) and posted through a real authgate app on Redis. `refused` checks
the SPEC §8 reason, the connection's last failure and failure metric, that
no session exists afterwards, and that the upstream never saw a request.
"""

from __future__ import annotations

import copy
import time

from aiohttp import ClientResponse
from lxml import etree

from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.saml_gate import ACS_URL, JSON, SP_ENTITY, SamlBrowser
from tests.saml_idp import (
    DS,
    RSA_1_5,
    RSA_SHA1,
    SAML,
    SAMLP,
    XENC,
    KeyPair,
    TestIdp,
    encode,
    key_value,
    new_id,
)


async def refused(browser: SamlBrowser, resp: ClientResponse, reason: str, upstream) -> None:
    body = await resp.json()
    assert body["error"] == reason, body
    assert resp.status in (400, 403)
    st = browser.gate.app[STATE]
    status = await st.status.get("corp")
    assert status["last_failure_reason"] == reason
    assert status["last_failure_correlation_id"] == body["correlation_id"]
    labels = {"connection": "corp", "result": "failure", "reason": reason}
    assert st.metrics.registry.get_sample_value("authgate_logins_total", labels) == 1.0
    assert (await browser.whoami()).status == 401
    after = await browser.gate.get("/app/page", headers=JSON)
    assert after.status == 401
    assert upstream.app[UPSTREAM_HITS] == []


def assertion(idp: TestIdp, rid: str | None, **kw) -> etree._Element:
    kw.setdefault("audience", SP_ENTITY)
    kw.setdefault("recipient", ACS_URL)
    return idp.assertion(in_response_to=rid, **kw)


def response(idp: TestIdp, rid: str | None, *content: etree._Element, **kw) -> etree._Element:
    kw.setdefault("destination", ACS_URL)
    return idp.response(*content, in_response_to=rid, **kw)


def signed(idp: TestIdp, rid: str | None, **kw) -> etree._Element:
    """The well-formed response the hostile variants start from."""
    return response(idp, rid, idp.sign(assertion(idp, rid, **kw)))


def name_id(root: etree._Element) -> etree._Element:
    return next(root.iter(SAML + "NameID"))


async def post_refused(browser: SamlBrowser, root: etree._Element, reason: str, upstream) -> None:
    await refused(browser, await browser.post(encode(root)), reason, upstream)


# --- the baseline: the same path with a good response succeeds ------------------------------


async def test_valid_response_signs_in_and_reaches_the_upstream(
    saml_gate, saml_idp, counted_upstream
):
    browser = await saml_gate()
    rid = await browser.start(rd="/app/page?x=1")
    resp = await browser.post(encode(signed(saml_idp, rid)))
    assert resp.status == 302, await resp.text()
    assert resp.headers["Location"] == "/app/page?x=1"
    page = await browser.gate.get("/app/page", headers=JSON)
    headers = dict((await page.json())["headers"])
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Groups"] == "Engineering"
    assert counted_upstream.app[UPSTREAM_HITS] == ["/app/page"]


# --- signatures ---------------------------------------------------------------------------


async def test_unsigned(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = response(saml_idp, rid, assertion(saml_idp, rid))
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_signature_removed(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid)
    signature = next(root.iter(DS + "Signature"))
    signature.getparent().remove(signature)
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_signature_value_corrupted(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid)
    value = next(root.iter(DS + "SignatureValue"))
    value.text = value.text[:10] + ("A" if value.text[10] != "A" else "B") + value.text[11:]
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_content_changed_after_signing(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid)
    name_id(root).text = "mallory@example.com"
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_signed_by_an_untrusted_key_carried_in_keyinfo(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    impostor = KeyPair.create("impostor")
    root = response(saml_idp, rid, saml_idp.sign(assertion(saml_idp, rid), keys=impostor))
    carried = next(root.iter(DS + "X509Certificate")).text
    assert "".join(carried.split()) == impostor.cert_b64
    await post_refused(browser, root, "signature_invalid", counted_upstream)


def _key_info_replaced(signed_assertion: etree._Element, key_info: etree._Element) -> None:
    """KeyInfo is outside what a signature signs, so anyone can swap it without breaking it."""
    signature = signed_assertion.find(DS + "Signature")
    signature.replace(signature.find(DS + "KeyInfo"), key_info)


async def test_signed_by_an_untrusted_key_carried_as_key_value(
    saml_gate, saml_idp, counted_upstream
):
    browser = await saml_gate()
    rid = await browser.start()
    impostor = KeyPair.create("impostor")
    forged = saml_idp.sign(assertion(saml_idp, rid), keys=impostor)
    _key_info_replaced(forged, key_value(impostor))
    await post_refused(
        browser, response(saml_idp, rid, forged), "signature_invalid", counted_upstream
    )


async def test_key_info_naming_another_key_does_not_change_a_trusted_signature(saml_gate, saml_idp):
    """The control for the test above: KeyInfo is ignored, whatever it says."""
    browser = await saml_gate()
    rid = await browser.start()
    genuine = saml_idp.sign(assertion(saml_idp, rid))
    _key_info_replaced(genuine, key_value(KeyPair.create("impostor")))
    assert (await browser.post(encode(response(saml_idp, rid, genuine)))).status == 302


async def test_rsa_sha1_signature(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    signed_sha1 = saml_idp.sign(assertion(saml_idp, rid), signature_alg=RSA_SHA1, digest="sha1")
    await post_refused(browser, response(saml_idp, rid, signed_sha1), "weak_alg", counted_upstream)


async def test_sha1_digest_under_an_rsa_sha256_signature(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    weak_digest = saml_idp.sign(assertion(saml_idp, rid), digest="sha1")
    await post_refused(browser, response(saml_idp, rid, weak_digest), "weak_alg", counted_upstream)


# --- XML Signature Wrapping (the eight variants of Somorovsky et al. / SAML Raider) --------


def _evil(original: etree._Element, keep_id: bool = False) -> etree._Element:
    evil = copy.deepcopy(original)
    for sig in evil.findall(DS + "Signature"):
        evil.remove(sig)
    if not keep_id:
        evil.set("ID", new_id())
    name_id(evil).text = "mallory@example.com"
    return evil


def _response_signed(idp: TestIdp, rid: str) -> etree._Element:
    return idp.sign(response(idp, rid, assertion(idp, rid)))


def xsw1(idp: TestIdp, rid: str) -> etree._Element:
    """Evil unsigned Response at the root; the signed original hidden inside its Signature."""
    original = _response_signed(idp, rid)
    evil = copy.deepcopy(original)
    evil.set("ID", new_id())
    name_id(evil).text = "mallory@example.com"
    evil.find(DS + "Signature").append(original)
    return evil


def xsw2(idp: TestIdp, rid: str) -> etree._Element:
    """Like XSW1, the signed original placed before the (detached) Signature."""
    original = _response_signed(idp, rid)
    evil = copy.deepcopy(original)
    evil.set("ID", new_id())
    name_id(evil).text = "mallory@example.com"
    evil.find(DS + "Signature").addprevious(original)
    return evil


def xsw3(idp: TestIdp, rid: str) -> etree._Element:
    """Evil assertion inserted before the signed one, as a sibling."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    original.addprevious(_evil(original))
    return root


def xsw4(idp: TestIdp, rid: str) -> etree._Element:
    """Evil assertion in place, the signed original inside it."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    evil = _evil(original)
    original.addprevious(evil)
    evil.append(original)
    return root


def xsw5(idp: TestIdp, rid: str) -> etree._Element:
    """Signed assertion's content changed in place; an unsigned copy of the original appended."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    unsigned_copy = _evil(original, keep_id=True)
    name_id(unsigned_copy).text = "alice@example.com"
    name_id(original).text = "mallory@example.com"
    root.append(unsigned_copy)
    return root


def xsw6(idp: TestIdp, rid: str) -> etree._Element:
    """Evil assertion carrying the original signature, the original inside that signature."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    evil = copy.deepcopy(original)
    name_id(evil).text = "mallory@example.com"
    original.addprevious(evil)
    evil_sig = evil.find(DS + "Signature")
    obj = etree.SubElement(evil_sig, DS + "Object")
    obj.append(original)
    return root


def xsw7(idp: TestIdp, rid: str) -> etree._Element:
    """Signed assertion moved into samlp:Extensions; an evil one in its place."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    evil = _evil(original)
    extensions = etree.Element(SAMLP + "Extensions")
    root.find(SAMLP + "Status").addprevious(extensions)
    extensions.append(original)
    root.append(evil)
    return root


def xsw8(idp: TestIdp, rid: str) -> etree._Element:
    """Evil assertion with the original signature; the unsigned original inside a ds:Object."""
    root = signed(idp, rid)
    original = root.find(SAML + "Assertion")
    evil = copy.deepcopy(original)
    name_id(evil).text = "mallory@example.com"
    hidden = copy.deepcopy(original)
    hidden.remove(hidden.find(DS + "Signature"))
    etree.SubElement(evil.find(DS + "Signature"), DS + "Object").append(hidden)
    root.replace(original, evil)
    return root


async def _xsw(saml_gate, saml_idp, counted_upstream, build, **conn) -> None:
    browser = await saml_gate(**conn)
    rid = await browser.start()
    root = build(saml_idp, rid)
    assert b"mallory@example.com" in etree.tostring(root)
    await post_refused(browser, root, "signature_invalid", counted_upstream)


RESPONSE_SIGNED = {"want_response_signed": True, "want_assertions_signed": False}


async def test_xsw1_response_wrapped_in_signature(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw1, **RESPONSE_SIGNED)


async def test_xsw2_response_before_detached_signature(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw2, **RESPONSE_SIGNED)


async def test_xsw3_evil_assertion_before_signed_one(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw3)


async def test_xsw4_signed_assertion_inside_evil_one(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw4)


async def test_xsw5_changed_assertion_and_appended_copy(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw5)


async def test_xsw6_original_inside_copied_signature(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw6)


async def test_xsw7_signed_assertion_in_extensions(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw7)


async def test_xsw8_unsigned_original_in_object(saml_gate, saml_idp, counted_upstream):
    await _xsw(saml_gate, saml_idp, counted_upstream, xsw8)


# --- subject ------------------------------------------------------------------------------


async def test_nameid_comment_injection_does_not_truncate(saml_gate, saml_idp, counted_upstream):
    """The IdP vouched for `alice@example.com.evil.test`; a comment must not make it alice."""
    browser = await saml_gate(top={"access": {"allowed_domains": ["example.com"]}})
    rid = await browser.start()
    root = signed(saml_idp, rid, name_id="alice@example.com.evil.test", attributes={})
    node = name_id(root)
    comment = etree.Comment("")
    node.text = "alice@example.com"
    node.append(comment)
    comment.tail = ".evil.test"
    assert b"alice@example.com<!---->.evil.test" in etree.tostring(root)
    resp = await browser.post(encode(root))
    await refused(browser, resp, "domain_not_allowed", counted_upstream)


async def test_nameid_comment_injection_keeps_the_full_identity(saml_gate, saml_idp):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid, name_id="bob@example.com.evil.test", attributes={})
    node = name_id(root)
    node.text = "bob@example.com"
    node.append(etree.Comment(""))
    node[-1].tail = ".evil.test"
    assert (await browser.post(encode(root))).status == 302
    info = await (await browser.whoami()).json()
    assert info["email"] == "bob@example.com.evil.test"


async def test_missing_subject(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    bare = assertion(saml_idp, rid)
    bare.remove(bare.find(SAML + "Subject"))
    root = response(saml_idp, rid, saml_idp.sign(bare))
    await post_refused(browser, root, "invalid_request", counted_upstream)


async def test_empty_nameid(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    await post_refused(
        browser, signed(saml_idp, rid, name_id=""), "invalid_request", counted_upstream
    )


# --- time ---------------------------------------------------------------------------------


async def test_expired(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    past = time.time() - 3600
    root = signed(saml_idp, rid, now=past, not_on_or_after=past + 300)
    await post_refused(browser, root, "expired", counted_upstream)


async def test_not_yet_valid(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid, not_before=time.time() + 3600, not_on_or_after=time.time() + 7200)
    await post_refused(browser, root, "not_yet_valid", counted_upstream)


async def test_within_clock_skew_is_accepted(saml_gate, saml_idp):
    browser = await saml_gate(clock_skew="120s")
    rid = await browser.start()
    root = signed(saml_idp, rid, not_before=time.time() + 60)
    assert (await browser.post(encode(root))).status == 302


async def test_session_capped_at_session_not_on_or_after(saml_gate, saml_idp):
    browser = await saml_gate()
    rid = await browser.start()
    cap = time.time() + 600
    assert (
        await browser.post(encode(signed(saml_idp, rid, session_not_on_or_after=cap)))
    ).status == 302
    sid = browser.gate.session.cookie_jar.filter_cookies(browser.gate.make_url("/"))
    session = await browser.state.sessions.load(sid[browser.state.cookies.session_name].value)
    assert abs(session.expires_at - cap) < 2


# --- audience, recipient, destination, issuer ---------------------------------------------


async def test_wrong_audience(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid, audience="https://other.example.com/saml")
    await post_refused(browser, root, "audience_mismatch", counted_upstream)


async def test_missing_audience(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    await post_refused(
        browser, signed(saml_idp, rid, audience=None), "audience_mismatch", counted_upstream
    )


async def test_wrong_recipient(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = signed(saml_idp, rid, recipient="https://other.example.com/acs")
    await post_refused(browser, root, "audience_mismatch", counted_upstream)


async def test_wrong_destination(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = response(
        saml_idp, rid, saml_idp.sign(assertion(saml_idp, rid)), destination="https://evil/acs"
    )
    await post_refused(browser, root, "audience_mismatch", counted_upstream)


async def test_issuer_not_the_idp_the_request_went_to(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    other = "https://other-idp.example.test/saml"
    root = response(saml_idp, rid, saml_idp.sign(assertion(saml_idp, rid, issuer=other)))
    await post_refused(browser, root, "issuer_mismatch", counted_upstream)


async def test_non_success_status(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    root = response(saml_idp, rid, status="urn:oasis:names:tc:SAML:2.0:status:Responder")
    await post_refused(browser, root, "idp_error", counted_upstream)


async def test_two_assertions(saml_gate, saml_idp, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    first = saml_idp.sign(assertion(saml_idp, rid))
    second = saml_idp.sign(assertion(saml_idp, rid, name_id="mallory@example.com"))
    await post_refused(
        browser, response(saml_idp, rid, first, second), "signature_invalid", counted_upstream
    )


async def test_assertion_and_encrypted_assertion_mixed(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    plain = saml_idp.sign(assertion(saml_idp, rid))
    hidden = saml_idp.encrypt(saml_idp.sign(assertion(saml_idp, rid)), _sp_cert(sp_keys))
    root = response(saml_idp, rid, plain, hidden)
    await post_refused(browser, root, "signature_invalid", counted_upstream)


# --- encryption ---------------------------------------------------------------------------


def _sp_cert(sp_keys) -> bytes:
    with open(sp_keys["cert_file"], "rb") as handle:
        return handle.read()


async def test_encrypted_and_signed_assertion_is_accepted(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    hidden = saml_idp.encrypt(saml_idp.sign(assertion(saml_idp, rid)), _sp_cert(sp_keys))
    assert (await browser.post(encode(response(saml_idp, rid, hidden)))).status == 302


async def test_encrypted_but_unsigned_assertion(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    hidden = saml_idp.encrypt(assertion(saml_idp, rid), _sp_cert(sp_keys))
    await post_refused(
        browser, response(saml_idp, rid, hidden), "signature_invalid", counted_upstream
    )


async def test_encrypted_for_another_sp_key(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    other = KeyPair.create("other-sp")
    hidden = saml_idp.encrypt(saml_idp.sign(assertion(saml_idp, rid)), other.cert_pem)
    await post_refused(browser, response(saml_idp, rid, hidden), "decrypt_failed", counted_upstream)


async def test_rsa_1_5_key_transport(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    hidden = saml_idp.encrypt(saml_idp.sign(assertion(saml_idp, rid)), _sp_cert(sp_keys), RSA_1_5)
    await post_refused(browser, response(saml_idp, rid, hidden), "weak_alg", counted_upstream)


async def test_encrypted_key_carrying_its_own_private_key(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    """Wrapped for the attacker's key, which the EncryptedKey carries: only SP keys decrypt."""
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    attacker = KeyPair.create("attacker")
    hidden = saml_idp.encrypt(saml_idp.sign(assertion(saml_idp, rid)), attacker.cert_pem)
    hidden.find(f".//{XENC}EncryptedKey").insert(1, key_value(attacker, private=True))
    await post_refused(browser, response(saml_idp, rid, hidden), "decrypt_failed", counted_upstream)


# --- encrypted NameID (EncryptedID) and EncryptedAttribute --------------------------------


def hide_name_id(
    idp: TestIdp, node: etree._Element, cert_pem: bytes, xmlsec1: bool = False, **kw
) -> etree._Element:
    """`node`'s Subject NameID replaced by an EncryptedID holding it (built by the test IdP,
    or with `xmlsec1` by the xmlsec1 command); returns `node`."""
    clear = name_id(node)
    plain = copy.deepcopy(clear)
    if xmlsec1:
        hidden = idp.encrypt_with_xmlsec1(plain, cert_pem, ENCRYPTED_ID)
    else:
        hidden = idp.encrypt(plain, cert_pem, holder_tag=ENCRYPTED_ID, **kw)
    clear.addprevious(hidden)
    clear.getparent().remove(clear)
    return node


def hide_attributes(idp: TestIdp, node: etree._Element, cert_pem: bytes) -> etree._Element:
    """Every Attribute of `node` replaced by an EncryptedAttribute holding it; returns `node`."""
    for clear in list(node.iter(SAML + "Attribute")):
        clear.addprevious(
            idp.encrypt(copy.deepcopy(clear), cert_pem, holder_tag=SAML + "EncryptedAttribute")
        )
        clear.getparent().remove(clear)
    return node


ENCRYPTED_ID = SAML + "EncryptedID"


def mallory_hidden(idp: TestIdp, node: etree._Element, sp_keys) -> etree._Element:
    """An EncryptedID for mallory, shaped like `node`'s NameID, for the SP's key."""
    mallory = copy.deepcopy(name_id(node))
    mallory.text = "mallory@example.com"
    return idp.encrypt(mallory, _sp_cert(sp_keys), holder_tag=ENCRYPTED_ID)


async def signed_in_as(browser: SamlBrowser, root: etree._Element) -> dict[str, str]:
    assert (await browser.post(encode(root))).status == 302
    page = await browser.gate.get("/app/page", headers=JSON)
    assert page.status == 200, await page.text()
    return dict((await page.json())["headers"])


async def test_encrypted_name_id_is_decrypted_with_the_sp_key(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    clear = assertion(saml_idp, rid, name_id="u-7f3a", name_id_format=None)
    hidden = hide_name_id(saml_idp, clear, _sp_cert(sp_keys))
    assert hidden.find(f".//{SAML}NameID") is None
    headers = await signed_in_as(browser, response(saml_idp, rid, saml_idp.sign(hidden)))
    assert headers["X-Email"] == "alice@example.com"
    st = browser.gate.app[STATE]
    user = await st.users.by_link("corp", "u-7f3a")
    assert user is not None and await st.sessions.count_for_user(user.id) == 1


async def test_encrypted_name_id_from_xmlsec1_with_aes_gcm(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    clear = assertion(saml_idp, rid, name_id="u-91c2", name_id_format=None)
    node = hide_name_id(saml_idp, clear, _sp_cert(sp_keys), xmlsec1=True)
    assert "aes256-gcm" in etree.tostring(node).decode()
    await signed_in_as(browser, response(saml_idp, rid, saml_idp.sign(node)))
    assert await browser.gate.app[STATE].users.by_link("corp", "u-91c2") is not None


async def test_encrypted_attributes_are_decrypted_with_the_sp_key(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    hidden = hide_attributes(saml_idp, assertion(saml_idp, rid), _sp_cert(sp_keys))
    assert hidden.find(f".//{SAML}Attribute") is None
    headers = await signed_in_as(browser, response(saml_idp, rid, saml_idp.sign(hidden)))
    assert headers["X-Email"] == "alice@example.com"
    assert headers["X-User-Name"] == "Alice Example"
    assert headers["X-Groups"] == "Engineering"


async def test_encrypted_name_id_inside_an_encrypted_assertion(saml_gate, saml_idp, sp_keys):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    cert = _sp_cert(sp_keys)
    inner = hide_attributes(saml_idp, hide_name_id(saml_idp, assertion(saml_idp, rid), cert), cert)
    hidden = saml_idp.encrypt(saml_idp.sign(inner), cert)
    headers = await signed_in_as(browser, response(saml_idp, rid, hidden))
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-Groups"] == "Engineering"


async def test_encrypted_name_id_for_another_sp_key(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    other = KeyPair.create("other-sp")
    hidden = hide_name_id(saml_idp, assertion(saml_idp, rid), other.cert_pem)
    root = response(saml_idp, rid, saml_idp.sign(hidden))
    await post_refused(browser, root, "decrypt_failed", counted_upstream)


async def test_encrypted_attribute_for_another_sp_key(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    other = KeyPair.create("other-sp")
    hidden = hide_attributes(saml_idp, assertion(saml_idp, rid), other.cert_pem)
    root = response(saml_idp, rid, saml_idp.sign(hidden))
    await post_refused(browser, root, "decrypt_failed", counted_upstream)


async def test_encrypted_name_id_without_sp_keys(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate()
    rid = await browser.start()
    hidden = hide_name_id(saml_idp, assertion(saml_idp, rid), _sp_cert(sp_keys))
    root = response(saml_idp, rid, saml_idp.sign(hidden))
    await post_refused(browser, root, "decrypt_failed", counted_upstream)


async def test_encrypted_name_id_with_rsa_1_5(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    hidden = hide_name_id(
        saml_idp, assertion(saml_idp, rid), _sp_cert(sp_keys), key_transport=RSA_1_5
    )
    root = response(saml_idp, rid, saml_idp.sign(hidden))
    await post_refused(browser, root, "weak_alg", counted_upstream)


async def test_encrypted_name_id_holding_another_element(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    """The ciphertext is an Attribute, not a NameID: nothing else may pass for the subject."""
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    node = assertion(saml_idp, rid)
    attribute = copy.deepcopy(next(node.iter(SAML + "Attribute")))
    clear = name_id(node)
    clear.addprevious(saml_idp.encrypt(attribute, _sp_cert(sp_keys), holder_tag=ENCRYPTED_ID))
    clear.getparent().remove(clear)
    root = response(saml_idp, rid, saml_idp.sign(node))
    await post_refused(browser, root, "decrypt_failed", counted_upstream)


async def test_clear_and_encrypted_name_id_together(saml_gate, saml_idp, sp_keys, counted_upstream):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    node = assertion(saml_idp, rid)
    name_id(node).addnext(mallory_hidden(saml_idp, node, sp_keys))
    root = response(saml_idp, rid, saml_idp.sign(node))
    await post_refused(browser, root, "invalid_request", counted_upstream)


async def test_encrypted_name_id_outside_the_signed_assertion(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    """Wrapping: the signed assertion is intact, an EncryptedID for mallory sits in the
    unsigned Response around it, where a lax reader might take the subject from."""
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    root = signed(saml_idp, rid)
    root.find(SAMLP + "Status").addnext(mallory_hidden(saml_idp, root, sp_keys))
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_encrypted_name_id_in_a_subject_confirmation(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    node = assertion(saml_idp, rid)
    confirmation = next(node.iter(SAML + "SubjectConfirmation"))
    confirmation.insert(0, mallory_hidden(saml_idp, node, sp_keys))
    root = response(saml_idp, rid, saml_idp.sign(node))
    await post_refused(browser, root, "signature_invalid", counted_upstream)


async def test_encrypted_attribute_added_after_signing(
    saml_gate, saml_idp, sp_keys, counted_upstream
):
    """An EncryptedAttribute slipped into a signed assertion breaks its signature."""
    browser = await saml_gate(sp_keys=[sp_keys])
    rid = await browser.start()
    root = signed(saml_idp, rid)
    extra = etree.Element(SAML + "Attribute", Name="groups")
    etree.SubElement(extra, SAML + "AttributeValue").text = "Admins"
    next(root.iter(SAML + "AttributeStatement")).append(
        saml_idp.encrypt(extra, _sp_cert(sp_keys), holder_tag=SAML + "EncryptedAttribute")
    )
    await post_refused(browser, root, "signature_invalid", counted_upstream)
