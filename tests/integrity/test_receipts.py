"""Issuing and verifying receipts (integrity/receipts.py) on SQLite and PostgreSQL.

Issuing: code → PDF → sign → log → register as one transaction; sequences without duplicate
or gap under concurrency (several instances), the 10,000th of a day refused, idempotency.
Verifying: every forgery case of the issue, each flagged with its reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine, func, insert, select

from integrity.app_state import AppState, build_state
from integrity.clock import FrozenClock
from integrity.dossier_code import DossierCode, receipt_day
from integrity.errors import (
    DailySequenceExhausted,
    IdempotencyKeyReused,
    InvalidDossierCode,
    InvalidReceiptRequest,
    ReceiptNotFound,
    ReceiptSigningFailed,
    UnknownReceivingUnit,
    UnreadableReceipt,
)
from integrity.receipt_tables import receipt_idempotency_keys, receipt_pdfs, receipt_sequences, receipts
from integrity.receipts import (
    Applicant,
    Official,
    ReceiptRequest,
    ReceiptService,
)
from signing.pdf import PdfSigner, sha256_hex
from signing.receipt_pdf import ReceiptSlip, SlipDocument
from tests.conftest import DEMO_KEYS, demo_settings
from tests.signing.test_pdf_signing import (
    add_overlay_annotation,
    flip_byte_in_signed_range,
    make_leaf,
    renderer,
    replace_page_content,
    signer_for,
)

HCM = "000.00.31.H29"
HCM_NAME = "Bảo hiểm xã hội Thành phố Hồ Chí Minh"
ISSUER = "client:portal-test"


class Env:
    """One service instance (AppState + ReceiptService) over the test database."""

    def __init__(self, db_url: str, clock: FrozenClock, **overrides: object) -> None:
        self.clock = clock
        self.settings = demo_settings(db_url, **overrides)
        self.state: AppState = build_state(self.settings, clock=clock)
        self.receipts: ReceiptService = self.state.receipts

    @property
    def engine(self) -> Engine:
        return self.state.engine

    def close(self) -> None:
        self.state.close()

    def count(self, table) -> int:  # type: ignore[no-untyped-def]
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()

    def issued_entries(self) -> list:
        return [e for e in self.state.audit.entries(0) if e.action == "receipt.issued"]


@pytest.fixture
def env(db_url: str, clock: FrozenClock) -> Iterator[Env]:
    environment = Env(db_url, clock)
    yield environment
    environment.close()


def request(**changes: object) -> ReceiptRequest:
    values: dict[str, object] = {
        "unit_code": HCM,
        "unit_name": HCM_NAME,
        "procedure_code": "1.001234",
        "procedure_name": "Giải quyết hưởng chế độ ốm đau",
        "applicant": Applicant("Nguyễn Thị Ánh Tuyết", "079190001234", "0901234567", "12 Lê Lợi, Quận 1"),
        "official": Official("Đặng Văn Lợi", "Chuyên viên"),
        "appointment_at": date.today() + timedelta(days=7),
        "documents": (SlipDocument("Tờ khai đề nghị hưởng chế độ ốm đau", 1, True),),
    }
    values.update(changes)
    return ReceiptRequest(**values)  # type: ignore[arg-type]


def _demo(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((DEMO_KEYS / name).read_bytes())


def _demo_key(name: str):  # type: ignore[no-untyped-def]
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    return serialization.load_pem_private_key((DEMO_KEYS / name).read_bytes(), passphrase)


def genuine_signer() -> PdfSigner:
    """The one-stop key, used outside the service: a genuine signature the registry never saw."""
    return PdfSigner(_demo_key("one-stop-signing.key.pem"), _demo("one-stop-signing.crt.pem"), [_demo("ca.crt.pem")])


def slip_for(code: str, *, applicant: str = "Nguyễn Thị Ánh Tuyết") -> ReceiptSlip:
    return ReceiptSlip(
        code=code,
        unit_code=code[:13],
        unit_name=HCM_NAME,
        procedure_code="1.001234",
        procedure_name="Giải quyết hưởng chế độ ốm đau",
        applicant_name=applicant,
        applicant_id_number="079190001234",
        official_name="Đặng Văn Lợi",
        official_title="Chuyên viên",
        received_at=datetime.now(UTC),
        appointment_at=date.today() + timedelta(days=7),
        verify_url=f"http://testserver/v1/receipts/{code}",
    )


def reason_codes(verdict) -> set[str]:  # type: ignore[no-untyped-def]
    return {r.code for r in verdict.reasons}


# ---------------------------------------------------------------- issuing


def test_issue_registers_code_hash_signer_and_audit_seq(env: Env) -> None:
    issued = env.receipts.issue(request(), issued_by=ISSUER)
    today = receipt_day(env.clock())
    assert issued.code == f"{HCM}-{today:%y%m%d}-0001" and not issued.replayed
    record = env.receipts.get(issued.code)
    assert record == issued.record
    pdf = env.receipts.pdf(issued.code)
    assert record.sha256 == sha256_hex(pdf) and record.size_bytes == len(pdf)
    assert record.signer_certificate_sha256 == sha256_hex(
        _demo("one-stop-signing.crt.pem").public_bytes(serialization.Encoding.DER)
    )
    assert record.issued_by == ISSUER and record.issued_at == env.clock() and record.pades_level == "B-B"
    entry = env.state.audit.entry(record.audit_seq)
    assert (entry.action, entry.subject, entry.actor) == ("receipt.issued", issued.code, ISSUER)
    assert entry.data["sha256"] == record.sha256
    assert entry.pii is not None
    # Personal data goes to the commitment, never into the entry's data.
    assert "Nguyễn" not in json.dumps(entry.data, ensure_ascii=False) and "079190001234" not in json.dumps(entry.data)


def test_issued_receipt_verifies_as_issued_by_system(env: Env) -> None:
    issued = env.receipts.issue(request(), issued_by=ISSUER)
    verdict = env.receipts.verify(env.receipts.pdf(issued.code))
    assert verdict.issued_by_system is True and verdict.reasons == ()
    assert verdict.code == issued.code
    assert verdict.intact and verdict.trusted_signer and verdict.modified_after_signing is False
    assert verdict.registered is True and verdict.hash_matches is True
    assert verdict.to_dict()["signature"]["pades_level"] == "B-B"


def test_sequences_count_up_per_unit_and_day(env: Env, clock: FrozenClock) -> None:
    first = env.receipts.issue(request(), issued_by=ISSUER)
    second = env.receipts.issue(request(), issued_by=ISSUER)
    other_unit = env.receipts.issue(
        request(unit_code="000.00.00.G00", unit_name="Bảo hiểm xã hội Việt Nam"), issued_by=ISSUER
    )
    assert [DossierCode.from_text(c).sequence for c in (first.code, second.code, other_unit.code)] == [1, 2, 1]
    clock.advance(24 * 3600)
    next_day = env.receipts.issue(request(appointment_at=date.today() + timedelta(days=9)), issued_by=ISSUER)
    assert DossierCode.from_text(next_day.code).sequence == 1
    assert DossierCode.from_text(next_day.code).day == receipt_day(clock())


def _issue_in_threads(envs: list[Env], per_thread: int, threads_per_env: int) -> tuple[list[str], list[BaseException]]:
    codes: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(envs) * threads_per_env)

    def worker(environment: Env) -> None:
        start.wait()
        for _ in range(per_thread):
            try:
                code = environment.receipts.issue(request(), issued_by=ISSUER).code
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                continue
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=worker, args=(e,)) for e in envs for _ in range(threads_per_env)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes, errors


def test_concurrent_issuing_on_two_instances_has_no_duplicate_and_no_gap(db_url: str, clock: FrozenClock) -> None:
    # Two service instances (own engine, own audit writer) on one database, four threads each.
    instances = [Env(db_url, clock), Env(db_url, clock)]
    try:
        codes, errors = _issue_in_threads(instances, per_thread=3, threads_per_env=4)
        assert errors == []
        sequences = sorted(DossierCode.from_text(c).sequence for c in codes)
        assert sequences == list(range(1, 25))
        assert instances[0].count(receipts) == 24 and instances[0].count(receipt_pdfs) == 24
        assert len(instances[0].issued_entries()) == 24
        with instances[0].engine.connect() as conn:
            assert conn.execute(select(receipt_sequences.c.last_value)).scalar_one() == 24
        instances[0].state.audit.checkpoint_now()  # verified means anchored by a signed checkpoint
        assert instances[0].state.audit.verify().ok
    finally:
        for instance in instances:
            instance.close()


def test_ten_thousandth_receipt_of_a_day_is_refused_not_wrapped(env: Env) -> None:
    day = receipt_day(env.clock())
    with env.engine.begin() as conn:  # set-up: the unit already issued 9,998 codes today
        conn.execute(insert(receipt_sequences).values(unit_code=HCM, receipt_day=day, last_value=9998))
    last = env.receipts.issue(request(), issued_by=ISSUER)
    assert last.code.endswith("-9999")
    audit_size = env.state.audit.size()
    with pytest.raises(DailySequenceExhausted, match="9999"):
        env.receipts.issue(request(), issued_by=ISSUER)
    with env.engine.connect() as conn:
        assert conn.execute(select(receipt_sequences.c.last_value)).scalar_one() == 9999
    assert env.count(receipts) == 1 and env.state.audit.size() == audit_size
    # Another unit, or the next day, is unaffected.
    assert env.receipts.issue(request(unit_code="000.00.00.G00", unit_name=None), issued_by=ISSUER).code.endswith(
        "-0001"
    )


def test_failed_signing_rolls_back_the_sequence_so_no_gap(db_url: str, clock: FrozenClock) -> None:
    broken = Env(db_url, clock, tsa_url="http://127.0.0.1:9/unreachable-tsa")
    working = Env(db_url, clock)
    try:
        audit_size = broken.state.audit.size()
        with pytest.raises(ReceiptSigningFailed):
            broken.receipts.issue(request(), issued_by=ISSUER)
        assert broken.count(receipts) == 0 and broken.count(receipt_sequences) == 0
        assert broken.state.audit.size() == audit_size
        assert working.receipts.issue(request(), issued_by=ISSUER).code.endswith("-0001")
    finally:
        broken.close()
        working.close()


BAD_REQUESTS = [
    ({"unit_code": "000.00.99.H99"}, UnknownReceivingUnit, "not in the configured list"),
    ({"unit_code": "not a unit"}, UnknownReceivingUnit, "not in the configured list"),
    ({"unit_name": "Bảo hiểm xã hội Hà Nội"}, InvalidReceiptRequest, "named"),
    ({"applicant": Applicant("", "079190001234")}, InvalidReceiptRequest, "applicant.name"),
    ({"applicant": Applicant("A\x00B", "079190001234")}, InvalidReceiptRequest, "control"),
    ({"procedure_name": "x" * 501}, InvalidReceiptRequest, "procedure_name"),
    ({"documents": (SlipDocument("Giấy", 0),)}, InvalidReceiptRequest, "copies"),
    ({"documents": tuple(SlipDocument(f"Giấy {i}") for i in range(51))}, InvalidReceiptRequest, "documents"),
    ({"appointment_at": date(2020, 1, 1)}, InvalidReceiptRequest, "before the receipt"),
    ({"appointment_at": datetime(2020, 1, 1, tzinfo=UTC)}, InvalidReceiptRequest, "before the receipt"),
    ({"appointment_at": datetime(2099, 1, 1)}, InvalidReceiptRequest, "UTC offset"),
    ({"received_at": datetime(2026, 1, 1, 9, 0)}, InvalidReceiptRequest, "UTC offset"),
]


def test_each_bad_request_is_refused_with_its_error_and_nothing_is_written(env: Env) -> None:
    # One database for all cases (a fresh one per case would only slow the suite down).
    audit_size = env.state.audit.size()
    for changes, error, message in BAD_REQUESTS:
        with pytest.raises(error, match=message):
            env.receipts.issue(request(**changes), issued_by=ISSUER)
    assert env.count(receipts) == 0 and env.count(receipt_sequences) == 0
    assert env.state.audit.size() == audit_size
    assert env.receipts.issue(request(), issued_by=ISSUER).code.endswith("-0001")


def test_received_time_in_the_future_or_over_a_day_old_is_refused(env: Env, clock: FrozenClock) -> None:
    for received in (clock() + timedelta(minutes=10), clock() - timedelta(hours=25)):
        with pytest.raises(InvalidReceiptRequest, match="received_at"):
            env.receipts.issue(request(received_at=received), issued_by=ISSUER)
    assert env.count(receipts) == 0


def test_received_time_last_evening_takes_yesterdays_sequence(env: Env, clock: FrozenClock) -> None:
    yesterday_evening = clock() - timedelta(hours=20)
    issued = env.receipts.issue(request(received_at=yesterday_evening), issued_by=ISSUER)
    assert DossierCode.from_text(issued.code).day == receipt_day(yesterday_evening)


# ---------------------------------------------------------------- idempotency


def test_retry_with_same_idempotency_key_returns_the_same_receipt(env: Env) -> None:
    first = env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="req-1")
    again = env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="req-1")
    assert again.replayed and not first.replayed
    assert again.record == first.record
    assert env.count(receipts) == 1 and len(env.issued_entries()) == 1
    assert env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="req-2").code.endswith("-0002")


def test_same_idempotency_key_with_a_different_request_is_refused(env: Env) -> None:
    env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="req-1")
    with pytest.raises(IdempotencyKeyReused):
        env.receipts.issue(request(procedure_code="1.009999"), issued_by=ISSUER, idempotency_key="req-1")
    assert env.count(receipts) == 1


def test_idempotency_keys_are_scoped_to_the_caller(env: Env) -> None:
    mine = env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="req-1")
    theirs = env.receipts.issue(request(), issued_by="client:other", idempotency_key="req-1")
    assert mine.code != theirs.code


def test_malformed_idempotency_key_is_refused(env: Env) -> None:
    for key in ("", "x" * 256, "has space", "khóa", "tab\there"):
        with pytest.raises(InvalidReceiptRequest, match="Idempotency-Key"):
            env.receipts.issue(request(), issued_by=ISSUER, idempotency_key=key)
    assert env.count(receipts) == 0 and env.count(receipt_idempotency_keys) == 0


def test_concurrent_retries_with_one_key_issue_one_receipt_and_leave_no_gap(env: Env) -> None:
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        try:
            results.append(env.receipts.issue(request(), issued_by=ISSUER, idempotency_key="retry-me").code)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 4
    assert env.count(receipts) == 1 and env.count(receipt_idempotency_keys) == 1
    assert env.receipts.issue(request(), issued_by=ISSUER).code.endswith("-0002")


# ---------------------------------------------------------------- lookups


def test_unknown_code_is_not_found_and_malformed_code_is_invalid(env: Env) -> None:
    with pytest.raises(ReceiptNotFound):
        env.receipts.get(f"{HCM}-261123-0042")
    with pytest.raises(ReceiptNotFound):
        env.receipts.pdf(f"{HCM}-261123-0042")
    with pytest.raises(InvalidDossierCode):
        env.receipts.get("../etc/passwd")


# ---------------------------------------------------------------- forgeries


@pytest.fixture
def issued_pdf(env: Env) -> tuple[str, bytes]:
    issued = env.receipts.issue(request(), issued_by=ISSUER)
    return issued.code, env.receipts.pdf(issued.code)


def test_unsigned_pdf_made_elsewhere_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    code, _ = issued_pdf
    verdict = env.receipts.verify(renderer().render(slip_for(code)))
    assert not verdict.issued_by_system
    assert reason_codes(verdict) == {"no_signature"}
    assert verdict.intact is None and verdict.registered is None


def test_pdf_signed_by_an_untrusted_key_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    code, _ = issued_pdf
    verdict = env.receipts.verify(
        signer_for("forger").sign(renderer().render(slip_for(code)), signing_time=datetime.now(UTC))
    )
    assert not verdict.issued_by_system
    assert verdict.intact is True and verdict.trusted_signer is False
    assert {"untrusted_signer", "not_one_stop_signer", "hash_mismatch"} == reason_codes(verdict)


def test_pdf_signed_by_another_key_of_the_demo_ca_is_not_a_one_stop_signer(
    env: Env, issued_pdf: tuple[str, bytes]
) -> None:
    # The CA is trusted, but this certificate is not the one-stop system's signing certificate.
    ca = (_demo_key("ca.key.pem"), _demo("ca.crt.pem"))
    key, cert = make_leaf(ca, "Somebody else of BHXH")  # type: ignore[arg-type]
    forged = PdfSigner(key, cert, [ca[1]]).sign(
        renderer().render(slip_for(issued_pdf[0])), signing_time=datetime.now(UTC)
    )
    verdict = env.receipts.verify(forged)
    assert verdict.signature.chain_trusted is True and verdict.trusted_signer is False
    assert "not_one_stop_signer" in reason_codes(verdict) and "untrusted_signer" not in reason_codes(verdict)


def test_one_byte_flipped_in_the_signed_range_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    verdict = env.receipts.verify(flip_byte_in_signed_range(issued_pdf[1]))
    assert not verdict.issued_by_system
    assert verdict.intact is False
    assert "signature_not_intact" in reason_codes(verdict) and "hash_mismatch" in reason_codes(verdict)


def test_incremental_update_replacing_page_content_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    verdict = env.receipts.verify(replace_page_content(issued_pdf[1]))
    assert not verdict.issued_by_system
    assert verdict.intact is True and verdict.trusted_signer is True and verdict.registered is True
    assert verdict.modified_after_signing is True
    assert reason_codes(verdict) == {"modified_after_signing", "hash_mismatch"}


def test_added_overlay_annotation_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    verdict = env.receipts.verify(add_overlay_annotation(issued_pdf[1]))
    assert not verdict.issued_by_system
    assert verdict.modified_after_signing is True
    assert reason_codes(verdict) == {"modified_after_signing", "hash_mismatch"}


def test_genuine_signature_with_an_unregistered_code_is_flagged(env: Env) -> None:
    code = f"{HCM}-{receipt_day(env.clock()):%y%m%d}-0777"
    verdict = env.receipts.verify(
        genuine_signer().sign(renderer().render(slip_for(code)), signing_time=datetime.now(UTC))
    )
    assert not verdict.issued_by_system
    assert verdict.intact and verdict.trusted_signer and verdict.modified_after_signing is False
    assert verdict.registered is False and verdict.hash_matches is None
    assert reason_codes(verdict) == {"code_not_registered"}


def test_registered_code_with_a_different_file_is_flagged(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    code, _ = issued_pdf
    other = genuine_signer().sign(
        renderer().render(slip_for(code, applicant="Lê Văn Giả")), signing_time=datetime.now(UTC)
    )
    verdict = env.receipts.verify(other)
    assert not verdict.issued_by_system
    assert verdict.intact and verdict.trusted_signer and verdict.registered is True
    assert verdict.hash_matches is False
    assert reason_codes(verdict) == {"hash_mismatch"}


def test_expired_signer_certificate_is_flagged(env: Env) -> None:
    # A retired one-stop certificate that has expired: still "ours", no longer valid for new signatures.
    ca = (_demo_key("ca.key.pem"), _demo("ca.crt.pem"))
    now = env.clock()
    key, expired = make_leaf(
        ca, "BHXH One-Stop (retired)", not_before=now - timedelta(days=800), not_after=now - timedelta(days=1)
    )  # type: ignore[arg-type]
    service = ReceiptService(
        env.engine,
        env.clock,
        env.state.audit,
        signer=genuine_signer(),
        renderer=renderer(),
        units=env.receipts.units,
        trust_roots=[ca[1]],
        one_stop_certificates=[_demo("one-stop-signing.crt.pem"), expired],
        public_base_url="http://testserver",
    )
    code = f"{HCM}-{receipt_day(now):%y%m%d}-0001"
    verdict = service.verify(PdfSigner(key, expired, [ca[1]]).sign(renderer().render(slip_for(code)), signing_time=now))
    assert not verdict.issued_by_system
    assert verdict.signature.expected_signer is True and verdict.trusted_signer is False
    assert "signer_certificate_expired" in reason_codes(verdict)
    assert "untrusted_signer" not in reason_codes(verdict) and "not_one_stop_signer" not in reason_codes(verdict)


def test_registered_receipt_still_verifies_after_the_signer_certificate_expired(env: Env, clock: FrozenClock) -> None:
    issued = env.receipts.issue(request(), issued_by=ISSUER)
    pdf = env.receipts.pdf(issued.code)
    clock.advance(10 * 365 * 24 * 3600)  # far past the demo certificate's notAfter
    genuine = env.receipts.verify(pdf)
    assert genuine.issued_by_system and genuine.validated_at == issued.record.issued_at
    # A copy with one changed byte has no proof of existence: judged now, and the certificate is expired.
    forged = env.receipts.verify(flip_byte_in_signed_range(pdf))
    assert not forged.issued_by_system and forged.validated_at == clock()
    assert "signer_certificate_expired" in reason_codes(forged)


def test_every_reason_is_given_in_vietnamese_and_english(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    verdict = env.receipts.verify(replace_page_content(issued_pdf[1]))
    for reason in verdict.reasons:
        assert reason.vi and reason.en and reason.vi != reason.en
    rendered = verdict.to_dict()
    assert rendered["issued_by_system"] is False and rendered["modified_after_signing"] is True
    assert rendered["signature"]["modification_level"] == "other"
    assert {r["code"] for r in rendered["reasons"]} == {"modified_after_signing", "hash_mismatch"}


def test_non_pdf_input_is_an_unreadable_receipt(env: Env) -> None:
    for data in (b"", b"plain text", b"%PDF-1.7\n%%EOF", b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"\n%%EOF"):
        with pytest.raises(UnreadableReceipt):
            env.receipts.verify(data)


def test_truncated_receipt_is_an_unreadable_receipt(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    with pytest.raises(UnreadableReceipt):
        env.receipts.verify(issued_pdf[1][: len(issued_pdf[1]) // 2])


def test_verification_writes_nothing(env: Env, issued_pdf: tuple[str, bytes]) -> None:
    size = env.state.audit.size()
    env.receipts.verify(issued_pdf[1])
    env.receipts.verify(replace_page_content(issued_pdf[1]))
    assert env.state.audit.size() == size and env.count(receipts) == 1


def test_units_file_replaces_the_demo_list(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    units = tmp_path / "units.json"
    units.write_text(
        json.dumps([{"code": "000.00.01.H26", "name": "Bảo hiểm xã hội Thành phố Hà Nội"}]), encoding="utf-8"
    )
    environment = Env(db_url, clock, units_file=units)
    try:
        issued = environment.receipts.issue(
            replace(request(), unit_code="000.00.01.H26", unit_name="Bảo hiểm xã hội thành phố Hà Nội"),
            issued_by=ISSUER,
        )
        assert issued.code.startswith("000.00.01.H26-")
        with pytest.raises(UnknownReceivingUnit):
            environment.receipts.issue(request(), issued_by=ISSUER)
    finally:
        environment.close()
