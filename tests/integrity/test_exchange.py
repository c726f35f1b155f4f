"""The exchange use case on both back ends: the peer registry, the ordered checks, the replay
guard (inserted only after the signature verified, atomic under concurrency, purged after
expiry), the audit evidence of every accept and reject, and the optional archive."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Engine, func, select

from integrity.audit_service import AuditService
from integrity.clock import FrozenClock
from integrity.errors import InvalidPeer, PeerAlreadyExists, PeerNotFound
from integrity.exchange import ExchangeService, ExchangeVerdict, Reason, Route
from integrity.exchange.tables import exchange_archive, exchange_nonces, exchange_peers
from signing import errors as signing_errors
from signing.errors import MessageSignatureError
from signing.httpsig import ExchangeSigningKey, HttpRequest, HttpResponse, sign_request, sign_response
from tests.conftest import writer_held

URL = "http://gw.test/gateway/one-stop/v1/dossiers?cmnd=079123456789"
BODY = '{"ho_ten": "Nguyễn Văn A"}'.encode()
PORTAL_ROUTES = ["POST /gateway/one-stop/v1/dossiers", "GET /gateway/one-stop/v1/dossiers/*"]


class World:
    def __init__(self, engine: Engine, *, archive: bool = False) -> None:
        self.engine = engine
        self.clock = FrozenClock()
        self.audit = AuditService(
            engine,
            clock=self.clock,
            log_id="test",
            checkpoint_key=ed25519.Ed25519PrivateKey.generate(),
            checkpoint_key_name="test",
            checkpoint_every=10_000,
            checkpoint_seconds=3600,
        )
        self.service = ExchangeService(engine, clock=self.clock, audit=self.audit, skew_seconds=300, archive=archive)
        self.portal = ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())
        self.one_stop = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())

    def register(self) -> None:
        self.service.peers.add(
            "portal", keyid="portal", key_pem=self.portal.peer_key().public_pem(), routes=PORTAL_ROUTES
        )
        self.service.peers.add(
            "one-stop",
            keyid="one-stop",
            key_pem=self.one_stop.peer_key().public_pem(),
            routes=["POST /gateway/portal/**"],
            base_url="http://127.0.0.1:9/",
        )

    def signed(
        self,
        key: ExchangeSigningKey | None = None,
        *,
        method: str = "POST",
        url: str = URL,
        body: bytes = BODY,
        **kw: Any,
    ) -> HttpRequest:
        request = HttpRequest(method, url, {"Content-Type": "application/json"}, body)
        return request.with_headers(sign_request(request, key or self.portal, clock=self.clock, **kw).as_dict())

    def verify(self, request: HttpRequest, **kw: Any) -> ExchangeVerdict:
        """``ExchangeService.verify_request`` run to its end (its checks are coroutines)."""
        return asyncio.run(self.service.verify_request(request, **kw))

    def verify_response(self, response: HttpResponse, **kw: Any) -> ExchangeVerdict:
        return asyncio.run(self.service.verify_response(response, **kw))

    def entries(self, action: str | None = None) -> list[Any]:
        return [e for e in self.audit.entries(0, 10_000) if action is None or e.action == action]

    def nonces(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(exchange_nonces)).scalar_one()


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    w = World(engine)
    w.register()
    yield w
    w.audit.close()


def _only(entries: list[Any]) -> Any:
    assert len(entries) == 1, [e.data for e in entries]
    return entries[0]


# --- routes (pure) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "method", "path", "ok"),
    [
        ("POST /gateway/one-stop/v1/dossiers", "POST", "/gateway/one-stop/v1/dossiers", True),
        ("POST /gateway/one-stop/v1/dossiers", "post", "/gateway/one-stop/v1/dossiers/", True),
        ("POST /gateway/one-stop/v1/dossiers", "GET", "/gateway/one-stop/v1/dossiers", False),
        ("POST /gateway/one-stop/v1/dossiers", "POST", "/gateway/one-stop/v1/dossiers/x", False),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/000.00.31.H29-251123-0001", True),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/a/b", False),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/../../portal/x", False),
        ("* /gateway/portal/**", "DELETE", "/gateway/portal/a/b/c", True),
        ("* /gateway/portal/**", "GET", "/gateway/portal", True),
        ("* /gateway/portal/**", "GET", "/gateway/portalx/a", False),
        ("GET /v1/files/*.pdf", "GET", "/v1/files/receipt.pdf", True),
        ("GET /v1/files/*.pdf", "GET", "/v1/files/receipt.pdf.exe", False),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/%2e%2e", False),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/a%2Fb", False),
        ("GET /gateway/one-stop/v1/dossiers/*", "GET", "/gateway/one-stop/v1/dossiers/a\\b", False),
    ],
)
def test_route_pattern_matching(route: str, method: str, path: str, ok: bool) -> None:
    assert Route.parse(route).matches(method, path) is ok


@pytest.mark.parametrize(
    "text", ["/no/method", "FETCH /x", "GET x", "GET /a/../b", "GET /a?b=1", "GET /a**b", "GET /a b"]
)
def test_malformed_route_is_refused(text: str) -> None:
    with pytest.raises(InvalidPeer):
        Route.parse(text)


# --- registry ----------------------------------------------------------------------------------


def test_added_peers_are_listed_and_each_change_is_logged(world: World) -> None:
    assert [p.name for p in world.service.peers.all()] == ["one-stop", "portal"]
    added = world.entries("exchange.peer.added")
    assert [e.subject for e in added] == ["peer:portal", "peer:one-stop"]
    assert added[0].data["routes"] == PORTAL_ROUTES
    assert added[0].data["algorithm"] == "ed25519"

    world.service.peers.update("portal", routes=["POST /gateway/one-stop/v1/receipts"], actor="user:admin")
    updated = _only(world.entries("exchange.peer.updated"))
    assert updated.actor == "user:admin" and updated.data["changed"] == ["routes"]
    assert [str(r) for r in world.service.peers.get("portal").routes] == ["POST /gateway/one-stop/v1/receipts"]

    world.service.peers.remove("one-stop", actor="user:admin")
    assert _only(world.entries("exchange.peer.removed")).subject == "peer:one-stop"
    with pytest.raises(PeerNotFound):
        world.service.peers.get("one-stop")


def test_peer_can_be_registered_by_its_demo_certificate(world: World) -> None:
    from pathlib import Path

    cert = (Path(__file__).resolve().parents[2] / "keys.example" / "gateway-exchange.crt.pem").read_bytes()
    peer = world.service.peers.add("gateway", keyid="gateway", key_pem=cert)
    assert peer.key.certificate is not None
    assert world.service.peers.get("gateway").key.certificate is not None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": "portal"}, PeerAlreadyExists),
        ({"keyid": "portal"}, PeerAlreadyExists),
        ({"name": "Bad Name"}, InvalidPeer),
        ({"routes": ["FETCH /x"]}, InvalidPeer),
        ({"base_url": "ftp://x"}, InvalidPeer),
        ({"base_url": "http://user:pw@x"}, InvalidPeer),
        ({"key_pem": "not a key"}, InvalidPeer),
        ({"keyid": ""}, InvalidPeer),
    ],
    ids=["dup-name", "dup-keyid", "name", "route", "scheme", "credentials", "key", "keyid"],
)
def test_refused_peer_definition_writes_nothing(world: World, kwargs: dict[str, Any], error: type[Exception]) -> None:
    before = len(world.entries())
    args: dict[str, Any] = {
        "name": "vssid",
        "keyid": "vssid",
        "key_pem": ExchangeSigningKey.from_private_key("x", ed25519.Ed25519PrivateKey.generate())
        .peer_key()
        .public_pem(),
        "routes": [],
        "base_url": None,
    }
    args.update(kwargs)
    with pytest.raises(error):
        world.service.peers.add(args.pop("name"), **args)
    assert len(world.entries()) == before
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(exchange_peers)).scalar_one() == 2


def test_removing_an_unknown_peer_is_an_error(world: World) -> None:
    with pytest.raises(PeerNotFound):
        world.service.peers.remove("nobody")


# --- accept ------------------------------------------------------------------------------------


def test_valid_request_is_accepted_and_logged_without_body_or_url(world: World) -> None:
    verdict = world.verify(world.signed(), via="test")
    assert verdict.accepted and verdict.reason is None
    assert (verdict.peer, verdict.keyid, verdict.route) == ("portal", "portal", PORTAL_ROUTES[0])
    entry = _only(world.entries("exchange.accepted"))
    assert entry.seq == verdict.audit_seq
    assert entry.actor == "peer:portal" and entry.subject == verdict.message_id
    assert entry.data["digest"] == verdict.digest and entry.data["route"] == PORTAL_ROUTES[0]
    assert entry.data["message_id"] == verdict.message_id and entry.data["via"] == "test"
    logged = json.dumps([e.data for e in world.entries()], ensure_ascii=False)
    assert "Nguyễn" not in logged and "079123456789" not in logged
    assert world.nonces() == 1


def test_valid_response_from_the_expected_peer_is_accepted(world: World) -> None:
    request = HttpRequest("POST", "http://127.0.0.1:9/v1/dossiers", {}, b"{}")
    response = HttpResponse(201, {"Content-Type": "application/json"}, b'{"ok": true}', request)
    response = response.with_headers(sign_response(response, world.one_stop, clock=world.clock).as_dict())
    verdict = world.verify_response(response, expected_peer="one-stop", via="test", in_reply_to="abc")
    assert verdict.accepted and verdict.direction.value == "response"
    assert _only(world.entries("exchange.accepted")).data["in_reply_to"] == "abc"


# --- reject: each reason, logged -----------------------------------------------------------------


def _rejected(world: World, verdict: ExchangeVerdict, reason: str) -> Any:
    assert not verdict.accepted and verdict.reason == reason
    entry = _only(world.entries("exchange.rejected"))
    assert entry.seq == verdict.audit_seq and entry.subject == verdict.message_id
    assert entry.data["reason"] == reason and entry.data["digest"] == verdict.digest
    assert not world.entries("exchange.accepted") or reason == "replayed-nonce"
    return entry


def test_every_refusal_of_the_signature_checks_has_its_reason() -> None:
    # The verdict's reasons are one enum: a refusal of signing.httpsig whose slug it lacks would
    # make the check itself fail instead of refusing the message.
    raised = [
        error
        for error in vars(signing_errors).values()
        if isinstance(error, type) and issubclass(error, MessageSignatureError)
    ]
    found = {Reason.of(error("refused")) for error in raised}
    assert len(found) == len(raised) >= 10
    assert {"unsigned", "bad-signature", "digest-mismatch", "expired", "replayed-nonce"} <= found


def test_unsigned_request_is_rejected(world: World) -> None:
    verdict = world.verify(HttpRequest("POST", URL, {}, BODY), via="test")
    entry = _rejected(world, verdict, "unsigned")
    assert entry.actor == "system"


def test_unknown_key_is_rejected_and_names_the_claimed_keyid(world: World) -> None:
    stranger = ExchangeSigningKey.from_private_key("stranger", ed25519.Ed25519PrivateKey.generate())
    entry = _rejected(world, world.verify(world.signed(stranger), via="test"), "unknown-key")
    assert entry.data["keyid"] == "stranger" and entry.actor == "system"


def test_route_not_allowed_is_rejected(world: World) -> None:
    verdict = world.verify(world.signed(url="http://gw.test/gateway/one-stop/v1/admin"), via="test")
    entry = _rejected(world, verdict, "route-not-allowed")
    assert entry.actor == "peer:portal" and entry.data["route"] is None


def test_method_not_allowed_on_the_route_is_rejected(world: World) -> None:
    _rejected(world, world.verify(world.signed(method="DELETE"), via="test"), "route-not-allowed")


def test_tampered_body_is_rejected_and_burns_no_nonce(world: World) -> None:
    genuine = world.signed()
    tampered = HttpRequest(genuine.method, genuine.url, genuine.headers, BODY.replace(b"A", b"B"))
    _rejected(world, world.verify(tampered, via="test"), "digest-mismatch")
    assert world.nonces() == 0
    assert world.verify(genuine, via="test").accepted


def test_forged_signature_reusing_a_nonce_does_not_block_the_genuine_message(world: World) -> None:
    impostor = ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())
    nonce = "N" * 22
    _rejected(world, world.verify(world.signed(impostor, nonce=nonce), via="test"), "bad-signature")
    assert world.verify(world.signed(nonce=nonce), via="test").accepted


def test_changed_covered_header_is_rejected(world: World) -> None:
    changed = world.signed().with_headers({"Content-Type": "application/xml"})
    _rejected(world, world.verify(changed, via="test"), "bad-signature")


def test_replayed_nonce_is_rejected_within_the_window(world: World) -> None:
    message = world.signed()
    first = world.verify(message, via="test")
    world.clock.advance(30)
    replay = world.verify(message, via="test")
    assert first.accepted and replay.message_id == first.message_id
    _rejected(world, replay, "replayed-nonce")


def _nonce_rows(world: World) -> int:
    with world.service.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(exchange_nonces)).scalar_one())


def test_a_check_without_consuming_records_no_nonce_and_says_whether_it_was_seen(world: World) -> None:
    message = world.signed()
    looks = [world.verify(message, via="test", consume=False) for _ in range(2)]
    assert all(v.accepted and v.nonce_seen is False for v in looks)
    assert _nonce_rows(world) == 0 and len(world.entries("exchange.checked")) == 2
    assert not world.entries("exchange.accepted")
    delivered = world.verify(message, via="test")
    assert delivered.accepted and delivered.nonce_seen is False and _nonce_rows(world) == 1
    after = world.verify(message, via="test", consume=False)
    assert not after.accepted and after.reason == "replayed-nonce" and after.nonce_seen is True
    assert _nonce_rows(world) == 1 and len(world.entries("exchange.accepted")) == 1
    assert world.entries("exchange.rejected")[-1].data["consume"] is False


def test_a_refused_message_has_no_nonce_verdict(world: World) -> None:
    tampered = world.signed().with_headers({"Content-Type": "application/xml"})
    assert world.verify(tampered, via="test", consume=False).nonce_seen is None


def test_stale_created_is_rejected(world: World) -> None:
    message = world.signed()
    world.clock.advance(301)
    _rejected(world, world.verify(message, via="test"), "created-out-of-window")


def test_expired_signature_is_rejected(world: World) -> None:
    message = world.signed(lifetime_seconds=10)
    world.clock.advance(11)
    _rejected(world, world.verify(message, via="test"), "expired")


def test_response_signed_by_another_peer_is_rejected(world: World) -> None:
    request = HttpRequest("GET", "http://127.0.0.1:9/v1/x", {}, b"")
    response = HttpResponse(200, {}, b"", request)
    response = response.with_headers(sign_response(response, world.portal, clock=world.clock).as_dict())
    verdict = world.verify_response(response, expected_peer="one-stop", via="test")
    _rejected(world, verdict, "unexpected-signer")


def test_removed_peer_is_refused_from_then_on(world: World) -> None:
    world.service.peers.remove("portal")
    verdict = world.verify(world.signed(), via="test")
    assert verdict.reason == "unknown-key"


# --- key rotation: the replaced key during and after its overlap ----------------------------------


def _rotate_portal(world: World, **kwargs: Any) -> ExchangeSigningKey:
    new = ExchangeSigningKey.from_private_key("portal-2", ed25519.Ed25519PrivateKey.generate())
    world.service.peers.update(
        "portal", keyid="portal-2", key_pem=new.peer_key().public_pem(), actor="user:admin", **kwargs
    )
    return new


def test_a_replaced_key_is_accepted_during_its_overlap_and_refused_after_it(world: World) -> None:
    old = world.portal
    new = _rotate_portal(world, overlap_seconds=3600)
    peer = world.service.peers.get("portal")
    assert (peer.keyid, peer.previous.keyid if peer.previous else None) == ("portal-2", "portal")
    assert peer.previous_until == world.clock() + timedelta(seconds=3600)
    updated = _only(world.entries("exchange.peer.updated"))
    assert updated.data["previous_keyid"] == "portal" and updated.data["keyid"] == "portal-2"
    assert {"keyid", "key_sha256", "previous_keyid", "previous_until"} <= set(updated.data["changed"])

    during_old = world.verify(world.signed(old), via="test")
    during_new = world.verify(world.signed(new), via="test")
    assert during_old.accepted and during_old.keyid == "portal" and during_old.peer == "portal"
    assert during_new.accepted and during_new.keyid == "portal-2"

    world.clock.advance(3600)
    after = world.verify(world.signed(old), via="test")
    assert not after.accepted and after.reason == "unknown-key"
    assert (after.peer, after.keyid) == ("portal", "portal")
    refused = _only(world.entries("exchange.rejected"))
    assert refused.data["keyid"] == "portal" and "replaced key" in refused.data["detail"]
    assert world.verify(world.signed(new), via="test").accepted
    # The two first nonces expired and were purged; the refused message burnt none.
    assert world.nonces() == 1


def test_a_rotation_without_overlap_refuses_the_old_key_at_once(world: World) -> None:
    old = world.portal
    new = _rotate_portal(world)
    assert world.service.peers.get("portal").previous is None
    assert world.verify(world.signed(old), via="test").reason == "unknown-key"
    assert world.verify(world.signed(new), via="test").accepted


def test_ending_the_overlap_early_refuses_the_replaced_key_from_then_on(world: World) -> None:
    old = world.portal
    _rotate_portal(world, overlap_seconds=86_400)
    assert world.verify(world.signed(old), via="test").accepted
    world.service.peers.update("portal", end_overlap=True, actor="user:admin")
    ended = world.entries("exchange.peer.updated")[-1]
    assert ended.data["previous_keyid"] is None and "previous_keyid" in ended.data["changed"]
    assert world.verify(world.signed(old), via="test").reason == "unknown-key"


def test_a_response_signed_with_the_replaced_key_is_accepted_during_the_overlap(world: World) -> None:
    new = ExchangeSigningKey.from_private_key("one-stop-2", ed25519.Ed25519PrivateKey.generate())
    world.service.peers.update("one-stop", keyid="one-stop-2", key_pem=new.peer_key().public_pem(), overlap_seconds=60)
    request = HttpRequest("POST", "http://127.0.0.1:9/v1/dossiers", {}, b"{}")
    response = HttpResponse(201, {"Content-Type": "application/json"}, b"{}", request)
    signed_old = response.with_headers(sign_response(response, world.one_stop, clock=world.clock).as_dict())
    assert world.verify_response(signed_old, expected_peer="one-stop", via="test").accepted
    world.clock.advance(61)
    signed_old = response.with_headers(sign_response(response, world.one_stop, clock=world.clock).as_dict())
    assert world.verify_response(signed_old, expected_peer="one-stop", via="test").reason == "unknown-key"


def test_going_back_to_the_replaced_key_makes_it_current_again(world: World) -> None:
    old = world.portal
    _rotate_portal(world, overlap_seconds=3600)
    world.service.peers.update("portal", keyid="portal", key_pem=old.peer_key().public_pem())
    peer = world.service.peers.get("portal")
    assert peer.keyid == "portal" and peer.previous is None
    assert world.verify(world.signed(old), via="test").accepted


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"overlap_seconds": 60}, InvalidPeer),  # no new key
        ({"new_key": True, "keyid": "portal", "overlap_seconds": 60}, InvalidPeer),  # same keyid for both keys
        ({"new_key": True, "keyid": "portal-2", "overlap_seconds": 31 * 86_400}, InvalidPeer),
        ({"new_key": True, "keyid": "portal-2", "overlap_seconds": -1}, InvalidPeer),
        ({"new_key": True, "keyid": "portal-2", "overlap_seconds": 60, "end_overlap": True}, InvalidPeer),
        ({"new_key": True, "keyid": "one-stop"}, PeerAlreadyExists),  # another peer's current keyid
        ({"new_key": True, "keyid": "one-stop-old"}, PeerAlreadyExists),  # another peer's replaced keyid
    ],
    ids=["no-key-change", "same-keyid", "too-long", "negative", "start-and-end", "taken", "taken-previous"],
)
def test_a_refused_rotation_writes_nothing(world: World, kwargs: dict[str, Any], error: type[Exception]) -> None:
    # one-stop holds "one-stop" as its current keyid and "one-stop-old" as its replaced one.
    rotated = ExchangeSigningKey.from_private_key("one-stop", ed25519.Ed25519PrivateKey.generate())
    world.service.peers.update("one-stop", keyid="one-stop-old")
    world.service.peers.update(
        "one-stop", keyid="one-stop", key_pem=rotated.peer_key().public_pem(), overlap_seconds=60
    )
    taken = world.service.peers.get("one-stop")
    assert (taken.keyid, taken.previous.keyid if taken.previous else None) == ("one-stop", "one-stop-old")
    before, stored = len(world.entries()), world.service.peers.get("portal")
    args = dict(kwargs)
    if args.pop("new_key", False):
        args["key_pem"] = (
            ExchangeSigningKey.from_private_key("x", ed25519.Ed25519PrivateKey.generate()).peer_key().public_pem()
        )
    with pytest.raises(error):
        world.service.peers.update("portal", **args)
    assert len(world.entries()) == before
    assert world.service.peers.get("portal") == stored


def test_a_new_peer_cannot_take_a_keyid_kept_for_an_overlap(world: World) -> None:
    _rotate_portal(world, overlap_seconds=3600)
    before = len(world.entries())
    other = ExchangeSigningKey.from_private_key("portal", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(PeerAlreadyExists):
        world.service.peers.add("vssid", keyid="portal", key_pem=other.peer_key().public_pem())
    assert len(world.entries()) == before
    with pytest.raises(PeerNotFound):
        world.service.peers.get("vssid")


def test_rejections_never_raise_on_garbage(world: World) -> None:
    garbage = HttpRequest("POST", URL, {"Signature-Input": "x=(", "Signature": "\u00ff" * 10}, b"\x00" * 10)
    _rejected(world, world.verify(garbage, via="test"), "malformed-signature")


# --- replay guard: atomicity and retention --------------------------------------------------------


def test_concurrent_copies_of_one_message_are_accepted_exactly_once(world: World) -> None:
    message = world.signed()
    verdicts: list[ExchangeVerdict] = []
    barrier = threading.Barrier(8)

    def check() -> None:
        barrier.wait()
        verdicts.append(world.verify(message, via="test"))

    threads = [threading.Thread(target=check) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.accepted for v in verdicts) == [False] * 7 + [True]
    assert {v.reason for v in verdicts if not v.accepted} == {"replayed-nonce"}
    assert len(world.entries("exchange.accepted")) == 1


def test_concurrent_distinct_messages_are_each_accepted_with_their_own_nonce(world: World) -> None:
    messages = [world.signed() for _ in range(12)]
    verdicts: list[ExchangeVerdict] = []
    barrier = threading.Barrier(len(messages))

    def check(message: HttpRequest) -> None:
        barrier.wait()
        verdicts.append(world.verify(message, via="test"))

    threads = [threading.Thread(target=check, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [v.accepted for v in verdicts] == [True] * len(messages)
    assert world.nonces() == len(messages)
    assert len(world.entries("exchange.accepted")) == len(messages)


def test_a_large_group_commit_claims_every_nonce_once(world: World) -> None:
    """More messages than one nonce INSERT holds, committed together: the writer is held in a
    batch while they queue up behind it. Each is accepted once; each copy sent again is not."""
    messages = [world.signed() for _ in range(80)]
    verdicts: list[ExchangeVerdict] = []
    threads = [
        threading.Thread(target=lambda m=m: verdicts.append(world.verify(m, via="test")))
        for m in messages + messages[:5]
    ]
    with writer_held(world.audit, len(threads)):
        for t in threads:
            t.start()
    for t in threads:
        t.join(30)
    assert sum(v.accepted for v in verdicts) == 80
    assert sorted(str(v.reason) for v in verdicts if not v.accepted) == ["replayed-nonce"] * 5
    assert world.nonces() == 80
    assert len(world.entries("exchange.accepted")) == 80
    assert [v.accepted for v in (world.verify(m, via="test") for m in messages[-3:])] == [False] * 3


def test_nonces_are_kept_until_expiry_then_purged(world: World) -> None:
    world.verify(world.signed(lifetime_seconds=60), via="test")
    world.verify(world.signed(lifetime_seconds=300), via="test")
    assert world.service.nonces.purge_expired() == 0
    world.clock.advance(61)
    assert world.service.nonces.purge_expired() == 1
    world.clock.advance(240)
    assert world.service.nonces.purge_expired() == 1
    assert world.nonces() == 0


def test_verification_purges_expired_nonces_by_itself(world: World) -> None:
    world.verify(world.signed(lifetime_seconds=5), via="test")
    world.clock.advance(timedelta(minutes=2).total_seconds())
    world.verify(world.signed(), via="test")
    assert world.nonces() == 1


# --- archive ----------------------------------------------------------------------------------


def test_archive_keeps_bodies_of_accepted_and_rejected_messages_when_on(engine: Engine) -> None:
    w = World(engine, archive=True)
    try:
        w.register()
        ok = w.verify(w.signed(), via="test")
        bad = w.verify(HttpRequest("POST", URL, {}, b"unsigned body"), via="test")
        assert [r["body"] for r in w.service.archived(ok.message_id)] == [BODY]
        (row,) = w.service.archived(bad.message_id)
        assert (row["verdict"], row["reason"], row["audit_seq"]) == ("rejected", "unsigned", bad.audit_seq)
    finally:
        w.audit.close()


def test_archive_is_off_by_default(world: World) -> None:
    world.verify(world.signed(), via="test")
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(exchange_archive)).scalar_one() == 0


def test_demo_peers_are_seeded_once_from_the_demo_certificates(engine: Engine) -> None:
    from pathlib import Path

    w = World(engine)
    try:
        keys = Path(__file__).resolve().parents[2] / "keys.example"
        assert w.service.peers.seed_demo(keys) == "registered the demo exchange peers portal, one-stop, gateway"
        assert w.service.peers.seed_demo(keys) is None
        assert [p.name for p in w.service.peers.all()] == ["gateway", "one-stop", "portal"]
        assert w.service.peers.get("portal").route_for("POST", "/gateway/one-stop/v1/dossiers") is not None
    finally:
        w.audit.close()


def test_a_registry_from_before_rotation_overlaps_keeps_its_peers_through_the_upgrade(engine: Engine) -> None:
    # exchange_0002 adds the previous-key columns: an existing registry keeps its peers, which
    # verify as before, with no previous key; the migration also steps back down cleanly.
    from alembic import command

    from integrity.migrate import _config, upgrade

    world = World(engine)
    world.register()
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "exchange_0001")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(exchange_peers)).scalar_one() == 2
    assert upgrade(engine) == ["exchange_0002"]
    fresh = ExchangeService(engine, clock=world.clock, audit=world.audit, skew_seconds=300)
    peer = fresh.peers.get("portal")
    assert peer.keyid == "portal" and peer.previous is None and peer.previous_until is None
    assert asyncio.run(fresh.verify_request(world.signed(), via="test")).accepted
    world.audit.close()
