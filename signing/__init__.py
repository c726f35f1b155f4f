"""Signing domain: keys and certificates, JWS / CMS (CAdES) / XMLDSig (XAdES) signatures, ETSI
EN 319 102-1 style verification results. Imports nothing else from this repository."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# pyHanko imports cryptography's DSA key type to recognise it; that import alone warns on every
# start of the service and the CLI. DSA keys themselves are refused here (signing.algorithms).
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning, module=r"pyhanko\."
)

# The filter has to be in place before these imports load pyHanko, hence E402.
from signing.algorithms import Algorithm, SignatureAlgorithm, algorithm_for_key  # noqa: E402
from signing.errors import SigningError  # noqa: E402
from signing.keystore import KeyRecord, KeyState, Keystore, SigningKey  # noqa: E402
from signing.results import Indication, Signer, SubIndication, VerificationResult  # noqa: E402
from signing.trust import TrustPolicy  # noqa: E402

__all__ = [
    "Algorithm",
    "Indication",
    "KeyRecord",
    "KeyState",
    "Keystore",
    "SignatureAlgorithm",
    "Signer",
    "SigningError",
    "SigningKey",
    "SubIndication",
    "TrustPolicy",
    "VerificationResult",
    "algorithm_for_key",
]
