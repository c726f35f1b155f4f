"""PAdES signing and validation of PDFs (signing/pdf.py), with a throwaway PKI.

The forgery cases tamper with real signed files and assert the exact fact that flags them;
the helpers at the top are reused by the receipt tests in tests/integrity and tests/api.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.timestamps import DummyTimeStamper

from signing.errors import MalformedPdf, PdfSigningError
from signing.pdf import ModificationLevel, PdfSigner, validate_pdf
from signing.pdf_sandbox import close_idle_children, validate_pdf_sandboxed
from signing.receipt_pdf import ReceiptRenderer, ReceiptSlip, SlipDocument

NOW = datetime.now(UTC).replace(microsecond=0)


# ---------------------------------------------------------------- throwaway PKI (shared)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def make_ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
    common_name: str,
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    timestamping: bool = False,
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if timestamping:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return key, builder.sign(ca_key, hashes.SHA256())


@cache
def throwaway_pki() -> dict[str, tuple]:
    """One trusted CA with the expected signer, a sibling, an expired signer; an untrusted CA."""
    ca = make_ca("Test Root CA")
    other_ca = make_ca("Forger Root CA")
    return {
        "ca": ca,
        "signer": make_leaf(ca, "One-Stop Signing (test)"),
        "sibling": make_leaf(ca, "Portal (test)"),
        "expired": make_leaf(
            ca, "One-Stop Signing (expired)", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
        ),
        "forger": make_leaf(other_ca, "One-Stop Signing (forged)"),
        "forger_ca": other_ca,
        "tsa": make_leaf(ca, "Test TSA", timestamping=True),
    }


def sample_slip(code: str = "000.00.31.H29-261123-0001", **changes: object) -> ReceiptSlip:
    values: dict[str, object] = {
        "code": code,
        "unit_code": code[:13],
        "unit_name": "Bảo hiểm xã hội Thành phố Hồ Chí Minh",
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant_name": "Nguyễn Thị Ánh Tuyết",
        "applicant_id_number": "079190001234",
        "official_name": "Đặng Văn Lợi",
        "official_title": "Chuyên viên",
        "received_at": datetime(2026, 11, 23, 2, 30, tzinfo=UTC),
        "appointment_at": date(2026, 11, 30),
        "verify_url": f"http://testserver/v1/receipts/{code}",
        "applicant_phone": "0901234567",
        "applicant_address": "12 Lê Lợi, Phường Bến Nghé, Quận 1",
        "documents": (
            SlipDocument("Tờ khai đề nghị hưởng chế độ ốm đau", 1, True),
            SlipDocument("Giấy ra viện", 1, False),
        ),
    }
    values.update(changes)
    return ReceiptSlip(**values)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def renderer() -> ReceiptRenderer:
    return ReceiptRenderer()


@cache
def unsigned_pdf() -> bytes:
    return renderer().render(sample_slip())


def signer_for(role: str, **options: object) -> PdfSigner:
    pki = throwaway_pki()
    key, cert = pki[role]
    issuer = pki["forger_ca"] if role == "forger" else pki["ca"]
    return PdfSigner(key, cert, [issuer[1]], **options)  # type: ignore[arg-type]


def replace_page_content(signed: bytes, content: bytes = b"BT /F1 24 Tf 100 700 Td (FORGED) Tj ET") -> bytes:
    """An incremental update that points the first page at new content."""
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page["/Contents"] = writer.add_object(generic.StreamObject(stream_data=content))
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def add_overlay_annotation(signed: bytes) -> bytes:
    """An incremental update that lays a free-text annotation over the slip."""
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    annotation = generic.DictionaryObject(
        {
            generic.NameObject("/Type"): generic.NameObject("/Annot"),
            generic.NameObject("/Subtype"): generic.NameObject("/FreeText"),
            generic.NameObject("/Rect"): generic.ArrayObject([generic.FloatObject(v) for v in (100, 600, 400, 650)]),
            generic.NameObject("/Contents"): generic.TextStringObject("Hẹn trả: 01/12/2026"),
            generic.NameObject("/DA"): generic.TextStringObject("/Helv 12 Tf 0 g"),
        }
    )
    ref = writer.add_object(annotation)
    annots = page.get("/Annots")
    if annots is None:
        page["/Annots"] = generic.ArrayObject([ref])
    else:
        annots.get_object().append(ref)
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def flip_byte_in_signed_range(signed: bytes) -> bytes:
    """Flip one bit of a byte inside the first signed range (the slip's own bytes)."""
    reader = PdfFileReader(io.BytesIO(signed))
    first_range_end = reader.embedded_signatures[0].sig_object["/ByteRange"][1]
    position = first_range_end // 2
    damaged = bytearray(signed)
    damaged[position] ^= 0x01
    return bytes(damaged)


def _validate(data: bytes, *, at: datetime = NOW, expected: str = "signer"):
    pki = throwaway_pki()
    return validate_pdf(data, trust_roots=[pki["ca"][1]], expected_signers=[pki[expected][1]], at=at)


@pytest.fixture(scope="module")
def signed() -> bytes:
    return signer_for("signer").sign(unsigned_pdf(), signing_time=NOW)


# ---------------------------------------------------------------- genuine


def test_genuine_signature_is_intact_trusted_unmodified_b_b(signed: bytes) -> None:
    verdict = _validate(signed)
    assert verdict.signature_found and verdict.signature_count == 1
    assert verdict.intact is True and verdict.value_verifies is True and verdict.valid is True
    assert verdict.chain_trusted is True and verdict.expected_signer is True and verdict.trusted_signer is True
    assert verdict.modification_level is ModificationLevel.NONE and verdict.modified_after_signing is False
    assert verdict.coverage == "entire_file"
    assert verdict.pades_level == "B-B" and verdict.timestamp_time is None
    assert verdict.signing_time == NOW
    assert "One-Stop Signing (test)" in (verdict.signer or "")
    assert verdict.signed_subject == "000.00.31.H29-261123-0001"


def test_rsa_signature_is_pades_rsassa_pss_sha256(signed: bytes) -> None:
    sig = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    assert sig.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    algorithm = sig.signer_info["signature_algorithm"]
    assert algorithm["algorithm"].native == "rsassa_pss"
    assert algorithm["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert sig.signer_info["digest_algorithm"]["algorithm"].native == "sha256"


def test_a_chain_given_with_the_signer_certificate_carries_it_once() -> None:
    pki = throwaway_pki()
    key, cert = pki["signer"]
    # A keystore chain starts with the signer's own certificate.
    signed = PdfSigner(key, cert, [cert, pki["ca"][1]]).sign(unsigned_pdf(), signing_time=NOW)
    signed_data = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].signed_data
    carried = [c.chosen.dump() for c in signed_data["certificates"]]
    assert carried == [cert.public_bytes(serialization.Encoding.DER)]
    assert _validate(signed).valid is True


class _CountingKey(rsa.RSAPrivateKey):
    """Delegates to a real key and counts signatures (proves one signature per document)."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self.inner = inner
        self.signatures = 0

    def sign(self, data, padding, algorithm):  # type: ignore[no-untyped-def]
        self.signatures += 1
        return self.inner.sign(data, padding, algorithm)

    def decrypt(self, ciphertext, padding):  # type: ignore[no-untyped-def]
        return self.inner.decrypt(ciphertext, padding)

    @property
    def key_size(self) -> int:
        return self.inner.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self.inner.public_key()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        return self.inner.private_numbers()

    def private_bytes(self, encoding, format, encryption_algorithm):  # type: ignore[no-untyped-def]
        return self.inner.private_bytes(encoding, format, encryption_algorithm)

    def __copy__(self) -> _CountingKey:
        return self

    def __deepcopy__(self, memo: dict) -> _CountingKey:
        return self


def test_each_document_is_signed_exactly_once_without_reparsing_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = throwaway_pki()["signer"]
    counting = _CountingKey(key)  # type: ignore[arg-type]
    signer = PdfSigner(counting, cert, [throwaway_pki()["ca"][1]])

    def _no_parsing(*_a: object, **_k: object) -> None:
        raise AssertionError("the private key was parsed again while signing")

    monkeypatch.setattr(serialization, "load_der_private_key", _no_parsing)
    monkeypatch.setattr(serialization, "load_pem_private_key", _no_parsing)
    for _ in range(3):
        assert _validate(signer.sign(unsigned_pdf(), signing_time=NOW)).intact is True
    assert counting.signatures == 3


def test_ecdsa_p256_signature_validates() -> None:
    ca = throwaway_pki()["ca"]
    key, cert = make_leaf(ca, "EC signer", key=ec.generate_private_key(ec.SECP256R1()))
    signed = PdfSigner(key, cert, [ca[1]]).sign(unsigned_pdf(), signing_time=NOW)
    verdict = validate_pdf(signed, trust_roots=[ca[1]], expected_signers=[cert], at=NOW)
    assert verdict.intact and verdict.valid and verdict.trusted_signer
    assert (
        PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].signer_info["signature_algorithm"]["algorithm"].native
        == "sha256_ecdsa"
    )


# ---------------------------------------------------------------- forgeries


def test_unsigned_pdf_reports_no_signature() -> None:
    verdict = _validate(unsigned_pdf())
    assert verdict.signature_found is False
    assert verdict.intact is None and verdict.trusted_signer is None and verdict.modified_after_signing is None


def test_signature_by_untrusted_ca_is_not_a_trusted_signer() -> None:
    verdict = _validate(signer_for("forger").sign(unsigned_pdf(), signing_time=NOW))
    assert verdict.intact is True and verdict.value_verifies is True  # the maths is fine…
    assert verdict.chain_trusted is False and verdict.trust_problem == "NO_CERTIFICATE_CHAIN_FOUND"
    assert verdict.expected_signer is False and verdict.trusted_signer is False  # …the signer is not
    assert verdict.valid is False  # and without a trusted chain the signature does not hold


def test_trusted_chain_but_other_certificate_is_not_the_expected_signer() -> None:
    verdict = _validate(signer_for("sibling").sign(unsigned_pdf(), signing_time=NOW))
    assert verdict.chain_trusted is True and verdict.valid is True  # a sound signature…
    assert verdict.expected_signer is False and verdict.trusted_signer is False  # …by someone else


def test_expired_signer_certificate_is_flagged() -> None:
    verdict = _validate(signer_for("expired").sign(unsigned_pdf(), signing_time=NOW), expected="expired")
    assert verdict.intact is True and verdict.expected_signer is True
    assert verdict.chain_trusted is False and verdict.trust_problem == "OUT_OF_BOUNDS_NO_POE"
    assert verdict.trusted_signer is False and verdict.valid is False


def test_one_byte_flipped_in_signed_range_breaks_intact(signed: bytes) -> None:
    verdict = _validate(flip_byte_in_signed_range(signed))
    assert verdict.signature_found is True
    assert verdict.intact is False and verdict.value_verifies is True
    assert verdict.valid is False


def test_incremental_update_replacing_page_content_is_modification(signed: bytes) -> None:
    verdict = _validate(replace_page_content(signed))
    assert verdict.intact is True and verdict.trusted_signer is True  # the signed revision is untouched
    assert verdict.coverage == "entire_revision"
    assert verdict.modification_level is ModificationLevel.OTHER
    assert verdict.modified_after_signing is True and verdict.docmdp_ok is False


def test_added_overlay_annotation_is_modification(signed: bytes) -> None:
    verdict = _validate(add_overlay_annotation(signed))
    assert verdict.intact is True
    assert verdict.modification_level in {ModificationLevel.ANNOTATIONS, ModificationLevel.OTHER}
    assert verdict.modified_after_signing is True


def test_second_signature_appended_counts_as_modification() -> None:
    # Approval signatures (not certifying) so that pyHanko agrees to add the second one.
    once = signer_for("signer", certify=False).sign(unsigned_pdf(), signing_time=NOW)
    twice = signer_for("sibling", field_name="Second", certify=False).sign(once, signing_time=NOW)
    verdict = _validate(twice)
    assert verdict.signature_count == 2 and verdict.expected_signer is True
    assert verdict.modified_after_signing is True


def test_certified_receipt_refuses_further_signatures(signed: bytes) -> None:
    with pytest.raises(PdfSigningError, match="forbids all changes"):
        signer_for("sibling", field_name="Second", certify=False).sign(signed, signing_time=NOW)


def test_code_written_by_a_later_update_is_not_the_signed_subject(signed: bytes) -> None:
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    info = writer.trailer["/Info"].get_object()
    info["/Subject"] = generic.TextStringObject("000.00.31.H29-261123-0999")
    writer.update_container(info)
    out = io.BytesIO()
    writer.write(out)
    verdict = _validate(out.getvalue())
    assert verdict.signed_subject == "000.00.31.H29-261123-0001"


def test_empty_trust_lists_trust_nobody(signed: bytes) -> None:
    verdict = validate_pdf(signed, trust_roots=[], expected_signers=[], at=NOW)
    assert verdict.intact is True
    assert verdict.chain_trusted is False and verdict.expected_signer is False and verdict.trusted_signer is False


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, this is not a PDF",
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        b"%PDF-1.7\n%%EOF",
        b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n",
    ],
    ids=["empty", "text", "png", "header-only", "no-xref", "binary-junk"],
)
def test_non_pdf_input_raises_malformed_pdf(data: bytes) -> None:
    with pytest.raises(MalformedPdf):
        _validate(data)


def test_truncated_pdf_raises_malformed_pdf(signed: bytes) -> None:
    for cut in (10, len(signed) // 3, len(signed) // 2, len(signed) - 10):
        with pytest.raises(MalformedPdf):
            _validate(signed[:cut])


def test_random_damage_gives_a_verdict_or_malformed_pdf_never_another_error(signed: bytes) -> None:
    rng = random.Random(20261123)
    outcomes = {"verdict": 0, "malformed": 0}
    for _ in range(40):
        damaged = bytearray(signed)
        for _ in range(rng.randint(1, 6)):
            start = rng.randrange(len(damaged))
            damaged[start : start + rng.randint(1, 40)] = rng.randbytes(rng.randint(0, 40))
        try:
            verdict = _validate(bytes(damaged))
        except MalformedPdf:
            outcomes["malformed"] += 1
            continue
        outcomes["verdict"] += 1
        # Whatever survives parsing must not pass as genuine and untouched unless truly unchanged.
        if verdict.intact and verdict.trusted_signer and verdict.modified_after_signing is False:
            assert bytes(damaged) == signed or verdict.coverage == "entire_file"
    assert sum(outcomes.values()) == 40


def test_signing_a_non_pdf_raises_malformed_pdf() -> None:
    with pytest.raises(MalformedPdf):
        signer_for("signer").sign(b"not a pdf at all", signing_time=NOW)


def test_naive_signing_time_is_refused() -> None:
    with pytest.raises(PdfSigningError):
        signer_for("signer").sign(unsigned_pdf(), signing_time=datetime(2026, 11, 23, 9, 0))


def test_key_that_does_not_match_the_certificate_is_refused() -> None:
    pki = throwaway_pki()
    with pytest.raises(PdfSigningError, match="does not match"):
        PdfSigner(pki["sibling"][0], pki["signer"][1])


def test_rsa_key_under_2048_bits_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _, cert = make_leaf(throwaway_pki()["ca"], "weak", key=small)
    with pytest.raises(PdfSigningError, match="2048"):
        PdfSigner(small, cert)


# ---------------------------------------------------------------- B-T with a local RFC 3161 responder


class _TsaHandler(BaseHTTPRequestHandler):
    stamper: DummyTimeStamper
    requests_seen = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Type") != "application/timestamp-query":
            self.send_error(415)
            return
        response = self.stamper.request_tsa_response(tsp.TimeStampReq.load(body)).dump()
        type(self).requests_seen += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(response)))
        self.end_headers()
        self.wfile.write(response)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tsa_url() -> Iterator[str]:
    """An RFC 3161 responder on loopback, signing with a timestamping certificate of the test CA."""
    key, cert = throwaway_pki()["tsa"]
    der_key = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    handler = type("Handler", (_TsaHandler,), {})
    handler.stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(der_key),
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        server.shutdown()
        server.server_close()


def test_b_t_signature_carries_a_trusted_timestamp(tsa_url: str) -> None:
    signer = signer_for("signer", tsa_url=tsa_url)
    assert signer.timestamped
    verdict = _validate(signer.sign(unsigned_pdf(), signing_time=NOW))
    assert verdict.intact and verdict.trusted_signer and verdict.modified_after_signing is False
    assert verdict.pades_level == "B-T"
    assert verdict.timestamp_trusted is True
    assert verdict.timestamp_time is not None and abs(verdict.timestamp_time - datetime.now(UTC)) < timedelta(minutes=5)


def test_unreachable_timestamp_authority_is_a_signing_error() -> None:
    signer = signer_for("signer", tsa_url="http://127.0.0.1:9/tsa", tsa_timeout_seconds=2)
    with pytest.raises(PdfSigningError, match="timestamp"):
        signer.sign(unsigned_pdf(), signing_time=NOW)


def test_signed_attributes_are_the_pades_baseline_set_and_name_the_signer(signed: bytes) -> None:
    signer_info = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].signer_info
    attrs = {a["type"].native: a["values"][0] for a in signer_info["signed_attrs"]}
    # PAdES baseline: no signing-time attribute (the time is /M); ESS signing-certificate-v2 present.
    assert set(attrs) == {"content_type", "message_digest", "signing_certificate_v2"}
    cert_der = throwaway_pki()["signer"][1].public_bytes(serialization.Encoding.DER)
    ess = attrs["signing_certificate_v2"]["certs"][0]
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()
    assert signer_info["sid"].chosen["serial_number"].native == throwaway_pki()["signer"][1].serial_number


# A forked child collects garbage whenever it likes; this makes it collect at once, so a test
# sees what an unlucky collection does. (At-fork hooks cannot be removed: it checks a flag.)
_COLLECT_IN_CHILD = {"on": False}
os.register_at_fork(after_in_child=lambda: gc.collect() if _COLLECT_IN_CHILD["on"] else None)


@pytest.mark.timeout(60)
def test_a_sandboxed_validation_never_breaks_this_threads_event_loop(signed: bytes, tsa_url: str) -> None:
    # Signing ran pyHanko on this thread's event loop; the sandbox forks a child that inherits
    # that loop. Were the child to close it, the epoll instance that both share would lose the
    # loop's wake-up pipe, and the next signature awaiting the TSA request (finished on a worker
    # thread) would wait for ever.
    signer = signer_for("signer", tsa_url=tsa_url)
    signer.sign(unsigned_pdf(), signing_time=NOW)
    ca_cert = throwaway_pki()["ca"][1]
    close_idle_children()  # so that this check forks its child
    _COLLECT_IN_CHILD["on"] = True
    try:
        verdict = validate_pdf_sandboxed(
            signed, trust_roots=[ca_cert], expected_signers=[throwaway_pki()["signer"][1]], at=NOW
        )
    finally:
        _COLLECT_IN_CHILD["on"] = False
    assert verdict.intact
    started = time.monotonic()
    assert signer.sign(unsigned_pdf(), signing_time=NOW)
    assert time.monotonic() - started < 30
