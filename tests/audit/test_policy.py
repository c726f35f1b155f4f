"""C2SP tlog-policy files: the example of the specification parses and decides as it says,
every rule of the format refuses a bad file naming its line, and a checkpoint counts only when
a log key signed it and the quorum cosigned it (unknown cosigners reported, never counted)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from audit.checkpoint import NoteSignature, SignedCheckpoint, SignedNote
from audit.cosignature import Cosigner, signature_lines, with_cosignatures
from audit.errors import CheckpointSignatureInvalid, PolicyInvalid
from audit.policy import Policy
from tests.audit.witness_support import new_log

NOW = 1_760_000_000


def _witness(name: str, mldsa: bool = False) -> Cosigner:
    return Cosigner(name, MLDSA44PrivateKey.generate() if mldsa else Ed25519PrivateKey.generate())


def _cosign(signed: SignedCheckpoint, *cosigners: Cosigner) -> SignedCheckpoint:
    return with_cosignatures(signed, signature_lines(tuple(c.cosign(signed, NOW) for c in cosigners)))


def _policy(text: str) -> Policy:
    return Policy.from_bytes(text.encode())


def test_the_example_of_the_specification_decides_by_its_groups() -> None:
    log = new_log()
    xs = [_witness(f"x{i}.test/w") for i in range(3)]
    ys = [_witness(f"y{i}.test/w", mldsa=True) for i in range(3)]
    lines = [f"log {log.signer.verifier.to_text()}", ""]
    lines += [f"witness X{i} {w.key.to_text()}" for i, w in enumerate(xs)]
    lines += ["group X-witnesses 2 X0 X1 X2", "  # a comment, then Y"]
    lines += [f"\twitness Y{i}\t{w.key.to_text()}  https://y{i}.test/" for i, w in enumerate(ys)]
    lines += ["group Y-witnesses any Y0 Y1 Y2", "group X-and-Y all X-witnesses Y-witnesses", "quorum X-and-Y", ""]
    policy = _policy("\n".join(lines))
    signed = log.checkpoint(9)
    assert not policy.check(signed).satisfied
    assert not policy.check(_cosign(signed, xs[0], xs[1])).satisfied  # no Y
    assert not policy.check(_cosign(signed, xs[0], ys[2])).satisfied  # one X only
    check = policy.check(_cosign(signed, xs[0], xs[2], ys[1]))
    assert check.satisfied and set(check.witnesses) == {"X0", "X2", "Y1"} and check.unknown == ()


def test_quorum_none_needs_only_the_log_signature() -> None:
    log = new_log()
    policy = _policy(f"log {log.signer.verifier.to_text()}\nquorum none\n")
    assert policy.check(log.checkpoint(3)).satisfied
    assert not policy.check(new_log(origin=log.origin).checkpoint(3)).satisfied  # another key


def test_an_unknown_cosigner_is_reported_and_never_counted() -> None:
    log = new_log()
    known, stranger = _witness("w1.test/w"), _witness("w2.test/w")
    policy = _policy(
        f"log {log.signer.verifier.to_text()}\nwitness w1 {known.key.to_text()}\n"
        f"witness w2 {_witness('w2.test/w').key.to_text()}\ngroup two 2 w1 w2\nquorum two\n"
    )
    # The stranger uses w2's name, not its key: its line does not count for w2.
    check = policy.check(_cosign(log.checkpoint(4), known, stranger))
    assert not check.satisfied and check.witnesses == ("w1",)
    assert check.unknown == (f"w2.test/w+{stranger.key.key_id.hex()}",)


def test_a_listed_witness_whose_cosignature_fails_rejects_the_checkpoint() -> None:
    log = new_log()
    witness = _witness("w1.test/w")
    policy = _policy(f"log {log.signer.verifier.to_text()}\nwitness w1 {witness.key.to_text()}\nquorum w1\n")
    cosigned = _cosign(log.checkpoint(4), witness)
    sigs = list(cosigned.note.signatures)
    sigs[-1] = NoteSignature(sigs[-1].name, sigs[-1].key_id, sigs[-1].signature[:-1] + b"\x00")
    forged = SignedCheckpoint(cosigned.checkpoint, SignedNote(cosigned.note.text, tuple(sigs)))
    with pytest.raises(CheckpointSignatureInvalid, match="w1"):
        policy.check(forged)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("LOG\nquorum none\n", "line 1: unknown keyword"),
        ("log nope\nquorum none\n", "line 1: not a log verifier key"),
        ("log LOGKEY\nlog LOGKEY\nquorum none\n", "line 2: this public key is already listed"),
        ("log LOGKEY\nwitness w1 WKEY\nwitness w2 WKEY\nquorum w1\n", "line 3: this public key is already listed"),
        ("log LOGKEY\nwitness w1 WKEY\nwitness w1 W2KEY\nquorum w1\n", "line 3: the name 'w1' is already defined"),
        ("log LOGKEY\nwitness none WKEY\nquorum none\n", "'none' is reserved"),
        ("log LOGKEY\nwitness w1 WKEY\ngroup g 2 w1\nquorum g\n", "the threshold 2 is not between 1 and the 1"),
        ("log LOGKEY\nwitness w1 WKEY\ngroup g 01 w1\nquorum g\n", "not all, any or a decimal number"),
        ("log LOGKEY\nwitness w1 WKEY\ngroup g any w1 w1\nquorum g\n", "each member once"),
        ("log LOGKEY\ngroup g any w1\nwitness w1 WKEY\nquorum g\n", "line 2: 'w1' is not a witness or group"),
        ("log LOGKEY\nwitness w1 WKEY\ngroup g any none\nquorum g\n", "'none' cannot be a group member"),
        ("log LOGKEY\nquorum w1\nwitness w1 WKEY\n", "line 2: the quorum 'w1' is not"),
        ("log LOGKEY\nquorum none\nquorum none\n", "line 3: a policy has exactly one quorum line"),
        ("log LOGKEY\n", "no quorum line"),
        ("quorum none\n", "no log key"),
        ("log LOGKEY\x0b\nquorum none\n", "control characters"),
        ("log WKEY\nquorum none\n", "line 1: not a log verifier key"),
        ("log LOGKEY\nwitness w1 LOGKEY2\nquorum w1\n", "line 2: not a witness verifier key"),
    ],
)
def test_a_bad_policy_is_refused_naming_its_line(text: str, message: str) -> None:
    log = new_log()
    keys = {
        "LOGKEY2": new_log().signer.verifier.to_text(),
        "LOGKEY": log.signer.verifier.to_text(),
        "W2KEY": _witness("w2.test/w").key.to_text(),
        "WKEY": _witness("w1.test/w").key.to_text(),
    }
    for placeholder, value in keys.items():
        text = text.replace(placeholder, value)
    with pytest.raises(PolicyInvalid, match=message):
        _policy(text)
