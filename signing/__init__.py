"""Signing domain: keys and certificates, JWS / CMS (CAdES) / XMLDSig (XAdES) signatures, ETSI
EN 319 102-1 style verification results. Imports nothing else from this repository."""

from signing.algorithms import Algorithm, algorithm_for_key
from signing.errors import SigningError
from signing.keystore import KeyRecord, KeyState, Keystore, SigningKey
from signing.results import Indication, Signer, SubIndication, VerificationResult
from signing.trust import TrustPolicy

__all__ = [
    "Algorithm",
    "Indication",
    "KeyRecord",
    "KeyState",
    "Keystore",
    "Signer",
    "SigningError",
    "SigningKey",
    "SubIndication",
    "TrustPolicy",
    "VerificationResult",
    "algorithm_for_key",
]
