"""Use cases for API clients (other BHXH systems): create, list, revoke, authenticate.

Each creation, revocation and refusal is counted in metrics and recorded in the audit log;
the refusal's precise reason goes to the log only, the caller gets one generic answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from auth import ApiClient, InvalidApiKey, IssuedKey, authenticate, create_client, list_clients, revoke_client
from integrity.audit_service import AuditService
from integrity.clock import Clock
from integrity.db import READ_ONLY
from integrity.metrics import API_KEY_EVENTS


@dataclass
class ClientService:
    engine: Engine
    clock: Clock
    audit: AuditService

    def create(self, name: str, scopes: str | list[str], *, actor: str = "system") -> IssuedKey:
        with self.engine.begin() as conn:
            issued = create_client(conn, name, scopes, clock=self.clock)
            self.audit.record(
                actor,
                "admin.client.created",
                f"client:{issued.client.client_id}",
                {"name": issued.client.name, "scopes": sorted(issued.client.scopes)},
                conn=conn,
            )
        API_KEY_EVENTS.labels("created").inc()
        return issued

    def list(self) -> list[ApiClient]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            return list_clients(conn)

    def revoke(self, client_id: str, *, actor: str = "system") -> ApiClient:
        with self.engine.begin() as conn:
            client = revoke_client(conn, client_id, clock=self.clock)
            self.audit.record(actor, "admin.client.revoked", f"client:{client_id}", {}, conn=conn)
        API_KEY_EVENTS.labels("revoked").inc()
        return client

    def authenticate(self, api_key: str) -> ApiClient:
        try:
            # A read: on SQLite a deferred transaction, so it never queues behind appends.
            with self.engine.connect().execution_options(**READ_ONLY) as conn:
                return authenticate(conn, api_key)
        except InvalidApiKey as exc:
            API_KEY_EVENTS.labels("refused").inc()
            # The key itself never reaches the log; only why it was refused.
            self.audit.record("system", "auth.apikey.refused", "api", {"reason": str(exc)})
            raise
