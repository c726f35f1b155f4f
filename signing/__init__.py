"""Signing domain: keys and certificates, JWS / CMS (CAdES) / XMLDSig (XAdES) signatures, ETSI
EN 319 102-1 style verification results. Imports nothing else from this repository."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# pyHanko imports cryptography's DSA key type to recognise it; that import alone warns on every
# start of the service and the CLI. DSA keys themselves are refused here (signing.algorithms).
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning, module=r"pyhanko\."
)

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
