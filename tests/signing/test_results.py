"""Verification results: indication derived from the sub-indication per ETSI EN 319 102-1, and
one-line messages in Vietnamese and English from the same object as the JSON form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from signing.algorithms import SignatureAlgorithm
from signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    ChainConstraintsFailure,
    CryptoConstraintsFailure,
    FormatFailure,
    HashFailure,
    NoCertificateChain,
    NoSigningCertificate,
    RevocationUnavailable,
    SigCryptoFailure,
    SignerRevoked,
    SignerRevokedNoPoe,
)
from signing.results import Indication, Signer, SubIndication, VerificationResult

TOTAL_FAILED = {"FORMAT_FAILURE", "HASH_FAILURE", "SIG_CRYPTO_FAILURE", "REVOKED", "NOT_YET_VALID"}


@pytest.mark.parametrize("sub", list(SubIndication))
def test_indication_follows_the_etsi_table(sub: SubIndication) -> None:
    result = VerificationResult(format="jws", sub_indication=sub)
    expected = Indication.TOTAL_FAILED if sub.value in TOTAL_FAILED else Indication.INDETERMINATE
    assert result.indication is expected
    assert result.valid is False


@pytest.mark.parametrize("sub", [None, *SubIndication])
def test_every_outcome_has_one_line_messages_in_both_languages(sub: SubIndication | None) -> None:
    result = VerificationResult(format="cms", sub_indication=sub, key_id="k1")
    for text in (result.message_vi, result.message_en):
        assert text and "\n" not in text
    assert result.message_vi != result.message_en


@pytest.mark.parametrize(
    ("failure", "sub"),
    [
        (FormatFailure, "FORMAT_FAILURE"),
        (HashFailure, "HASH_FAILURE"),
        (SigCryptoFailure, "SIG_CRYPTO_FAILURE"),
        (CryptoConstraintsFailure, "CRYPTO_CONSTRAINTS_FAILURE"),
        (NoSigningCertificate, "NO_SIGNING_CERTIFICATE_FOUND"),
        (NoCertificateChain, "NO_CERTIFICATE_CHAIN_FOUND"),
        (ChainConstraintsFailure, "CHAIN_CONSTRAINTS_FAILURE"),
        (SignerRevoked, "REVOKED"),
        (SignerRevokedNoPoe, "REVOKED_NO_POE"),
        (CertificateExpired, "EXPIRED"),
        (CertificateNotYetValid, "NOT_YET_VALID"),
        (RevocationUnavailable, "TRY_LATER"),
    ],
)
def test_each_failure_maps_to_its_sub_indication(failure: type, sub: str) -> None:
    result = VerificationResult.failed("xml", failure("why"))
    assert result.sub_indication == SubIndication(sub)
    assert result.reasons == ("why",)


def test_passed_result_renders_signer_and_time() -> None:
    signer = Signer("CN=Một cửa,C=VN", "CN=CA,C=VN", "1a", "kid-1")
    moment = datetime(2025, 11, 23, 8, 0, tzinfo=UTC)
    result = VerificationResult("jws", None, "kid-1", signer, moment, SignatureAlgorithm.PS256)
    data = result.to_dict()
    assert data["valid"] is True and data["indication"] == "TOTAL_PASSED" and data["sub_indication"] is None
    assert data["signed_at"] == "2025-11-23T08:00:00Z" and data["algorithm"] == "PS256"
    assert data["signer"] == {
        "subject": "CN=Một cửa,C=VN",
        "issuer": "CN=CA,C=VN",
        "serial": "1a",
        "kid": "kid-1",
        "purpose": None,
    }
    assert "Một cửa" in data["message"]["vi"] and data["message"]["vi"].startswith("Chữ ký hợp lệ")


def test_results_are_immutable() -> None:
    result = VerificationResult("jws", None)
    with pytest.raises(AttributeError):
        result.sub_indication = SubIndication.HASH_FAILURE  # type: ignore[misc]
