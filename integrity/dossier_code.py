"""Dossier codes of the national one-stop format (Decree 61/2018/NĐ-CP Art. 26, Circular
01/2018/TT-VPCP Art. 19): ``V1V2V3.Z1Z2.Y1Y2.MX1X2-YYMMDD-XXXX``.

- ``V1V2V3.Z1Z2.Y1Y2.MX1X2``: the receiving unit's code from the national list of agency codes,
  e.g. ``000.00.31.H29``;
- ``YYMMDD``: the receipt date, in Vietnam time (UTC+7, no daylight saving);
- ``XXXX``: the dossier's sequence within that unit's day, 0001–9999.

Pure: formatting and parsing touch no database and no clock. Allocation of the sequence lives
in ``integrity.receipts``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from integrity.errors import InvalidDossierCode
from signing.vietnam_time import VIETNAM_TIME

MIN_SEQUENCE = 1
# Four digits: the 10,000th dossier of a unit's day has no code (never wrap around to 0000).
MAX_SEQUENCE = 9999
UNIT_CODE_PATTERN = r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}"
_UNIT_CODE_RE = re.compile(UNIT_CODE_PATTERN, re.ASCII)
_CODE_RE = re.compile(rf"(?P<unit>{UNIT_CODE_PATTERN})-(?P<day>\d{{6}})-(?P<seq>\d{{4}})", re.ASCII)
CODE_LENGTH = len("000.00.00.G00-251123-0001")


def is_unit_code(text: str) -> bool:
    return _UNIT_CODE_RE.fullmatch(text) is not None


def receipt_day(at: datetime) -> date:
    """The receipt date of an instant: its calendar date in Vietnam."""
    if at.tzinfo is None:
        raise InvalidDossierCode("the receipt time must be timezone-aware")
    return at.astimezone(VIETNAM_TIME).date()


@dataclass(frozen=True, order=True)
class DossierCode:
    unit_code: str
    day: date
    sequence: int

    def __post_init__(self) -> None:
        if not is_unit_code(self.unit_code):
            raise InvalidDossierCode(f"not a unit code of the national list: {self.unit_code!r}")
        if not MIN_SEQUENCE <= self.sequence <= MAX_SEQUENCE:
            raise InvalidDossierCode(f"the daily sequence must be {MIN_SEQUENCE}–{MAX_SEQUENCE}, got {self.sequence}")
        if not 2000 <= self.day.year <= 2099:
            raise InvalidDossierCode("the receipt year must be 2000–2099 (two digits in the code)")

    def to_text(self) -> str:
        return f"{self.unit_code}-{self.day:%y%m%d}-{self.sequence:04d}"

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def from_text(cls, text: str) -> DossierCode:
        match = _CODE_RE.fullmatch(text)
        if match is None:
            raise InvalidDossierCode("a dossier code looks like 000.00.31.H29-251123-0001")
        raw_day = match["day"]
        try:
            day = date(2000 + int(raw_day[0:2]), int(raw_day[2:4]), int(raw_day[4:6]))
        except ValueError as exc:
            raise InvalidDossierCode(f"no such receipt date in the code: {raw_day}") from exc
        return cls(match["unit"], day, int(match["seq"]))


def format_dossier_code(unit_code: str, day: date, sequence: int) -> str:
    return DossierCode(unit_code, day, sequence).to_text()


def parse_dossier_code(text: str) -> DossierCode:
    return DossierCode.from_text(text)
