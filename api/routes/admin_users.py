"""Admin: people's accounts (scope ``admin``). Every action is audited with the admin's name
and the reason given."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Principal, require_scope
from api.openapi import problems
from api.routes.auth import get_accounts
from integrity.accounts import AccountService

router = APIRouter(prefix="/v1/admin/users", tags=["admin"])

_REASON = Field(min_length=3, max_length=500, description="why; recorded in the audit log")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    role: str = Field(min_length=1, max_length=16, description="officer, auditor, admin or citizen")
    mfa_required: bool | None = Field(None, description="default: true for staff roles, false for citizens")
    reason: str = _REASON


class UserOut(BaseModel):
    username: str
    role: str
    mfa_required: bool
    created_at: datetime


class AdminAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = _REASON


class AdminDone(BaseModel):
    username: str
    action: str


@router.post("", status_code=201, response_model=UserOut, responses=problems(409, 422))
def create_user(
    body: UserCreate,
    accounts: AccountService = Depends(get_accounts),
    admin: Principal = Depends(require_scope("admin")),
) -> Any:
    user = accounts.create_user(
        body.username, body.password, body.role, actor=admin.actor, reason=body.reason, mfa_required=body.mfa_required
    )
    return UserOut(username=user.username, role=user.role, mfa_required=user.mfa_required, created_at=user.created_at)


@router.post("/{username}/unlock", response_model=AdminDone, responses=problems(404))
def unlock_user(
    username: str,
    body: AdminAction,
    accounts: AccountService = Depends(get_accounts),
    admin: Principal = Depends(require_scope("admin")),
) -> Any:
    accounts.unlock(username, actor=admin.actor, reason=body.reason)
    return AdminDone(username=username, action="unlocked")


@router.post("/{username}/mfa/reset", response_model=AdminDone, responses=problems(404))
def reset_mfa(
    username: str,
    body: AdminAction,
    accounts: AccountService = Depends(get_accounts),
    admin: Principal = Depends(require_scope("admin")),
) -> Any:
    accounts.reset_mfa(username, actor=admin.actor, reason=body.reason)
    return AdminDone(username=username, action="mfa_reset")
