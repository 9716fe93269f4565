"""User records: JIT, pre-provisioned linking, email uniqueness, deactivation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authgate.errors import PolicyDenied
from authgate.identity import Identity
from authgate.session.memory import MemoryStore
from authgate.users import UserStore


def ident(subject: str = "s1", email: str = "alice@example.com", conn: str = "corp") -> Identity:
    return Identity(
        connection=conn, subject=subject, email=email, email_verified=True, name="Alice"
    )


@pytest.fixture
def users() -> UserStore:
    return UserStore(MemoryStore())


async def test_first_login_creates_then_reuses_the_user(users):
    first = await users.admit(ident(), "jit")
    again = await users.admit(ident(), "jit")
    assert first.id == again.id
    assert again.linked and again.last_login_at is not None
    assert await users.all_ids() == {first.id}


async def test_email_is_unique_case_insensitively(users):
    await users.admit(ident("s1", "Alice@Example.com"), "jit")
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident("s2", "alice@example.COM"), "jit")
    assert exc.value.reason == "email_conflict"


async def test_same_email_from_another_connection_is_not_merged(users):
    await users.admit(ident(conn="corp"), "jit")
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident(conn="partner"), "jit")
    assert exc.value.reason == "email_conflict"
    assert len(await users.all_ids()) == 1


async def test_preprovisioned_mode_refuses_unknown_subjects(users):
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident(), "preprovisioned")
    assert exc.value.reason == "user_not_provisioned"
    assert await users.all_ids() == set()


async def test_preprovisioned_user_is_linked_on_external_id(users):
    made = await users.create("corp", "s1", "alice@example.com", source="csv", roles=("editor",))
    assert not made.linked
    user = await users.admit(ident(), "preprovisioned")
    assert user.id == made.id and user.linked and user.roles == ("editor",)


async def test_deactivated_user_is_refused(users):
    user = await users.admit(ident(), "jit")
    await users.set_active(user, False)
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident(), "jit")
    assert exc.value.reason == "user_disabled"


async def test_email_change_at_the_idp_follows_unless_taken(users):
    user = await users.admit(ident("s1", "alice@example.com"), "jit")
    moved = await users.admit(ident("s1", "alice.new@example.com"), "jit")
    assert moved.id == user.id and moved.email == "alice.new@example.com"
    assert (await users.by_email("alice@example.com")) is None
    await users.admit(ident("s2", "bob@example.com"), "jit")
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident("s1", "bob@example.com"), "jit")
    assert exc.value.reason == "email_conflict"


async def test_a_retire_racing_a_login_is_never_undone(users):
    """The login read the user while active; the admin retired it before the login wrote."""
    user = await users.admit(ident(), "jit")
    kv = users._kv
    stale = await kv.get("user:" + user.id)
    original_get = kv.get
    reads = 0

    async def get_then_retire(key: str):
        nonlocal reads
        value = await original_get(key)
        if key == "user:" + user.id:
            reads += 1
            if reads == 2:
                kv.get = original_get
                await users.set_active(await users.get(user.id), False)
        return value

    kv.get = get_then_retire
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident(), "jit")
    assert exc.value.reason == "user_disabled"
    assert stale is not None and reads == 2
    assert (await users.get(user.id)).active is False, "the login must not re-activate the user"


async def test_match_value_links_instead_of_the_subject(users):
    made = await users.create("corp", "b.simon@contoso.com", "b.simon@contoso.com", source="csv")
    persistent = replace(ident("AbPairwise0"), match_value="b.simon@contoso.com")
    user = await users.admit(persistent, "preprovisioned")
    assert user.id == made.id


async def test_a_provisioned_users_username_links_a_sign_in_of_its_own_connection(users):
    made = await users.create(
        "corp", "mailnick", "alice@example.com", source="scim", username="alice@contoso.com"
    )
    user = await users.admit(ident("alice@contoso.com"), "preprovisioned")
    assert user.id == made.id


async def test_a_provisioned_user_of_another_connection_is_never_merged(users):
    await users.create(
        "corp", "mailnick", "alice@example.com", source="scim", username="alice@example.com"
    )
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident("alice@example.com", conn="partner"), "jit")
    assert exc.value.reason == "email_conflict"
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(ident("alice@example.com", conn="partner"), "preprovisioned")
    assert exc.value.reason == "user_not_provisioned"
    assert len(await users.all_ids()) == 1


async def test_a_user_made_at_sign_in_is_not_linked_by_its_email(users):
    await users.admit(ident("s1"), "jit")
    with pytest.raises(PolicyDenied) as exc:
        await users.admit(replace(ident("s2"), match_value="alice@example.com"), "jit")
    assert exc.value.reason == "email_conflict"
