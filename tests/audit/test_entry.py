"""Entries: the hash is SHA-256(0x00 ‖ RFC 8785 JCS(entry without hash)), byte-exact with the
``rfc8785`` package (the fast encoder is proven equal by property), and bad events refused."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.entry import (
    GENESIS_PREV,
    build_entry,
    canonical,
    entry_from_dict,
    format_ts,
    hash_body,
    validate_event,
)
from audit.errors import InvalidEntry, PiiMismatch
from audit.pii import SALT_BYTES, check, seal

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fast_encoder_is_byte_identical_to_rfc8785(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_text, st.floats(allow_nan=False, allow_infinity=False) | st.integers(2**53, 2**60), max_size=3))
def test_floats_and_large_integers_take_the_reference_encoder(value: dict) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(rfc8785.CanonicalizationError):
            canonical(value)
        return
    assert canonical(value) == expected


def test_keys_above_u_e000_sort_by_utf16_code_units() -> None:
    # By code point U+FF61 comes first; by UTF-16 code units (RFC 8785) U+1F600 (0xD83D…) does.
    value = {"\U0001f600": 1, "\uff61": 2}
    assert canonical(value) == rfc8785.dumps(value)
    assert canonical(value).index("\uff61".encode()) > canonical(value).index("\U0001f600".encode())


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(0, 2**40),
    actor=st.sampled_from(["system", "user:an", "client:c1", "peer:portal"]),
    subject=_text,
    data=st.dictionaries(_text, _json, max_size=3),
    pii=st.none() | st.just("ab" * 32),
)
def test_assembled_entry_hash_equals_hash_of_rfc8785_body(
    seq: int, actor: str, subject: str, data: dict, pii: str | None
) -> None:
    entry = build_entry(
        seq=seq,
        ts="2025-11-23T10:00:00.000001Z",
        actor=actor,
        action="test.event",
        subject=subject,
        data=data,
        pii=pii,
        prev=GENESIS_PREV,
    )
    expected = hashlib.sha256(b"\x00" + rfc8785.dumps(entry.body())).hexdigest()
    assert entry.hash == expected == hash_body(entry.body())


def test_golden_entry_hash() -> None:
    # Fixed by the format of docs/audit-log.md: outside auditors recompute exactly this value.
    entry = build_entry(
        seq=0,
        ts="2025-11-23T10:00:00.000000Z",
        actor="user:nguyen",
        action="receipt.issued",
        subject="000.00.31.H29-251123-0001",
        data={"số": 1, "kind": "phiếu"},
        pii=None,
        prev=GENESIS_PREV,
    )
    body = (
        '{"action":"receipt.issued","actor":"user:nguyen","data":{"kind":"phiếu","số":1},"pii":null,'
        '"prev":"' + "0" * 64 + '","seq":0,"subject":"000.00.31.H29-251123-0001","ts":"2025-11-23T10:00:00.000000Z"}'
    )
    assert entry.hash == hashlib.sha256(b"\x00" + body.encode()).hexdigest()


def test_timestamp_is_rfc3339_utc_with_microseconds() -> None:
    moment = datetime(2025, 11, 23, 17, 5, 6, 7, tzinfo=timezone(timedelta(hours=7)))
    assert format_ts(moment) == "2025-11-23T10:05:06.000007Z"
    with pytest.raises(InvalidEntry):
        format_ts(datetime(2025, 11, 23))


def test_valid_event_is_accepted_with_its_canonical_data() -> None:
    plain, encoded = validate_event("client:c-1", "exchange.rejected", "msg-1", {"b": [1, None], "a": "x"})
    assert plain == {"b": [1, None], "a": "x"}
    assert encoded == b'{"a":"x","b":[1,null]}'
    assert validate_event("system", "audit.log.created", "", None) == ({}, b"{}")


@pytest.mark.parametrize(
    ("actor", "action", "subject", "data"),
    [
        ("root", "a.b", "s", None),
        ("user:", "a.b", "s", None),
        ("user:a b", "a.b", "s", None),
        ("system", "login", "s", None),
        ("system", "Auth.login", "s", None),
        ("system", "auth..login", "s", None),
        ("system", "auth.login.", "s", None),
        ("system", "a." + "b" * 100, "s", None),
        ("system", "a.b", "x" * 501, None),
        ("system", "a.b", "line\nbreak", None),
        ("system", "a.b", "\ud800", None),
        ("system", "a.b", "s", ["not", "an", "object"]),
        ("system", "a.b", "s", {1: "int key"}),
        ("system", "a.b", "s", {"nan": float("nan")}),
        ("system", "a.b", "s", {"big": "x" * 20_000}),
        ("system", "a.b", "s", {"bytes": b"raw"}),
        ("system", "a.b", "s", {"surrogate": "\udc00"}),
        ("system\n", "a.b", "s", None),
        ("system", "auth.login\n", "s", None),
    ],
    ids=[
        "unknown-actor-kind",
        "empty-actor-id",
        "space-in-actor",
        "undotted-action",
        "uppercase-action",
        "empty-action-part",
        "trailing-dot",
        "long-action",
        "long-subject",
        "control-in-subject",
        "surrogate-subject",
        "list-data",
        "int-key",
        "nan",
        "too-large",
        "bytes",
        "surrogate-data",
        "newline-after-actor",
        "newline-after-action",
    ],
)
def test_bad_event_is_refused(actor: str, action: str, subject: str, data: object) -> None:
    with pytest.raises(InvalidEntry):
        validate_event(actor, action, subject, data)  # type: ignore[arg-type]


def test_entry_round_trips_through_its_json_object() -> None:
    entry = build_entry(
        seq=3,
        ts="2025-11-23T10:00:00.000000Z",
        actor="system",
        action="a.b",
        subject="s",
        data={"k": 1},
        pii=None,
        prev="1" * 64,
    )
    assert entry_from_dict(entry.to_dict()) == entry


@pytest.mark.parametrize("broken", [{"seq": -1}, {"seq": "3"}, {"data": []}, {"pii": 5}, {"ts": None}])
def test_mistyped_entry_object_is_refused(broken: dict) -> None:
    obj = build_entry(
        seq=3, ts="t", actor="system", action="a.b", subject="s", data={}, pii=None, prev="1" * 64
    ).to_dict()
    obj.update(broken)
    with pytest.raises(InvalidEntry):
        entry_from_dict(obj)


def test_personal_data_commitment_is_salted_sha256_of_jcs() -> None:
    salt = bytes(range(SALT_BYTES))
    sealed = seal({"name": "Nguyễn Văn A", "id_number": "079123456789"}, salt=salt)
    expected = hashlib.sha256(salt + rfc8785.dumps({"id_number": "079123456789", "name": "Nguyễn Văn A"})).hexdigest()
    assert sealed.commitment == expected
    check(sealed.commitment, salt, {"name": "Nguyễn Văn A", "id_number": "079123456789"})
    with pytest.raises(PiiMismatch):
        check(sealed.commitment, salt, {"name": "Nguyễn Văn B", "id_number": "079123456789"})
    assert seal({"name": "x"}).commitment != seal({"name": "x"}).commitment  # fresh salt each time


@pytest.mark.parametrize("personal", [{}, [], {"n": float("inf")}, {"n": "x" * 20_000}])
def test_bad_personal_data_is_refused(personal: object) -> None:
    with pytest.raises(InvalidEntry):
        seal(personal)  # type: ignore[arg-type]


def _nested(levels: int) -> dict:
    """An object whose deepest value sits ``levels`` levels down (the scalar counts)."""
    value: object = "leaf"
    for _ in range(levels - 1):
        value = {"k": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("extra", [{}, {"f": 1.5}], ids=["plain", "with-float"])
def test_nesting_limit_is_exact_on_the_fast_and_the_reference_path(extra: dict) -> None:
    from audit.entry import MAX_NESTING, canonical_or_refuse

    deepest_allowed = {**_nested(MAX_NESTING), **extra}
    assert canonical_or_refuse(deepest_allowed, "data") == rfc8785.dumps(deepest_allowed)
    with pytest.raises(InvalidEntry, match="nested deeper"):
        canonical_or_refuse({**_nested(MAX_NESTING + 1), **extra}, "data")
