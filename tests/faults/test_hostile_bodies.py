"""Bodies built to break the parser: SCIM's own error, never a 500 or a library's text."""

from __future__ import annotations

import pytest

from authgate.app import create_app
from authgate.session.memory import MemoryStore
from authgate.web.state import STATE
from tests.scim_support import SCIM, bearer, provisioning_settings, scim_error

LIBRARY_WORDS = ("Expecting", "char ", "RecursionError", "recursion", "JSONDecodeError", "pydantic")


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    settings = provisioning_settings(tmp_path / "audit.jsonl", scim={"max_body_size": 1_000_000})
    return await aiohttp_client(create_app(settings, MemoryStore()))


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 33 + b"]" * 33,
    ],
    ids=["100k-open-arrays", "100k-closed-objects", "33-levels"],
)
async def test_deeply_nested_json_is_invalid_syntax(client, body):
    headers = await bearer(client)
    for method, path in (("POST", "/Users"), ("POST", "/Groups")):
        response = await client.request(method, SCIM + path, data=body, headers=headers)
        error = await scim_error(response, 400, "invalidSyntax")
        assert not any(word in error.get("detail", "") for word in LIBRARY_WORDS)
    assert await client.app[STATE].users.all_ids() == set()


async def test_broken_json_is_named_by_position_not_by_the_parser(client):
    headers = await bearer(client)
    response = await client.post(SCIM + "/Users", data=b'{"userName": tru}', headers=headers)
    error = await scim_error(response, 400, "invalidSyntax")
    assert error["detail"] == "the body is not valid JSON (line 1, column 14)"
