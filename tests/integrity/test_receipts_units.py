"""Receiving units (integrity/units.py): the demo list, a units file, and refusal of bad lists."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from integrity.errors import ConfigurationError, InvalidReceiptRequest, UnknownReceivingUnit
from integrity.units import DEMO_UNITS, ReceivingUnit, UnitRegistry, load_units


def test_demo_list_holds_the_documented_units() -> None:
    units = load_units(None)
    assert units.get("000.00.31.H29").name == "Bảo hiểm xã hội Thành phố Hồ Chí Minh"
    assert "000.00.00.G00" in units and len(units) == len(DEMO_UNITS)


def test_unknown_unit_is_refused() -> None:
    with pytest.raises(UnknownReceivingUnit):
        load_units(None).get("000.00.99.X99")


def test_given_name_must_be_the_configured_one_up_to_case_spacing_and_normal_form() -> None:
    units = load_units(None)
    variant = unicodedata.normalize("NFD", "bảo hiểm xã hội   thành phố hồ chí minh")
    assert units.resolve("000.00.31.H29", variant).code == "000.00.31.H29"
    with pytest.raises(InvalidReceiptRequest):
        units.resolve("000.00.31.H29", "Bảo hiểm xã hội Hà Nội")


def test_units_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "units.json"
    path.write_text(
        json.dumps([{"code": "000.00.01.H26", "name": "BHXH Hà Nội"}], ensure_ascii=False), encoding="utf-8"
    )
    units = load_units(path)
    assert [u.code for u in units] == ["000.00.01.H26"] and "000.00.31.H29" not in units


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"code": "000.00.01.H26", "name": "x"}),
        json.dumps([{"code": "000.00.01.H26"}]),
        json.dumps([{"code": "bad", "name": "x"}]),
        json.dumps([{"code": "000.00.01.H26", "name": " "}]),
        json.dumps([{"code": "000.00.01.H26", "name": "a"}, {"code": "000.00.01.H26", "name": "b"}]),
        json.dumps([]),
        json.dumps([{"code": "000.00.01.H26", "name": "x", "place": 7}]),
        json.dumps([{"code": "000.00.01.H26", "name": "x", "place": " "}]),
        json.dumps([{"code": "000.00.01.H26", "name": "x", "parent": "a\u0007b"}]),
    ],
    ids=[
        "not-json",
        "not-a-list",
        "no-name",
        "bad-code",
        "blank-name",
        "duplicate",
        "empty",
        "place-not-text",
        "blank-place",
        "control-in-parent",
    ],
)
def test_bad_units_file_stops_start_up(tmp_path: Path, content: str) -> None:
    path = tmp_path / "units.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError):
        load_units(path)


def test_missing_units_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_units(tmp_path / "absent.json")


def test_registry_refuses_an_empty_list() -> None:
    with pytest.raises(ConfigurationError):
        UnitRegistry([])
    assert UnitRegistry([ReceivingUnit("000.00.00.G00", "X")]).get("000.00.00.G00").name == "X"


def test_units_file_may_name_the_managing_body_and_the_place_of_the_date_line(tmp_path: Path) -> None:
    path = tmp_path / "units.json"
    entries = [
        {"code": "000.00.01.H26", "name": "BHXH Hà Nội", "parent": "Bảo hiểm xã hội Việt Nam", "place": " Hà Nội "},
        {"code": "000.00.02.H27", "name": "BHXH Hải Phòng"},
    ]
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    units = load_units(path)
    hanoi = units.get("000.00.01.H26")
    assert hanoi.parent == "Bảo hiểm xã hội Việt Nam" and hanoi.place == "Hà Nội"
    assert units.get("000.00.02.H27").place is None and units.get("000.00.02.H27").parent is None


def test_demo_units_have_their_place_names() -> None:
    units = load_units(None)
    assert units.get("000.00.00.G00").place == "Hà Nội"
    assert units.get("000.00.31.H29").place == "Thành phố Hồ Chí Minh"
