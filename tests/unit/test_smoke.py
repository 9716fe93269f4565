from tests.conftest import cookie_header, sign_in


async def test_proxy_forwards_identity(authgate):
    session = await sign_in(authgate)
    resp = await authgate.get("/hello?x=1", headers=cookie_header(authgate, session.id))
    assert resp.status == 200
    body = await resp.json()
    headers = dict(body["headers"])
    assert headers["X-User"] == "alice@example.com"
    assert body["raw_path"] == "/hello?x=1"


async def test_anonymous_browser_is_redirected(authgate):
    resp = await authgate.get("/hello", headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 302
