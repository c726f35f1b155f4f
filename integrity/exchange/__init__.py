"""The portal ↔ one-stop exchange (docs/exchange-profile.md): every message between the
systems is checked against the registry of peers and the RFC 9421 profile, and leaves evidence
in the audit log.

- ``routes``: the route patterns a peer may use;
- ``peers``: a registered peer as a value, and what may be registered;
- ``registry``: the peers in the database, read through a short per-instance cache;
- ``nonces``: the replay guard;
- ``verdict``: the refusal reasons (one enum) and the verdict and audit entry of one check;
- ``service``: the checks themselves (``ExchangeService``);
- ``gateway_signer``: the gateway's own signatures;
- ``tables``: the storage;
- ``logged_text``: how much of a sender's own text an error or entry may echo.
"""

from __future__ import annotations

from integrity.exchange.gateway_signer import GATEWAY_KEYID, GatewaySigner
from integrity.exchange.peers import MAX_OVERLAP_SECONDS, Peer
from integrity.exchange.registry import PeerRegistry
from integrity.exchange.routes import Route
from integrity.exchange.service import ExchangeService, build_exchange_service
from integrity.exchange.verdict import Direction, ExchangeVerdict, ForwardFailure, Reason

__all__ = [
    "GATEWAY_KEYID",
    "MAX_OVERLAP_SECONDS",
    "Direction",
    "ExchangeService",
    "ExchangeVerdict",
    "ForwardFailure",
    "GatewaySigner",
    "Peer",
    "PeerRegistry",
    "Reason",
    "Route",
    "build_exchange_service",
]
