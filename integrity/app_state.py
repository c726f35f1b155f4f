"""The wiring: one object holding the engine, the keys and every service (built once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from audit.erasure import SERVICE_ACTOR
from integrity.accounts import AccountService, build_account_service
from integrity.audit_service import AuditService
from integrity.checkpoint_timestamps import CheckpointTimestamping
from integrity.clients import ClientService
from integrity.clock import Clock, system_clock
from integrity.db import make_engine
from integrity.exchange import ExchangeService, build_exchange_service
from integrity.incremental_verification import IncrementalVerification
from integrity.keys import (
    ServiceKeys,
    checkpoint_key,
    gateway_key,
    load_service_keys,
    open_key_token,
    receipt_key,
    retired_checkpoint_keys,
)
from integrity.logs import get_logger
from integrity.passkeys import PasskeyService, build_passkey_service
from integrity.personal_signing import PersonalSigningService
from integrity.rate_limits import RateLimiter
from integrity.readiness import Readiness, SigningCertificate, assess, signing_certificates
from integrity.receipts import ReceiptService, build_receipt_service
from integrity.refusal_log import RefusalLog, RefusalRecorder
from integrity.settings import Settings
from integrity.signatures import SignatureService, build_signature_service
from integrity.witnessing import Witnessing, witnesses_from_settings
from signing.pdf_sandbox import close_idle_children
from signing.pkcs11 import KeyToken


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    clock: Clock
    keys: ServiceKeys
    audit: AuditService
    clients: ClientService
    accounts: AccountService
    signatures: SignatureService
    receipts: ReceiptService
    exchange: ExchangeService
    refusals: RefusalRecorder
    rate_limiter: RateLimiter
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def audit_verification(self) -> IncrementalVerification:
        """The audit report's verifications: one per process, since it keeps in memory the
        checkpoint it last verified (integrity.incremental_verification says why)."""
        kept: IncrementalVerification | None = self.services.get("audit_verification")
        if kept is None:
            kept = self.services.setdefault("audit_verification", IncrementalVerification(self.audit))
        return kept

    @property
    def passkeys(self) -> PasskeyService:
        """Passkeys over whichever account service is wired (a light object, built on use)."""
        return build_passkey_service(self.settings, self.accounts)

    @property
    def personal_signing(self) -> PersonalSigningService:
        """People's own signatures: built over the current services on each use (cheap, no
        state of its own), so it always checks second factors with the wired accounts."""
        return PersonalSigningService(self.signatures, self.accounts, tsa_url=self.settings.tsa_url)

    def readiness(self) -> Readiness:
        """Every readiness check (integrity.readiness); also refreshes the certificates' gauge."""
        return assess(
            engine=self.engine,
            now=self.clock(),
            certificates=self.signing_certificates(),
            warn_days=self.settings.certificate_warn_days,
            token=self.signatures.token,
            writer=self.audit.writer.writer_health(),
            stall_seconds=self.settings.audit_writer_stall_seconds,
        )

    def signing_certificates(self) -> list[SigningCertificate]:
        return signing_certificates(self.keys.one_stop_certificate, self.signatures.keystore.keys())

    def init_steps(self, actor: str = SERVICE_ACTOR) -> list[Callable[[], str | None]]:
        """Idempotent set-up steps run by ``init``; each returns what it changed, or None.
        ``actor`` writes their entries: the operator running ``init`` (docs/operations.md)."""
        steps: list[Callable[[], str | None]] = [lambda: self.audit.ensure_genesis(actor=actor)]
        if self.keys.demo:
            steps.append(lambda: self.exchange.peers.seed_demo(self.keys.keys_dir, actor=actor))
        steps.append(self._anchor_setup)
        return steps

    def _anchor_setup(self) -> str | None:
        """Sign a checkpoint over what set-up logged, so a fresh log verifies with every entry
        anchored (a verdict needs a trusted signature over each entry)."""
        before = self.audit.latest_checkpoint()
        signed = self.audit.checkpoint_now()
        if before is not None and signed.id == before.id:
            return None
        return f"signed a checkpoint over the {signed.tree_size} entries of the set-up"

    def close(self) -> None:
        gateway = self.services.get("gateway")
        if gateway is not None:
            gateway.close()
        # Before the audit log closes: the refusals still only counted get their summaries.
        self.refusals.flush_all()
        self.audit.close()
        if self.audit.witnessing is not None:
            self.audit.witnessing.close()
        if self.audit.timestamping is not None:
            self.audit.timestamping.close()
        self.rate_limiter.close()
        close_idle_children()
        if self.signatures.token is not None:
            self.signatures.token.close()
        self.engine.dispose()


def build_state(
    settings: Settings, *, clock: Clock = system_clock, engine: Engine | None = None, actor: str = SERVICE_ACTOR
) -> AppState:
    """Parse keys and settings once; a bad key or passphrase raises ConfigurationError here.
    ``actor`` logs what start-up itself writes (the configured keys' first import): the
    operator when ``init`` builds the state, else the service."""
    keys = load_service_keys(settings)
    if keys.demo:
        get_logger().warning(
            "demo_keys_in_use",
            message="INSECURE DEMO MODE: running with the public demonstration PKI of keys.example/; "
            "nothing signed by this instance has any legal value",
            keys_dir=str(keys.keys_dir),
        )
    token = open_key_token(settings)
    try:
        return _build(settings, keys, token, clock, engine, actor)
    except BaseException:
        # Whatever stops start-up (a wrong token key, a receipt key that is not the
        # certificate's…) must not leave the token's session logged in.
        if token is not None:
            token.close()
        raise


def _build(
    settings: Settings, keys: ServiceKeys, token: KeyToken | None, clock: Clock, engine: Engine | None, actor: str
) -> AppState:
    audit_key = checkpoint_key(settings, keys, token)
    retired = retired_checkpoint_keys(settings, keys.audit_key_name)
    exchange_key = gateway_key(settings, keys, token)
    receipt_signing = receipt_key(settings, keys, token)
    eng = engine or make_engine(settings.database_url)
    audit = AuditService(
        eng,
        clock=clock,
        log_id=settings.log_id,
        checkpoint_key=audit_key,
        checkpoint_key_name=keys.audit_key_name,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_seconds=settings.checkpoint_seconds,
        publish_dir=settings.checkpoint_publish_dir,
        retired_keys=retired,
    )
    if settings.witnesses:
        audit.witnessing = Witnessing(
            eng,
            witnesses_from_settings(settings.witnesses),
            quorum=settings.quorum(),
            timeout=settings.witness_timeout_seconds,
            clock=clock,
            retry_seconds=float(settings.checkpoint_seconds),
        )
    if settings.tsa_url:
        # The TSA that makes receipts PAdES B-T also dates every audit checkpoint (RFC 3161).
        audit.timestamping = CheckpointTimestamping(
            eng, settings.tsa_url, clock=clock, retry_seconds=float(settings.checkpoint_seconds)
        )
    refusals = RefusalRecorder(RefusalLog(per_minute=settings.refusal_log_per_minute, clock=clock), audit)
    return AppState(
        settings=settings,
        engine=eng,
        clock=clock,
        keys=keys,
        audit=audit,
        clients=ClientService(eng, clock, audit, refusals=refusals),
        accounts=build_account_service(settings, eng, clock, audit, keys.secrets_key, refusals),
        signatures=build_signature_service(
            keys,
            eng,
            clock,
            audit,
            anchor_files=settings.trust_anchor_files,
            crl_files=settings.crl_files,
            fetch_revocation=settings.revocation_fetch,
            token=token,
            bootstrap_actor=actor,
        ),
        receipts=build_receipt_service(settings, eng, clock, audit, keys, receipt_signing),
        exchange=build_exchange_service(
            engine=eng,
            clock=clock,
            audit=audit,
            gateway_key=exchange_key,
            skew_seconds=settings.clock_skew_seconds,
            archive=settings.exchange_archive,
            peer_cache_seconds=settings.exchange_peer_cache_seconds,
            refusals=refusals,
        ),
        refusals=refusals,
        rate_limiter=RateLimiter.from_settings(settings),
    )
