"""Dossier codes of the national format V1V2V3.Z1Z2.Y1Y2.MX1X2-YYMMDD-XXXX (pure formatter and
parser; the date is the receipt date in Vietnam time, UTC+7)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from integrity.dossier_code import (
    MAX_SEQUENCE,
    DossierCode,
    format_dossier_code,
    is_unit_code,
    parse_dossier_code,
    receipt_day,
)
from integrity.errors import InvalidDossierCode


@pytest.mark.parametrize(
    ("unit", "day", "sequence", "text"),
    [
        ("000.00.00.G00", date(2025, 11, 23), 1, "000.00.00.G00-251123-0001"),
        ("000.00.31.H29", date(2026, 1, 5), 42, "000.00.31.H29-260105-0042"),
        ("000.00.31.H29", date(2026, 12, 31), 9999, "000.00.31.H29-261231-9999"),
        ("123.45.67.Z99", date(2000, 2, 29), 1000, "123.45.67.Z99-000229-1000"),
    ],
)
def test_format_and_parse_round_trip(unit: str, day: date, sequence: int, text: str) -> None:
    assert format_dossier_code(unit, day, sequence) == text
    assert parse_dossier_code(text) == DossierCode(unit, day, sequence)
    assert str(DossierCode.from_text(text)) == text


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2026, 11, 23, 16, 59, 59, tzinfo=UTC), date(2026, 11, 23)),  # 23:59:59 in Hà Nội
        (datetime(2026, 11, 23, 17, 0, 0, tzinfo=UTC), date(2026, 11, 24)),  # midnight in Hà Nội
        (datetime(2026, 12, 31, 17, 0, 0, tzinfo=UTC), date(2027, 1, 1)),
        (datetime(2026, 11, 24, 0, 30, tzinfo=timezone(timedelta(hours=7))), date(2026, 11, 24)),
        (datetime(2026, 11, 23, 12, 0, tzinfo=timezone(timedelta(hours=-5))), date(2026, 11, 24)),
    ],
)
def test_receipt_day_is_the_date_in_vietnam(instant: datetime, expected: date) -> None:
    assert receipt_day(instant) == expected


def test_receipt_day_refuses_a_naive_time() -> None:
    with pytest.raises(InvalidDossierCode):
        receipt_day(datetime(2026, 11, 23, 9, 0))


@pytest.mark.parametrize("sequence", [0, -1, MAX_SEQUENCE + 1, 12345])
def test_sequence_outside_0001_to_9999_is_refused_never_wrapped(sequence: int) -> None:
    with pytest.raises(InvalidDossierCode, match="sequence"):
        DossierCode("000.00.31.H29", date(2026, 11, 23), sequence)


@pytest.mark.parametrize(
    "unit", ["000.00.31.h29", "00.00.31.H29", "000-00-31-H29", "000.00.31.H2", "000.00.31.299", ""]
)
def test_unit_code_outside_the_national_format_is_refused(unit: str) -> None:
    assert not is_unit_code(unit)
    with pytest.raises(InvalidDossierCode):
        DossierCode(unit, date(2026, 11, 23), 1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "000.00.31.H29-261123-001",
        "000.00.31.H29-261123-00001",
        "000.00.31.H29-261123-0000",
        "000.00.31.H29-261332-0001",  # no 32nd of December… nor 13th month
        "000.00.31.H29-260230-0001",  # 30 February
        "000.00.31.H29_261123_0001",
        "000.00.31.h29-261123-0001",
        "000.00.31.H29-261123-0001\n",
        " 000.00.31.H29-261123-0001",
        "000.00.31.H29-２61123-0001",  # full-width digit
        "000.00.31.H29-٢61123-0001",  # Arabic-Indic digit
    ],
)
def test_malformed_code_raises_invalid_dossier_code(text: str) -> None:
    with pytest.raises(InvalidDossierCode):
        parse_dossier_code(text)


def test_codes_order_by_unit_day_sequence() -> None:
    codes = [DossierCode("000.00.31.H29", date(2026, 11, 23), n) for n in (3, 1, 2)]
    assert [c.sequence for c in sorted(codes)] == [1, 2, 3]
