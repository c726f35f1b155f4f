from __future__ import annotations

import argon2
import pytest

from auth.errors import (
    InvalidUsername,
    PasswordBlocklisted,
    PasswordContainsContext,
    PasswordRejected,
    PasswordTooLong,
    PasswordTooShort,
)
from auth.passwords import (
    ARGON2_MEMORY_KIB,
    PasswordHasher,
    PasswordPolicy,
    normalise_password,
    normalise_username,
)
from tests.auth.support import STRONG

POLICY = PasswordPolicy()


def test_hash_is_argon2id_with_owasp_parameters_in_the_phc_string() -> None:
    stored = PasswordHasher().hash(STRONG)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    params = argon2.extract_parameters(stored)
    assert (params.type, params.memory_cost, params.time_cost, params.parallelism) == (
        argon2.Type.ID,
        ARGON2_MEMORY_KIB,
        2,
        1,
    )


def test_right_password_verifies_and_wrong_one_does_not() -> None:
    hasher = PasswordHasher(memory_kib=1024, time_cost=1)
    stored = hasher.hash(STRONG)
    assert hasher.verify(stored, STRONG).ok
    assert not hasher.verify(stored, STRONG + "!").ok


def test_hash_made_with_older_parameters_needs_rehash() -> None:
    old = PasswordHasher(memory_kib=1024, time_cost=1).hash(STRONG)
    verdict = PasswordHasher().verify(old, STRONG)
    assert verdict.ok and verdict.needs_rehash
    current = PasswordHasher().hash(STRONG)
    assert not PasswordHasher().verify(current, STRONG).needs_rehash


def test_corrupt_stored_hash_never_verifies() -> None:
    assert not PasswordHasher(memory_kib=1024, time_cost=1).verify("$argon2id$garbage", STRONG).ok


def test_dummy_verification_always_fails() -> None:
    assert not PasswordHasher(memory_kib=1024, time_cost=1).verify_dummy(STRONG).ok


def test_password_is_nfkc_normalised_before_hashing() -> None:
    hasher = PasswordHasher(memory_kib=1024, time_cost=1)
    composed = "mật khẩu rất dài và an toàn"
    decomposed = "ma\u0323\u0302t khẩu rất dài và an toàn"
    assert composed != decomposed and normalise_password(decomposed) == composed
    assert hasher.verify(hasher.hash(composed), decomposed).ok


@pytest.mark.parametrize(
    ("password", "mfa", "error", "rule"),
    [
        ("a" * 14 + "x", False, None, None),
        ("short pw 14 ch", False, PasswordTooShort, "min_length"),
        ("8 chars!", True, None, None),
        ("7 chars", True, PasswordTooShort, "min_length"),
        ("x" * 257, False, PasswordTooLong, "max_length"),
        ("password", True, PasswordBlocklisted, "blocklist"),
        ("PassWord", True, PasswordBlocklisted, "blocklist"),
        ("1qaz2wsx3edc4rfv", False, PasswordBlocklisted, "blocklist"),
        ("bhxh2025", True, PasswordContainsContext, "context_words"),
    ],
)
def test_policy_names_the_rule_broken(
    password: str, mfa: bool, error: type[PasswordRejected] | None, rule: str | None
) -> None:
    if error is None:
        POLICY.check(password, mfa=mfa)
        return
    with pytest.raises(error) as info:
        POLICY.check(password, mfa=mfa)
    assert info.value.rule == rule


def test_sixty_four_characters_and_any_composition_are_allowed() -> None:
    POLICY.check("z" * 64, mfa=False)
    POLICY.check("all lower case words no digits", mfa=False)
    POLICY.check("ĐÂY LÀ MẬT KHẨU KHÔNG CÓ SỐ", mfa=False)


def test_password_made_of_the_username_is_refused() -> None:
    with pytest.raises(PasswordContainsContext):
        POLICY.check("nguyenvana12345", mfa=False, username="nguyenvana")
    POLICY.check("nguyenvana likes long quiet walks", mfa=False, username="nguyenvana")


def test_usernames_that_look_the_same_normalise_to_one() -> None:
    assert normalise_username("Ｎｇｕｙｅｎ") == normalise_username("nguyen") == "nguyen"
    assert normalise_username("  Trần.Văn ") == normalise_username("tra\u0302\u0300n.va\u0306n")


@pytest.mark.parametrize("bad", ["", "   ", "a b", "a/b", "a\x00b", "x" * 65, "a@b", "tab\tname"])
def test_bad_usernames_are_refused(bad: str) -> None:
    with pytest.raises(InvalidUsername):
        normalise_username(bad)
