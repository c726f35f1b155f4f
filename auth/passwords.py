"""Passwords: argon2id hashing and the NIST SP 800-63B-4 policy.

Hashing follows OWASP's argon2id minimum (m = 19 MiB, t = 2, p = 1). The parameters travel in
the PHC string, so they can be raised later: a hash made with older (weaker) parameters is
flagged ``needs_rehash`` at the next successful login. The policy has length rules and a
blocklist only: SP 800-63B-4 §3.1.1.2 forbids composition rules and periodic changes.
"""

from __future__ import annotations

import os
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from auth.errors import (
    InvalidUsername,
    PasswordBlocklisted,
    PasswordContainsContext,
    PasswordTooLong,
    PasswordTooShort,
)

# OWASP Password Storage Cheat Sheet, argon2id first option.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1

# SP 800-63B-4 §3.1.1.2: 15 characters when the password is the only factor, 8 when it is
# one factor of several; verifiers SHALL allow at least 64.
MIN_LENGTH_SINGLE_FACTOR = 15
MIN_LENGTH_WITH_MFA = 8
MAX_LENGTH = 256  # well above the 64 required; bounds the work one request can cause
_CONTEXT_WORDS = ("bhxh", "baohiemxahoi", "vssid")
_MIN_CONTEXT_LEN = 4

USERNAME_MAX = 64
_USERNAME_FORBIDDEN = frozenset("\t\n\r\x0b\x0c /\\:@")


def normalise_username(raw: str) -> str:
    """NFKC + case fold: two names that look the same are one account (RFC 8265's idea)."""
    name = unicodedata.normalize("NFKC", raw).strip().casefold()
    name = unicodedata.normalize("NFKC", name)
    if not name or len(name) > USERNAME_MAX:
        raise InvalidUsername(f"a username has 1–{USERNAME_MAX} characters")
    if any(ch in _USERNAME_FORBIDDEN or unicodedata.category(ch)[0] in "CZ" for ch in name):
        raise InvalidUsername("a username may not hold spaces, control characters, '/', '\\', ':' or '@'")
    return name


def normalise_password(raw: str) -> str:
    # SP 800-63B-4 §3.1.1.2: apply NFKC (or NFKD) before hashing, so a password typed on
    # another keyboard or OS that composes characters differently still matches.
    return unicodedata.normalize("NFKC", raw)


@lru_cache(maxsize=1)
def _blocklist() -> frozenset[str]:
    # The 30,000 most common passwords from leaked sets, as shipped (offline) by zxcvbn.
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.casefold() for p in FREQUENCY_LISTS["passwords"])


@dataclass(frozen=True)
class PasswordPolicy:
    """Length rules and blocklist of SP 800-63B-4 (no composition rules, by design)."""

    min_single_factor: int = MIN_LENGTH_SINGLE_FACTOR
    min_with_mfa: int = MIN_LENGTH_WITH_MFA
    max_length: int = MAX_LENGTH

    def check(self, password: str, *, mfa: bool, username: str = "") -> None:
        """Raise the ``PasswordRejected`` subclass naming the first rule broken."""
        pw = normalise_password(password)
        minimum = self.min_with_mfa if mfa else self.min_single_factor
        if len(pw) < minimum:
            why = "with a second factor" if mfa else "without a second factor"
            raise PasswordTooShort(f"the password must have at least {minimum} characters {why}")
        if len(pw) > self.max_length:
            raise PasswordTooLong(f"the password may have at most {self.max_length} characters")
        folded = pw.casefold()
        if folded in _blocklist():
            raise PasswordBlocklisted("the password is on the list of commonly used or leaked passwords")
        words = [w for w in (*_CONTEXT_WORDS, username.casefold()) if len(w) >= _MIN_CONTEXT_LEN]
        if any(w in folded for w in words) and len(folded) - max(len(w) for w in words if w in folded) < minimum:
            # The password is mostly the username or the service name: guessable from context.
            raise PasswordContainsContext("the password is mostly the username or the service's name")


@dataclass(frozen=True)
class PasswordCheck:
    """Verdict of a password verification."""

    ok: bool
    needs_rehash: bool = False


class PasswordHasher:
    """argon2id with parameters in the PHC string; a dummy hash with the same parameters lets
    a check for an unknown user cost exactly what a check for a known one costs.

    At most ``max_concurrent`` hashes run at once (default: one per CPU). Each takes 19 MiB, so
    a flood of logins cannot exhaust memory, and hashes beyond the cores only thrash the CPU
    caches: queueing them is faster than running them side by side."""

    def __init__(
        self,
        *,
        memory_kib: int = ARGON2_MEMORY_KIB,
        time_cost: int = ARGON2_TIME_COST,
        parallelism: int = ARGON2_PARALLELISM,
        max_concurrent: int | None = None,
    ) -> None:
        self._ph = argon2.PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=argon2.Type.ID
        )
        self._slots = threading.BoundedSemaphore(max_concurrent or os.cpu_count() or 1)
        self._dummy = self._ph.hash(secrets.token_urlsafe(24))

    def hash(self, password: str) -> str:
        with self._slots:
            return self._ph.hash(normalise_password(password))

    def verify(self, stored: str, password: str) -> PasswordCheck:
        try:
            with self._slots:
                self._ph.verify(stored, normalise_password(password))
        except VerifyMismatchError:
            return PasswordCheck(False)
        except (VerificationError, InvalidHashError):
            # A corrupt stored hash never lets anyone in.
            return PasswordCheck(False)
        return PasswordCheck(True, self._ph.check_needs_rehash(stored))

    def verify_dummy(self, password: str) -> PasswordCheck:
        """Spend one verification on a hash nobody knows the password of (unknown users)."""
        self.verify(self._dummy, password)
        return PasswordCheck(False)
