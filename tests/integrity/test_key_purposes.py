"""Key purposes in storage and configuration: keys stored before purposes existed get one by what
they are (migration signing_0003, both back ends); start-up refuses a receipt key left able to sign
data messages, a data-message certificate installed as the receipt certificate, and a data-message
key that is the receipt key; the demo PKI marks each signing certificate with its purpose."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from integrity.app_state import build_state
from integrity.audit_service import AuditService
from integrity.clock import FrozenClock
from integrity.devpki import generate, issue_leaf
from integrity.errors import ConfigurationError
from integrity.migrate import upgrade
from integrity.signatures import BootstrapKey, SignatureService
from signing.errors import KeyPurposeMismatch
from signing.purposes import ID_KP_DOCUMENT_SIGNING, KeyPurpose, certificate_purpose
from signing.tables import signing_keys
from signing.trust import TrustPolicy
from tests.conftest import DEMO_KEYS, demo_settings
from tests.signing._pki import TestCa, pem, rsa_key

PASS = b"test keystore passphrase"
MIGRATIONS = Path(__file__).resolve().parents[2] / "integrity" / "migrations"


def _public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def test_keys_stored_before_purposes_get_one_by_what_they_are(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "signing_0002")
    assert "purpose" not in {c["name"] for c in inspect(engine).get_columns("signing_keys")}
    ca = TestCa.create()
    certified = rsa_key()
    now = datetime.now(UTC)
    rows = {
        "receipt-kid": ("", pem(ca.issue(certified.public_key(), "One-stop signing")).decode(), _public_pem(certified)),
        "generated-kid": ("", None, _public_pem(ed25519.Ed25519PrivateKey.generate())),
        "personal-kid": ("user:lan", None, _public_pem(ed25519.Ed25519PrivateKey.generate())),
    }
    with engine.begin() as conn:
        for n, (kid, (owner, chain, public)) in enumerate(rows.items()):
            conn.execute(
                text(
                    "INSERT INTO signing_keys (kid, algorithm, state, owner, created_at, public_key_pem, "
                    "certificate_chain_pem) VALUES (:kid, :alg, 'retired', :owner, :at, :pub, :chain)"
                ),
                {
                    "kid": kid,
                    "alg": "PS256" if n == 0 else "Ed25519",
                    "owner": owner,
                    "at": now,
                    "pub": public,
                    "chain": chain,
                },
            )
    assert upgrade(engine) != []
    with engine.connect() as conn:
        found = dict(conn.execute(select(signing_keys.c.kid, signing_keys.c.purpose)).all())
    assert found == {"receipt-kid": "receipt", "generated-kid": "data-message", "personal-kid": "personal"}
    # The new rule holds after the upgrade: an unknown purpose is refused by the database.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            insert(signing_keys).values(
                kid="x",
                algorithm="Ed25519",
                state="retired",
                owner="",
                created_at=now,
                public_key_pem="x",
                purpose="any",
            )
        )


def _audit(engine: Engine, clock: FrozenClock) -> AuditService:
    return AuditService(
        engine,
        clock=clock,
        log_id="test",
        checkpoint_key=ed25519.Ed25519PrivateKey.generate(),
        checkpoint_key_name="test/audit",
        checkpoint_every=10_000,
        checkpoint_seconds=3600,
    )


def test_start_up_refuses_a_receipt_key_stored_for_data_messages(engine: Engine) -> None:
    clock = FrozenClock()
    audit = _audit(engine, clock)
    ca = TestCa.create()
    private = rsa_key()
    chain = (ca.issue(private.public_key(), "One-stop signing"), ca.cert)
    trust = TrustPolicy([ca.cert])
    try:
        first = SignatureService.open(engine, clock, audit, passphrase=PASS, trust=trust)
        kid = first.import_key(private, chain, actor="system").kid  # as a data-message key, by mistake
        with pytest.raises(KeyPurposeMismatch, match=f"keys retire {kid}"):
            SignatureService.open(
                engine,
                clock,
                audit,
                passphrase=PASS,
                trust=trust,
                bootstrap=[BootstrapKey(private, chain, KeyPurpose.RECEIPT)],
            )
        first.retire_key(kid, actor="system")
        again = SignatureService.open(
            engine,
            clock,
            audit,
            passphrase=PASS,
            trust=trust,
            bootstrap=[BootstrapKey(private, chain, KeyPurpose.RECEIPT)],
        )
        assert [(r.kid, r.purpose) for r in again.list_keys()] == [(kid, KeyPurpose.DATA_MESSAGE)]
    finally:
        audit.close()


def _keys_copy(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    shutil.copytree(DEMO_KEYS, keys)
    return keys


def test_a_data_message_certificate_never_signs_receipts(db_url: str, tmp_path: Path) -> None:
    keys = _keys_copy(tmp_path)
    for suffix in ("key.pem", "crt.pem"):
        (keys / f"institution-data-message.{suffix}").replace(keys / f"one-stop-signing.{suffix}")
    with pytest.raises(ConfigurationError, match="data-message certificate: receipts are signed only"):
        build_state(demo_settings(db_url, keys_dir=keys), clock=FrozenClock())


def test_the_data_message_key_must_not_be_the_receipt_key(db_url: str, tmp_path: Path) -> None:
    keys = _keys_copy(tmp_path)
    shutil.copyfile(keys / "one-stop-signing.key.pem", keys / "institution-data-message.key.pem")
    shutil.copyfile(keys / "one-stop-signing.crt.pem", keys / "institution-data-message.crt.pem")
    with pytest.raises(ConfigurationError, match="is the receipt key"):
        build_state(demo_settings(db_url, keys_dir=keys), clock=FrozenClock())


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_demo_pki_marks_receipt_and_data_message_certificates(tmp_path: Path) -> None:
    generate(tmp_path / "pki", now=datetime.now(UTC))
    for directory in (tmp_path / "pki", DEMO_KEYS):
        receipt = _cert(directory / "one-stop-signing.crt.pem")
        data = _cert(directory / "institution-data-message.crt.pem")
        assert certificate_purpose(receipt) is KeyPurpose.RECEIPT and ID_KP_DOCUMENT_SIGNING in _usages(receipt)
        assert certificate_purpose(data) is KeyPurpose.DATA_MESSAGE and ID_KP_DOCUMENT_SIGNING not in _usages(data)
        assert certificate_purpose(_cert(directory / "gateway-exchange.crt.pem")) is None


def test_issuing_one_leaf_keeps_every_other_file_and_the_key(tmp_path: Path) -> None:
    keys = _keys_copy(tmp_path)
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    written = issue_leaf(keys, "one-stop-signing", now=datetime.now(UTC))
    assert sorted(p.name for p in written) == ["README.md", "one-stop-signing.crt.pem"]
    after = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert {n for n in after if after[n] != before[n]} <= {"one-stop-signing.crt.pem", "README.md"}
    reissued = _cert(keys / "one-stop-signing.crt.pem")
    assert reissued.public_key() == _cert(DEMO_KEYS / "one-stop-signing.crt.pem").public_key()
    reissued.verify_directly_issued_by(_cert(keys / "ca.crt.pem"))
    with pytest.raises(ValueError, match="no demo leaf"):
        issue_leaf(keys, "nobody", now=datetime.now(UTC))
