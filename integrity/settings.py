"""Service settings, read once from ``BHXH_*`` environment variables (pydantic-settings).

Every variable is listed in README.md's settings table; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///var/integrity.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BHXH_", extra="ignore", frozen=True)

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL: sqlite:///… or postgresql+psycopg://…")
    keys_dir: Path = Field(Path("var/keys"), description="directory holding the service's keys and certificates")
    keys_passphrase: str | None = Field(
        None, description="passphrase of the encrypted PKCS#8 private keys (prefer the _FILE variant)"
    )
    keys_passphrase_file: Path | None = Field(None, description="file holding that passphrase")
    pkcs11_module: Path | None = Field(
        None, description="PKCS#11 module (.so) of the HSM that holds signing keys; unset: none"
    )
    pkcs11_token_label: str | None = Field(None, description="label of the token on that module")
    pkcs11_pin: str | None = Field(None, description="user PIN of that token (prefer the _FILE variant)")
    pkcs11_pin_file: Path | None = Field(None, description="file holding that PIN")
    checkpoint_key_label: str | None = Field(
        None, description="label of the Ed25519 audit checkpoint key on that token; unset: audit-log.key.pem"
    )
    gateway_key_label: str | None = Field(
        None,
        description="label of the gateway's RFC 9421 key pair (Ed25519 or P-256) on that token; "
        "unset: gateway-exchange.key.pem",
    )
    receipt_key_label: str | None = Field(
        None,
        description="label of the receipt (PAdES) key pair on that token, certified by one-stop-signing.crt.pem; "
        "unset: one-stop-signing.key.pem",
    )
    checkpoint_retired_keys_file: Path | None = Field(
        None, description="verifier keys (.vkey lines) of earlier checkpoint keys: they verify, never sign"
    )
    demo: bool = Field(False, description="allow the demonstration PKI of keys.example/ (NOT FOR PRODUCTION)")
    host: str = Field("127.0.0.1", description="address serve binds to")
    port: int = Field(8000, ge=1, le=65535, description="port serve binds to")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    public_base_url: str = Field("http://127.0.0.1:8000", description="external base URL (receipt QR codes, links)")
    log_id: str = Field("bhxh-vss-main", description="audit log identifier, part of the checkpoint origin line")
    checkpoint_every: int = Field(1000, ge=1, description="sign a checkpoint at least every N entries")
    checkpoint_seconds: int = Field(60, ge=1, description="and at least every N seconds")
    checkpoint_publish_dir: Path | None = Field(
        None, description="directory outside the database where each checkpoint is also written"
    )
    clock_skew_seconds: int = Field(300, ge=0, le=3600, description="allowed skew of RFC 9421 `created`")
    tsa_url: str | None = Field(None, description="RFC 3161 timestamp authority; when set, receipts are PAdES B-T")
    units_file: Path | None = Field(
        None, description="JSON list of receiving units [{code, name}]; the demo list when unset"
    )
    session_idle_seconds: int = Field(1800, ge=60, le=3600, description="session idle timeout (≤ 1 h)")
    session_absolute_seconds: int = Field(
        8 * 3600, ge=300, le=12 * 3600, description="session absolute lifetime (≤ 12 h)"
    )
    exchange_archive: bool = Field(False, description="keep the body of every exchanged message in the message archive")
    exchange_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="gateway timeout towards a peer (504 past it)"
    )
    exchange_peer_cache_seconds: float = Field(
        2.0, ge=0, le=60, description="how long an instance caches the peer registry"
    )
    trust_anchor_files: list[Path] = Field(
        default_factory=list, description="extra trusted root certificates (PEM) for verifying signatures, JSON list"
    )
    crl_files: list[Path] = Field(
        default_factory=list, description="local CRL files consulted when verifying signatures, JSON list"
    )
    revocation_fetch: bool = Field(
        False, description="fetch OCSP/CRL over the network when verifying (needs outbound access)"
    )
    secure_cookies: bool = Field(True, description="mark cookies Secure (turn off only for plain-HTTP local demos)")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("BHXH_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level

    def token_pin(self) -> bytes | None:
        """The PKCS#11 user PIN, from the file if given (never from the command line)."""
        return _secret(self.pkcs11_pin_file, self.pkcs11_pin)

    def passphrase(self) -> bytes | None:
        """The private-key passphrase, from the file if given (never from the command line)."""
        return _secret(self.keys_passphrase_file, self.keys_passphrase)


def _secret(file: Path | None, value: str | None) -> bytes | None:
    if file is not None:
        return file.read_bytes().strip()
    return value.encode() if value is not None else None
