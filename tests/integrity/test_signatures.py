"""Signing use cases: every signature handed out and every verification is in the audit log;
bad requests are refused with nothing signed or logged; batches are all-or-nothing; a person
signs only with their own key, after the activation's second factor."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from audit import store as audit_store
from auth.errors import InvalidCredentials
from integrity.audit_service import AuditService
from integrity.clock import FrozenClock
from integrity.errors import PersonalKeyUnavailable
from integrity.personal_documents import Channel, Document, Person, PersonalFormat
from integrity.personal_signing import ACTION_REFUSED, ACTION_SIGNED, PersonalSigningService
from integrity.second_factor import FactorMethod
from integrity.signatures import BootstrapKey, SignatureService, SignRequest, payload_digest
from signing.algorithms import Algorithm
from signing.errors import (
    BatchTooLarge,
    InvalidEncoding,
    InvalidRequest,
    KeyNotUsable,
    PayloadTooLarge,
    UnknownFormat,
    UnknownKey,
)
from signing.purposes import KeyPurpose
from signing.results import SubIndication
from signing.trust import TrustPolicy
from tests.signing._pki import TestCa, rsa_key

PASS = b"test keystore passphrase"
PAYLOAD = "Tờ khai đăng ký tham gia BHXH".encode()


@dataclass
class World:
    clock: FrozenClock
    audit: AuditService
    service: SignatureService
    ca: TestCa

    def entries(self, action: str | None = None) -> list[Any]:
        found = self.audit.entries(0, self.audit.size())
        return [e for e in found if action is None or e.action == action]


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    clock = FrozenClock()
    audit = AuditService(
        engine,
        clock=clock,
        log_id="test",
        checkpoint_key=ed25519.Ed25519PrivateKey.generate(),
        checkpoint_key_name="test/audit",
        checkpoint_every=10_000,
        checkpoint_seconds=3600,
    )
    ca = TestCa.create()
    private = rsa_key()
    cert = ca.issue(private.public_key(), "One-stop signing (test)")
    service = SignatureService.open(
        engine,
        clock,
        audit,
        passphrase=PASS,
        trust=TrustPolicy([ca.cert]),
        bootstrap=[BootstrapKey(private, (cert, ca.cert), KeyPurpose.DATA_MESSAGE)],
        max_payload_bytes=4096,
        max_batch_items=5,
    )
    yield World(clock, audit, service, ca)
    audit.close()


def test_service_built_before_migration_loads_keys_on_first_use(tmp_path: Any) -> None:
    from integrity.db import make_engine
    from integrity.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path}/late.db")
    clock = FrozenClock()
    audit = AuditService(
        engine,
        clock=clock,
        log_id="test",
        checkpoint_key=ed25519.Ed25519PrivateKey.generate(),
        checkpoint_key_name="test/audit",
        checkpoint_every=10_000,
        checkpoint_seconds=3600,
    )
    try:
        service = SignatureService.open(engine, clock, audit, passphrase=PASS, trust=TrustPolicy([]))
        upgrade(engine)
        kid = service.generate_key(Algorithm.ED25519, actor="system").kid
        signed = service.sign(SignRequest("jws", PAYLOAD, key_id=kid), actor="system")
        assert service.verify("jws", signed.signature, None, actor="system").result.valid
    finally:
        audit.close()
        engine.dispose()


def test_wrong_keystore_passphrase_stops_start_up(engine: Engine, world: World) -> None:
    from signing.errors import KeyImportFailed

    with pytest.raises(KeyImportFailed):
        SignatureService.open(engine, world.clock, world.audit, passphrase=b"wrong", trust=world.service.trust)


def _ed25519(world: World) -> str:
    return world.service.generate_key(Algorithm.ED25519, actor="user:admin").kid


def test_bootstrap_key_is_imported_once_and_logged(engine: Engine, world: World) -> None:
    records = world.service.list_keys()
    assert len(records) == 1 and records[0].algorithm is Algorithm.PS256
    again = SignatureService.open(
        engine,
        world.clock,
        world.audit,
        passphrase=PASS,
        trust=world.service.trust,
        bootstrap=[BootstrapKey(rsa_key(), (records[0].certificate, world.ca.cert), KeyPurpose.DATA_MESSAGE)],
    )
    assert len(again.list_keys()) == 1
    assert len(world.entries("key.imported")) == 1


@pytest.mark.parametrize(("fmt", "detached"), [("jws", False), ("jws", True), ("cms", True)])
def test_signature_is_logged_and_verifies(world: World, fmt: str, detached: bool) -> None:
    signed = world.service.sign(SignRequest(fmt, PAYLOAD, detached=detached), actor="client:portal")
    entry = world.entries("signature.created")[-1]
    assert entry.seq == signed.audit_seq and entry.actor == "client:portal"
    assert entry.subject == payload_digest(PAYLOAD)
    assert entry.data["key_id"] == signed.key_id and entry.data["format"] == fmt and entry.data["alg"] == "PS256"
    checked = world.service.verify(fmt, signed.signature, PAYLOAD if detached else None, actor="client:portal")
    assert checked.result.valid, checked.result.reasons
    logged = world.entries("signature.verified")[-1]
    assert (
        logged.seq == checked.audit_seq and logged.data["valid"] is True and logged.data["indication"] == "TOTAL_PASSED"
    )
    assert logged.pii is not None  # the signer's subject went to the personal-data store


def test_tampered_payload_is_logged_as_a_failed_verification(world: World) -> None:
    signed = world.service.sign(SignRequest("cms", PAYLOAD), actor="client:portal")
    checked = world.service.verify("cms", signed.signature, PAYLOAD + b"x", actor="client:portal")
    assert checked.result.sub_indication is SubIndication.HASH_FAILURE
    assert world.entries("signature.verified")[-1].data["sub_indication"] == "HASH_FAILURE"


def test_xml_signature_round_trip_returns_the_signed_element(world: World) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    cert = world.ca.issue(private.public_key(), "XML signer")
    kid = world.service.import_key(private, [cert, world.ca.cert], actor="user:admin").kid
    doc = "<HoSo><NguoiNop>Trần Thị B</NguoiNop></HoSo>".encode()
    signed = world.service.sign(SignRequest("xml", doc, key_id=kid), actor="client:one-stop")
    checked = world.service.verify("xml", signed.signature, None, actor="client:one-stop")
    assert checked.result.valid and checked.signed_xml is not None
    assert "Trần Thị B".encode() in checked.signed_xml


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (SignRequest("pdf", PAYLOAD), UnknownFormat),
        (SignRequest("jws", b"x" * 4097), PayloadTooLarge),
        (SignRequest("jws", PAYLOAD, key_id="no-such-key"), UnknownKey),
        (SignRequest("xml", b"<a/>", detached=True), InvalidRequest),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_logged(world: World, request_: SignRequest, error: type) -> None:
    before = world.audit.size()
    with pytest.raises(error):
        world.service.sign(request_, actor="client:portal")
    assert world.audit.size() == before


def test_retired_key_cannot_be_chosen_to_sign(world: World) -> None:
    kid = _ed25519(world)
    world.service.retire_key(kid, actor="user:admin")
    before = world.audit.size()
    with pytest.raises(KeyNotUsable):
        world.service.sign(SignRequest("jws", PAYLOAD, key_id=kid), actor="client:portal")
    assert world.audit.size() == before


def test_batch_logs_one_entry_per_item_in_one_go(world: World) -> None:
    kid = _ed25519(world)
    items = [SignRequest("jws", f"item {i}".encode(), key_id=kid) for i in range(5)]
    signed = world.service.sign_batch(items, actor="client:portal")
    seqs = [s.audit_seq for s in signed]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    created = {e.seq: e for e in world.entries("signature.created")}
    assert [created[s].subject for s in seqs] == [payload_digest(f"item {i}".encode()) for i in range(5)]


def test_concurrent_batches_each_get_contiguous_entries(world: World) -> None:
    # Batches share group commits with each other and with single signatures; each batch's
    # entries must still be one unbroken run, in the batch's order.
    kid = _ed25519(world)
    results: dict[int, list[Any]] = {}

    def batch(n: int) -> None:
        items = [SignRequest("jws", f"batch {n} item {i}".encode(), key_id=kid) for i in range(5)]
        results[n] = world.service.sign_batch(items, actor="client:portal")

    def single(n: int) -> None:
        results[100 + n] = [
            world.service.sign(SignRequest("jws", f"single {n}".encode(), key_id=kid), actor="client:portal")
        ]

    threads = [threading.Thread(target=batch, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=single, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = {e.seq: e for e in world.entries("signature.created")}
    for n in range(4):
        seqs = [s.audit_seq for s in results[n]]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        assert [entries[q].subject for q in seqs] == [payload_digest(f"batch {n} item {i}".encode()) for i in range(5)]
    assert len({s.audit_seq for r in results.values() for s in r}) == 4 * 5 + 8


def test_batch_with_one_bad_item_signs_and_logs_nothing(world: World) -> None:
    kid = _ed25519(world)
    before = world.audit.size()
    items = [SignRequest("jws", b"ok", key_id=kid), SignRequest("jws", b"bad", key_id="unknown")]
    with pytest.raises(UnknownKey):
        world.service.sign_batch(items, actor="client:portal")
    with pytest.raises(BatchTooLarge):
        world.service.sign_batch([SignRequest("jws", b"x", key_id=kid)] * 6, actor="client:portal")
    with pytest.raises(InvalidRequest):
        world.service.sign_batch([], actor="client:portal")
    assert world.audit.size() == before


def test_batch_is_rolled_back_when_logging_fails(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    kid = _ed25519(world)
    before = world.audit.size()
    real = audit_store.append

    def failing(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # the entries are written in the commit's transaction, then it fails
        raise OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(audit_store, "append", failing)
    with pytest.raises(OperationalError):
        world.service.sign_batch([SignRequest("jws", bytes([i]), key_id=kid) for i in range(4)], actor="client:portal")
    monkeypatch.undo()
    assert world.audit.size() == before


@pytest.mark.parametrize(
    ("fmt", "signature", "payload", "error"),
    [
        ("pgp", "x", PAYLOAD, UnknownFormat),
        ("cms", "not base64!!", PAYLOAD, InvalidEncoding),
        ("cms", "AAAA", None, InvalidRequest),
        ("jws", "a.b.c", b"y" * 5000, PayloadTooLarge),
        ("xml", "AAAA", PAYLOAD, InvalidRequest),
    ],
)
def test_unusable_verification_requests_are_refused_unlogged(
    world: World, fmt: str, signature: str, payload: bytes | None, error: type
) -> None:
    before = world.audit.size()
    with pytest.raises(error):
        world.service.verify(fmt, signature, payload, actor="client:portal")
    assert world.audit.size() == before


def test_malformed_signature_is_a_logged_format_failure(world: World) -> None:
    checked = world.service.verify("cms", base64.b64encode(b"garbage").decode(), PAYLOAD, actor="client:portal")
    assert checked.result.sub_indication is SubIndication.FORMAT_FAILURE
    assert world.entries("signature.verified")[-1].data["valid"] is False


def test_rotation_and_revocation_through_the_service_are_logged(world: World) -> None:
    old = _ed25519(world)
    signed = world.service.sign(SignRequest("jws", PAYLOAD, key_id=old), actor="client:portal")
    world.clock.advance(10)
    new = world.service.generate_key(Algorithm.ED25519, actor="user:admin", rotate=True).kid
    assert world.service.verify("jws", signed.signature, None, actor="system").result.valid
    world.clock.advance(10)
    world.service.revoke_key(old, actor="user:admin", at=signed.signed_at - timedelta(seconds=1))
    assert (
        world.service.verify("jws", signed.signature, None, actor="system").result.sub_indication
        is SubIndication.REVOKED
    )
    actions = [e.action for e in world.entries() if e.subject in (f"key:{old}", f"key:{new}")]
    assert actions == ["key.generated", "key.rotated", "key.revoked"]


def test_jwks_lists_the_bootstrap_certificate(world: World) -> None:
    jwks = world.service.jwks()
    assert [k["alg"] for k in jwks["keys"]] == ["PS256"]
    assert len(jwks["keys"][0]["x5c"]) == 2
    json.dumps(jwks)


# --- personal signing ----------------------------------------------------------------------------


class _Factor:
    """A second factor as the use case sees it: it records what it was asked to be bound to."""

    method = FactorMethod.TOTP

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.challenges: list[bytes] = []

    def confirm(self, username: str, *, challenge: bytes, address: str) -> None:
        self.challenges.append(challenge)
        if self.error is not None:
            raise self.error


class _NoSessions:
    def authenticate_session(self, token: str) -> None:
        return None


def _personal(world: World) -> PersonalSigningService:
    return PersonalSigningService(world.service, _NoSessions())


def _personal_key(world: World, name: str) -> str:
    return world.service.generate_key(Algorithm.ES256, actor="user:admin", owner=f"user:{name}").kid


def test_personal_signing_without_the_second_factor_is_refused_and_logged(world: World) -> None:
    kid = _personal_key(world, "lan")
    personal, lan = _personal(world), Person("lan")
    activation = personal.request(lan, Document(PAYLOAD), PersonalFormat.JWS, channel=Channel.API)
    refusing = _Factor(InvalidCredentials("invalid code"))
    with pytest.raises(InvalidCredentials):
        personal.activate(lan, activation.id, Document(PAYLOAD), refusing, address="192.0.2.1", channel=Channel.API)
    assert world.entries(ACTION_SIGNED) == [] and world.entries("signature.created") == []
    refused = world.entries(ACTION_REFUSED)[-1]
    assert refused.actor == "user:lan" and refused.data["reason"] == "second_factor_failed"
    # The factor was asked to bind this activation and digest (a passkey signs that challenge).
    assert refusing.challenges == [activation.challenge]
    passing = _Factor()
    signed = personal.activate(lan, activation.id, Document(PAYLOAD), passing, address="192.0.2.1", channel=Channel.API)
    assert signed.key_id == kid and passing.challenges == [activation.challenge]
    entry = world.entries(ACTION_SIGNED)[-1]
    assert entry.actor == "user:lan" and entry.data["key_id"] == kid and entry.data["digest"] == activation.digest


def test_person_cannot_sign_with_another_persons_or_the_service_key(world: World) -> None:
    other = _personal_key(world, "minh")
    service_kid = world.service.list_keys()[0].kid
    personal = _personal(world)
    for kid in (other, service_kid, None):
        with pytest.raises(PersonalKeyUnavailable):
            personal.request(Person("lan"), Document(PAYLOAD), PersonalFormat.JWS, key_id=kid, channel=Channel.API)
    refused = world.entries(ACTION_REFUSED)
    assert [e.actor for e in refused] == ["user:lan"] * 3
    assert {e.data["reason"] for e in refused} == {"no_personal_key"}
    assert world.entries("signature.personal.requested") == []


def test_service_callers_cannot_use_a_personal_key(world: World) -> None:
    kid = _personal_key(world, "lan")
    with pytest.raises(KeyNotUsable):
        world.service.sign(SignRequest("jws", PAYLOAD, key_id=kid), actor="client:portal")
