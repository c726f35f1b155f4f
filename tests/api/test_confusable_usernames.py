"""Usernames that look alike across scripts are refused (Unicode TR39 mixed-script detection and
skeletons), over the admin API (422 problem+json) and from the command line (exit 2), while honest
Vietnamese names with their diacritics are accepted."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from api.cli_users import app as users_cli
from auth.tables import users
from tests.api.operator_support import as_operator
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import DEMO_KEYS, Service

PROBLEM_TYPE = "urn:bhxh-integrity:problem:username-confusable"
# Cyrillic а (U+0430), ο Greek omicron (U+03BF), с Cyrillic es (U+0441)
LOOK_ALIKES = {
    "cyrillic-a-in-latin": ("alice", "\u0430lice"),
    "greek-omicron-in-latin": ("minh.hoang", "minh.h\u03bfang"),
    "all-cyrillic-twin": ("coco", "\u0441\u043e\u0441\u043e"),
    "digit-one-for-l": ("paypal", "paypa1"),
    "latin-alpha": ("alice", "\u0251lice"),
}
VIETNAMESE = ("nguyễn.văn.an", "nguyen.van.an", "trần.thị.bích", "đặng.lợi", "phạm_thuỳ-dương")


def _create(service: Service, headers: dict[str, str], username: str) -> Any:
    body = {"username": username, "password": STRONG, "role": "officer", "reason": "new officer"}
    return service.client.post("/v1/admin/users", json=body, headers=headers)


def _accounts(service: Service) -> int:
    with service.state.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


@pytest.fixture
def admin_headers(service: Service) -> dict[str, str]:
    wire_accounts(service)
    return service.auth("admin")


def test_a_look_alike_of_an_existing_name_is_refused_with_a_problem(
    service: Service, admin_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for case, (honest, look_alike) in LOOK_ALIKES.items():
        with subtests.test(case=case):
            first = _create(service, admin_headers, honest)
            assert first.status_code in (201, 409), first.text  # 409: made by an earlier case
            accounts, entries = _accounts(service), service.state.audit.size()
            refused = _create(service, admin_headers, look_alike)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["type"] == PROBLEM_TYPE and problem["status"] == 422
            assert "look" in problem["detail"]
            assert _accounts(service) == accounts and service.state.audit.size() == entries


def test_a_name_mixing_scripts_is_refused_even_when_nothing_looks_like_it(
    service: Service, admin_headers: dict[str, str]
) -> None:
    refused = _create(service, admin_headers, "\u0430dmin")  # Cyrillic а + "dmin", no account "admin"
    assert refused.status_code == 422 and refused.json()["type"] == PROBLEM_TYPE
    assert "mixes letters of different scripts" in refused.json()["detail"]
    assert _accounts(service) == 0


def test_honest_vietnamese_names_are_accepted(service: Service, admin_headers: dict[str, str]) -> None:
    for name in VIETNAMESE:
        created = _create(service, admin_headers, name)
        assert created.status_code == 201, (name, created.text)
        assert created.json()["username"] == name
    # Diacritics tell names apart: "nguyễn.văn.an" and "nguyen.van.an" are two people.
    assert _accounts(service) == len(VIETNAMESE)
    login = service.client.post("/v1/auth/login", json={"username": "nguyễn.văn.an", "password": STRONG})
    assert login.status_code == 200, login.text


def test_the_command_line_refuses_a_look_alike_with_one_line(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "BHXH_DATABASE_URL": db_url,
        "BHXH_KEYS_DIR": str(DEMO_KEYS),
        "BHXH_LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, value)
    as_operator(monkeypatch)
    runner = CliRunner()

    def create(username: str) -> Any:
        args = ["create", username, "--role", "officer", "--reason", "new officer", "--password-stdin", "--demo"]
        return runner.invoke(users_cli, args, input=STRONG + "\n")

    assert create("alice").exit_code == 0
    refused = create("\u0430lice")
    lines = [line for line in refused.output.splitlines() if line.strip() and not line.startswith("{")]
    assert refused.exit_code == 2 and len(lines) == 1, refused.output
    assert lines[0].startswith("error:") and "look alike" in lines[0]
    assert create("\u0441\u043e\u0441\u043e").exit_code == 0  # all Cyrillic: one script, a name like any other
    copy = create("coco")
    assert copy.exit_code == 2 and "looks like the existing account" in " ".join(copy.output.split())
