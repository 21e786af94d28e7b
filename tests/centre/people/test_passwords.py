"""argon2id hashes with the library's real parameters, the password rules, one-time passwords."""

from __future__ import annotations

from argon2 import PasswordHasher

from centre.people import passwords


async def test_hash_is_argon2id_and_verifies():
    h = await passwords.hash_password("night shift 2026")
    assert h.startswith("$argon2id$") and "night shift" not in h
    assert await passwords.verify_password(h, "night shift 2026") == (True, None)
    assert await passwords.verify_password(h, "night shift 2027") == (False, None)
    assert await passwords.verify_password(None, "anything at all") == (False, None)  # unknown user: dummy hash


async def test_weak_old_hash_is_upgraded_on_login():
    weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("night shift 2026")
    ok, new = await passwords.verify_password(weak, "night shift 2026")
    assert ok and new is not None and new != weak and new.startswith("$argon2id$")


def test_password_rules_say_what_is_wrong():
    rule = passwords.policy_problem
    assert rule("short", username="wang", min_length=10) == "the password must have at least 10 characters"
    assert rule("Wang-Volunteer", username="wang-volunteer", min_length=10) == "the password must not be the user name"
    assert rule("aaaaaaaaaaab", username="wang", min_length=10) == "the password needs at least four different characters"
    assert rule("x" * 300, username="wang", min_length=10).endswith("at most 256 characters")
    assert rule("correct horse battery", username="wang", min_length=10) is None


def test_one_time_passwords_are_long_and_different():
    a, b = passwords.one_time_password(), passwords.one_time_password()
    assert a != b and len(a) >= 16
