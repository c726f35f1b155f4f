"""What a key is for. Every key has exactly one purpose and signs only for it.

Decision 352 forbids signing in another's name and lets only the one-stop system issue
receipts, so the key that signs receipts (PAdES) must never sign whatever bytes a caller sends,
and a person's key never speaks for the institution. The keystore stores the purpose with the
key (it cannot be changed afterwards: re-purposing a key would be the very escalation this
prevents); the signing use cases ask for the purpose they need.

Certificates say their purpose too, so that validators outside this service can tell a receipt
from a data message (docs/keys.md): a certificate policy OID per purpose (RFC 5280 §4.2.1.4)
under a private arc, and for receipts the extended key usage id-kp-documentSigning (RFC 9336).
"""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509


class KeyPurpose(StrEnum):
    RECEIPT = "receipt"  # PAdES signatures of the receipts this service renders
    DATA_MESSAGE = "data-message"  # the institution's JWS, CMS and XML signatures (Article 4.5)
    EXCHANGE = "exchange"  # RFC 9421 message signatures between the portal and the one-stop system
    CHECKPOINT = "checkpoint"  # the audit log's signed checkpoints
    PERSONAL = "personal"  # one person's own key, bound to that person


# A UUID-derived OID (ITU-T X.667: the 2.25 arc needs no registration) owned by this project;
# its sub-arc 1 holds one certificate policy per purpose. A production deployment whose CA
# issues certificates under its own policies is recognised by the keystore purpose instead.
OID_ARC = "2.25.210060826979507155537626386551340909895"
POLICY_ARC = f"{OID_ARC}.1"
_POLICY_NUMBER = {
    KeyPurpose.RECEIPT: 1,
    KeyPurpose.DATA_MESSAGE: 2,
    KeyPurpose.EXCHANGE: 3,
    KeyPurpose.CHECKPOINT: 4,
    KeyPurpose.PERSONAL: 5,
}
POLICY_OIDS: dict[KeyPurpose, x509.ObjectIdentifier] = {
    purpose: x509.ObjectIdentifier(f"{POLICY_ARC}.{n}") for purpose, n in _POLICY_NUMBER.items()
}
_PURPOSE_BY_POLICY = {oid.dotted_string: purpose for purpose, oid in POLICY_OIDS.items()}
# RFC 9336: signing human-readable documents; carried by receipt certificates.
ID_KP_DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


# Purposes whose keys sign data messages (JWS, CMS, XML): the institution's data-message key,
# and a person's own key for that person.
MESSAGE_PURPOSES = frozenset({KeyPurpose.DATA_MESSAGE, KeyPurpose.PERSONAL})


def default_purpose(personal: bool) -> KeyPurpose:
    """The purpose of a key nobody named one for: a person's key is personal, the service's
    signs data messages (never receipts: that purpose is always asked for by name)."""
    return KeyPurpose.PERSONAL if personal else KeyPurpose.DATA_MESSAGE


def policy_for(purpose: KeyPurpose) -> x509.CertificatePolicies:
    """The certificate policies extension marking a certificate for ``purpose``."""
    return x509.CertificatePolicies([x509.PolicyInformation(POLICY_OIDS[purpose], None)])


def certificate_purpose(cert: x509.Certificate) -> KeyPurpose | None:
    """The purpose a certificate's policies mark it for; None when it carries none of ours (or
    claims two, which marks nothing)."""
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    found = {
        _PURPOSE_BY_POLICY[p.policy_identifier.dotted_string]
        for p in policies
        if p.policy_identifier.dotted_string in _PURPOSE_BY_POLICY
    }
    return found.pop() if len(found) == 1 else None
