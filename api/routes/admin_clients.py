"""Admin: API clients for other BHXH systems (scope ``admin``; every change is audited)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Principal, get_state, require_scope
from api.openapi import problems
from auth import ApiClient
from integrity.app_state import AppState

router = APIRouter(prefix="/v1/admin/clients", tags=["admin"])


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=16)


class ClientOut(BaseModel):
    client_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ClientCreated(ClientOut):
    api_key: str = Field(description="shown once; only a hash is stored")


def _out(client: ApiClient) -> dict[str, object]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "scopes": sorted(client.scopes),
        "created_at": client.created_at,
        "revoked_at": client.revoked_at,
    }


@router.post("", status_code=201, response_model=ClientCreated, responses=problems(422))
def create_client(
    body: ClientCreate,
    state: AppState = Depends(get_state),
    admin: Principal = Depends(require_scope("admin")),
) -> dict[str, object]:
    issued = state.clients.create(body.name, body.scopes, actor=admin.actor)
    return {**_out(issued.client), "api_key": issued.api_key}


@router.get("", response_model=list[ClientOut])
def list_clients(
    state: AppState = Depends(get_state), _admin: Principal = Depends(require_scope("admin"))
) -> list[dict[str, object]]:
    return [_out(c) for c in state.clients.list()]


@router.post("/{client_id}/revoke", response_model=ClientOut, responses=problems(404))
def revoke_client(
    client_id: str,
    state: AppState = Depends(get_state),
    admin: Principal = Depends(require_scope("admin")),
) -> dict[str, object]:
    return _out(state.clients.revoke(client_id, actor=admin.actor))
