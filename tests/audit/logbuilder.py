"""Test helper: build small logs in memory (entries, personal data, signed checkpoints) and
tamper with their export objects the way an insider without the signing key could."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, NoteSigner, SignedCheckpoint, origin_for
from audit.entry import GENESIS_PREV, Entry, build_entry, canonical, hash_body
from audit.export import checkpoint_line
from audit.merkle import CompactRange
from audit.pii import PersonalData, seal

LOG_ID = "test-log"
KEY_NAME = "bhxh-integrity/audit/test-log"


@dataclass
class _Pii:
    salt: bytes
    data: Any

    def personal(self) -> Any:
        return self.data


@dataclass
class Log:
    signer: NoteSigner
    entries: list[Entry] = field(default_factory=list)
    personal: dict[int, PersonalData] = field(default_factory=dict)
    checkpoints: list[SignedCheckpoint] = field(default_factory=list)

    @property
    def vkey(self) -> str:
        return self.signer.verifier.to_text()

    def objects(self, *, include_pii: bool = False) -> list[dict[str, Any]]:
        out = []
        for entry in self.entries:
            obj = entry.to_dict()
            if include_pii and entry.seq in self.personal:
                sealed = self.personal[entry.seq]
                obj["pii_salt"] = sealed.salt.hex()
                obj["pii_data"] = json.loads(sealed.canonical)
            out.append(obj)
        return out

    def checkpoint_at(self, size: int, signer: NoteSigner | None = None) -> SignedCheckpoint:
        tree = CompactRange()
        for entry in self.entries[:size]:
            tree.append(entry.leaf())
        return SignedCheckpoint.sign(Checkpoint(origin_for(LOG_ID), size, tree.root()), [signer or self.signer])


def build_log(size: int, *, every: int = 4, pii_every: int = 3, signer: NoteSigner | None = None) -> Log:
    log = Log(signer or NoteSigner(KEY_NAME, Ed25519PrivateKey.generate()))
    prev = GENESIS_PREV
    for seq in range(size):
        personal = seal({"name": f"Nguyễn Văn {seq}", "id": f"0791{seq:08d}"}) if seq % pii_every == 1 else None
        entry = build_entry(
            seq=seq,
            ts=f"2025-11-{20 + seq % 3:02d}T10:00:00.{seq:06d}Z",
            actor="user:an" if seq % 2 else "system",
            action=("receipt.issued", "signature.created", "auth.login.failed")[seq % 3],
            subject=f"subject-{seq}",
            data={"n": seq, "note": "phiếu"},
            pii=personal.commitment if personal else None,
            prev=prev,
        )
        prev = entry.hash
        log.entries.append(entry)
        if personal:
            log.personal[seq] = personal
    for cp_size in range(every, size + 1, every):
        log.checkpoints.append(log.checkpoint_at(cp_size))
    return log


def rehash(obj: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k not in ("hash", "pii_salt", "pii_data")}
    obj["hash"] = hash_body(body)
    return obj


def forged_entry(seq: int, prev: str) -> dict[str, Any]:
    return rehash(
        {
            "seq": seq,
            "ts": "2025-11-21T11:11:11.111111Z",
            "actor": "user:mallory",
            "action": "receipt.issued",
            "subject": "forged",
            "data": {"n": secrets.randbelow(1000)},
            "pii": None,
            "prev": prev,
        }
    )


def rewrite_from(objs: list[dict[str, Any]], start: int) -> None:
    """Change entry ``start`` and recompute every hash after it: a consistent forged chain."""
    objs[start]["subject"] = "rewritten"
    prev = objs[start - 1]["hash"] if start else GENESIS_PREV
    for obj in objs[start:]:
        obj["prev"] = prev
        prev = rehash(obj)["hash"]


def write_export(path: Path, objs: list[dict[str, Any]], notes: list[str]) -> Path:
    """Entries then checkpoints (the verifier reads checkpoints in a first pass)."""
    with path.open("wb") as out:
        for obj in objs:
            out.write(canonical(obj) + b"\n")
        for note in notes:
            out.write(checkpoint_line(note))
    return path
