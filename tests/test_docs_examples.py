"""The worked examples of docs/audit-log.md and docs/exchange-profile.md are recomputed here.

Every number an auditor or an implementer is told to recompute (entry hashes, Merkle nodes,
the checkpoint and its signature, the personal-data commitment, the RFC 9421 digests,
signature bases and signatures) is read from the document text itself and checked with the
project's own code and, for the message signatures, with the independent
``http-message-signatures`` package. An edit that breaks an example, or a code change that
would produce other bytes, fails this file.

Each example is a fenced block preceded by an HTML comment naming it, e.g.
``<!-- example: export -->``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms

from audit.checkpoint import SignedCheckpoint, VerifierKey
from audit.entry import canonical, hash_body
from audit.export import load_verifier_keys, verify_export
from audit.merkle import leaves_resolver, node_hash, root
from audit.pii import commitment
from audit.verify import Fault
from integrity.client_events import EXT_PREFIX, NAMESPACE_PATTERN
from signing.httpsig import (
    ExchangeSigningKey,
    HttpRequest,
    HttpResponse,
    PeerKey,
    body_digest,
    read_signature_params,
    sign_request,
    sign_response,
    verify_request,
    verify_response,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
KEYS = ROOT / "keys.example"
_BLOCK = re.compile(r"<!-- example: ([a-z0-9-]+) -->\s*\n```[a-z0-9]*\n(.*?)\n```", re.DOTALL)


def _blocks(document: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, content in _BLOCK.findall((DOCS / document).read_text(encoding="utf-8")):
        assert name not in found, f"{document} names the example {name!r} twice"
        found[name] = content
    return found


def _block(document: str, name: str) -> str:
    blocks = _blocks(document)
    assert name in blocks, f"{document} has no example named {name!r}"
    return blocks[name]


# --- docs/audit-log.md -------------------------------------------------------------------------

AUDIT_DOC = "audit-log.md"


def _export_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in _block(AUDIT_DOC, "export").splitlines()]


def _entries() -> list[dict[str, Any]]:
    return [obj for obj in _export_objects() if "checkpoint" not in obj]


def _leaves() -> list[bytes]:
    return [bytes.fromhex(entry["hash"]) for entry in _entries()]


def test_every_export_line_is_in_rfc_8785_form() -> None:
    for line in _block(AUDIT_DOC, "export").splitlines():
        assert canonical(json.loads(line)).decode() == line


def test_every_entry_hash_in_the_export_is_the_hash_of_its_body() -> None:
    entries = _entries()
    assert entries, "the example export holds no entry"
    for entry in entries:
        body = {k: v for k, v in entry.items() if k != "hash"}
        assert hash_body(body) == entry["hash"], f"entry {entry['seq']}"


def test_the_entries_form_one_chain_from_the_genesis() -> None:
    previous = "0" * 64
    for seq, entry in enumerate(_entries()):
        assert entry["seq"] == seq
        assert entry["prev"] == previous
        previous = entry["hash"]


def test_the_example_events_of_a_client_are_in_that_clients_own_namespace() -> None:
    # A client appends only under ``ext.<its name>.`` (integrity.client_events); so must the example.
    by_clients = [entry for entry in _entries() if entry["actor"].startswith("client:")]
    assert by_clients, "the example export shows no event of a client"
    for entry in by_clients:
        prefix, name, rest = entry["action"].split(".", 2)
        assert f"{prefix}." == EXT_PREFIX and NAMESPACE_PATTERN.fullmatch(name) and rest, entry["action"]


def test_the_hashed_bytes_shown_for_one_entry_give_the_hash_shown() -> None:
    body = _block(AUDIT_DOC, "entry-body").encode()
    digest = _block(AUDIT_DOC, "entry-hash").strip()
    assert hashlib.sha256(b"\x00" + body).hexdigest() == digest
    shown = json.loads(body)
    exported = next(e for e in _entries() if e["seq"] == shown["seq"])
    assert {**shown, "hash": digest} == exported


def test_the_merkle_nodes_shown_are_those_of_the_entries() -> None:
    leaves = _leaves()
    nodes = dict(line.split() for line in _block(AUDIT_DOC, "merkle-nodes").splitlines())
    n01, n23, n45 = node_hash(leaves[0], leaves[1]), node_hash(leaves[2], leaves[3]), node_hash(leaves[4], leaves[5])
    n0_3, n4_6 = node_hash(n01, n23), node_hash(n45, leaves[6])
    expected = {"[0,2)": n01, "[2,4)": n23, "[4,6)": n45, "[0,4)": n0_3, "[4,7)": n4_6, "[0,7)": node_hash(n0_3, n4_6)}
    assert {k: bytes.fromhex(v) for k, v in nodes.items()} == expected
    assert expected["[0,7)"] == root(7, leaves_resolver(leaves))


def test_the_checkpoint_shown_verifies_with_the_demo_verifier_key_and_commits_to_the_entries() -> None:
    vkey = VerifierKey.from_text((KEYS / "audit-log.vkey").read_text())
    note = _block(AUDIT_DOC, "checkpoint") + "\n"
    signed = SignedCheckpoint.from_text(note)
    assert [k.name for k in signed.verify([vkey])] == [vkey.name]
    leaves = _leaves()
    assert signed.size == len(leaves)
    assert signed.root_hash == root(len(leaves), leaves_resolver(leaves))
    assert signed.checkpoint.origin == "bhxh-integrity/audit/bhxh-vss-main"
    # It is the export's last checkpoint, byte for byte.
    assert _export_objects()[-1] == {"checkpoint": note}


def test_a_changed_checkpoint_does_not_verify() -> None:
    vkey = VerifierKey.from_text((KEYS / "audit-log.vkey").read_text())
    note = _block(AUDIT_DOC, "checkpoint") + "\n"
    forged = note.replace("\n7\n", "\n6\n", 1)
    assert forged != note
    with pytest.raises(Exception, match="does not verify"):
        SignedCheckpoint.from_text(forged).verify([vkey])


def test_the_signature_line_starts_with_the_key_id_of_the_verifier_key() -> None:
    vkey = VerifierKey.from_text((KEYS / "audit-log.vkey").read_text())
    shown = _block(AUDIT_DOC, "key-id").strip()
    assert shown == vkey.key_id.hex()
    public = load_verifier_keys((KEYS / "audit-log.pub.pem").read_text(), [vkey.name])
    assert [k.to_text() for k in public] == [vkey.to_text()]


def test_the_personal_data_commitment_shown_is_recomputed_from_salt_and_data() -> None:
    line = json.loads(_block(AUDIT_DOC, "pii-line"))
    data = canonical(line["pii_data"])
    assert commitment(bytes.fromhex(line["pii_salt"]), data) == line["pii"]
    exported = next(e for e in _entries() if e["seq"] == line["seq"])
    assert exported["pii"] == line["pii"]
    assert {k: v for k, v in line.items() if not k.startswith("pii_")} == exported


def test_the_example_export_verifies_offline_as_the_document_says(tmp_path: Path) -> None:
    export = tmp_path / "export.ndjson"
    export.write_text(_block(AUDIT_DOC, "export") + "\n", encoding="utf-8")
    report = verify_export(export, (KEYS / "audit-log.vkey").read_text())
    assert report.ok
    assert report.entries_checked == len(_entries()) == report.verified_tree_size
    assert report.pii_unavailable == 1
    assert report.root_hash in _block(AUDIT_DOC, "verify-output").replace("\n", "")


def test_a_changed_entry_in_the_example_export_is_caught(tmp_path: Path) -> None:
    text = _block(AUDIT_DOC, "export")
    tampered = text.replace('"to":"one-stop"', '"to":"elsewhere"', 1)
    assert tampered != text
    export = tmp_path / "export.ndjson"
    export.write_text(tampered + "\n", encoding="utf-8")
    report = verify_export(export, (KEYS / "audit-log.vkey").read_text())
    assert not report.ok
    assert report.fault is Fault.CHANGED
    assert report.first_bad_seq == 6


# --- docs/exchange-profile.md ------------------------------------------------------------------

EXCHANGE_DOC = "exchange-profile.md"


def _message(name: str) -> tuple[str, tuple[tuple[str, str], ...], bytes]:
    """Start line, header fields and body of an HTTP/1.1 message shown in the document."""
    head, _, body = _block(EXCHANGE_DOC, name).partition("\n\n")
    start, *lines = head.splitlines()
    fields = tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines))
    return start, fields, body.encode()


def _request() -> HttpRequest:
    start, fields, body = _message("request")
    method, target, _version = start.split(" ")
    host = dict((k.lower(), v) for k, v in fields)["host"]
    return HttpRequest(method, f"https://{host}{target}", fields, body)


def _response() -> HttpResponse:
    start, fields, body = _message("response")
    return HttpResponse(int(start.split(" ")[1]), fields, body, _request())


def _created(message: HttpRequest | HttpResponse) -> datetime:
    created = read_signature_params(message).created
    assert created is not None
    return datetime.fromtimestamp(created, tz=UTC)


def _private(stem: str) -> ExchangeSigningKey:
    passphrase = (KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((KEYS / f"{stem}-exchange.key.pem").read_bytes(), passphrase)
    return ExchangeSigningKey.from_private_key(stem, key)


def _public(stem: str) -> PeerKey:
    return PeerKey.from_pem(stem, (KEYS / f"{stem}-exchange.crt.pem").read_bytes())


class _NoClockVerifier(HTTPMessageVerifier):
    # The example was signed at a fixed moment in the past; time is checked by the project's
    # verifier above (with a clock at that moment), the signature itself here.
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


class _Key(HTTPSignatureKeyResolver):
    def __init__(self, public_key: object) -> None:
        self._public = public_key

    def resolve_public_key(self, key_id: str) -> object:
        return self._public

    def resolve_private_key(self, key_id: str) -> object:
        raise NotImplementedError


def _library_base(message: Any, public_key: object) -> str:
    """Verify with http-message-signatures alone; return the signature base it verified."""
    verifier = _NoClockVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Key(public_key))
    (result,) = verifier.verify(message, max_age=None, expect_tag="bhxh-exchange-v1")
    return "\n".join(f"{k}: {v}" for k, v in result.covered_components.items())


def _library_request(request: HttpRequest) -> SimpleNamespace:
    return SimpleNamespace(method=request.method, url=request.url, headers=dict(request.headers))


def test_the_worked_request_verifies_with_the_projects_verifier() -> None:
    request = _request()
    verified = verify_request(request, _public("portal"), clock=lambda: _created(request), skew_seconds=300)
    assert verified.keyid == "portal"
    assert verified.tag == "bhxh-exchange-v1"


def test_the_worked_request_verifies_with_http_message_signatures_and_its_base_is_the_documented_one() -> None:
    request = _request()
    base = _library_base(_library_request(request), _public("portal").public_key)
    assert base == _block(EXCHANGE_DOC, "request-base")


def test_the_worked_request_is_what_the_code_signs_byte_for_byte() -> None:
    request = _request()
    params = read_signature_params(request)
    assert params.nonce is not None and params.created is not None and params.expires is not None
    unsigned = HttpRequest(
        request.method,
        request.url,
        tuple(
            (k, v) for k, v in request.headers if k.lower() not in {"signature", "signature-input", "content-digest"}
        ),
        request.body,
    )
    fields = sign_request(
        unsigned,
        _private("portal"),
        clock=lambda: _created(request),
        lifetime_seconds=params.expires - params.created,
        nonce=params.nonce,
    ).as_dict()
    for name, value in fields.items():
        assert request.header(name) == value, name
    assert request.header("Content-Digest") == body_digest(request.body)


def test_the_worked_response_verifies_and_answers_the_worked_request() -> None:
    response = _response()
    verified = verify_response(response, _public("gateway"), clock=lambda: _created(response), skew_seconds=300)
    assert verified.keyid == "gateway"
    library_view = SimpleNamespace(
        status_code=response.status, headers=dict(response.headers), request=_library_request(response.request)
    )
    assert _library_base(library_view, _public("gateway").public_key) == _block(EXCHANGE_DOC, "response-base")


def test_the_worked_response_is_what_the_code_signs_byte_for_byte() -> None:
    response = _response()
    params = read_signature_params(response)
    assert params.nonce is not None and params.created is not None and params.expires is not None
    unsigned = HttpResponse(
        response.status,
        tuple(
            (k, v) for k, v in response.headers if k.lower() not in {"signature", "signature-input", "content-digest"}
        ),
        response.body,
        response.request,
    )
    fields = sign_response(
        unsigned,
        _private("gateway"),
        clock=lambda: _created(response),
        lifetime_seconds=params.expires - params.created,
        nonce=params.nonce,
    ).as_dict()
    for name, value in fields.items():
        assert response.header(name) == value, name


def test_a_changed_body_in_the_worked_request_fails_the_digest_check() -> None:
    from signing.errors import ContentDigestMismatch

    request = _request()
    changed = HttpRequest(request.method, request.url, request.headers, request.body.replace(b"H29", b"H30"))
    assert changed.body != request.body
    with pytest.raises(ContentDigestMismatch):
        verify_request(changed, _public("portal"), clock=lambda: _created(request), skew_seconds=300)


def test_the_signature_shown_is_the_raw_ed25519_signature_over_the_base() -> None:
    request = _request()
    signature = request.header("Signature")
    assert signature is not None
    raw = base64.b64decode(signature.split("=:", 1)[1].rstrip(":"))
    public = _public("portal").public_key
    public.verify(raw, _block(EXCHANGE_DOC, "request-base").encode())  # type: ignore[union-attr,call-arg]
