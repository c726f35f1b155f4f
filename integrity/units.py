"""Receiving units (đơn vị tiếp nhận): the agencies allowed to issue dossier codes.

The list comes from ``BHXH_UNITS_FILE`` (a JSON list of ``{"code", "name"}``, each optionally
with ``"parent"``, the managing body printed above the unit's name, and ``"place"``, the place
name of the slip's date line), or, when unset, the demonstration list below. Codes follow the
national list of agency codes (``V1V2V3.Z1Z2.Y1Y2.MX1X2``); a code outside the configured list
never gets a dossier code.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from integrity.dossier_code import is_unit_code
from integrity.errors import ConfigurationError, InvalidReceiptRequest, UnknownReceivingUnit

MAX_UNIT_NAME_LENGTH = 200
MAX_PLACE_LENGTH = 100


@dataclass(frozen=True)
class ReceivingUnit:
    code: str
    name: str
    # Circular 01/2018/TT-VPCP, form 01: the managing body heads the slip above the unit, and
    # the date line starts with the place name ("Hà Nội, ngày … tháng … năm …").
    parent: str | None = None
    place: str | None = None


# Demonstration list (the demo PKI's units): two codes used in examples and tests.
DEMO_UNITS: tuple[ReceivingUnit, ...] = (
    ReceivingUnit("000.00.00.G00", "Bảo hiểm xã hội Việt Nam", place="Hà Nội"),
    ReceivingUnit(
        "000.00.31.H29",
        "Bảo hiểm xã hội Thành phố Hồ Chí Minh",
        parent="Bảo hiểm xã hội Việt Nam",
        place="Thành phố Hồ Chí Minh",
    ),
)


def _normal(name: str) -> str:
    # Compare names as people read them: NFC, case and runs of spaces do not matter.
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def _optional_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    clean = unicodedata.normalize("NFC", value).strip()
    if not clean or len(clean) > limit or any(unicodedata.category(ch) == "Cc" for ch in clean):
        raise ConfigurationError(f"{what} must be 1–{limit} characters without control characters")
    return clean


class UnitRegistry:
    """The configured receiving units, by code."""

    def __init__(self, units: Iterable[ReceivingUnit]) -> None:
        by_code: dict[str, ReceivingUnit] = {}
        for unit in units:
            if not is_unit_code(unit.code):
                raise ConfigurationError(f"receiving unit code {unit.code!r} is not of the national format")
            name = unicodedata.normalize("NFC", unit.name).strip()
            if not name or len(name) > MAX_UNIT_NAME_LENGTH:
                raise ConfigurationError(
                    f"receiving unit {unit.code} needs a name of 1–{MAX_UNIT_NAME_LENGTH} characters"
                )
            if unit.code in by_code:
                raise ConfigurationError(f"receiving unit {unit.code} is listed twice")
            parent = _optional_text(unit.parent, f"receiving unit {unit.code}: parent", MAX_UNIT_NAME_LENGTH)
            place = _optional_text(unit.place, f"receiving unit {unit.code}: place", MAX_PLACE_LENGTH)
            by_code[unit.code] = ReceivingUnit(unit.code, name, parent, place)
        if not by_code:
            # An empty list would make every request fail obscurely; refuse it at start-up.
            raise ConfigurationError("the list of receiving units is empty")
        self._by_code = by_code

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[ReceivingUnit]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def get(self, code: str) -> ReceivingUnit:
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownReceivingUnit(f"receiving unit {code!r} is not in the configured list of units") from None

    def resolve(self, code: str, name: str | None = None) -> ReceivingUnit:
        """The configured unit for ``code``; a ``name`` given by the caller must be its name."""
        unit = self.get(code)
        if name is not None and _normal(name) != _normal(unit.name):
            raise InvalidReceiptRequest(f"receiving unit {code} is named {unit.name!r} in the configured list")
        return unit


def load_units(path: Path | None) -> UnitRegistry:
    """The units of ``path`` (JSON list of {code, name, parent?, place?}), or the demonstration list."""
    if path is None:
        return UnitRegistry(DEMO_UNITS)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the units file {path}: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"the units file {path} is not valid JSON") from exc
    if not isinstance(raw, list) or not all(
        isinstance(item, dict)
        and isinstance(item.get("code"), str)
        and isinstance(item.get("name"), str)
        and all(isinstance(item.get(key), str | None) for key in ("parent", "place"))
        for item in raw
    ):
        raise ConfigurationError(
            f'the units file {path} must be a JSON list of {{"code", "name", "parent"?, "place"?}} objects'
        )
    return UnitRegistry(
        ReceivingUnit(item["code"], item["name"], item.get("parent"), item.get("place")) for item in raw
    )
