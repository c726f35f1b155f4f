"""What a person's signature is about: the formats, the person, the document, the activation
shown for confirmation and the signature handed back (values of integrity.personal_signing)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.x509.oid import NameOID

from integrity.signature_activations import ActivationRecord
from signing.algorithms import Algorithm
from signing.errors import UnknownFormat
from signing.keystore import SigningKey

_CHALLENGE_LABEL = b"bhxh-integrity/signature-activation/v1\n"
# CMS and PAdES name the signer by a certificate; ES256 and PS256 are what both sign with.
_CERTIFIED_ALGORITHMS = frozenset({Algorithm.ES256, Algorithm.PS256})


class PersonalFormat(StrEnum):
    JWS = "jws"  # RFC 7515 compact, payload attached
    CMS = "cms"  # RFC 5652 detached, CAdES-B
    PDF = "pdf"  # PAdES B-B (B-T with BHXH_TSA_URL), an approval signature


class Channel(StrEnum):
    """Where the person asked: the HTTP API, the web page or the server's command line."""

    API = "api"
    WEB = "web"
    CLI = "cli"


FORMAT_WORDS = {
    PersonalFormat.JWS: ("chữ ký JWS", "a JWS signature"),
    PersonalFormat.CMS: ("chữ ký CMS tách rời (CAdES)", "a detached CMS signature (CAdES)"),
    PersonalFormat.PDF: ("chữ ký PDF (PAdES)", "a PDF signature (PAdES)"),
}


@dataclass(frozen=True)
class Person:
    name: str  # the normalised username

    @property
    def actor(self) -> str:
        return f"user:{self.name}"


def owner_of(person: Person) -> str:
    """The keystore ``owner`` of a person's keys."""
    return f"user:{person.name}"


def parse_format(value: str) -> PersonalFormat:
    try:
        return PersonalFormat(value)
    except ValueError:
        raise UnknownFormat(f"unknown format {value!r}: use jws, cms or pdf") from None


@dataclass(frozen=True)
class Document:
    content: bytes = field(repr=False)
    name: str | None = None  # as the person named it; shown back, never stored or logged

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class Activation:
    """What the person is asked to confirm, and the id to confirm it with."""

    id: str
    person: Person
    format: PersonalFormat
    key_id: str
    signer: str  # the certificate's subject common name, or the key id of a key without one
    sha256: str
    size: int
    name: str | None
    created_at: datetime
    expires_at: datetime

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"

    @property
    def challenge(self) -> bytes:
        """What a factor able to sign data (a passkey) must sign: this activation and digest."""
        return hashlib.sha256(_CHALLENGE_LABEL + f"{self.id}\n{self.digest}".encode()).digest()

    def summary(self, lang: str) -> str:
        vi, en = FORMAT_WORDS[self.format]
        shown = self.name or ("(không tên)" if lang == "vi" else "(unnamed)")
        if lang == "vi":
            return (
                f"Ký {vi} cho tài liệu «{shown}» ({self.size} byte, SHA-256 {self.sha256}) "
                f"bằng khóa cá nhân của {self.signer}."
            )
        return f"Sign {en} over the document “{shown}” ({self.size} bytes, SHA-256 {self.sha256}) with the personal key of {self.signer}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "format": self.format.value,
            "digest": self.digest,
            "key_id": self.key_id,
            "expires_at": stamp(self.expires_at),
            "display": {
                "name": self.name,
                "bytes": self.size,
                "sha256": self.sha256,
                "format": self.format.value,
                "signer": self.signer,
                "text": {"vi": self.summary("vi"), "en": self.summary("en")},
            },
        }


@dataclass(frozen=True)
class PersonalSignature:
    """JWS compact text, CMS DER or the signed PDF, in ``content``."""

    activation_id: str
    format: PersonalFormat
    content: bytes = field(repr=False)
    key_id: str
    alg: str
    digest: str
    signed_at: datetime
    audit_seq: int

    @property
    def signature(self) -> str:
        """As JSON carries it: the JWS itself, else base64 (CMS DER, the signed PDF)."""
        if self.format is PersonalFormat.JWS:
            return self.content.decode("ascii")
        return base64.b64encode(self.content).decode("ascii")

    def to_dict(self) -> dict[str, Any]:
        return {
            "activation_id": self.activation_id,
            "format": self.format.value,
            "signature": self.signature,
            "key_id": self.key_id,
            "alg": self.alg,
            "digest": self.digest,
            "signed_at": stamp(self.signed_at),
            "audit_seq": self.audit_seq,
        }


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def can_make(key: SigningKey, fmt: PersonalFormat) -> bool:
    """Whether ``key`` can make a signature of ``fmt`` now: any active key signs JWS; CMS and
    PAdES name the signer by a certificate, so they need one, on an ES256 or PS256 key."""
    if not key.can_sign:
        return False
    return fmt is PersonalFormat.JWS or (key.certificate is not None and key.algorithm in _CERTIFIED_ALGORITHMS)


def signer_name(key: SigningKey) -> str:
    if key.certificate is None:
        return key.kid
    names = key.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else key.certificate.subject.rfc4514_string()


def activation_view(record: ActivationRecord, person: Person, key: SigningKey | None, document: Document) -> Activation:
    return Activation(
        record.id,
        person,
        PersonalFormat(record.format),
        record.key_id,
        record.key_id if key is None else signer_name(key),
        record.sha256,
        len(document.content),
        document.name,
        record.created_at,
        record.expires_at,
    )
