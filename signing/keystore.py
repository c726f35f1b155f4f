"""The keystore: signing keys with a ``kid``, an algorithm bound to the key, a life-cycle state
and a certificate chain.

Life cycle (the MultiFernet idea, with a third state): the *active* key of an algorithm signs;
*active* and *retired* keys verify; a *revoked* key verifies nothing signed at or after its
``revoked_at``. State lives in ``signing_keys`` so every service instance agrees; private
keys are stored only as encrypted PKCS#8 and are parsed once, when the keystore is loaded or
reloaded, never per signature. A key held on a PKCS#11 token (``signing.pkcs11``) is stored as
its token object id only; the keystore finds it on the token once, the same way.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from signing.algorithms import DEFAULT_RSA_BITS, Algorithm, algorithm_for_key, generate_private_key
from signing.errors import (
    ActiveKeyExists,
    DuplicateKey,
    InvalidKeyState,
    KeyImportFailed,
    KeyNotUsable,
    KeyPurposeMismatch,
    PassphraseRequired,
    SignerRevoked,
    TokenError,
    UnknownKey,
)
from signing.pkcs11 import KeyToken, TokenKey, token_object_id
from signing.purposes import MESSAGE_PURPOSES, KeyPurpose, default_purpose
from signing.tables import signing_keys

Clock = Callable[[], datetime]

SERVICE_OWNER = ""  # owner of the service's own keys; a person's key has "user:<name>"
_JOSE_KEY_TYPES: dict[Algorithm, Any] = {Algorithm.ED25519: OKPKey, Algorithm.ES256: ECKey, Algorithm.PS256: RSAKey}


class KeyState(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    """The public facts about a stored key (what ``keys list`` shows)."""

    kid: str
    algorithm: Algorithm
    state: KeyState
    owner: str
    purpose: KeyPurpose
    created_at: datetime
    retired_at: datetime | None
    revoked_at: datetime | None
    chain: tuple[x509.Certificate, ...]
    token_object_id: str | None = None  # set when the private key is held on the PKCS#11 token

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None


@dataclass(frozen=True, eq=False)
class SigningKey:
    """A loaded key. ``private_key`` is present only while the key is active (only it signs)."""

    kid: str
    algorithm: Algorithm
    state: KeyState
    owner: str
    purpose: KeyPurpose
    public_key: PublicKeyTypes
    private_key: PrivateKeyTypes | None = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    created_at: datetime
    retired_at: datetime | None
    revoked_at: datetime | None
    # The joserfc view of the same key, built once here rather than per signature.
    jose_key: Any = field(repr=False)

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None

    @property
    def can_sign(self) -> bool:
        return self.state is KeyState.ACTIVE and self.private_key is not None

    def check_signs_messages(self) -> None:
        """Raise ``KeyPurposeMismatch`` unless this key signs data messages (JWS, CMS, XML): the
        receipt key, say, must never sign bytes of a caller's choosing."""
        if self.purpose not in MESSAGE_PURPOSES:
            raise KeyPurposeMismatch(f"key {self.kid} is a {self.purpose.value} key: it does not sign data messages")

    def check_not_revoked_at(self, signed_at: datetime | None) -> None:
        """Raise ``SignerRevoked`` if a signature claiming ``signed_at`` must not be accepted.

        A signature without a signing time cannot be placed before the revocation, so it fails.
        The claimed time can be backdated by whoever holds a stolen key; revoking with an ``at``
        set to the suspected compromise time, and the audit log's record of every signature
        this service made, are what bound that risk.
        """
        if self.state is not KeyState.REVOKED or self.revoked_at is None:
            return
        if signed_at is None:
            raise SignerRevoked(f"key {self.kid} is revoked and the signature carries no signing time")
        if signed_at >= self.revoked_at:
            raise SignerRevoked(
                f"key {self.kid} was revoked at {self.revoked_at.isoformat()}, before the signing time "
                f"{signed_at.isoformat()}"
            )

    @classmethod
    def create(
        cls,
        private_key: PrivateKeyTypes,
        chain: Sequence[x509.Certificate] = (),
        *,
        created_at: datetime,
        owner: str = SERVICE_OWNER,
        purpose: KeyPurpose | None = None,
    ) -> SigningKey:
        """An in-memory active key (tests, tools); stored keys come from ``Keystore.load``.
        Without a ``purpose`` it is a data-message key (a personal one when ``owner`` is a person)."""
        algorithm = algorithm_for_key(private_key)
        public_key = private_key.public_key()
        if chain and _spki(chain[0].public_key()) != _spki(public_key):
            raise KeyImportFailed("the certificate does not certify this private key")
        return cls(
            kid=key_id_for(public_key),
            algorithm=algorithm,
            state=KeyState.ACTIVE,
            owner=owner,
            purpose=purpose or default_purpose(owner != SERVICE_OWNER),
            public_key=public_key,
            private_key=private_key,
            chain=tuple(chain),
            created_at=created_at,
            retired_at=None,
            revoked_at=None,
            jose_key=_jwk_of(algorithm, private_key),
        )

    def record(self) -> KeyRecord:
        return KeyRecord(
            self.kid,
            self.algorithm,
            self.state,
            self.owner,
            self.purpose,
            self.created_at,
            self.retired_at,
            self.revoked_at,
            self.chain,
        )


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id_for(public_key: PublicKeyTypes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the same key always has the same ``kid``."""
    algorithm = algorithm_for_key(public_key)
    return str(_JOSE_KEY_TYPES[algorithm].import_key(public_key).thumbprint())


def _chain_pem(chain: Sequence[x509.Certificate]) -> str | None:
    if not chain:
        return None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in chain)


def _load_chain(pem: str | None) -> tuple[x509.Certificate, ...]:
    if not pem:
        return ()
    return tuple(x509.load_pem_x509_certificates(pem.encode("ascii")))


def _jwk_of(algorithm: Algorithm, key: PrivateKeyTypes | PublicKeyTypes) -> Any:
    if isinstance(key, TokenKey):
        # A token key has no private fields to put in a JWK; jws.py signs with it directly.
        key = key.public_key()
    return _JOSE_KEY_TYPES[algorithm].import_key(key)


def _row_to_key(row: Any, private_key: PrivateKeyTypes | None) -> SigningKey:
    algorithm = Algorithm(row.algorithm)
    public_key = serialization.load_pem_public_key(row.public_key_pem.encode("ascii"))
    return SigningKey(
        kid=row.kid,
        algorithm=algorithm,
        state=KeyState(row.state),
        owner=row.owner,
        purpose=KeyPurpose(row.purpose),
        public_key=public_key,
        private_key=private_key,
        chain=_load_chain(row.certificate_chain_pem),
        created_at=_aware(row.created_at),
        retired_at=_aware(row.retired_at),
        revoked_at=_aware(row.revoked_at),
        jose_key=_jwk_of(algorithm, private_key if private_key is not None else public_key),
    )


def _row_to_record(row: Any) -> KeyRecord:
    return KeyRecord(
        kid=row.kid,
        algorithm=Algorithm(row.algorithm),
        state=KeyState(row.state),
        owner=row.owner,
        purpose=KeyPurpose(row.purpose),
        created_at=_aware(row.created_at),
        retired_at=_aware(row.retired_at),
        revoked_at=_aware(row.revoked_at),
        chain=_load_chain(row.certificate_chain_pem),
        token_object_id=row.token_object_id,
    )


def _decrypt(pem: str, passphrase: bytes | None, kid: str) -> PrivateKeyTypes:
    if not passphrase:
        raise PassphraseRequired("the keystore passphrase is needed to load active private keys")
    try:
        return serialization.load_pem_private_key(pem.encode("ascii"), passphrase)
    except (ValueError, TypeError) as exc:
        raise KeyImportFailed(f"cannot decrypt the private key of {kid}: wrong keystore passphrase?") from exc


def _from_token(token: KeyToken | None, object_id: str, public_key_pem: str, kid: str) -> PrivateKeyTypes:
    if token is None:
        raise TokenError(f"key {kid} is held on a PKCS#11 token: configure BHXH_PKCS11_MODULE and its token")
    key = token.key(object_id)
    # The object id names the key on *this* token; a different token may reuse the id.
    if _spki(key.public_key()) != _spki(serialization.load_pem_public_key(public_key_pem.encode("ascii"))):
        raise TokenError(f"token object {object_id} is not the key {kid}: wrong token?")
    return key


class Keystore:
    """The loaded keys. Build with ``Keystore.load(conn, passphrase)``; ``reload`` after any
    state change (its own or another instance's) re-reads states and parses only keys that it
    has not parsed before."""

    def __init__(
        self, keys: Iterable[SigningKey] = (), *, passphrase: bytes | None = None, token: KeyToken | None = None
    ) -> None:
        self._passphrase = passphrase
        self.token = token
        self._keys: dict[str, SigningKey] = {k.kid: k for k in keys}
        self._by_spki: dict[bytes, SigningKey] = {_spki(k.public_key): k for k in self._keys.values()}

    @classmethod
    def load(cls, conn: Connection, passphrase: bytes | None, token: KeyToken | None = None) -> Keystore:
        store = cls(passphrase=passphrase, token=token)
        store.reload(conn)
        return store

    def reload(self, conn: Connection) -> None:
        rows = conn.execute(select(signing_keys)).all()
        parsed: dict[str, SigningKey] = {}
        for row in rows:
            known = self._keys.get(row.kid)
            private: PrivateKeyTypes | None = None
            if row.state == KeyState.ACTIVE and (row.private_key_pem or row.token_object_id):
                if known is not None and known.private_key is not None:
                    private = known.private_key
                elif row.token_object_id:
                    private = _from_token(self.token, row.token_object_id, row.public_key_pem, row.kid)
                else:
                    private = _decrypt(row.private_key_pem, self._passphrase, row.kid)
            parsed[row.kid] = _row_to_key(row, private)
        # Swap whole dictionaries: readers on other threads see the old or the new set, never half.
        self._by_spki = {_spki(k.public_key): k for k in parsed.values()}
        self._keys = parsed

    def keys(self) -> tuple[SigningKey, ...]:
        return tuple(sorted(self._keys.values(), key=lambda k: k.created_at))

    def find(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def get(self, kid: str) -> SigningKey:
        key = self._keys.get(kid)
        if key is None:
            raise UnknownKey(f"no key with kid {kid!r}")
        return key

    def by_public_key(self, public_key: PublicKeyTypes) -> SigningKey | None:
        return self._by_spki.get(_spki(public_key))

    def active(
        self, algorithm: Algorithm | None = None, *, owner: str = SERVICE_OWNER, purpose: KeyPurpose | None = None
    ) -> SigningKey:
        """The active key of ``algorithm`` (or the newest active key) belonging to ``owner`` and
        made for ``purpose`` (by default: data messages, or personal for a person)."""
        purpose = purpose or default_purpose(owner != SERVICE_OWNER)
        candidates = [
            k
            for k in self._keys.values()
            if k.can_sign
            and k.owner == owner
            and k.purpose is purpose
            and (algorithm is None or k.algorithm is algorithm)
        ]
        if not candidates:
            what = f"{algorithm.value} " if algorithm else ""
            raise UnknownKey(f"no active {what}{purpose.value} signing key")
        return max(candidates, key=lambda k: k.created_at)

    def signing_key(
        self,
        kid: str | None = None,
        *,
        algorithm: Algorithm | None = None,
        owner: str = SERVICE_OWNER,
        purpose: KeyPurpose | None = None,
    ) -> SigningKey:
        """The key to sign with for ``purpose`` (by default data messages, or personal for a
        person): ``kid`` if given (it must be active, ``owner``'s and made for that purpose),
        else the active key of ``algorithm``; by default the service's PS256 key (the certified
        one) or a person's newest active key."""
        purpose = purpose or default_purpose(owner != SERVICE_OWNER)
        if kid is None:
            if algorithm is None and owner == SERVICE_OWNER:
                algorithm = Algorithm.PS256
            return self.active(algorithm, owner=owner, purpose=purpose)
        key = self.get(kid)
        if key.owner != owner:
            # A service caller must never sign with a person's key, nor one person with another's.
            raise KeyNotUsable(f"key {kid} may not be used by this caller")
        if key.purpose is not purpose:
            # The receipt key never signs a caller's bytes (Decision 352: only the one-stop
            # system issues receipts), and a data-message key never signs a receipt.
            raise KeyPurposeMismatch(f"key {kid} is a {key.purpose.value} key: it cannot sign for {purpose.value}")
        if not key.can_sign:
            raise KeyNotUsable(f"key {kid} is {key.state.value}: only the active key signs")
        if algorithm is not None and key.algorithm is not algorithm:
            raise KeyNotUsable(f"key {kid} is a {key.algorithm.value} key, not {algorithm.value}")
        return key

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """RFC 7517 key set of the service's active and retired public keys, with ``x5c``."""
        out: list[dict[str, Any]] = []
        for key in self.keys():
            if key.owner != SERVICE_OWNER or key.state is KeyState.REVOKED:
                continue
            jwk = _jwk_of(key.algorithm, key.public_key).as_dict(private=False)
            # ``bhxh_purpose``: a private member (RFC 7517 §4 lets a JWK carry others) saying what
            # the key signs, so a verifier can refuse a receipt key's signature on a data message.
            jwk.update({"kid": key.kid, "alg": key.algorithm.value, "use": "sig", "bhxh_purpose": key.purpose.value})
            if key.chain:
                jwk["x5c"] = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in key.chain]
                jwk["x5t#S256"] = (
                    base64.urlsafe_b64encode(key.chain[0].fingerprint(hashes.SHA256())).rstrip(b"=").decode()
                )
            out.append(jwk)
        return {"keys": out}


# --- storage: every change is one statement group inside the caller's transaction -----------


def list_keys(conn: Connection) -> list[KeyRecord]:
    rows = conn.execute(select(signing_keys).order_by(signing_keys.c.created_at)).all()
    return [_row_to_record(r) for r in rows]


def get_key_record(conn: Connection, kid: str) -> KeyRecord:
    row = conn.execute(select(signing_keys).where(signing_keys.c.kid == kid)).first()
    if row is None:
        raise UnknownKey(f"no key with kid {kid!r}")
    return _row_to_record(row)


def _encryption(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    if not passphrase:
        raise PassphraseRequired("private keys are stored encrypted: configure the keystore passphrase")
    return serialization.BestAvailableEncryption(passphrase)


def add_key(
    conn: Connection,
    private_key: PrivateKeyTypes,
    chain: Sequence[x509.Certificate] = (),
    *,
    passphrase: bytes | None,
    clock: Clock,
    owner: str = SERVICE_OWNER,
    purpose: KeyPurpose | None = None,
    rotate: bool = False,
) -> KeyRecord:
    """Store ``private_key`` (encrypted, or a token key's object id) as the new active key of
    its algorithm for ``owner`` and ``purpose`` (by default data messages, or personal for a
    person's key). The purpose is stored once and never changes.

    If an active key of that algorithm and purpose exists, ``rotate`` retires it in the same
    transaction; without ``rotate`` the call is refused. ``chain`` is leaf first; the leaf must
    certify this very key.
    """
    purpose = _checked_purpose(owner, purpose)
    object_id = token_object_id(private_key)
    encryption = None if object_id is not None else _encryption(passphrase)
    algorithm = algorithm_for_key(private_key)
    public_key = private_key.public_key()
    if chain and _spki(chain[0].public_key()) != _spki(public_key):
        raise KeyImportFailed("the certificate does not certify this private key")
    kid = key_id_for(public_key)
    if conn.execute(select(signing_keys.c.kid).where(signing_keys.c.kid == kid)).first() is not None:
        raise DuplicateKey(f"key {kid} is already in the keystore")
    now = clock()
    current = _check_can_add(conn, algorithm, owner, purpose, rotate)
    for row in current:
        conn.execute(
            update(signing_keys)
            .where(signing_keys.c.kid == row.kid)
            .values(state=KeyState.RETIRED.value, retired_at=now, private_key_pem=None)
        )
    encrypted = None
    if encryption is not None:
        encrypted = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode("ascii")
    try:
        conn.execute(
            insert(signing_keys).values(
                kid=kid,
                algorithm=algorithm.value,
                state=KeyState.ACTIVE.value,
                owner=owner,
                purpose=purpose.value,
                created_at=now,
                public_key_pem=public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ).decode("ascii"),
                certificate_chain_pem=_chain_pem(chain),
                private_key_pem=encrypted,
                token_object_id=object_id,
            )
        )
    except DbIntegrityError as exc:
        # Another instance added or rotated at the same moment; the unique index decided.
        raise ActiveKeyExists(f"another {algorithm.value} {purpose.value} key became active concurrently") from exc
    return get_key_record(conn, kid)


def _checked_purpose(owner: str, purpose: KeyPurpose | None) -> KeyPurpose:
    personal = owner != SERVICE_OWNER
    purpose = purpose or default_purpose(personal)
    if (purpose is KeyPurpose.PERSONAL) != personal:
        # A person's key speaks only for that person; the institution's keys for no person.
        raise KeyPurposeMismatch("a personal key must belong to a person, and a person's key must be personal")
    return purpose


def _check_can_add(
    conn: Connection, algorithm: Algorithm, owner: str, purpose: KeyPurpose, rotate: bool
) -> Sequence[Any]:
    """The active keys that a new key of ``algorithm`` and ``purpose`` replaces; refused
    without ``rotate``."""
    current = conn.execute(
        select(signing_keys.c.kid).where(
            signing_keys.c.algorithm == algorithm.value,
            signing_keys.c.owner == owner,
            signing_keys.c.purpose == purpose.value,
            signing_keys.c.state == KeyState.ACTIVE.value,
        )
    ).all()
    if current and not rotate:
        raise ActiveKeyExists(
            f"an active {algorithm.value} {purpose.value} key exists ({current[0].kid}); rotate to replace it"
        )
    return current


def generate_key(
    conn: Connection,
    algorithm: Algorithm,
    *,
    passphrase: bytes | None,
    clock: Clock,
    owner: str = SERVICE_OWNER,
    purpose: KeyPurpose | None = None,
    rotate: bool = False,
    rsa_bits: int = DEFAULT_RSA_BITS,
    token: KeyToken | None = None,
) -> KeyRecord:
    """A fresh key (no certificate: JWS only until a CA certifies it and it is re-imported),
    made on ``token`` when one is given, else in memory and stored encrypted."""
    if token is None:
        return add_key(
            conn,
            generate_private_key(algorithm, rsa_bits=rsa_bits),
            (),
            passphrase=passphrase,
            clock=clock,
            owner=owner,
            purpose=purpose,
            rotate=rotate,
        )
    # Before a key is made on the token for nothing:
    _check_can_add(conn, algorithm, owner, _checked_purpose(owner, purpose), rotate)
    key = token.generate(algorithm, rsa_bits=rsa_bits)
    try:
        return add_key(conn, key, (), passphrase=passphrase, clock=clock, owner=owner, purpose=purpose, rotate=rotate)
    except Exception:
        # The transaction rolls back: leave no orphan key on the token. If the token refuses
        # even that, the caller still gets the first error; an unreferenced object never signs.
        with contextlib.suppress(TokenError):
            token.destroy(key)
        raise


def parse_pkcs8(pem: bytes, key_passphrase: bytes | None) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, key_passphrase)
    except (ValueError, TypeError) as exc:
        raise KeyImportFailed("cannot read the private key: wrong passphrase or not a PKCS#8 PEM") from exc


def parse_certificates(pem: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except ValueError as exc:
        raise KeyImportFailed("cannot read the certificate chain: expected PEM certificates") from exc


def parse_pkcs12(data: bytes, password: bytes | None) -> tuple[PrivateKeyTypes, tuple[x509.Certificate, ...]]:
    """Key and chain (leaf first) from a PKCS#12 file, as licensed CAs deliver them."""
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, TypeError) as exc:
        raise KeyImportFailed("cannot read the PKCS#12 file: wrong password or damaged file") from exc
    if key is None:
        raise KeyImportFailed("the PKCS#12 file holds no private key")
    chain = ((cert,) if cert is not None else ()) + tuple(extra or ())
    return key, chain


def retire_key(conn: Connection, kid: str, *, clock: Clock) -> KeyRecord:
    """Stop signing with ``kid``; its signatures keep verifying."""
    record = get_key_record(conn, kid)
    if record.state is not KeyState.ACTIVE:
        raise InvalidKeyState(f"key {kid} is {record.state.value}; only an active key can be retired")
    conn.execute(
        update(signing_keys)
        .where(signing_keys.c.kid == kid)
        .values(state=KeyState.RETIRED.value, retired_at=clock(), private_key_pem=None)
    )
    return get_key_record(conn, kid)


def revoke_key(conn: Connection, kid: str, *, clock: Clock, at: datetime | None = None) -> KeyRecord:
    """Revoke ``kid`` as of ``at`` (default now; earlier for a suspected compromise time).
    Signatures claiming a time at or after ``at`` fail verification with REVOKED.

    The encrypted private key is erased: a revoked key must never sign again.
    """
    record = get_key_record(conn, kid)
    if record.state is KeyState.REVOKED:
        raise InvalidKeyState(f"key {kid} is already revoked")
    now = clock()
    when = at or now
    if when.tzinfo is None:
        raise InvalidKeyState("the revocation time must carry a time zone")
    if when > now:
        raise InvalidKeyState("the revocation time cannot be in the future")
    conn.execute(
        update(signing_keys)
        .where(signing_keys.c.kid == kid)
        .values(
            state=KeyState.REVOKED.value,
            revoked_at=when,
            retired_at=record.retired_at or now,
            private_key_pem=None,
        )
    )
    return get_key_record(conn, kid)
