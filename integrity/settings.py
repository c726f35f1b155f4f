"""Service settings, read once from ``BHXH_*`` environment variables (pydantic-settings).

Every variable is listed in README.md's settings table; keep the two in step.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from audit.cosignature import CosignerKey
from audit.errors import MalformedVerifierKey
from integrity.rate_limits import DEFAULT_KEY_PREFIX, DEFAULT_PER_ADDRESS, RouteClass, check_storage_url, parse_limit

DEFAULT_DATABASE_URL = "sqlite:///var/integrity.db"


class WitnessSetting(BaseModel):
    """One entry of BHXH_WITNESSES: a witness (C2SP tlog-witness) the log submits checkpoints to.
    ``vkey`` is its verifier key, or the list of its keys (a witness of this project has an
    ML-DSA-44 and an Ed25519 key): every key listed must cosign for the witness to count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=255)
    url: str
    vkey: str | list[str]

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or any(ch.isspace() for ch in value):
            raise ValueError("a witness url is its http(s):// submission prefix")
        return value.rstrip("/")

    @field_validator("vkey")
    @classmethod
    def _cosigner_keys(cls, value: str | list[str]) -> str | list[str]:
        lines = [value] if isinstance(value, str) else value
        if not lines:
            raise ValueError("a witness needs at least one verifier key")
        for line in lines:
            try:
                CosignerKey.from_text(line)
            except MalformedVerifierKey as exc:
                raise ValueError(f"not a witness verifier key: {exc}") from None
        return value

    def vkeys(self) -> tuple[str, ...]:
        return (self.vkey,) if isinstance(self.vkey, str) else tuple(self.vkey)

    def keys(self) -> tuple[CosignerKey, ...]:
        return tuple(CosignerKey.from_text(line) for line in self.vkeys())


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
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="external base URL (receipt QR codes, links); when set, also the origin of every "
        "request's RFC 9421 @target-uri",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR blocks of the reverse proxies whose Forwarded / X-Forwarded-Proto / "
        "X-Forwarded-Host fields are believed, JSON list; from anyone else those fields are ignored",
    )
    log_id: str = Field("bhxh-vss-main", description="audit log identifier, part of the checkpoint origin line")
    checkpoint_every: int = Field(1000, ge=1, description="sign a checkpoint at least every N entries")
    checkpoint_seconds: int = Field(60, ge=1, description="and at least every N seconds")
    checkpoint_publish_dir: Path | None = Field(
        None, description="directory outside the database where each checkpoint is also written"
    )
    witnesses: list[WitnessSetting] = Field(
        default_factory=list,
        description='witnesses that cosign each checkpoint, JSON list [{"name", "url", "vkey"}]; "vkey" is one '
        "verifier key line or a list of them (all of a witness's keys must cosign)",
    )
    witness_quorum: int | None = Field(
        None, ge=1, description="witnesses whose cosignatures make a checkpoint witnessed; unset: all of them"
    )
    witness_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="timeout of one add-checkpoint request to a witness"
    )
    clock_skew_seconds: int = Field(300, ge=0, le=3600, description="allowed skew of RFC 9421 `created`")
    tsa_url: str | None = Field(
        None,
        description="RFC 3161 timestamp authority; when set, receipts are PAdES B-T and every audit checkpoint "
        "is time-stamped",
    )
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
    webauthn_rp_id: str | None = Field(
        None,
        description="WebAuthn relying party id of passkeys (a domain, e.g. bhxh.gov.vn); unset: the host of "
        "BHXH_WEBAUTHN_ORIGIN",
    )
    webauthn_origin: str | None = Field(
        None,
        description="origin the browser reports in passkey ceremonies (https://host[:port]; http only for "
        "localhost); unset: that of BHXH_PUBLIC_BASE_URL when it is https:// or http://localhost, else "
        "http://localhost:8000 (demo)",
    )
    refusal_log_per_minute: int = Field(
        20,
        ge=1,
        le=10_000,
        description="anonymous refusals logged one by one per client address and minute (per instance); "
        "the rest as one summary entry",
    )
    certificate_warn_days: int = Field(
        30,
        ge=1,
        le=365,
        description="/readyz warns this many days before a signing certificate expires (and fails once it has)",
    )
    audit_writer_stall_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="/readyz fails when callers have waited this long on the audit log's writer without a commit",
    )
    rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description="request rate limit per caller (API client, person, gateway peer) and route class, JSON object "
        '{"sign": "200/second", …} over sign, verify, receipts, audit-read, audit-append, admin, gateway; '
        "a class left out keeps its default",
    )
    rate_limit_per_address: str = Field(
        DEFAULT_PER_ADDRESS,
        description="rate limit of anonymous traffic (no scope, or refused credentials) per source address",
    )
    rate_limit_url: str = Field(
        "memory://",
        description="where the rate-limit counts live: memory:// (this instance) or redis://host:port/db "
        "(shared by every instance using it)",
    )
    rate_limit_key_prefix: str = Field(
        DEFAULT_KEY_PREFIX,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="prefix of the rate-limit keys in Redis (deployments sharing one Redis use distinct ones)",
    )

    @field_validator("witnesses")
    @classmethod
    def _distinct_witnesses(cls, value: list[WitnessSetting]) -> list[WitnessSetting]:
        names = [w.name for w in value]
        if len(set(names)) != len(names):
            raise ValueError("each witness is listed once (two entries share a name)")
        keys = [key for w in value for key in w.vkeys()]
        if len(set(keys)) != len(keys):
            raise ValueError("a verifier key is listed twice")
        return value

    @field_validator("witness_quorum")
    @classmethod
    def _reachable_quorum(cls, value: int | None, info: ValidationInfo) -> int | None:
        count = len(info.data.get("witnesses", []))
        if value is not None and value > count:
            raise ValueError(f"the quorum ({value}) is more than the witnesses listed in BHXH_WITNESSES ({count})")
        return value

    def quorum(self) -> int:
        """Witnesses needed for a checkpoint to count as witnessed (all of them when unset)."""
        return self.witness_quorum if self.witness_quorum is not None else len(self.witnesses)

    @field_validator("public_base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username is not None
            or not value.isascii()
            or any(ch.isspace() for ch in value)
        ):
            raise ValueError("BHXH_PUBLIC_BASE_URL is an absolute http(s) URL without credentials, query or fragment")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: dict[str, str]) -> dict[str, str]:
        known = [c.value for c in RouteClass if c is not RouteClass.PUBLIC]
        for name, text in value.items():
            if name not in known:
                raise ValueError(f"{name[:64]!r} is not a route class (one of {', '.join(known)})")
            parse_limit(text)
        return value

    @field_validator("rate_limit_per_address")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_limit(value)
        return value

    @field_validator("rate_limit_url")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        return check_storage_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ip_network(item.strip())))
            except ValueError:
                raise ValueError(f"BHXH_TRUSTED_PROXIES: {item[:64]!r} is not an IP address or CIDR block") from None
        return out

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("BHXH_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return level

    @model_validator(mode="after")
    def _usable_relying_party(self) -> Settings:
        relying_party(self.webauthn_rp_id, self.webauthn_origin, self.public_base_url)
        return self

    def webauthn_relying_party(self) -> tuple[str, str]:
        """(RP id, origin) of passkey ceremonies, as ``relying_party`` derives them."""
        return relying_party(self.webauthn_rp_id, self.webauthn_origin, self.public_base_url)

    def token_pin(self) -> bytes | None:
        """The PKCS#11 user PIN, from the file if given (never from the command line)."""
        return _secret(self.pkcs11_pin_file, self.pkcs11_pin)

    def passphrase(self) -> bytes | None:
        """The private-key passphrase, from the file if given (never from the command line)."""
        return _secret(self.keys_passphrase_file, self.keys_passphrase)


DEMO_WEBAUTHN_ORIGIN = "http://localhost:8000"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str]:
    """(origin as a browser serialises it, host) of an origin setting; ValueError if it is not
    one a browser runs WebAuthn in: https, or http on localhost (a secure context, W3C Secure
    Contexts §3.1), with a domain name as host (WebAuthn L3 §5.1.4.1 refuses IP addresses)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"BHXH_WEBAUTHN_ORIGIN: {url[:80]!r} has an invalid port") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or not url.isascii()
    ):
        raise ValueError(f"BHXH_WEBAUTHN_ORIGIN is scheme://host[:port] and nothing more, not {url[:80]!r}")
    try:
        ip_address(host)
    except ValueError:
        pass
    else:
        raise ValueError("BHXH_WEBAUTHN_ORIGIN: passkeys need a domain name, not an IP address (use localhost)")
    local = host == "localhost" or host.endswith(".localhost")
    if parts.scheme != "https" and not local:
        raise ValueError("BHXH_WEBAUTHN_ORIGIN: passkeys need https:// (http:// only on localhost)")
    netloc = host if port in (None, _DEFAULT_PORTS[parts.scheme]) else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}", host


def relying_party(rp_id: str | None, origin: str | None, public_base_url: str) -> tuple[str, str]:
    """(RP id, origin) for passkeys. The origin is BHXH_WEBAUTHN_ORIGIN; unset, that of the public
    base URL when a browser could run WebAuthn there, else the demo's http://localhost:8000. The
    RP id is BHXH_WEBAUTHN_RP_ID, else the origin's host; it must be that host or a suffix of it
    (WebAuthn L3 §5.1.4.1: a registrable domain suffix of, or equal to, the origin's domain)."""
    if origin is None:
        try:
            base = urlsplit(public_base_url)
            origin = _origin(f"{base.scheme}://{base.netloc}")[0]
        except ValueError:
            origin = DEMO_WEBAUTHN_ORIGIN
    serialised, host = _origin(origin)
    rp = (rp_id or host).strip().lower()
    if not rp or rp.startswith(".") or not rp.isascii():
        raise ValueError(f"BHXH_WEBAUTHN_RP_ID: {rp_id!r} is not a domain name")
    if host != rp and not host.endswith("." + rp):
        raise ValueError(f"BHXH_WEBAUTHN_RP_ID ({rp}) must be the host of the origin {serialised} or a suffix of it")
    return rp, serialised


def _secret(file: Path | None, value: str | None) -> bytes | None:
    if file is not None:
        return file.read_bytes().strip()
    return value.encode() if value is not None else None
