"""``bhxh-integrity keys init`` and ``keys install-cert``: the production key material, every
refusal one line on stderr with exit 2 and nothing written."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from typer.testing import CliRunner, Result

from api.cli import app
from audit.checkpoint import origin_for
from integrity.devpki import note_verifier_key
from signing.purposes import KeyPurpose
from tests.api.ca_support import TestCA, pem
from tests.token_support import SoftToken

runner = CliRunner()
PASSPHRASE = "a production passphrase, long enough"
PRIVATE_FILES = (
    "audit-log.key.pem",
    "gateway-exchange.key.pem",
    "one-stop-signing.key.pem",
    "institution-data-message.key.pem",
)
INIT_FILES = {
    *PRIVATE_FILES,
    "audit-log.pub.pem",
    "audit-log.vkey",
    "secrets.key",
    "gateway-exchange.pub.pem",
    "one-stop-signing.csr.pem",
    "institution-data-message.csr.pem",
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean BHXH_* environment with the passphrase in a file."""
    for name in list(os.environ):
        if name.startswith("BHXH_"):
            monkeypatch.delenv(name)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    values = {"BHXH_KEYS_PASSPHRASE_FILE": str(passphrase_file), "BHXH_LOG_LEVEL": "WARNING"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _one_line_refusal(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def _init(out: Path) -> dict[str, object]:
    result = _invoke("keys", "init", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_init_writes_encrypted_keys_the_verifier_key_and_a_pss_csr(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "keys"
    report = _init(out)
    assert {p.name for p in out.iterdir()} == INIT_FILES
    assert sorted(Path(str(p)).name for p in report["files"]) == sorted(INIT_FILES)  # type: ignore[attr-defined]
    for name in PRIVATE_FILES:
        data = (out / name).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert (out / name).stat().st_mode & 0o077 == 0  # readable by the service's user only
        with pytest.raises(TypeError):  # encrypted: no key without the passphrase
            serialization.load_pem_private_key(data, None)
        with pytest.raises(ValueError):
            serialization.load_pem_private_key(data, b"another passphrase!!")
    audit_key = serialization.load_pem_private_key((out / "audit-log.key.pem").read_bytes(), PASSPHRASE.encode())
    assert isinstance(audit_key, ed25519.Ed25519PrivateKey)
    vkey = note_verifier_key(origin_for("bhxh-vss-main"), audit_key.public_key())
    assert (out / "audit-log.vkey").read_text() == vkey + "\n" and report["verifier_key"] == vkey
    gateway = serialization.load_pem_private_key((out / "gateway-exchange.key.pem").read_bytes(), PASSPHRASE.encode())
    assert gateway.public_key() == serialization.load_pem_public_key((out / "gateway-exchange.pub.pem").read_bytes())
    signing = serialization.load_pem_private_key((out / "one-stop-signing.key.pem").read_bytes(), PASSPHRASE.encode())
    assert isinstance(signing, rsa.RSAPrivateKey) and signing.key_size == 3072
    csr = x509.load_pem_x509_csr((out / "one-stop-signing.csr.pem").read_bytes())
    assert csr.is_signature_valid and csr.public_key() == signing.public_key()
    assert isinstance(csr.signature_algorithm_parameters, padding.PSS)
    usage = csr.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    # The data-message key: a key of its own (never the receipt key), with its own CSR.
    data_key = serialization.load_pem_private_key(
        (out / "institution-data-message.key.pem").read_bytes(), PASSPHRASE.encode()
    )
    assert isinstance(data_key, rsa.RSAPrivateKey) and data_key.key_size == 3072
    assert data_key.public_key() != signing.public_key()
    data_csr = x509.load_pem_x509_csr((out / "institution-data-message.csr.pem").read_bytes())
    assert data_csr.is_signature_valid and data_csr.public_key() == data_key.public_key()
    assert isinstance(data_csr.signature_algorithm_parameters, padding.PSS)
    data_usage = data_csr.extensions.get_extension_for_class(x509.KeyUsage).value
    assert data_usage.digital_signature and data_usage.content_commitment
    assert data_csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "BHXH Institution Data Message Signing"
    )
    assert report["csrs"] == [str(out / "one-stop-signing.csr.pem"), str(out / "institution-data-message.csr.pem")]
    steps = " ".join(report["next_steps"])  # type: ignore[arg-type]
    for needed in (
        "install-cert",
        "BHXH_KEYS_DIR",
        "init",
        "serve",
        "audit-log.vkey",
        "one-stop-signing.csr.pem",
        "institution-data-message.csr.pem",
    ):
        assert needed in steps
    assert report["token_labels"] == {} and report["data_message_token_label"] is None


def test_init_names_the_verifier_key_after_the_configured_log(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BHXH_LOG_ID", "bhxh-hanoi")
    report = _init(tmp_path / "keys")
    assert str(report["verifier_key"]).startswith("bhxh-integrity/audit/bhxh-hanoi+")


def test_init_prints_the_next_steps_for_people(env: dict[str, str], tmp_path: Path) -> None:
    result = _invoke("keys", "init", "--out", str(tmp_path / "keys"))
    assert result.exit_code == 0, result.output
    assert "one-stop-signing.csr.pem" in result.stdout and "keys install-cert" in result.stdout
    assert "institution-data-message.csr.pem" in result.stdout
    assert "bhxh-integrity/audit/bhxh-vss-main+" in result.stdout


@pytest.mark.parametrize("case", ["unset", "empty", "short", "unreadable"])
def test_init_refuses_without_a_usable_passphrase_and_writes_nothing(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    passphrase_file = Path(env["BHXH_KEYS_PASSPHRASE_FILE"])
    if case == "unset":
        monkeypatch.delenv("BHXH_KEYS_PASSPHRASE_FILE")
    elif case == "empty":
        passphrase_file.write_text("\n")
    elif case == "short":
        passphrase_file.write_text("short\n")
    else:
        monkeypatch.setenv("BHXH_KEYS_PASSPHRASE_FILE", str(tmp_path / "missing"))
    out = tmp_path / "keys"
    _one_line_refusal(_invoke("keys", "init", "--out", str(out)), "passphrase")
    assert not out.exists()


@pytest.mark.parametrize(
    "existing",
    [
        "audit-log.key.pem",
        "secrets.key",
        "one-stop-signing.crt.pem",
        "institution-data-message.key.pem",
        "institution-data-message.csr.pem",
        "institution-data-message.crt.pem",
        "ca.crt.pem",
    ],
)
def test_init_never_overwrites_a_key_file(env: dict[str, str], tmp_path: Path, existing: str) -> None:
    out = tmp_path / "keys"
    out.mkdir()
    (out / existing).write_bytes(b"the key material already in use\n")
    _one_line_refusal(_invoke("keys", "init", "--out", str(out)), existing, "never overwritten")
    assert [p.name for p in out.iterdir()] == [existing]
    assert (out / existing).read_bytes() == b"the key material already in use\n"


def test_init_that_cannot_write_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    _one_line_refusal(_invoke("keys", "init", "--out", str(tmp_path / "a-file" / "keys")), "cannot write")
    assert (tmp_path / "a-file").read_text() == "not a directory\n"


def test_a_second_init_changes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "keys"
    _init(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _one_line_refusal(_invoke("keys", "init", "--out", str(out), "--json"), "never overwritten")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- install-cert --------------------------------------------------------------------------------


@pytest.fixture
def keys_dir(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "keys"
    _init(out)
    monkeypatch.setenv("BHXH_KEYS_DIR", str(out))
    return out


def _csr(keys: Path) -> bytes:
    return (keys / "one-stop-signing.csr.pem").read_bytes()


def _data_csr(keys: Path) -> bytes:
    return (keys / "institution-data-message.csr.pem").read_bytes()


def test_install_cert_checks_and_installs_the_certificate_with_its_chain(keys_dir: Path, tmp_path: Path) -> None:
    root = TestCA.root()
    issuing = root.subordinate()
    cert = issuing.issue(_csr(keys_dir))
    (tmp_path / "cert.pem").write_bytes(pem(cert))
    (tmp_path / "chain.pem").write_bytes(pem(issuing.cert, root.cert))
    result = _invoke(
        "keys", "install-cert", str(tmp_path / "cert.pem"), "--chain", str(tmp_path / "chain.pem"), "--json"
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["serial"] == format(cert.serial_number, "x") and len(shown["path"]) == 3
    assert x509.load_pem_x509_certificate((keys_dir / "one-stop-signing.crt.pem").read_bytes()) == cert
    # ca.crt.pem: the anchor first (what the service trusts), then the intermediate it embeds.
    assert x509.load_pem_x509_certificates((keys_dir / "ca.crt.pem").read_bytes()) == [root.cert, issuing.cert]
    assert shown["purpose"] == "receipt" and not (keys_dir / "institution-data-message.crt.pem").exists()


def test_install_cert_tells_the_data_message_certificate_by_its_key(keys_dir: Path, tmp_path: Path) -> None:
    root = TestCA.root()
    data_ca = root.subordinate("Test Licensed Data Message CA")
    data_cert = data_ca.issue(_data_csr(keys_dir), purpose=KeyPurpose.DATA_MESSAGE)
    (tmp_path / "data.pem").write_bytes(pem(data_cert, data_ca.cert, root.cert))
    result = _invoke("keys", "install-cert", str(tmp_path / "data.pem"))
    assert result.exit_code == 0, result.output
    assert "data-message certificate" in result.stdout
    assert x509.load_pem_x509_certificate((keys_dir / "institution-data-message.crt.pem").read_bytes()) == data_cert
    assert not (keys_dir / "one-stop-signing.crt.pem").exists()
    # The receipt certificate from another issuing CA: both chains stay trusted in ca.crt.pem.
    receipt_ca = root.subordinate("Test Licensed Receipt CA")
    receipt_cert = receipt_ca.issue(_csr(keys_dir), purpose=KeyPurpose.RECEIPT)
    (tmp_path / "receipt.pem").write_bytes(pem(receipt_cert, receipt_ca.cert, root.cert))
    result = _invoke("keys", "install-cert", str(tmp_path / "receipt.pem"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["purpose"] == "receipt"
    assert x509.load_pem_x509_certificate((keys_dir / "one-stop-signing.crt.pem").read_bytes()) == receipt_cert
    assert x509.load_pem_x509_certificate((keys_dir / "institution-data-message.crt.pem").read_bytes()) == data_cert
    assert x509.load_pem_x509_certificates((keys_dir / "ca.crt.pem").read_bytes()) == [
        root.cert,
        data_ca.cert,
        receipt_ca.cert,
    ]


def test_install_cert_takes_the_anchor_from_the_trust_anchor_files(
    keys_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = TestCA.root()
    (tmp_path / "root.pem").write_bytes(pem(root.cert))
    monkeypatch.setenv("BHXH_TRUST_ANCHOR_FILES", json.dumps([str(tmp_path / "root.pem")]))
    (tmp_path / "cert.pem").write_bytes(pem(root.issue(_csr(keys_dir))))
    result = _invoke("keys", "install-cert", str(tmp_path / "cert.pem"))
    assert result.exit_code == 0, result.output
    assert "installed" in result.stdout
    assert x509.load_pem_x509_certificates((keys_dir / "ca.crt.pem").read_bytes()) == [root.cert]


def _other_csr(tmp_path: Path) -> bytes:
    from integrity.key_material import CsrSubject, signing_csr

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return signing_csr(other, CsrSubject()).public_bytes(serialization.Encoding.PEM)


REFUSALS = {
    # name: (what the CA sends: cert file, chain file), words of the error line
    "key-mismatch": ("does not certify this service's receipt or data-message key",),
    "receipt-key-marked-data-message": ("certifies the receipt key", "marks it for data-message"),
    "data-message-key-marked-receipt": ("certifies the data-message key", "marks it for receipt"),
    "untrusted-other-root": ("does not chain to a trusted anchor",),
    "untrusted-no-anchor": ("no trust anchor",),
    "expired": ("expired",),
    "not-yet-valid": ("not valid yet",),
    "unreadable-cert": ("not a PEM X.509 certificate",),
    "unreadable-chain": ("the chain file is not a PEM X.509 certificate",),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
@pytest.mark.parametrize("installed_before", [False, True])
def test_install_cert_refusals_are_one_line_and_install_nothing(
    keys_dir: Path, tmp_path: Path, case: str, installed_before: bool
) -> None:
    root = TestCA.root()
    if installed_before:  # a renewal that is refused keeps the certificate in use
        (tmp_path / "good.pem").write_bytes(pem(root.issue(_csr(keys_dir))))
        (tmp_path / "root.pem").write_bytes(pem(root.cert))
        good = _invoke("keys", "install-cert", str(tmp_path / "good.pem"), "--chain", str(tmp_path / "root.pem"))
        assert good.exit_code == 0, good.output
    before = {p.name: p.read_bytes() for p in keys_dir.iterdir()}
    now = datetime.now(UTC)
    chain = pem(root.cert)
    if case == "key-mismatch":
        cert = pem(root.issue(_other_csr(tmp_path)))
    elif case == "receipt-key-marked-data-message":
        cert = pem(root.issue(_csr(keys_dir), purpose=KeyPurpose.DATA_MESSAGE))
    elif case == "data-message-key-marked-receipt":
        cert = pem(root.issue(_data_csr(keys_dir), purpose=KeyPurpose.RECEIPT))
    elif case == "untrusted-other-root":
        cert, chain = pem(TestCA.root("Some Other CA").issue(_csr(keys_dir))), pem(root.cert)
    elif case == "untrusted-no-anchor":
        cert, chain = pem(root.subordinate().issue(_csr(keys_dir))), b""
    elif case == "expired":
        cert = pem(root.issue(_csr(keys_dir), not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)))
    elif case == "not-yet-valid":
        cert = pem(root.issue(_csr(keys_dir), not_before=now + timedelta(days=2), not_after=now + timedelta(days=400)))
    elif case == "unreadable-cert":
        cert = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    else:
        cert, chain = pem(root.issue(_csr(keys_dir))), b"this is not PEM\n"
    (tmp_path / "cert.pem").write_bytes(cert)
    args = ["keys", "install-cert", str(tmp_path / "cert.pem")]
    if chain:
        (tmp_path / "chain.pem").write_bytes(chain)
        args += ["--chain", str(tmp_path / "chain.pem")]
    _one_line_refusal(_invoke(*args), *REFUSALS[case])
    assert {p.name: p.read_bytes() for p in keys_dir.iterdir()} == before


def test_install_cert_with_a_wrong_passphrase_is_refused(
    keys_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = TestCA.root()
    (tmp_path / "cert.pem").write_bytes(pem(root.issue(_csr(keys_dir)), root.cert))
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase of these keys\n")
    monkeypatch.setenv("BHXH_KEYS_PASSPHRASE_FILE", str(wrong))
    _one_line_refusal(_invoke("keys", "install-cert", str(tmp_path / "cert.pem")), "wrong passphrase")
    assert not (keys_dir / "one-stop-signing.crt.pem").exists() and not (keys_dir / "ca.crt.pem").exists()


# --- on a PKCS#11 token ----------------------------------------------------------------------------


def test_init_on_the_token_makes_the_keys_there_and_start_up_uses_them(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, soft_token: SoftToken, db_url: str
) -> None:
    from integrity.settings import Settings
    from integrity.setup import initialise
    from signing.pkcs11 import KeyToken, TokenEd25519Key, TokenRSAKey

    for name, value in soft_token.env().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "keys"
    report = _init(out)
    labels = report["token_labels"]
    assert isinstance(labels, dict) and set(labels) == {
        "BHXH_CHECKPOINT_KEY_LABEL",
        "BHXH_GATEWAY_KEY_LABEL",
        "BHXH_RECEIPT_KEY_LABEL",
    }
    data_label = report["data_message_token_label"]
    assert isinstance(data_label, str) and data_label in " ".join(report["next_steps"])  # type: ignore[arg-type]
    # No private key file: those keys exist only on the token.
    assert {p.name for p in out.iterdir()} == INIT_FILES - set(PRIVATE_FILES)
    token = KeyToken.open(soft_token.module, soft_token.label, soft_token.pin)
    try:
        checkpoint = token.key_by_label(labels["BHXH_CHECKPOINT_KEY_LABEL"])
        gateway = token.key_by_label(labels["BHXH_GATEWAY_KEY_LABEL"])
        receipt = token.key_by_label(labels["BHXH_RECEIPT_KEY_LABEL"])
        data_message = token.key_by_label(data_label)
    finally:
        token.close()
    assert isinstance(checkpoint, TokenEd25519Key) and isinstance(gateway, TokenEd25519Key)
    assert isinstance(receipt, TokenRSAKey) and receipt.key_size == 3072
    assert isinstance(data_message, TokenRSAKey) and data_message.key_size == 3072
    assert data_message.public_key() != receipt.public_key()
    data_csr = x509.load_pem_x509_csr(_data_csr(out))
    assert data_csr.is_signature_valid and data_csr.public_key() == data_message.public_key()
    assert (out / "audit-log.vkey").read_text().strip() == note_verifier_key(
        origin_for("bhxh-vss-main"), checkpoint.public_key()
    )
    csr = x509.load_pem_x509_csr((out / "one-stop-signing.csr.pem").read_bytes())
    assert csr.is_signature_valid and csr.public_key() == receipt.public_key()  # signed on the token

    # The CA's certificate is checked against the token key, then the service starts on it.
    for name, label in labels.items():
        monkeypatch.setenv(name, label)
    monkeypatch.setenv("BHXH_KEYS_DIR", str(out))
    root = TestCA.root()
    (tmp_path / "cert.pem").write_bytes(pem(root.issue(_csr(out)), root.cert))
    installed = _invoke("keys", "install-cert", str(tmp_path / "cert.pem"))
    assert installed.exit_code == 0, installed.output
    (tmp_path / "data.pem").write_bytes(pem(root.issue(_data_csr(out)), root.cert))
    installed = _invoke("keys", "install-cert", str(tmp_path / "data.pem"), "--json")
    assert installed.exit_code == 0, installed.output
    assert json.loads(installed.stdout)["certificate"] == str(out / "institution-data-message.crt.pem")
    monkeypatch.setenv("BHXH_DATABASE_URL", db_url)
    assert any("audit log" in change for change in initialise(Settings()).changes)
