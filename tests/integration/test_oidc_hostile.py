"""A hostile provider: one tampered answer per test, each refused with its exact reason.

Every refusal is checked the same way (`refused`): the callback answers with
the SPEC §8 reason, the connection's last failure and the failure metric
carry it, no session exists afterwards, and the upstream never saw a request.
"""

from __future__ import annotations

import json
import time

from aiohttp import ClientResponse
from joserfc.jwk import ECKey, RSAKey
from yarl import URL

from authgate.web.state import STATE
from tests.conftest import UPSTREAM_HITS
from tests.oidc_op import Browser, compact, hmac_signed, signed
from tests.simplesamlphp import TYPED


async def refused(
    browser: Browser, reason: str, upstream, resp: ClientResponse | None = None
) -> None:
    resp = resp if resp is not None else await browser.login()
    body = await resp.json()
    assert body["error"] == reason, body
    assert resp.status in (400, 403)
    st = browser.gate.app[STATE]
    status = await st.status.get("corp")
    assert status["last_failure_reason"] == reason
    assert status["last_failure_correlation_id"] == body["correlation_id"]
    labels = {"connection": "corp", "result": "failure", "reason": reason}
    assert st.metrics.registry.get_sample_value("authgate_logins_total", labels) == 1.0
    after = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    assert after.status == 401
    assert upstream.app[UPSTREAM_HITS] == []


def failure_detail(capsys) -> str:
    """The detail of the last `sso.login.failed` audit event (audit goes to stdout here)."""
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    return [e for e in events if e["event"] == "sso.login.failed"][-1]["detail"]


def other_rsa(kid: str = "rsa-1") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})


# --- signatures and algorithms -------------------------------------------------------------


async def test_bad_rs256_signature(oidc_gate, oidc_op, counted_upstream, capsys):
    impostor = other_rsa("rsa-1")
    oidc_op.encode = lambda h, c: signed(h, c, impostor)
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)
    assert failure_detail(capsys) == "signature: the ID token signature does not verify"


async def test_bad_es256_signature(oidc_gate, oidc_op, counted_upstream):
    oidc_op.use_key(oidc_op.ec, "ES256")
    impostor = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    oidc_op.encode = lambda h, c: signed(h, c, impostor)
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_tampered_payload_with_original_signature(oidc_gate, oidc_op, counted_upstream):
    def swap_payload(header, claims):
        token = signed(header, claims, oidc_op.rsa)
        head, _, sig = token.split(".")
        forged = compact(header, {**claims, "email": "mallory@example.com"}).split(".")[1]
        return f"{head}.{forged}.{sig}"

    oidc_op.encode = swap_payload
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_alg_none_is_refused(oidc_gate, oidc_op, counted_upstream):
    oidc_op.encode = lambda h, c: compact({"alg": "none", "typ": "JWT"}, c)
    await refused(await oidc_gate(), "weak_alg", counted_upstream)


def _rsa_public_pem(key: RSAKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def test_hs256_keyed_with_the_rsa_public_key_is_refused(oidc_gate, oidc_op, counted_upstream):
    pem = _rsa_public_pem(oidc_op.rsa)
    oidc_op.encode = lambda h, c: hmac_signed({**h, "alg": "HS256"}, c, pem)
    await refused(await oidc_gate(), "weak_alg", counted_upstream)


async def test_hs256_with_the_rsa_public_key_fails_even_where_hs256_is_allowed(
    oidc_gate, oidc_op, counted_upstream
):
    pem = _rsa_public_pem(oidc_op.rsa)
    oidc_op.encode = lambda h, c: hmac_signed({**h, "alg": "HS256"}, c, pem)
    browser = await oidc_gate(allowed_algorithms=["RS256", "HS256"])
    await refused(browser, "id_token_invalid", counted_upstream)


async def test_hs256_with_the_client_secret_is_refused_unless_configured(
    oidc_gate, oidc_op, counted_upstream
):
    secret = oidc_op.client_secret.encode()
    oidc_op.encode = lambda h, c: hmac_signed({"alg": "HS256", "typ": "JWT"}, c, secret)
    await refused(await oidc_gate(), "weak_alg", counted_upstream)


async def test_hs256_with_the_client_secret_is_accepted_when_configured(oidc_gate, oidc_op):
    secret = oidc_op.client_secret.encode()
    oidc_op.encode = lambda h, c: hmac_signed({"alg": "HS256", "typ": "JWT"}, c, secret)
    browser = await oidc_gate(allowed_algorithms=["RS256", "HS256"])
    assert (await browser.login()).status == 302


async def test_key_not_in_the_jwks(oidc_gate, oidc_op, counted_upstream, capsys):
    oidc_op.use_key(other_rsa("rogue"), "RS256")
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)
    detail = "signature: no key with kid 'rogue' for RS256 in the provider's JWKS"
    assert failure_detail(capsys) == detail
    assert oidc_op.jwks_fetches == 2


async def test_key_carried_in_the_token_header_is_never_used(oidc_gate, oidc_op, counted_upstream):
    attacker = other_rsa("attacker")
    public = attacker.as_dict(private=False)
    oidc_op.use_key(attacker, "RS256")
    oidc_op.id_token_header = lambda h: {
        **h,
        "jwk": public,
        "jku": oidc_op.url("/attacker-jwks"),
        "x5u": oidc_op.url("/attacker.pem"),
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_kid_of_the_rsa_key_on_an_es256_token(oidc_gate, oidc_op, counted_upstream):
    oidc_op.use_key(oidc_op.ec, "ES256")
    oidc_op.id_token_header = lambda h: {**h, "kid": "rsa-1"}
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_unknown_crit_header(oidc_gate, oidc_op, counted_upstream):
    oidc_op.id_token_header = lambda h: {**h, "crit": ["exp-ext"], "exp-ext": 1}
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_no_kid_with_two_fitting_keys_is_refused(oidc_gate, oidc_op, counted_upstream):
    oidc_op.published = [oidc_op.rsa, other_rsa("rsa-2")]
    oidc_op.id_token_header = lambda h: {k: v for k, v in h.items() if k != "kid"}
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_a_flood_of_random_kids_costs_one_jwks_refetch(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    assert oidc_op.jwks_fetches == 1
    rogue = other_rsa("unused").as_dict(private=True)
    for n in range(5):
        oidc_op.use_key(RSAKey.import_key({**rogue, "kid": f"random-{n}"}), "RS256")
        resp = await browser.login()
        assert (await resp.json())["error"] == "id_token_invalid"
    assert oidc_op.jwks_fetches == 2


# --- claims -----------------------------------------------------------------------------


def tamper(oidc_op, **changes):
    def edit(claims):
        claims = dict(claims)
        for name, value in changes.items():
            if value is ...:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    oidc_op.id_token_claims = edit


async def test_wrong_iss(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, iss="https://evil.example.com")
    await refused(await oidc_gate(), "issuer_mismatch", counted_upstream)


async def test_wrong_aud(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, aud="another-client")
    await refused(await oidc_gate(), "audience_mismatch", counted_upstream)


async def test_several_aud_without_azp(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, aud=["authgate", "another-client"])
    await refused(await oidc_gate(), "audience_mismatch", counted_upstream)


async def test_wrong_azp(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, aud=["authgate", "another-client"], azp="another-client")
    await refused(await oidc_gate(), "audience_mismatch", counted_upstream)


async def test_several_aud_with_the_right_azp_is_accepted(oidc_gate, oidc_op):
    tamper(oidc_op, aud=["authgate", "another-client"], azp="authgate")
    assert (await (await oidc_gate()).login()).status == 302


async def test_exp_in_the_past(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, exp=int(time.time()) - 3600)
    await refused(await oidc_gate(), "expired", counted_upstream)


async def test_exp_missing(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, exp=...)
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_iat_in_the_future(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, iat=int(time.time()) + 3600)
    await refused(await oidc_gate(), "not_yet_valid", counted_upstream)


async def test_iat_missing(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, iat=...)
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_nbf_in_the_future(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, nbf=int(time.time()) + 3600)
    await refused(await oidc_gate(), "not_yet_valid", counted_upstream)


async def test_skew_within_the_configured_limit_is_accepted(oidc_gate, oidc_op):
    tamper(oidc_op, iat=int(time.time()) + 30, nbf=int(time.time()) + 30)
    assert (await (await oidc_gate(clock_skew="60s")).login()).status == 302


async def test_nonce_missing(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, nonce=...)
    await refused(await oidc_gate(), "nonce_mismatch", counted_upstream)


async def test_nonce_wrong(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, nonce="not-the-nonce-authgate-sent")
    await refused(await oidc_gate(), "nonce_mismatch", counted_upstream)


async def test_sub_missing(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, sub=...)
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_email_verified_false(oidc_gate, oidc_op, counted_upstream):
    oidc_op.user["email_verified"] = False
    await refused(await oidc_gate(), "email_unverified", counted_upstream)


async def test_at_hash_not_matching_the_access_token(oidc_gate, oidc_op, counted_upstream):
    tamper(oidc_op, at_hash="AAAAAAAAAAAAAAAAAAAAAA")
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


# --- token endpoint, UserInfo, discovery ------------------------------------------------------


async def test_token_endpoint_error(oidc_gate, oidc_op, counted_upstream):
    oidc_op.token_answer = lambda a: (400, {"error": "invalid_grant", "error_description": "no"})
    await refused(await oidc_gate(), "idp_error", counted_upstream)


async def test_token_answer_without_id_token(oidc_gate, oidc_op, counted_upstream):
    oidc_op.token_answer = lambda a: (200, {k: v for k, v in a.items() if k != "id_token"})
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_token_answer_that_is_not_json(oidc_gate, oidc_op, counted_upstream):
    oidc_op.token_answer = lambda a: (200, ["not", "an", "object"])
    await refused(await oidc_gate(), "idp_error", counted_upstream)


async def test_userinfo_sub_mismatch(oidc_gate, oidc_op, counted_upstream):
    oidc_op.userinfo_answer = lambda c: {**c, "sub": "someone-else"}
    await refused(await oidc_gate(), "id_token_invalid", counted_upstream)


async def test_claims_only_in_userinfo_are_accepted(oidc_gate, oidc_op):
    profile = {k: oidc_op.user.pop(k) for k in ("email", "email_verified", "name", "groups")}
    oidc_op.userinfo_answer = lambda c: {**c, **profile}
    browser = await oidc_gate()
    assert (await browser.login()).status == 302
    resp = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    headers = dict((await resp.json())["headers"])
    assert headers["X-User"] == "alice@example.com"
    assert headers["X-User-Name"] == "Alice Example"


async def test_discovery_issuer_mismatch(oidc_gate, oidc_op, counted_upstream):
    oidc_op.discovery_overrides["issuer"] = "https://evil.example.com"
    browser = await oidc_gate()
    resp = await browser.gate.get(
        "/_authgate/oidc/corp/login", headers={"Accept": "application/json"}
    )
    await refused(browser, "issuer_mismatch", counted_upstream, resp)
    ready = await browser.gate.get("/_authgate/readyz")
    assert ready.status == 503
    assert "issuer_mismatch" in (await ready.json())["checks"]["connection:corp"]


async def login_refused(browser: Browser, reason: str, upstream) -> None:
    resp = await browser.gate.get(
        "/_authgate/oidc/corp/login", headers={"Accept": "application/json"}
    )
    await refused(browser, reason, upstream, resp)


async def test_issuer_configured_with_a_trailing_slash_says_remove_it(
    oidc_gate, oidc_op, counted_upstream, capsys
):
    await login_refused(
        await oidc_gate(issuer=oidc_op.issuer + "/"), "issuer_mismatch", counted_upstream
    )
    assert failure_detail(capsys) == (
        f"configured {oidc_op.issuer}/, the provider says {oidc_op.issuer}"
        " — remove the trailing slash"
    )


async def test_issuer_configured_without_the_providers_trailing_slash_says_add_it(
    oidc_gate, oidc_op, counted_upstream, capsys
):
    oidc_op.discovery_overrides["issuer"] = oidc_op.issuer + "/"
    await login_refused(await oidc_gate(), "issuer_mismatch", counted_upstream)
    assert failure_detail(capsys) == (
        f"configured {oidc_op.issuer}, the provider says {oidc_op.issuer}/ — add the trailing slash"
    )


async def test_another_issuer_gets_no_slash_advice(oidc_gate, oidc_op, counted_upstream, capsys):
    oidc_op.discovery_overrides["issuer"] = "https://evil.example.com/\n{}"
    await login_refused(await oidc_gate(), "issuer_mismatch", counted_upstream)
    assert failure_detail(capsys) == (
        f"configured {oidc_op.issuer}, the provider says 'https://evil.example.com/\\n{{}}'"
    )


async def test_a_provider_without_a_client_secret_method_is_refused_before_the_redirect(
    oidc_gate, oidc_op, counted_upstream, capsys
):
    oidc_op.auth_methods = ("private_key_jwt", "tls_client_auth")
    await login_refused(await oidc_gate(), "idp_error", counted_upstream)
    assert failure_detail(capsys) == (
        "the provider's token endpoint accepts private_key_jwt, tls_client_auth"
        " (token_endpoint_auth_methods_supported), neither client_secret_basic nor"
        " client_secret_post: set token_endpoint_auth_method (private_key_jwt with"
        " private_key_file) to one it accepts"
    )
    assert oidc_op.token_requests == []


async def test_an_odd_auth_method_name_is_quoted_in_the_detail(
    oidc_gate, oidc_op, counted_upstream, capsys
):
    oidc_op.discovery_overrides["token_endpoint_auth_methods_supported"] = ["x\n{}", ""]
    await login_refused(await oidc_gate(), "idp_error", counted_upstream)
    assert failure_detail(capsys).startswith("the provider's token endpoint accepts 'x\\n{}', ''")


async def test_auth_methods_that_are_not_a_list_are_metadata_unavailable(
    oidc_gate, oidc_op, counted_upstream
):
    oidc_op.discovery_overrides["token_endpoint_auth_methods_supported"] = "client_secret_basic"
    await login_refused(await oidc_gate(), "metadata_unavailable", counted_upstream)


async def test_discovery_document_without_jwks_uri(oidc_gate, oidc_op, counted_upstream):
    oidc_op.discovery_overrides["jwks_uri"] = None
    browser = await oidc_gate()
    resp = await browser.gate.get(
        "/_authgate/oidc/corp/login", headers={"Accept": "application/json"}
    )
    await refused(browser, "metadata_unavailable", counted_upstream, resp)


# --- the authorization response -----------------------------------------------------------


async def test_authorization_error_response(oidc_gate, oidc_op, counted_upstream):
    oidc_op.authorize_answer = lambda p: {
        "error": "access_denied",
        "error_description": "user said no",
        "state": p["state"],
        "iss": p["iss"],
    }
    await refused(await oidc_gate(), "idp_error", counted_upstream)


async def test_wrong_iss_parameter(oidc_gate, oidc_op, counted_upstream):
    oidc_op.authorize_answer = lambda p: {**p, "iss": "https://evil.example.com"}
    await refused(await oidc_gate(), "issuer_mismatch", counted_upstream)


async def test_missing_iss_parameter_when_advertised(oidc_gate, oidc_op, counted_upstream):
    oidc_op.authorize_answer = lambda p: {k: v for k, v in p.items() if k != "iss"}
    await refused(await oidc_gate(), "issuer_mismatch", counted_upstream)


async def test_no_iss_parameter_from_a_provider_that_does_not_send_it(oidc_gate, oidc_op):
    oidc_op.send_iss = False
    assert (await (await oidc_gate()).login()).status == 302


async def test_tampered_state(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    callback = URL(await browser.authorize(await browser.start()))
    forged = callback.update_query(state=callback.query["state"][:-2] + "xx")
    await refused(browser, "state_expired", counted_upstream, await browser.callback(str(forged)))


async def test_missing_state(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    callback = URL(await browser.authorize(await browser.start()))
    stripped = callback.without_query_params("state")
    await refused(browser, "state_expired", counted_upstream, await browser.callback(str(stripped)))


async def test_replayed_state(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    callback = await browser.authorize(await browser.start())
    assert (await browser.callback(callback)).status == 302
    counted_upstream.app[UPSTREAM_HITS].clear()
    await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    resp = await browser.callback(callback)
    assert (await resp.json())["error"] == "state_expired"
    after = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    assert after.status == 401
    assert counted_upstream.app[UPSTREAM_HITS] == []


async def test_state_from_another_browser(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    victims_callback = await browser.authorize(await browser.start())
    browser.gate.session.cookie_jar.clear()
    await browser.start()
    resp = await browser.callback(victims_callback)
    await refused(browser, "state_mismatch", counted_upstream, resp)


async def test_authorization_code_replay(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    first = URL(await browser.authorize(await browser.start()))
    assert (await browser.callback(str(first))).status == 302
    await browser.gate.get("/_authgate/logout", allow_redirects=False, headers=TYPED)
    counted_upstream.app[UPSTREAM_HITS].clear()
    second = URL(await browser.authorize(await browser.start()))
    injected = second.update_query(code=first.query["code"])
    requests_before = len(oidc_op.token_requests)
    resp = await browser.callback(str(injected))
    assert len(oidc_op.token_requests) == requests_before
    st = browser.gate.app[STATE]
    assert (await resp.json())["error"] == "replayed"
    assert (await st.status.get("corp"))["last_failure_reason"] == "replayed"
    after = await browser.gate.get("/app/page", headers={"Accept": "application/json"})
    assert after.status == 401
    assert counted_upstream.app[UPSTREAM_HITS] == []


async def test_a_saml_response_at_the_oidc_callback(oidc_gate, oidc_op, counted_upstream):
    browser = await oidc_gate()
    resp = await browser.gate.post(
        "/_authgate/oidc/corp/callback",
        data={"SAMLResponse": "PHNhbWxwOlJlc3BvbnNlLz4=", "RelayState": "/"},
        headers={"Accept": "application/json"},
    )
    await refused(browser, "protocol_mismatch", counted_upstream, resp)


async def test_failure_page_for_browsers_has_reason_and_correlation_id(
    oidc_gate, oidc_op, counted_upstream, capsys
):
    tamper(oidc_op, aud="another-client")
    browser = await oidc_gate()
    callback = await browser.authorize(await browser.start())
    resp = await browser.gate.get(
        URL(callback).raw_path_qs, headers={"Accept": "text/html"}, allow_redirects=False
    )
    assert resp.status == 400
    page = await resp.text()
    cid = resp.headers["X-Request-Id"]
    assert "audience_mismatch" in page
    assert cid in page
    assert "Traceback" not in page
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    failed = [e for e in events if e["event"] == "sso.login.failed"]
    assert failed[-1]["reason"] == "audience_mismatch"
    assert failed[-1]["correlation_id"] == cid
    assert failed[-1]["connection"] == "corp"
