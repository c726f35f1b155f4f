"""Keys held on a PKCS#11 token (an HSM in production; SoftHSM2 in the tests).

The private key never leaves the token: it is generated there (or put there by the HSM's own
tools), marked sensitive and not extractable, and found again by its ``CKA_ID``. The keystore
stores only that id beside the public key and certificate chain.

Each token key is wrapped in a class of ``cryptography``'s private-key interfaces whose only
working operation is ``sign``, so JWS (joserfc), CMS (pyHanko), XMLDSig (signxml) and RFC 9421
signing use it exactly like a software key. That bridge is written here because python-pkcs11
has none and no well-kept package provides one. The mechanisms are the plain ones every token
offers: CKM_EDDSA, CKM_ECDSA over a SHA-256 digest computed here (SoftHSM2 has no
CKM_ECDSA_SHA256), and CKM_SHA256_RSA_PKCS_PSS with MGF1-SHA-256 and a 32-byte salt (RFC 7518
§3.5, Circular 15/2025/TT-BKHCN).

A PKCS#11 session runs one operation at a time, so signatures through a token are serialised
by a lock; an HSM's own throughput is the bound there anyway.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import PSS, AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.utils import Buffer
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from signing.algorithms import DEFAULT_RSA_BITS, PSS_SALT_BYTES, Algorithm, algorithm_for_key, check_rsa_bits
from signing.errors import KeyNotUsable, TokenError, WeakKey

_ID_BYTES = 16
_ED25519_OID = "1.3.101.112"  # RFC 8410
# Attributes of every key generated here: usable for signing only, never readable off the token.
_PRIVATE_TEMPLATE = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.SIGN: True,
    Attribute.DECRYPT: False,
    Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}
_PUBLIC_TEMPLATE = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}


class TokenHealth(StrEnum):
    """What a readiness probe learns of the token (no label, no object id: /readyz is public)."""

    LOGGED_IN = "logged in"
    LOGGED_OUT = "logged out"
    UNAVAILABLE = "unavailable"


@dataclass
class _Login:
    """The one logged-in session of this process on a token. PKCS#11 logs in the application,
    not a session (a second C_Login fails with USER_ALREADY_LOGGED_IN), so every ``KeyToken``
    of this process on that token shares it; the last one to close it logs out."""

    session: Any
    pin_digest: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


_LOGINS: dict[tuple[str, str], _Login] = {}
_LOGINS_LOCK = threading.Lock()


def _pin_digest(module: Path, label: str, pin: bytes) -> bytes:
    return hashlib.sha256(b"\0".join((str(module).encode(), label.encode(), pin))).digest()


def _log_in(module: Path, label: str, pin: bytes) -> Any:
    try:
        library = pkcs11.lib(str(module))
    except (RuntimeError, OSError) as exc:
        raise TokenError(f"cannot load the PKCS#11 module {module}") from exc
    try:
        token = library.get_token(token_label=label)
    except pkcs11.NoSuchToken as exc:
        raise TokenError(f"no PKCS#11 token labelled {label!r}") from exc
    except pkcs11.MultipleTokensReturned as exc:
        raise TokenError(f"more than one PKCS#11 token is labelled {label!r}") from exc
    try:
        return token.open(user_pin=pin.decode(), rw=True)
    except pkcs11.PinIncorrect as exc:
        raise TokenError(f"the PKCS#11 user PIN of token {label!r} is wrong") from exc
    except (pkcs11.PKCS11Error, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot log in to PKCS#11 token {label!r}: {type(exc).__name__}") from exc


class KeyToken:
    """A logged-in session on one token. Open with ``KeyToken.open(module, label, pin)``."""

    def __init__(self, login: _Login, key: tuple[str, str], label: str) -> None:
        self._login = login
        self._key = key
        self._session = login.session
        self._lock = login.lock
        self.label = label
        self._closed = False

    @classmethod
    def open(cls, module: Path, label: str, pin: bytes) -> KeyToken:
        if not pin:
            raise TokenError("the PKCS#11 user PIN is needed: set BHXH_PKCS11_PIN_FILE")
        key = (str(module), label)
        with _LOGINS_LOCK:
            login = _LOGINS.get(key)
            if login is None:
                login = _Login(_log_in(module, label, pin), _pin_digest(module, label, pin))
                _LOGINS[key] = login
            elif not hmac.compare_digest(login.pin_digest, _pin_digest(module, label, pin)):
                # Logged in already with another PIN: this caller has not proved it knows it.
                raise TokenError(f"the PKCS#11 user PIN of token {label!r} is wrong")
            login.users += 1
        return cls(login, key, label)

    def close(self) -> None:
        with _LOGINS_LOCK:
            if self._closed:
                return
            self._closed = True
            self._login.users -= 1
            if self._login.users == 0:
                del _LOGINS[self._key]
                with self._lock:
                    self._session.close()

    @contextmanager
    def _operation(self, what: str) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise TokenError(f"PKCS#11 token {self.label!r}: closed")
            try:
                yield
            except pkcs11.PKCS11Error as exc:
                raise TokenError(f"PKCS#11 token {self.label!r}: {what} failed ({type(exc).__name__})") from exc

    def generate(self, algorithm: Algorithm, *, rsa_bits: int = DEFAULT_RSA_BITS, label: str | None = None) -> TokenKey:
        """A new key pair made on the token; its private half never leaves it. ``label`` names
        it for ``key_by_label`` (default: ``bhxh-`` and its object id)."""
        object_id = os.urandom(_ID_BYTES)
        label = label or f"bhxh-{object_id.hex()}"
        with self._operation("key generation"):
            if algorithm is Algorithm.PS256:
                check_rsa_bits(rsa_bits)
                self._session.generate_keypair(
                    KeyType.RSA,
                    rsa_bits,
                    id=object_id,
                    label=label,
                    store=True,
                    public_template=_PUBLIC_TEMPLATE,
                    private_template=_PRIVATE_TEMPLATE,
                )
            else:
                key_type, curve = (
                    (KeyType.EC_EDWARDS, _ED25519_OID) if algorithm is Algorithm.ED25519 else (KeyType.EC, "secp256r1")
                )
                parameters = self._session.create_domain_parameters(
                    key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
                )
                parameters.generate_keypair(
                    id=object_id,
                    label=label,
                    store=True,
                    public_template=_PUBLIC_TEMPLATE,
                    private_template=_PRIVATE_TEMPLATE,
                )
        return self.key(object_id.hex())

    def key(self, object_id: str) -> TokenKey:
        """The token key whose ``CKA_ID`` is ``object_id`` (hex), as a signing key."""
        try:
            raw_id = bytes.fromhex(object_id)
        except ValueError as exc:
            raise TokenError(f"{object_id!r} is not a hexadecimal PKCS#11 object id") from exc
        with self._operation("key lookup"):
            try:
                private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=raw_id)
                public = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=raw_id)
            except pkcs11.NoSuchKey as exc:
                raise TokenError(f"token {self.label!r} holds no key pair with id {object_id}") from exc
            except pkcs11.MultipleObjectsReturned as exc:
                raise TokenError(f"token {self.label!r} holds several keys with id {object_id}") from exc
            public_key = _public_key(public)
        return _wrap(self, private, public_key, object_id)

    def key_by_label(self, label: str) -> TokenKey:
        """The key pair labelled ``label`` (as an HSM officer's tools name it)."""
        with self._operation("key lookup"):
            try:
                private = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
            except pkcs11.NoSuchKey as exc:
                raise TokenError(f"token {self.label!r} holds no private key labelled {label!r}") from exc
            except pkcs11.MultipleObjectsReturned as exc:
                raise TokenError(f"token {self.label!r} holds several private keys labelled {label!r}") from exc
            object_id = private[Attribute.ID]
            protected = private[Attribute.SENSITIVE] and not private[Attribute.EXTRACTABLE]
        if not object_id:
            raise TokenError(f"the key labelled {label!r} has no CKA_ID: give it one with the HSM's tools")
        if not protected:
            # A key the token would hand out is no safer than a file: refuse it as a signing key.
            raise KeyNotUsable(f"the key labelled {label!r} is extractable or not sensitive on the token")
        return self.key(bytes(object_id).hex())

    def check(self) -> TokenHealth:
        """Whether the token answers and this process is still logged in to it. An HSM that
        restarted, or a C_Logout from anywhere in this process, leaves the session open but
        public: the private keys are then invisible and nothing signs. C_GetSessionInfo says
        which (a real round trip that changes nothing on the token)."""
        try:
            with self._operation("health check"):
                state = _session_state(self._key[0], self._session.handle)
        except TokenError:
            return TokenHealth.UNAVAILABLE
        return TokenHealth.LOGGED_IN if state in _USER_STATES else TokenHealth.LOGGED_OUT

    def destroy(self, key: TokenKey | str) -> None:
        """Delete a key pair from the token (a retired or revoked key must never sign again)."""
        raw_id = bytes.fromhex(key if isinstance(key, str) else key.object_id)
        with self._operation("key deletion"):
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for found in self._session.get_objects({Attribute.CLASS: object_class, Attribute.ID: raw_id}):
                    found.destroy()

    def sign(self, private: Any, data: bytes, mechanism: Mechanism, parameter: Any = None) -> bytes:
        with self._operation("signing"):
            return bytes(private.sign(data, mechanism=mechanism, mechanism_param=parameter))


# python-pkcs11 does not expose C_GetSessionInfo, so it is called through the module's function
# list (PKCS#11 v2.40 §5.2 CK_FUNCTION_LIST: the pointers in this order, after the version).
# CK_ULONG is the C ``unsigned long`` on the platforms this service runs on.
_FUNCTIONS_TO_SESSION_INFO = (
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
)
_USER_STATES = frozenset({1, 3})  # CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS (§5.6)


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _SessionInfo(ctypes.Structure):
    _fields_ = [
        ("slot_id", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("error", ctypes.c_ulong),
    ]


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", _Version), *((name, ctypes.c_void_p) for name in _FUNCTIONS_TO_SESSION_INFO)]


_GetSessionInfo = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.POINTER(_SessionInfo))


@functools.cache
def _session_info_function(module: str) -> Any:
    # The module is loaded already (python-pkcs11 initialised it): dlopen returns that copy.
    functions = ctypes.POINTER(_FunctionList)()
    if ctypes.CDLL(module).C_GetFunctionList(ctypes.byref(functions)) != 0 or not functions:
        raise TokenError("the PKCS#11 module has no function list")
    return _GetSessionInfo(functions.contents.C_GetSessionInfo)


def _session_state(module: str, handle: int) -> int:
    """The CKS_* state of a session (C_GetSessionInfo); TokenError when the token does not answer."""
    try:
        get_info = _session_info_function(module)
    except (OSError, AttributeError) as exc:
        raise TokenError("the PKCS#11 module cannot be asked for its session state") from exc
    info = _SessionInfo()
    rv = get_info(handle, ctypes.byref(info))
    if rv != 0:
        raise TokenError(f"C_GetSessionInfo failed (CKR 0x{rv:x})")
    return int(info.state)


def _public_key(public: Any) -> PublicKeyTypes:
    if public.key_type is KeyType.RSA:
        der = encode_rsa_public_key(public)
        return serialization.load_der_public_key(der)
    if public.key_type is KeyType.EC:
        return serialization.load_der_public_key(encode_ec_public_key(public))
    if public.key_type is KeyType.EC_EDWARDS:
        point = bytes(public[Attribute.EC_POINT])
        # CKA_EC_POINT of an Edwards key is the 32-byte point, DER OCTET STRING-wrapped by
        # most tokens (SoftHSM2 included) and bare by some.
        raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    raise WeakKey(f"token key type {public.key_type.name} is not supported")


class _TokenKeyMixin:
    """What every token key has: its token, its handle, its id and its public key; no private
    material."""

    def __init__(self, token: KeyToken, private: Any, public: Any, object_id: str) -> None:
        self._token, self._private, self._public, self.object_id = token, private, public, object_id

    def public_key(self) -> Any:
        return self._public

    def _refuse(self, *_: object, **__: object) -> NoReturn:
        raise KeyNotUsable(f"the private key {self.object_id} stays on its PKCS#11 token: it can only sign")

    private_bytes = _refuse
    private_numbers = _refuse

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        # A handle to a key on the token: a copy is the same key, and there is nothing to copy.
        return self


class TokenEd25519Key(_TokenKeyMixin, ed25519.Ed25519PrivateKey):
    def sign(self, data: Buffer) -> bytes:
        return self._token.sign(self._private, bytes(data), Mechanism.EDDSA)

    def jws_signature(self, data: bytes) -> bytes:
        return self.sign(data)

    private_bytes_raw = _TokenKeyMixin._refuse


class TokenECKey(_TokenKeyMixin, ec.EllipticCurvePrivateKey):
    _public: ec.EllipticCurvePublicKey

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if isinstance(algorithm, utils.Prehashed) and isinstance(algorithm._algorithm, hashes.SHA256):
            digest = bytes(data)
        elif isinstance(algorithm, hashes.SHA256):
            digest = hashlib.sha256(data).digest()
        else:
            raise KeyNotUsable("a P-256 token key signs ECDSA with SHA-256 only")
        raw = self._token.sign(self._private, digest, Mechanism.ECDSA)
        # CKM_ECDSA returns r‖s; cryptography's interface (and so every caller) expects DER.
        half = len(raw) // 2
        return utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def jws_signature(self, data: bytes) -> bytes:
        # RFC 7518 §3.4 wants r‖s, which is what the token gives: no DER round trip.
        return self._token.sign(self._private, hashlib.sha256(data).digest(), Mechanism.ECDSA)

    exchange = _TokenKeyMixin._refuse


class TokenRSAKey(_TokenKeyMixin, rsa.RSAPrivateKey):
    _public: rsa.RSAPublicKey

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: Any) -> bytes:
        # Only RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt: the one RSA scheme this
        # service signs with. cryptography exposes the PSS settings only as private fields.
        mgf_hash = getattr(getattr(padding, "_mgf", None), "_algorithm", None)
        salt = getattr(padding, "_salt_length", None)
        if not (
            isinstance(padding, PSS)
            and isinstance(algorithm, hashes.SHA256)
            and isinstance(mgf_hash, hashes.SHA256)
            and salt in (PSS_SALT_BYTES, PSS.DIGEST_LENGTH)
        ):
            raise KeyNotUsable("an RSA token key signs RSASSA-PSS with SHA-256 and a 32-byte salt only")
        return self.jws_signature(data)

    def jws_signature(self, data: bytes) -> bytes:
        parameter = (Mechanism.SHA256, pkcs11.MGF.SHA256, PSS_SALT_BYTES)
        return self._token.sign(self._private, data, Mechanism.SHA256_RSA_PKCS_PSS, parameter)

    decrypt = _TokenKeyMixin._refuse


TokenKey = TokenEd25519Key | TokenECKey | TokenRSAKey


_WRAPPERS: dict[Algorithm, type[TokenKey]] = {
    Algorithm.ED25519: TokenEd25519Key,
    Algorithm.ES256: TokenECKey,
    Algorithm.PS256: TokenRSAKey,
}


def _wrap(token: KeyToken, private: Any, public: PublicKeyTypes, object_id: str) -> TokenKey:
    # The same policy as for keys in memory: a curve other than P-256 or RSA under 2048 is WeakKey.
    return _WRAPPERS[algorithm_for_key(public)](token, private, public, object_id)


def jws_signature(private_key: object, data: bytes) -> bytes | None:
    """The JWS signature value (RFC 7518) of ``data`` by a token key; None for a key in memory."""
    return private_key.jws_signature(data) if isinstance(private_key, TokenKey) else None


def token_object_id(private_key: object) -> str | None:
    """The token object id of ``private_key``, or None for a key held in memory."""
    return private_key.object_id if isinstance(private_key, _TokenKeyMixin) else None
