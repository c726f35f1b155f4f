"""A SoftHSM2 token (Debian's softhsm2) for the PKCS#11 tests, made once per test session, and
for bench/bench_token.py.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is first loaded into the process, so the token
directory is created and the variable set before any test loads it. In CI a missing SoftHSM2
is a failure, never a skip (tests.tools).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE_PATHS = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
LABEL = "bhxh-test-token"
PIN = "246810"
SO_PIN = "13579111"


@dataclass(frozen=True)
class SoftToken:
    module: Path
    label: str
    pin: bytes
    pin_file: Path

    def settings(self) -> dict[str, object]:
        """The BHXH_PKCS11_* settings for this token, as ``demo_settings`` overrides."""
        return {"pkcs11_module": self.module, "pkcs11_token_label": self.label, "pkcs11_pin_file": self.pin_file}

    def officer_key(self, algorithm: Any, prefix: str) -> tuple[str, Any]:
        """A key pair made on the token as an HSM officer would (sensitive, not extractable,
        labelled): its fresh label and its public key."""
        from signing.pkcs11 import KeyToken

        label = f"{prefix}-{os.urandom(4).hex()}"
        token = KeyToken.open(self.module, self.label, self.pin)
        try:
            return label, token.generate(algorithm, rsa_bits=2048, label=label).public_key()
        finally:
            token.close()

    def erase(self, object_id: str) -> None:
        """Delete a key pair from the token behind the service's back (a token failure)."""
        from signing.pkcs11 import KeyToken

        token = KeyToken.open(self.module, self.label, self.pin)
        try:
            token.destroy(object_id)
        finally:
            token.close()

    def log_out(self) -> None:
        """Log this process out of the token behind the service's back, as an HSM that restarted
        would: a C_Logout on a session of its own ends the login of every session this process
        has on the token (PKCS#11 v2.40 §5.6), which stay open but public."""
        import ctypes

        import pkcs11

        session = pkcs11.lib(str(self.module)).get_token(token_label=self.label).open()
        try:
            assert ctypes.CDLL(str(self.module)).C_Logout(ctypes.c_ulong(session.handle)) == 0
        finally:
            session.close()

    def env(self) -> dict[str, str]:
        return {
            "BHXH_PKCS11_MODULE": str(self.module),
            "BHXH_PKCS11_TOKEN_LABEL": self.label,
            "BHXH_PKCS11_PIN_FILE": str(self.pin_file),
        }


def soft_hsm_module() -> Path | None:
    """Debian's SoftHSM2 PKCS#11 module, or None if softhsm2 is not installed."""
    if shutil.which("softhsm2-util") is None:
        return None
    return next((p for p in MODULE_PATHS if p.exists()), None)


def init_soft_token(base: Path, module: Path, label: str = LABEL) -> SoftToken:
    """A fresh token under ``base``; call before the module is first loaded in this process."""
    (base / "tokens").mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
        check=True,
        capture_output=True,
        text=True,
    )
    pin_file = base / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    return SoftToken(module, label, PIN.encode(), pin_file)


def make_soft_token(base: Path) -> SoftToken:
    """The session's token for the tests: a missing SoftHSM2 skips, or fails in CI (tests.tools)."""
    from tests.tools import missing, require_tool

    require_tool("softhsm2-util", "softhsm2")
    module = soft_hsm_module()
    if module is None:
        missing(
            f"the SoftHSM2 PKCS#11 module is not at {' or '.join(map(str, MODULE_PATHS))} (Debian package softhsm2)"
        )
    return init_soft_token(base, module)
