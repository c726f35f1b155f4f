"""A SoftHSM2 token (Debian's softhsm2) for the PKCS#11 tests, made once per test session.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is first loaded into the process, so the token
directory is created and the variable set before any test loads it. With CI=true a missing
SoftHSM2 is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

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

    def env(self) -> dict[str, str]:
        return {
            "BHXH_PKCS11_MODULE": str(self.module),
            "BHXH_PKCS11_TOKEN_LABEL": self.label,
            "BHXH_PKCS11_PIN_FILE": str(self.pin_file),
        }


def make_soft_token(base: Path) -> SoftToken:
    module = next((p for p in MODULE_PATHS if p.exists()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        message = "Debian package softhsm2 is needed for the PKCS#11 tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: they must run)")
        pytest.skip(message)
    (base / "tokens").mkdir(parents=True)
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", SO_PIN],
        check=True, capture_output=True, text=True,
    )
    pin_file = base / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    return SoftToken(module, LABEL, PIN.encode(), pin_file)
