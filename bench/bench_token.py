"""Signing with keys on a PKCS#11 token (SoftHSM2), beside raw baselines from the same run.

Per algorithm (Ed25519, ES256, PS256-2048), one thread, 256-byte payload:
  * raw token signatures/s: python-pkcs11 ``sign`` with the mechanism the service uses
  * JWS signatures/s with the token key (``signing.jws.sign``)          — ratio to the raw token
  * raw ``cryptography`` signatures/s with a key in memory
  * JWS signatures/s with that in-memory key                             — ratio to raw memory
So the first ratio is what the adapter and JWS add around the token, the second what JWS adds
around an in-memory key; the token figures against the memory ones show the token's own cost.
SoftHSM2 is software: a hardware HSM has its own, usually lower, ceiling.

Needs Debian's softhsm2 (``make bench`` installs it).

    .venv/bin/python bench/bench_token.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.token_support import init_soft_token, soft_hsm_module  # noqa: E402

PAYLOAD = os.urandom(256)


def _rate(operation: Callable[[], object], seconds: float) -> float:
    operation()  # warm
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(20):
            operation()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def _line(label: str, value: float, baseline_label: str = "", baseline: float | None = None) -> None:
    text = f"  {label:<40} {value:>10,.0f} sig/s"
    if baseline is not None:
        text += f"   | {baseline_label:<28} {baseline:>10,.0f} sig/s   ratio {value / baseline:.2f}"
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    module = soft_hsm_module()
    if module is None:
        sys.exit("bench_token: Debian's softhsm2 is not installed (make bench installs it)")
    soft = init_soft_token(Path(tempfile.mkdtemp(prefix="bench-token-")), module, label="bench")

    import pkcs11
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from signing import jws
    from signing.algorithms import PSS_SALT_BYTES, Algorithm, sign_raw
    from signing.keystore import SigningKey
    from signing.pkcs11 import KeyToken

    token = KeyToken.open(soft.module, soft.label, soft.pin)
    signed_at = datetime.now(UTC)
    memory_keys = {
        Algorithm.ED25519: ed25519.Ed25519PrivateKey.generate(),
        Algorithm.ES256: ec.generate_private_key(ec.SECP256R1()),
        Algorithm.PS256: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    print(f"PKCS#11 token signing (SoftHSM2, one thread, {len(PAYLOAD)}-byte payload, {args.seconds:.0f} s per figure)")
    try:
        for algorithm in Algorithm:
            key = token.generate(algorithm, rsa_bits=2048)
            handle = key._private  # the raw python-pkcs11 object, for the baseline only
            # Each operation binds this round's handle (h=handle), keys and algorithm.
            raw_token: Callable[[], object] = {
                Algorithm.ED25519: lambda h=handle: h.sign(PAYLOAD, mechanism=pkcs11.Mechanism.EDDSA),
                Algorithm.ES256: lambda h=handle: h.sign(
                    hashlib.sha256(PAYLOAD).digest(), mechanism=pkcs11.Mechanism.ECDSA
                ),
                Algorithm.PS256: lambda h=handle: h.sign(
                    PAYLOAD,
                    mechanism=pkcs11.Mechanism.SHA256_RSA_PKCS_PSS,
                    mechanism_param=(pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256, PSS_SALT_BYTES),
                ),
            }[algorithm]
            on_token = SigningKey.create(key, created_at=signed_at)
            in_memory = SigningKey.create(memory_keys[algorithm], created_at=signed_at)  # type: ignore[arg-type]
            print(f"{algorithm.value}:")
            token_raw = _rate(raw_token, args.seconds)
            _line("raw token sign", token_raw)
            _line(
                "JWS with the token key",
                _rate(functools.partial(jws.sign, on_token, PAYLOAD, signed_at=signed_at), args.seconds),
                "raw token sign",
                token_raw,
            )
            memory_raw = _rate(functools.partial(sign_raw, memory_keys[algorithm], PAYLOAD), args.seconds)
            _line("raw cryptography sign (in memory)", memory_raw)
            _line(
                "JWS with the in-memory key",
                _rate(functools.partial(jws.sign, in_memory, PAYLOAD, signed_at=signed_at), args.seconds),
                "raw cryptography sign",
                memory_raw,
            )
            token.destroy(key)
    finally:
        token.close()


if __name__ == "__main__":
    main()
