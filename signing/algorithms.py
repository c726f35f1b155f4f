"""The algorithm belongs to the key, never to the message or token: Ed25519 → Ed25519, P-256 → ES256,
RSA ≥ 2048 → PS256 (RSASSA-PSS with SHA-256, as Circular 15/2025/TT-BKHCN requires for RSA).

Ed25519 keys use the fully-specified JWS name "Ed25519" of RFC 9864, which deprecates the
polymorphic "EdDSA"; verification still accepts "EdDSA" from an Ed25519 key, where the two
names cannot mean different things.

Nothing here reads an algorithm name from a message to decide how to verify; a message's
declared algorithm is only ever compared with the key's.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from signing.errors import WeakKey

# Circular 15/2025/TT-BKHCN: RSA at least 2048 bits; ECDSA at least 256 bits.
MIN_RSA_BITS = 2048
DEFAULT_RSA_BITS = 3072
# RFC 7518 §3.5: PS256 uses MGF1 with SHA-256 and a salt as long as the hash output.
PSS_SALT_BYTES = 32


class SignatureAlgorithm(StrEnum):
    """The one name of a signature algorithm in every verification result, whatever the format
    called it: its JWS name (RFC 7518 §3.1; RFC 9864 for Ed25519). A CMS object identifier and
    an XMLDSig URI are mapped to it. ECDSA is named by its hash (ES384: ECDSA with SHA-384); the
    curve is the certificate's."""

    ED25519 = "Ed25519"
    ES256 = "ES256"
    ES384 = "ES384"
    ES512 = "ES512"
    PS256 = "PS256"
    PS384 = "PS384"
    PS512 = "PS512"
    RS256 = "RS256"
    RS384 = "RS384"
    RS512 = "RS512"


# (scheme, hash) → name; schemes and hashes as asn1crypto spells them.
_SCHEME_PREFIX = {"ecdsa": "ES", "rsassa_pss": "PS", "rsassa_pkcs1v15": "RS"}
_HASH_SUFFIX = {"sha256": "256", "sha384": "384", "sha512": "512"}


def signature_algorithm(scheme: str, digest: str | None) -> SignatureAlgorithm:
    """The name of ``scheme`` (ecdsa, rsassa_pss, rsassa_pkcs1v15, ed25519) over ``digest``
    (sha256, sha384, sha512; ignored for ed25519). ``ValueError`` for anything without a name."""
    if scheme == "ed25519":
        return SignatureAlgorithm.ED25519
    if scheme not in _SCHEME_PREFIX or digest not in _HASH_SUFFIX:
        raise ValueError(f"no name for {scheme} with {digest}")
    return SignatureAlgorithm(_SCHEME_PREFIX[scheme] + _HASH_SUFFIX[digest])


class Algorithm(StrEnum):
    """JWS names (RFC 7518, RFC 9864) of the three algorithms this service signs with."""

    ED25519 = "Ed25519"
    ES256 = "ES256"
    PS256 = "PS256"

    @property
    def signature_algorithm(self) -> SignatureAlgorithm:
        """The same algorithm under the name verification results give it (the same text)."""
        return SignatureAlgorithm(self.value)


def pss_padding() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES)


def algorithm_for_key(key: PublicKeyTypes | PrivateKeyTypes) -> Algorithm:
    """The one algorithm a key signs with; anything else is refused as a weak or unknown key."""
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey)):
        return Algorithm.ED25519
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return Algorithm.ES256
        raise WeakKey(f"EC curve {key.curve.name} is not supported (only P-256)")
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        check_rsa_bits(key.key_size)
        return Algorithm.PS256
    raise WeakKey(f"unsupported key type {type(key).__name__}")


# Curves accepted on signatures made elsewhere: P-256 and stronger NIST curves (the Circular
# asks for ECDSA of at least 256 bits); this service itself signs with P-256 only.
_VERIFY_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def check_verification_key(key: PublicKeyTypes) -> None:
    """Refuse (``WeakKey``) a signer key below the policy: RSA under 2048 bits, curves other
    than P-256/384/521, DSA and any other key type."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _VERIFY_CURVES):
            raise WeakKey(f"EC curve {key.curve.name} is not accepted")
        return
    algorithm_for_key(key)


def generate_private_key(algorithm: Algorithm, *, rsa_bits: int = DEFAULT_RSA_BITS) -> PrivateKeyTypes:
    if algorithm is Algorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm is Algorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    check_rsa_bits(rsa_bits)
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def check_rsa_bits(bits: int) -> None:
    """Refuse (``WeakKey``) an RSA size under the Circular's minimum."""
    if bits < MIN_RSA_BITS:
        raise WeakKey(f"RSA {bits} bits is below the {MIN_RSA_BITS}-bit minimum")


def sign_raw(private_key: PrivateKeyTypes, data: bytes) -> bytes:
    """Sign ``data`` with the key's own algorithm (ECDSA output DER-encoded, as CMS wants)."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, pss_padding(), hashes.SHA256())
    raise WeakKey(f"unsupported key type {type(private_key).__name__}")
