"""Use cases for data-message signatures (Article 4.5): sign → log, verify → log, and key
management → log.

Every signature handed out has an audit entry (``signature.created``) committed first; every
verification, passed or failed, has one (``signature.verified``). Bad requests (unknown format,
unknown key, payload over the limit, not base64) are refused before anything is signed or
logged. A batch is all-or-nothing: its entries are appended in one transaction, and if that
fails no signature of the batch is returned.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from lxml import etree
from sqlalchemy import Connection, Engine, inspect

from audit.erasure import SERVICE_ACTOR
from integrity.audit_service import AuditService
from integrity.db import READ_ONLY
from integrity.logs import get_logger
from signing import cms, jws, xml
from signing.algorithms import Algorithm
from signing.errors import (
    ActiveKeyExists,
    BatchTooLarge,
    DuplicateKey,
    InvalidEncoding,
    InvalidRequest,
    KeyPurposeMismatch,
    PayloadTooLarge,
    TokenError,
    UnknownFormat,
)
from signing.keystore import (
    SERVICE_OWNER,
    KeyRecord,
    KeyState,
    Keystore,
    SigningKey,
    add_key,
    generate_key,
    key_id_for,
    list_keys,
    retire_key,
    revoke_key,
)
from signing.pkcs11 import KeyToken, token_object_id
from signing.purposes import KeyPurpose
from signing.results import VerificationResult
from signing.tables import signing_keys
from signing.trust import TrustPolicy

if TYPE_CHECKING:
    from integrity.keys import ServiceKeys

Clock = Callable[[], datetime]

FORMATS = ("jws", "cms", "xml")
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
MAX_BATCH_ITEMS = 1_000
# Another instance may rotate or revoke; the keystore re-reads states at most this often.
KEY_REFRESH_SECONDS = 5.0
# Signatures cheap enough to make on the event loop (tens of microseconds): a worker-thread
# hop would cost more than the signature. RSA, CMS and XML go to a worker thread.
INLINE_ALGORITHMS = frozenset({Algorithm.ED25519, Algorithm.ES256})
INLINE_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class SignRequest:
    format: str
    payload: bytes
    detached: bool = False
    key_id: str | None = None


@dataclass(frozen=True)
class SignedMessage:
    """A signature as handed out: JWS compact text; base64 DER for CMS; base64 of the signed
    XML document for XML."""

    format: str
    signature: str
    key_id: str
    alg: str
    signed_at: datetime
    detached: bool
    audit_seq: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "signature": self.signature,
            "key_id": self.key_id,
            "alg": self.alg,
            "signed_at": self.signed_at.isoformat().replace("+00:00", "Z"),
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class Verification:
    """A verdict with its audit entry; for XML also the bytes of the element the signature
    covers (callers must read the dossier from here, never from the document they sent)."""

    result: VerificationResult
    audit_seq: int
    signed_xml: bytes | None = None


@dataclass(frozen=True)
class BootstrapKey:
    """A configured key the keystore takes in on first start, with the purpose it serves."""

    private_key: PrivateKeyTypes
    chain: Sequence[x509.Certificate]
    purpose: KeyPurpose


@dataclass(frozen=True)
class _Prepared:
    request: SignRequest
    key: SigningKey


@dataclass(frozen=True)
class _Made:
    prepared: _Prepared
    signature: str
    signed_at: datetime


def payload_digest(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def decode_base64(value: str, field: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4); anything else is the caller's error."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEncoding(f"{field} is not valid base64") from exc


class SignatureService:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        audit: AuditService,
        keystore: Keystore,
        trust: TrustPolicy,
        *,
        passphrase: bytes | None,
        token: KeyToken | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        max_batch_items: int = MAX_BATCH_ITEMS,
        refresh_seconds: float = KEY_REFRESH_SECONDS,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.keystore = keystore
        self.trust = trust
        self.max_payload_bytes = max_payload_bytes
        self.max_batch_items = max_batch_items
        self._passphrase = passphrase
        self.token = token
        self._refresh_seconds = refresh_seconds
        self._refreshed = time.monotonic()
        self._bootstrap: tuple[BootstrapKey, ...] = ()
        self._bootstrap_actor = SERVICE_ACTOR
        self._loaded = True
        self._load_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        engine: Engine,
        clock: Clock,
        audit: AuditService,
        *,
        passphrase: bytes | None,
        trust: TrustPolicy,
        token: KeyToken | None = None,
        bootstrap: Iterable[BootstrapKey] = (),
        bootstrap_actor: str = SERVICE_ACTOR,
        **limits: Any,
    ) -> SignatureService:
        """A service over the stored keystore. ``bootstrap`` keys (the configured receipt key
        and data-message key, with their chains) are added on first start, each with its
        purpose, if the keystore does not hold them yet; a key that was later retired or
        revoked is never brought back. One stored, still active, under another purpose stops
        start-up: the receipt key must never be left able to sign data messages.

        Keys are loaded here, so a wrong passphrase stops start-up; only when the schema is not
        migrated yet (``init`` builds the state before migrating) is loading put off to first use.
        ``bootstrap_actor`` logs those imports: the operator running ``init``, else the service.
        """
        service = cls(
            engine,
            clock,
            audit,
            Keystore(passphrase=passphrase, token=token),
            trust,
            passphrase=passphrase,
            token=token,
            **limits,
        )
        service._bootstrap = tuple(bootstrap)
        service._bootstrap_actor = bootstrap_actor
        service._loaded = False
        if inspect(engine).has_table(signing_keys.name):
            service._ensure_loaded()
        return service

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            with self.engine.begin() as conn:
                known = {r.kid: r for r in list_keys(conn)}
                for boot in self._bootstrap:
                    stored = known.get(key_id_for(boot.private_key.public_key()))
                    if stored is not None:
                        _check_bootstrap_purpose(stored, boot.purpose)
                        continue
                    try:
                        # A savepoint: another instance starting at the same moment may win the insert.
                        with conn.begin_nested():
                            record = add_key(
                                conn,
                                boot.private_key,
                                boot.chain,
                                passphrase=self._passphrase,
                                clock=self.clock,
                                purpose=boot.purpose,
                            )
                    except (DuplicateKey, ActiveKeyExists):
                        continue
                    data = _key_data(record)
                    self.audit.record(self._bootstrap_actor, "key.imported", f"key:{record.kid}", data, conn=conn)
                self.keystore.reload(conn)
            self._refreshed = time.monotonic()
            self._loaded = True

    # ------------------------------------------------------------------ signing

    def _refresh_if_due(self) -> None:
        self._ensure_loaded()
        now = time.monotonic()
        if now - self._refreshed < self._refresh_seconds:
            return
        self._refreshed = now  # first, so that concurrent requests do not all reload
        self.reload_keys()

    def reload_keys(self) -> None:
        self._ensure_loaded()
        # A deferred (snapshot) read: on SQLite it must not queue behind the audit writer.
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            self.keystore.reload(conn)
        self._refreshed = time.monotonic()

    def _prepare(self, request: SignRequest, owner: str) -> _Prepared:
        # The institution signs data messages with its data-message key; a person's key and the
        # receipt key are never reachable from here (Decision 352).
        if request.format not in FORMATS:
            raise UnknownFormat(f"unknown signature format {request.format!r}: use jws, cms or xml")
        if len(request.payload) > self.max_payload_bytes:
            raise PayloadTooLarge(f"the payload exceeds {self.max_payload_bytes} bytes")
        if request.format == "xml" and request.detached:
            raise InvalidRequest("XML signatures are enveloped; detached does not apply")
        purpose = KeyPurpose.DATA_MESSAGE if owner == SERVICE_OWNER else KeyPurpose.PERSONAL
        key = self.keystore.signing_key(request.key_id, owner=owner, purpose=purpose)
        return _Prepared(request, key)

    def _make(self, prepared: _Prepared) -> _Made:
        request, key = prepared.request, prepared.key
        now = self.clock()
        if request.format == "jws":
            signature = jws.sign(key, request.payload, signed_at=now, detached=request.detached).token
        elif request.format == "cms":
            signature = base64.b64encode(cms.sign(key, request.payload, signed_at=now).der).decode("ascii")
        else:
            signature = base64.b64encode(xml.sign(key, request.payload, signed_at=now).document).decode("ascii")
        return _Made(prepared, signature, now)

    @staticmethod
    def _event(made: _Made) -> tuple[str, dict[str, Any]]:
        request, key = made.prepared.request, made.prepared.key
        data: dict[str, Any] = {
            "format": request.format,
            "key_id": key.kid,
            "alg": key.algorithm.value,
            "purpose": key.purpose.value,
            "detached": request.detached or request.format == "cms",
            "bytes": len(request.payload),
        }
        return payload_digest(request.payload), data

    @staticmethod
    def _message(made: _Made, seq: int) -> SignedMessage:
        request, key = made.prepared.request, made.prepared.key
        return SignedMessage(
            request.format,
            made.signature,
            key.kid,
            key.algorithm.value,
            made.signed_at,
            request.detached or request.format == "cms",
            seq,
        )

    def _record(self, made: _Made, actor: str) -> SignedMessage:
        subject, data = self._event(made)
        return self._message(made, self.audit.record(actor, "signature.created", subject, data))

    def sign(self, request: SignRequest, *, actor: str) -> SignedMessage:
        """Sign with the institution's data-message key and log; the signature is returned only
        once its audit entry is committed. A person signs with their own key through
        ``integrity.personal_signing`` only, never here."""
        self._refresh_if_due()
        made = self._make(self._prepare(request, SERVICE_OWNER))
        return self._record(made, actor)

    async def sign_async(self, request: SignRequest, *, actor: str) -> SignedMessage:
        """``sign`` for a request handler: a small Ed25519/ES256 JWS is made on the event loop
        and its audit entry awaited (no worker-thread hop); anything heavier is made in a
        worker thread. Same checks, same entry, same guarantee."""
        await self._refresh_if_due_async()
        prepared = self._prepare(request, SERVICE_OWNER)
        if self._inline(prepared):
            made = self._make(prepared)
        else:
            made = await asyncio.to_thread(self._make, prepared)
        subject, data = self._event(made)
        return self._message(made, await self.audit.record_async(actor, "signature.created", subject, data))

    def sign_batch(self, requests: Sequence[SignRequest], *, actor: str) -> list[SignedMessage]:
        """Sign up to ``max_batch_items`` payloads; one audit entry per item, all appended in
        one transaction (shared with concurrent callers by the group committer), or none.
        Every item is checked before anything is signed, so one bad item refuses the batch."""
        made = self._make_batch(requests)
        return [
            self._message(m, seq)
            for m, seq in zip(made, self.audit.record_many(self._batch_events(made, actor)), strict=True)
        ]

    async def sign_batch_async(self, requests: Sequence[SignRequest], *, actor: str) -> list[SignedMessage]:
        """``sign_batch`` for a request handler: the signing runs in one worker thread, the
        audit entries are awaited on the event loop."""
        await self._refresh_if_due_async()
        made = await asyncio.to_thread(self._make_batch, requests)
        seqs = await self.audit.record_many_async(self._batch_events(made, actor))
        return [self._message(m, seq) for m, seq in zip(made, seqs, strict=True)]

    def _make_batch(self, requests: Sequence[SignRequest]) -> list[_Made]:
        if not requests:
            raise InvalidRequest("the batch is empty")
        if len(requests) > self.max_batch_items:
            raise BatchTooLarge(f"at most {self.max_batch_items} items per batch")
        self._refresh_if_due()
        prepared = [self._prepare(r, SERVICE_OWNER) for r in requests]
        return [self._make(p) for p in prepared]

    def _batch_events(self, made: Sequence[_Made], actor: str) -> list[tuple[str, str, str, dict[str, Any], None]]:
        return [(actor, "signature.created", *self._event(m), None) for m in made]

    @staticmethod
    def _inline(prepared: _Prepared) -> bool:
        request = prepared.request
        private_key = prepared.key.private_key
        return (
            request.format == "jws"
            and prepared.key.algorithm in INLINE_ALGORITHMS
            and len(request.payload) <= INLINE_MAX_BYTES
            # a token round trip may block
            and (private_key is None or token_object_id(private_key) is None)
        )

    async def _refresh_if_due_async(self) -> None:
        # The (rare) reload reads the database: never on the event loop.
        if not self._loaded or time.monotonic() - self._refreshed >= self._refresh_seconds:
            await asyncio.to_thread(self._refresh_if_due)

    # -------------------------------------------------------------- verification

    def verify(self, fmt: str, signature: str, payload: bytes | None, *, actor: str) -> Verification:
        """Verify and log the verdict. A signature that cannot be parsed is a verdict too
        (FORMAT_FAILURE), logged like any other; only requests that cannot be evaluated at
        all (unknown format, missing payload, payload too large) are refused."""
        if fmt not in FORMATS:
            raise UnknownFormat(f"unknown signature format {fmt!r}: use jws, cms or xml")
        if payload is not None and len(payload) > self.max_payload_bytes:
            raise PayloadTooLarge(f"the payload exceeds {self.max_payload_bytes} bytes")
        if fmt == "cms" and payload is None:
            raise InvalidRequest("a CMS signature is detached: the payload is required")
        if fmt == "xml" and payload is not None:
            raise InvalidRequest("an XML signature is enveloped: send the signed document as the signature")
        self._refresh_if_due()
        now = self.clock()
        signed_xml: bytes | None = None
        if fmt == "jws":
            result = jws.verify(signature, self.keystore, self.trust, now=now, payload=payload)
            subject_bytes = payload if payload is not None else signature.encode()
        else:
            raw = decode_base64(signature, "signature")
            if fmt == "cms":
                assert payload is not None
                result = cms.verify(raw, payload, self.keystore, self.trust, now=now)
                subject_bytes = payload
            else:
                outcome = xml.verify(raw, self.keystore, self.trust, now=now)
                result = outcome.result
                subject_bytes = raw
                if outcome.signed_element is not None:
                    signed_xml = etree.tostring(outcome.signed_element, encoding="UTF-8")
        data: dict[str, Any] = {
            "format": fmt,
            "valid": result.valid,
            "indication": result.indication.value,
            "sub_indication": result.sub_indication.value if result.sub_indication else None,
            "key_id": result.key_id,
        }
        if result.signer is not None and result.signer.serial is not None:
            data["signer_serial"] = result.signer.serial
        if result.signer is not None and result.signer.purpose is not None:
            data["signer_purpose"] = result.signer.purpose
        # A personal certificate names a person: the subject goes to the separate PII store.
        pii = {"signer": result.signer.subject} if result.signer and result.signer.subject else None
        seq = self.audit.record(actor, "signature.verified", payload_digest(subject_bytes), data, pii)
        return Verification(result, seq, signed_xml)

    # -------------------------------------------------------------- key management

    def list_keys(self) -> list[KeyRecord]:
        self._ensure_loaded()
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return list_keys(conn)

    def jwks(self) -> dict[str, Any]:
        self._refresh_if_due()
        return self.keystore.jwks()

    def _change(
        self, action: str, actor: str, change: Callable[[Connection], KeyRecord], approved_by: str | None = None
    ) -> KeyRecord:
        self._ensure_loaded()
        with self.engine.begin() as conn:
            record = change(conn)
            data = _key_data(record) | ({"approved_by": approved_by} if approved_by else {})
            self.audit.record(actor, action, f"key:{record.kid}", data, conn=conn)
        self.reload_keys()
        return record

    def generate_key(
        self,
        algorithm: Algorithm,
        *,
        actor: str,
        rotate: bool = False,
        owner: str = SERVICE_OWNER,
        purpose: KeyPurpose | None = None,
        rsa_bits: int = 3072,
        on_token: bool = False,
        approved_by: str | None = None,
    ) -> KeyRecord:
        """A new key, made on the PKCS#11 token when ``on_token`` (the production way), for
        ``purpose`` (by default data messages, or personal for a person's key). ``approved_by``:
        the admin who confirmed an operator's rotation (``user:<name>``)."""
        token = self._token() if on_token else None
        return self._change(
            "key.rotated" if rotate else "key.generated",
            actor,
            lambda conn: generate_key(
                conn,
                algorithm,
                passphrase=self._passphrase,
                clock=self.clock,
                owner=owner,
                purpose=purpose,
                rotate=rotate,
                rsa_bits=rsa_bits,
                token=token,
            ),
            approved_by=approved_by,
        )

    def import_token_key(
        self,
        label: str,
        chain: Sequence[x509.Certificate],
        *,
        actor: str,
        rotate: bool = False,
        owner: str = SERVICE_OWNER,
        purpose: KeyPurpose | None = None,
    ) -> KeyRecord:
        """Bring into the keystore a key pair already on the token (made there by the HSM's own
        tools, its certificate issued by a CA), found by its label."""
        return self.import_key(
            self._token().key_by_label(label), chain, actor=actor, rotate=rotate, owner=owner, purpose=purpose
        )

    def _token(self) -> KeyToken:
        if self.token is None:
            raise TokenError("no PKCS#11 token is configured: set BHXH_PKCS11_MODULE, _TOKEN_LABEL and _PIN_FILE")
        return self.token

    def _erase_from_token(self, record: KeyRecord) -> None:
        # The token-side counterpart of erasing the encrypted key: a retired or revoked key must
        # never sign again. The database already says so; a failure here is logged, not raised.
        if record.token_object_id is None or self.token is None:
            return
        try:
            self.token.destroy(record.token_object_id)
        except TokenError as exc:
            get_logger().error("token_key_not_erased", kid=record.kid, error=str(exc))

    def import_key(
        self,
        private_key: PrivateKeyTypes,
        chain: Sequence[x509.Certificate],
        *,
        actor: str,
        rotate: bool = False,
        owner: str = SERVICE_OWNER,
        purpose: KeyPurpose | None = None,
    ) -> KeyRecord:
        return self._change(
            "key.imported",
            actor,
            lambda conn: add_key(
                conn,
                private_key,
                chain,
                passphrase=self._passphrase,
                clock=self.clock,
                owner=owner,
                purpose=purpose,
                rotate=rotate,
            ),
        )

    def retire_key(self, kid: str, *, actor: str, approved_by: str | None = None) -> KeyRecord:
        """``approved_by``: the admin who confirmed an operator's command (``user:<name>``)."""
        record = self._change(
            "key.retired", actor, lambda conn: retire_key(conn, kid, clock=self.clock), approved_by=approved_by
        )
        self._erase_from_token(record)
        return record

    def revoke_key(
        self, kid: str, *, actor: str, at: datetime | None = None, approved_by: str | None = None
    ) -> KeyRecord:
        record = self._change(
            "key.revoked", actor, lambda conn: revoke_key(conn, kid, clock=self.clock, at=at), approved_by=approved_by
        )
        self._erase_from_token(record)
        return record


def _check_bootstrap_purpose(stored: KeyRecord, purpose: KeyPurpose) -> None:
    if stored.purpose is not purpose and stored.state is KeyState.ACTIVE:
        raise KeyPurposeMismatch(
            f"the configured {purpose.value} key {stored.kid} is in the keystore as an active "
            f"{stored.purpose.value} key: retire it (`bhxh-integrity keys retire {stored.kid}`) before starting"
        )


def _key_data(record: KeyRecord) -> dict[str, Any]:
    data: dict[str, Any] = {
        "algorithm": record.algorithm.value,
        "state": record.state.value,
        "purpose": record.purpose.value,
    }
    if record.owner:
        data["owner"] = record.owner
    if record.certificate is not None:
        data["certificate_serial"] = format(record.certificate.serial_number, "x")
    if record.token_object_id is not None:
        data["pkcs11_object_id"] = record.token_object_id
    if record.revoked_at is not None:
        data["revoked_at"] = record.revoked_at.isoformat()
    return data


def build_signature_service(
    keys: ServiceKeys,
    engine: Engine,
    clock: Clock,
    audit: AuditService,
    *,
    anchor_files: Sequence[Path] = (),
    crl_files: Sequence[Path] = (),
    fetch_revocation: bool = False,
    token: KeyToken | None = None,
    bootstrap_actor: str = SERVICE_ACTOR,
    **limits: Any,
) -> SignatureService:
    """The service as the application wires it: trust anchors are the configured CA
    certificates (plus ``anchor_files``), revocation from ``crl_files`` (and OCSP/CRL fetching
    when allowed), and the one-stop signing key with its chain in the keystore."""
    file_policy = TrustPolicy.from_files(anchor_files, crl_files, fetch_revocation=fetch_revocation)
    trust = TrustPolicy(
        [*keys.ca_certificates, *file_policy.anchors],
        [path.read_bytes() for path in crl_files],
        fetch_revocation=fetch_revocation,
    )

    def chain_of(certificate: x509.Certificate) -> tuple[x509.Certificate, ...]:
        return (certificate, *(c for c in keys.ca_certificates if c != certificate))

    bootstrap: list[BootstrapKey] = []
    # A receipt key on the token is not seeded into the keystore: retiring a keystore key erases
    # its token object, which would take the receipts' key with it. In the keystore the receipt
    # key is listed, published and checked for revocation, but signs nothing (its purpose).
    if keys.one_stop_key is not None:
        bootstrap.append(BootstrapKey(keys.one_stop_key, chain_of(keys.one_stop_certificate), KeyPurpose.RECEIPT))
    if keys.data_message_key is not None:
        data = keys.data_message_key
        bootstrap.append(BootstrapKey(data.private_key, chain_of(data.certificate), KeyPurpose.DATA_MESSAGE))
    return SignatureService.open(
        engine,
        clock,
        audit,
        passphrase=keys.passphrase,
        trust=trust,
        token=token,
        bootstrap=bootstrap,
        bootstrap_actor=bootstrap_actor,
        **limits,
    )
