"""A registered peer as a value: its key (the algorithm comes with it), the routes it may use,
where the gateway reaches it, and the key it replaced while a rotation overlap lasts; with the
checks of what an operator may register and the forms a peer is stored and logged in."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from integrity.errors import InvalidPeer
from integrity.exchange.routes import Route
from signing.errors import UnsupportedExchangeKey
from signing.httpsig import PeerKey

PEER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
MAX_ROUTES = 200
MAX_BASE_URL_CHARS = 2048
# The longest a replaced key may still be accepted after a rotation: enough to redeploy a
# peer's fleet, short enough that a forgotten old key stops working by itself.
MAX_OVERLAP_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Peer:
    """A registered system: its exchange key (the algorithm comes with it), the routes it may
    use, and where the gateway reaches it."""

    name: str
    key: PeerKey
    base_url: str | None
    routes: tuple[Route, ...]
    created_at: datetime
    updated_at: datetime
    # The key this one replaced, accepted until ``previous_until`` (a rotation overlap: the
    # peer's instances switch to the new key one by one, and no message is refused meanwhile).
    previous: PeerKey | None = None
    previous_until: datetime | None = None

    @property
    def keyid(self) -> str:
        return self.key.keyid

    def key_for(self, keyid: str, now: datetime) -> PeerKey | None:
        """The key a message naming ``keyid`` must verify with at ``now``, or None."""
        if keyid == self.key.keyid:
            return self.key
        if self.previous is not None and keyid == self.previous.keyid and self.previous_until is not None:
            return self.previous if now < self.previous_until else None
        return None

    def route_for(self, method: str, path: str) -> Route | None:
        return next((r for r in self.routes if r.matches(method, path)), None)

    def fingerprint(self) -> str:
        """SHA-256 of the public key's SubjectPublicKeyInfo (hex), for logs and listings."""
        return hashlib.sha256(self.key.public_pem().encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keyid": self.keyid,
            "algorithm": self.key.algorithm.value,
            "key_sha256": self.fingerprint(),
            "certificate_subject": self.key.certificate.subject.rfc4514_string() if self.key.certificate else None,
            "base_url": self.base_url,
            "routes": [str(r) for r in self.routes],
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "previous_keyid": self.previous.keyid if self.previous else None,
            "previous_until": self.previous_until.isoformat() if self.previous and self.previous_until else None,
        }

    def logged(self) -> dict[str, Any]:
        """What the registry's audit entries say of the peer."""
        return {
            "name": self.name,
            "keyid": self.keyid,
            "algorithm": self.key.algorithm.value,
            "key_sha256": self.fingerprint(),
            "base_url": self.base_url,
            "routes": [str(r) for r in self.routes],
            "previous_keyid": self.previous.keyid if self.previous else None,
            "previous_until": self.previous_until.isoformat() if self.previous_until else None,
        }

    def stored(self) -> dict[str, Any]:
        """The stored columns of the peer except its name and creation time."""
        previous = self.previous
        return {
            "keyid": self.keyid,
            "algorithm": self.key.algorithm.value,
            "public_key_pem": self.key.public_pem(),
            "certificate_pem": self.key.certificate_pem(),
            "base_url": self.base_url,
            "routes": json.dumps([str(r) for r in self.routes]),
            "updated_at": self.updated_at,
            "previous_keyid": previous.keyid if previous else None,
            "previous_public_key_pem": previous.public_pem() if previous else None,
            "previous_certificate_pem": previous.certificate_pem() if previous else None,
            "previous_until": self.previous_until if previous else None,
        }


def check_name(name: str) -> str:
    if not PEER_NAME.fullmatch(name):
        raise InvalidPeer("a peer name is 1–64 characters of a-z, 0-9 and '-', starting with a letter or digit")
    return name


def check_base_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or len(url) > MAX_BASE_URL_CHARS
        or not url.isascii()
    ):
        raise InvalidPeer("a base URL is an absolute http(s) URL without credentials, query or fragment")
    return url.rstrip("/")


def parse_routes(routes: Sequence[str]) -> tuple[Route, ...]:
    if isinstance(routes, str):
        raise InvalidPeer("routes must be a list of 'METHOD /path' strings")
    if len(routes) > MAX_ROUTES:
        raise InvalidPeer(f"at most {MAX_ROUTES} routes per peer")
    return tuple(Route.parse(r) for r in routes)


def peer_key(keyid: str, key_pem: bytes | str) -> PeerKey:
    pem = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        return PeerKey.from_pem(keyid, pem)
    except UnsupportedExchangeKey as exc:
        raise InvalidPeer(f"peer key refused: {exc}") from exc
