"""C2SP signed notes (https://c2sp.org/signed-note) and tlog checkpoints
(https://c2sp.org/tlog-checkpoint), Ed25519 only.

Hand-written because the format is small, fixed by docs/audit-log.md for outside auditors, and no
maintained Python package implements it. Text formats become frozen objects through
``from_text``/``to_text``; parsing never leaks a stray ValueError or binascii.Error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import CheckpointSignatureInvalid, MalformedCheckpoint, MalformedVerifierKey

# signed-note: a signature line is U+2014 EM DASH, a space, the key name, a space, base64.
SIGNATURE_PREFIX = "\u2014 "
# signed-note signature type for Ed25519; also the first byte of the verifier key's key material.
ED25519_TYPE = b"\x01"
KEY_ID_BYTES = 4
ED25519_PUBLIC_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100  # the cap of the Go reference (golang.org/x/mod/sumdb/note)
ORIGIN_PREFIX = "bhxh-integrity/audit/"
ROOT_HASH_BYTES = 32


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """signed-note key ID: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + raw).digest()[:KEY_ID_BYTES]


def valid_key_name(name: str) -> bool:
    """signed-note key names: non-empty, no Unicode spaces, no '+'."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def _check_name(name: str) -> None:
    if not valid_key_name(name):
        raise MalformedCheckpoint(f"invalid key name {name!r}")


@dataclass(frozen=True)
class VerifierKeyFields:
    """The fields of a verifier key ``<name>+<hex key id>+<base64(type ‖ public key)>`` (signed-note,
    and tlog-cosignature for cosigners), not yet checked against each other: which types and key
    lengths are allowed, and that the id matches, is for the key class that parses them."""

    name: str
    key_id: bytes
    kind: int
    public_bytes: bytes

    @classmethod
    def from_text(cls, text: str) -> VerifierKeyFields:
        # The name holds no '+', the hex id none either; the base64 key material may.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise MalformedVerifierKey("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        try:
            wanted_id = bytes.fromhex(hex_id)
            material = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise MalformedVerifierKey("verifier key id or key material is not hex/base64") from None
        if len(hex_id) != 2 * KEY_ID_BYTES or not material:
            raise MalformedVerifierKey("verifier key has the wrong length")
        return cls(name, wanted_id, material[0], material[1:])


@dataclass(frozen=True)
class VerifierKey:
    """A signed-note verifier key: ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``."""

    name: str
    key_id: bytes
    public_key: Ed25519PublicKey = field(compare=False, repr=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> VerifierKey:
        try:
            _check_name(name)
        except MalformedCheckpoint as exc:
            raise MalformedVerifierKey(str(exc)) from None
        return cls(name, key_id(name, public_key), public_key)

    @classmethod
    def from_text(cls, text: str) -> VerifierKey:
        fields = VerifierKeyFields.from_text(text)
        if len(fields.public_bytes) != ED25519_PUBLIC_BYTES:
            raise MalformedVerifierKey("verifier key has the wrong length")
        if bytes([fields.kind]) != ED25519_TYPE:
            raise MalformedVerifierKey("only Ed25519 verifier keys (type 0x01) are accepted")
        public_key = Ed25519PublicKey.from_public_bytes(fields.public_bytes)
        key = cls.from_public_key(fields.name, public_key)
        if key.key_id != fields.key_id:
            raise MalformedVerifierKey("verifier key id does not match its name and key")
        return key

    def to_text(self) -> str:
        raw = self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(ED25519_TYPE + raw).decode()}"

    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteSigner:
    """A private key with its signed-note name (the log's key or a cosigner's)."""

    name: str
    private_key: Ed25519PrivateKey = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey.from_public_key(self.name, self.private_key.public_key())


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def to_line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class SignedNote:
    """Note text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    @classmethod
    def from_text(cls, note: str) -> SignedNote:
        if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
            raise MalformedCheckpoint("signed note is too large")
        # The text is everything up to the last blank line (as the Go reference splits).
        split = note.rfind("\n\n")
        if split < 0:
            raise MalformedCheckpoint("signed note has no blank line before its signatures")
        text, sig_block = note[: split + 1], note[split + 2 :]
        _check_text(text)
        if not sig_block.endswith("\n"):
            raise MalformedCheckpoint("signed note must end with a newline")
        lines = sig_block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise MalformedCheckpoint("signed note has too many signatures")
        return cls(text, tuple(_parse_signature_line(line) for line in lines))

    def to_text(self) -> str:
        return self.text + "\n" + "".join(sig.to_line() for sig in self.signatures)

    def verify(self, keys: Sequence[VerifierKey]) -> tuple[VerifierKey, ...]:
        """The trusted keys whose signatures verify; raises CheckpointSignatureInvalid when none
        does or when a signature by a trusted key fails (signed-note: the whole note is rejected).
        Signatures by unknown keys are ignored; an empty trust list verifies nothing."""
        message = self.text.encode()
        verified: list[VerifierKey] = []
        for sig in self.signatures:
            for key in keys:
                if key.name != sig.name or key.key_id != sig.key_id:
                    continue
                try:
                    key.public_key.verify(sig.signature, message)
                except InvalidSignature:
                    raise CheckpointSignatureInvalid(f"signature by {key.name} does not verify") from None
                if key not in verified:
                    verified.append(key)
        if not verified:
            raise CheckpointSignatureInvalid("no signature by a trusted key")
        return tuple(verified)

    def signed_by(self, signer: NoteSigner) -> SignedNote:
        """This note with one more signature (the log's own, or a cosignature)."""
        kid = key_id(signer.name, signer.private_key.public_key())
        signature = signer.private_key.sign(self.text.encode())
        return SignedNote(self.text, (*self.signatures, NoteSignature(signer.name, kid, signature)))


def _check_text(text: str) -> None:
    if not text.endswith("\n") or text == "\n":
        raise MalformedCheckpoint("note text must be non-empty and end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise MalformedCheckpoint("note text holds control characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise MalformedCheckpoint("note text is not valid UTF-8") from None


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedCheckpoint("signature line must start with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise MalformedCheckpoint("signature line is '— <name> <base64>'")
    name, b64 = parts
    _check_name(name)
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise MalformedCheckpoint("signature is not base64") from None
    if len(blob) <= KEY_ID_BYTES:
        raise MalformedCheckpoint("signature is too short")
    return NoteSignature(name, blob[:KEY_ID_BYTES], blob[KEY_ID_BYTES:])


@dataclass(frozen=True)
class Checkpoint:
    """tlog-checkpoint body: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedCheckpoint("checkpoint needs origin, size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise MalformedCheckpoint("checkpoint origin is empty")
        # Decimal without sign or leading zeros, as tlog-checkpoint requires (a bare int() would
        # also take '+1', ' 1' and '1_000').
        if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
            raise MalformedCheckpoint("checkpoint size is not a decimal number")
        try:
            root_hash = base64.b64decode(root_text, validate=True)
        except binascii.Error:
            raise MalformedCheckpoint("checkpoint root hash is not base64") from None
        if len(root_hash) != ROOT_HASH_BYTES:
            raise MalformedCheckpoint("checkpoint root hash is not 32 bytes")
        if any(not line for line in extensions):
            raise MalformedCheckpoint("checkpoint extension lines must not be empty")
        return cls(origin, int(size_text), root_hash, tuple(extensions))

    def to_text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: SignedNote

    @classmethod
    def from_text(cls, text: str) -> SignedCheckpoint:
        note = SignedNote.from_text(text)
        return cls(Checkpoint.from_text(note.text), note)

    @classmethod
    def sign(cls, checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> SignedCheckpoint:
        if not signers:
            raise MalformedCheckpoint("a checkpoint needs at least one signer")
        note = SignedNote(checkpoint.to_text(), ())
        for signer in signers:
            note = note.signed_by(signer)
        return cls(checkpoint, note)

    def to_text(self) -> str:
        return self.note.to_text()

    def verify(self, keys: Sequence[VerifierKey]) -> tuple[VerifierKey, ...]:
        return self.note.verify(keys)

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def origin_for(log_id: str) -> str:
    """The checkpoint origin line of a log (docs/audit-log.md): ``bhxh-integrity/audit/<log id>``."""
    return ORIGIN_PREFIX + log_id
