"""A person signs a document with their own key, under their sole control (remote signing in
the manner of EN 419 241-1: the signature activation is bound to what is signed).

request → an activation bound to the document's SHA-256, the person's key and the format, for
five minutes → a fresh second factor (``integrity.second_factor``) → the activation is spent →
one signature (JWS, CMS/CAdES, PDF/PAdES) → ``signature.personal.signed``.

A person's keys are ``personal`` keys whose keystore owner is ``user:<name>`` (docs/keys.md):
nobody else's session, no API key and no administrator reaches them, and a person's session
never reaches the institution's keys. The document is never stored: only its digest is; the
person sends the same document again to activate, and any other document is refused. Every
refusal of a known person is logged with its reason (``integrity.errors.ActivationRefusal``);
the second factor's own checks are logged on the account (``auth.mfa.confirm.*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth import users as user_store
from auth.errors import AuthError, InvalidUsername, SessionInvalid
from auth.passwords import normalise_username
from integrity.db import READ_ONLY
from integrity.errors import (
    ActivationNotFound,
    ActivationRefusal,
    PersonalKeyUnavailable,
    PersonalSigningRefused,
    UnknownPerson,
)
from integrity.personal_documents import (
    FORMAT_WORDS,
    Activation,
    Channel,
    Document,
    Person,
    PersonalFormat,
    PersonalSignature,
    activation_view,
    can_make,
    owner_of,
    stamp,
)
from integrity.second_factor import SecondFactor
from integrity.signature_activations import ActivationRecord, add, claim, find, new_id
from integrity.signatures import SignatureService
from signing import cms, jws
from signing.algorithms import Algorithm
from signing.errors import (
    InvalidRequest,
    KeyImportFailed,
    KeyPurposeMismatch,
    KeystoreError,
    PayloadTooLarge,
    SigningError,
)
from signing.keystore import KeyRecord, SigningKey
from signing.pdf import MAX_PDF_BYTES, PdfSigner
from signing.pdf_sandbox import validate_pdf_sandboxed
from signing.purposes import KeyPurpose, certificate_purpose

ACTIVATION_SECONDS = 300  # EN 419 241: the activation lives minutes, not a session
ACTION_REQUESTED = "signature.personal.requested"
ACTION_SIGNED = "signature.personal.signed"
ACTION_REFUSED = "signature.personal.refused"


class Sessions(Protocol):
    def authenticate_session(self, token: str) -> Any: ...


class PersonalSigningService:
    def __init__(
        self,
        signatures: SignatureService,
        sessions: Sessions,
        *,
        tsa_url: str | None = None,
        activation_seconds: int = ACTIVATION_SECONDS,
    ) -> None:
        if not 0 < activation_seconds <= ACTIVATION_SECONDS:
            raise ValueError(f"an activation lives at most {ACTIVATION_SECONDS} seconds")
        self.signatures = signatures
        self.sessions = sessions
        self.tsa_url = tsa_url
        self.activation_seconds = activation_seconds
        self.engine = signatures.engine
        self.audit = signatures.audit
        self.clock = signatures.clock

    # --- who ------------------------------------------------------------------------------

    def session_person(self, token: str) -> Person:
        """The person behind a full session (never an API key, never a half-logged-in token)."""
        principal = self.sessions.authenticate_session(token)
        if principal is None:
            raise SessionInvalid("no valid session")
        return Person(principal.name)

    def person_named(self, username: str) -> Person:
        try:
            name = normalise_username(username)
        except InvalidUsername:
            raise UnknownPerson(f"no account {username!r}") from None
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            user = user_store.by_name(conn, name)
        if user is None:
            raise UnknownPerson(f"no account {name!r}")
        return Person(user.username)

    # --- a person's keys ------------------------------------------------------------------

    def generate_key(
        self,
        username: str,
        algorithm: Algorithm,
        *,
        actor: str,
        on_token: bool,
        rotate: bool = False,
        rsa_bits: int,
        approved_by: str | None = None,
    ) -> KeyRecord:
        """A personal key for ``username``, made on the PKCS#11 token: the private key never
        leaves it (sole control). Without a certificate it signs JWS only. ``approved_by``: the
        admin who confirmed a rotation."""
        if not on_token:
            raise InvalidRequest("a person's key is made on the PKCS#11 token only: pass --on-token")
        person = self.person_named(username)
        return self.signatures.generate_key(
            algorithm,
            actor=actor,
            rotate=rotate,
            owner=owner_of(person),
            purpose=KeyPurpose.PERSONAL,
            rsa_bits=rsa_bits,
            on_token=True,
            approved_by=approved_by,
        )

    def import_token_key(
        self, username: str, label: str, chain: Sequence[x509.Certificate], *, actor: str, rotate: bool = False
    ) -> KeyRecord:
        """The key pair labelled ``label`` on the token, with the certificate a CA issued to
        ``username`` (leaf first), as that person's key."""
        person = self.person_named(username)
        if not chain:
            raise KeyImportFailed("a person's key needs the certificate the CA issued to that person (--cert)")
        marked = certificate_purpose(chain[0])
        if marked not in (None, KeyPurpose.PERSONAL):
            raise KeyPurposeMismatch(f"the certificate is marked for {marked.value}, not for a person's own signatures")
        return self.signatures.import_token_key(
            label, chain, actor=actor, rotate=rotate, owner=owner_of(person), purpose=KeyPurpose.PERSONAL
        )

    # --- signing --------------------------------------------------------------------------

    def request(
        self,
        person: Person,
        document: Document,
        fmt: PersonalFormat,
        *,
        key_id: str | None = None,
        channel: Channel,
    ) -> Activation:
        """An activation for ``document``: what the person is asked to confirm. Nothing is
        signed yet; the activation is logged (digest, key, format, expiry)."""
        limit = min(self.signatures.max_payload_bytes, MAX_PDF_BYTES)
        if not document.content:
            raise InvalidRequest("the document is empty")
        if len(document.content) > limit:
            raise PayloadTooLarge(f"the document exceeds {limit} bytes")
        now = self.clock()
        if fmt is PersonalFormat.PDF:
            # An uploaded PDF is untrusted: it is parsed first in the sandbox (bombs end there as
            # MalformedPdf); the activation then holds its digest, so only these bytes are signed.
            validate_pdf_sandboxed(document.content, trust_roots=(), expected_signers=(), at=now)
        key = self._key_for_request(person, fmt, key_id, document, channel)
        record = ActivationRecord(
            id=new_id(),
            username=person.name,
            key_id=key.kid,
            format=fmt.value,
            sha256=document.sha256,
            created_at=now,
            expires_at=now + timedelta(seconds=self.activation_seconds),
            used_at=None,
        )
        activation = activation_view(record, person, key, document)
        data = {
            "activation": record.id,
            "person": person.name,
            "key_id": key.kid,
            "format": fmt.value,
            "digest": activation.digest,
            "bytes": activation.size,
            "expires_at": stamp(record.expires_at),
            "channel": channel.value,
        }
        with self.engine.begin() as conn:
            add(conn, record)
            self.audit.record(person.actor, ACTION_REQUESTED, activation.digest, data, conn=conn)
        return activation

    def _key_for_request(
        self, person: Person, fmt: PersonalFormat, key_id: str | None, document: Document, channel: Channel
    ) -> SigningKey:
        self.signatures.reload_keys()  # a key revoked by another instance a moment ago is gone
        keystore = self.signatures.keystore
        owner = owner_of(person)
        try:
            if key_id is not None:
                chosen = keystore.signing_key(key_id, owner=owner, purpose=KeyPurpose.PERSONAL)
                if can_make(chosen, fmt):
                    return chosen
            else:
                loaded = keystore.keys()
                usable = [
                    k for k in loaded if k.owner == owner and k.purpose is KeyPurpose.PERSONAL and can_make(k, fmt)
                ]
                if usable:
                    return max(usable, key=lambda k: k.created_at)
        except KeystoreError:
            pass  # someone else's key, a retired one, or none: the same answer for all
        raise self._refused(
            person,
            ActivationRefusal.NO_PERSONAL_KEY,
            f"no active personal key of yours can make {FORMAT_WORDS[fmt][1]}",
            subject=f"sha256:{document.sha256}",
            data={"format": fmt.value, "channel": channel.value, **({"key_id": key_id} if key_id else {})},
            error=PersonalKeyUnavailable,
        )

    def activate(
        self,
        person: Person,
        activation_id: str,
        document: Document,
        factor: SecondFactor,
        *,
        address: str,
        channel: Channel,
        operator: str | None = None,
    ) -> PersonalSignature:
        """Sign ``document`` once ``factor`` proves the person is there: only with the
        activation's key, only for its digest, once, before it expires. The signature is
        returned only after its audit entry is committed."""
        context = {"activation": activation_id, "channel": channel.value}
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            record = find(conn, activation_id)
        if record is None or record.username != person.name:
            reason = ActivationRefusal.UNKNOWN_ACTIVATION if record is None else ActivationRefusal.NOT_OWNER
            self._record_refusal(person, reason, f"activation:{activation_id}", context)
            # Another person's activation gets the answer of one that does not exist.
            raise ActivationNotFound("no such activation of yours", reason=ActivationRefusal.UNKNOWN_ACTIVATION)
        fmt = PersonalFormat(record.format)
        digest = f"sha256:{record.sha256}"
        context |= {"format": fmt.value, "key_id": record.key_id}
        self._check_usable(person, record, document, digest, context)
        key = self._activation_key(person, record, fmt, digest, context)
        try:
            factor.confirm(
                person.name, challenge=activation_view(record, person, key, document).challenge, address=address
            )
        except AuthError as exc:
            # The account's lockout counted the attempt; the activation stays usable until it expires.
            self._record_refusal(
                person,
                ActivationRefusal.SECOND_FACTOR_FAILED,
                digest,
                context | {"method": factor.method.value, "error": type(exc).__name__},
            )
            raise
        now = self.clock()
        with self.engine.begin() as conn:
            spent = claim(conn, record.id, person.name, now)
        if not spent:
            # Another request spent it first, or it expired meanwhile.
            reason = ActivationRefusal.EXPIRED if record.expired(now) else ActivationRefusal.ALREADY_USED
            raise self._refused(
                person, reason, f"the activation is {reason.value.replace('_', ' ')}", subject=digest, data=context
            )
        try:
            content = self._sign(key, fmt, document.content, now, record.id)
        except SigningError as exc:
            self._record_refusal(
                person, ActivationRefusal.SIGNING_FAILED, digest, context | {"error": type(exc).__name__}
            )
            raise
        data = {
            "person": person.name,
            "key_id": key.kid,
            "digest": digest,
            "format": fmt.value,
            "alg": key.algorithm.value,
            "activation": record.id,
            "method": factor.method.value,
            "channel": channel.value,
            "bytes": len(document.content),
        }
        if operator is not None:
            data["operator"] = operator
        seq = self.audit.record(person.actor, ACTION_SIGNED, digest, data)
        return PersonalSignature(record.id, fmt, content, key.kid, key.algorithm.value, digest, now, seq)

    def pending(self, person: Person, activation_id: str, document: Document) -> Activation:
        """The activation as shown for confirmation, read again (a page asking for the code once
        more). Only the person's own; nothing is checked or logged here, ``activate`` does that."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            record = find(conn, activation_id)
        if record is None or record.username != person.name:
            raise ActivationNotFound("no such activation of yours", reason=ActivationRefusal.UNKNOWN_ACTIVATION)
        return activation_view(record, person, self.signatures.keystore.find(record.key_id), document)

    def _check_usable(
        self, person: Person, record: ActivationRecord, document: Document, digest: str, context: dict[str, Any]
    ) -> None:
        """The checks that need no secret, before any factor is tried."""
        now = self.clock()
        reason: ActivationRefusal | None = None
        if record.used_at is not None:
            reason = ActivationRefusal.ALREADY_USED
        elif record.expired(now):
            reason = ActivationRefusal.EXPIRED
        elif document.sha256 != record.sha256:
            # The activation is for one document; this is another. It stays usable for its own.
            reason = ActivationRefusal.DIGEST_MISMATCH
        if reason is not None:
            messages = {
                ActivationRefusal.ALREADY_USED: "the activation was already used: ask for a new one",
                ActivationRefusal.EXPIRED: "the activation expired: ask for a new one",
                ActivationRefusal.DIGEST_MISMATCH: "this is not the document the activation was made for",
            }
            extra = {"sent_digest": f"sha256:{document.sha256}"} if reason is ActivationRefusal.DIGEST_MISMATCH else {}
            raise self._refused(person, reason, messages[reason], subject=digest, data=context | extra)

    def _activation_key(
        self, person: Person, record: ActivationRecord, fmt: PersonalFormat, digest: str, context: dict[str, Any]
    ) -> SigningKey:
        self.signatures.reload_keys()
        try:
            key = self.signatures.keystore.signing_key(
                record.key_id, owner=owner_of(person), purpose=KeyPurpose.PERSONAL
            )
        except KeystoreError:
            key = None
        if key is None or not can_make(key, fmt):
            raise self._refused(
                person,
                ActivationRefusal.KEY_NOT_USABLE,
                "the activation's key can no longer sign",
                subject=digest,
                data=context,
            )
        return key

    def _sign(self, key: SigningKey, fmt: PersonalFormat, content: bytes, now: datetime, activation_id: str) -> bytes:
        if fmt is PersonalFormat.JWS:
            return jws.sign(key, content, signed_at=now).token.encode("ascii")
        if fmt is PersonalFormat.CMS:
            return cms.sign(key, content, signed_at=now).der
        private, certificate = key.private_key, key.certificate
        assert isinstance(private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) and certificate is not None
        # An approval signature (not a certification): others may sign the document after this person.
        signer = PdfSigner(
            private,
            certificate,
            key.chain[1:],
            tsa_url=self.tsa_url,
            field_name=f"Signature-{activation_id[:12]}",
            certify=False,
        )
        return signer.sign(content, signing_time=now)

    # --- refusals -------------------------------------------------------------------------

    def _record_refusal(self, person: Person, reason: ActivationRefusal, subject: str, data: dict[str, Any]) -> None:
        self.audit.record(
            person.actor, ACTION_REFUSED, subject, {"reason": reason.value, "person": person.name, **data}
        )

    def _refused(
        self,
        person: Person,
        reason: ActivationRefusal,
        message: str,
        *,
        subject: str,
        data: dict[str, Any],
        error: type[PersonalSigningRefused] = PersonalSigningRefused,
    ) -> PersonalSigningRefused:
        self._record_refusal(person, reason, subject, data)
        return error(message, reason=reason)
