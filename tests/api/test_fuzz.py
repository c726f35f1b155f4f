"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema.

schemathesis generates requests for every operation the app publishes (valid and invalid
bodies, parameters and headers, boundary values) and sends them in-process over ASGI to
``create_app`` on a fresh database. Every request carries credentials holding every scope
(an API key; for the ``/v1/auth`` routes that act on a person's own session, a fresh session
token per case), so the fuzzer reaches the handlers instead of stopping at 401. Two
properties hold for every answer:

- no 5xx (a server error is a bug: a stray exception, a parser that leaks, a driver overflow);
- every 4xx/5xx is RFC 9457 ``application/problem+json`` with ``type``, ``title`` and ``status``;
- every answer is documented: its status code, media type, body schema and required headers.

``make test`` runs a bounded, seeded pass on SQLite (the properties concern parsing and error
mapping; the soak adds PostgreSQL, whose text columns refuse NUL and whose integers overflow
differently). ``make soak`` runs ``test_fuzz_soak`` with many more examples, unseeded, on both.

Nothing is excluded. The gateway catch-all is fuzzed like every other operation, but every
message the fuzzer makes is unsigned, so what that proves is the refusal path; the forwarding
path needs a correctly signed message, which ``test_signed_messages_with_fuzzed_paths_and_bodies
_cross_the_gateway_without_5xx`` builds for generated methods, paths, queries and bodies.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.routing import iter_route_contexts
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.client import ExchangeAuth
from api.errors import PROBLEM_JSON
from api.gateway import Gateway
from auth.errors import LoginThrottled
from auth.scopes import SCOPES
from tests.api.exchange_support import (
    LoopbackServer,
    StandIn,
    demo_cert_pem,
    demo_peer_key,
    demo_signing_key,
)
from tests.auth.support import STRONG, wire_accounts
from tests.conftest import Service

# Bounded for `make test`: this whole file stays within ~90 s on a loaded 2-core box.
BOUNDED_EXAMPLES = 30
BOUNDED_SEED = 20_261_123
SOAK_EXAMPLES = 300
GATEWAY_EXAMPLES = 25
FUZZ_USER = "fuzz.citizen"
HARNESS_ADDRESS = "198.51.100.77"  # apart from the fuzzed requests' address: their throttling never blocks the harness
# /v1/auth and /v1/me routes acting on the caller's own session take a person's session token,
# never an API key; login and MFA take no credentials at all.
_SESSION_PREFIXES = ("/v1/auth/", "/v1/me/")
_NO_CREDENTIAL_ROUTES = frozenset({"/v1/auth/login", "/v1/auth/mfa"})
_PROBLEM_MEMBERS = ("type", "title", "status")
# Shrinking a failure can take minutes; the report names the failing request as generated.
_SETTINGS: dict[str, Any] = {
    "phases": [Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "database": None,
}


class FuzzTarget:
    """The app under fuzzing and the credentials the harness hands to each generated case."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.accounts = wire_accounts(service)
        self.api_key = service.api_key(*sorted(SCOPES))
        self.accounts.create_user(
            FUZZ_USER, STRONG, "citizen", actor="system", reason="fuzz harness", mfa_required=False
        )

    def session_token(self) -> str:
        """A fresh full session per case: a fuzzed logout or password change must not leave the
        next case without one. A lockout the fuzzer caused is cleared as an admin would."""
        try:
            result = self.accounts.login(FUZZ_USER, STRONG, address=HARNESS_ADDRESS)
        except LoginThrottled:
            self.accounts.unlock(FUZZ_USER, actor="system", reason="fuzz harness")
            result = self.accounts.login(FUZZ_USER, STRONG, address=HARNESS_ADDRESS)
        assert result.token is not None
        return result.token

    def headers_for(self, case: schemathesis.Case) -> dict[str, str]:
        path = case.operation.path
        if path in _NO_CREDENTIAL_ROUTES:
            return {}
        if path.startswith(_SESSION_PREFIXES):
            return {"Authorization": f"Bearer {self.session_token()}"}
        return {"Authorization": f"Bearer {self.api_key}"}


def problem_json_errors(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx/5xx answer is RFC 9457 problem+json with its three required members."""
    if response.status_code < 400:
        return
    ctype = response.headers.get("content-type", [""])[0]
    assert ctype.startswith(PROBLEM_JSON), f"{response.status_code} answered with content-type {ctype!r}"
    if case.method.upper() == "HEAD":
        return  # a HEAD answer carries the headers of the GET answer, never its body (RFC 9110 §9.3.2)
    body = response.json()
    missing = [m for m in _PROBLEM_MEMBERS if m not in body]
    assert not missing, f"problem+json without {missing}: {body!r}"
    assert body["status"] == response.status_code, body


@pytest.fixture(autouse=True)
def _schemathesis_pytest9_node_id(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's lazy loader reads and writes the private ``Node._nodeid``, which
    # pytest 9.2 replaced; it only labels the per-operation reports with it, so give it one.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def fuzz_target(db_url: str) -> Iterator[FuzzTarget]:
    service = Service(db_url)
    yield FuzzTarget(service)
    service.close()


@pytest.fixture
def api_schema(request: pytest.FixtureRequest, fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    options: dict[str, Any] = {"generation": {"mode": "all"}}
    if request.node.get_closest_marker("soak") is None:
        options["seed"] = BOUNDED_SEED  # the same cases on every `make test`: a failure reproduces
    config = schemathesis.Config.from_dict(options)
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_target.service.app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


# Each answer is one the schema documents: its status, media type, body and required headers
# (the published description is what other BHXH systems generate their clients from).
_CHECKS = [
    not_a_server_error,
    problem_json_errors,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _call(case: schemathesis.Case, target: FuzzTarget) -> None:
    case.call_and_validate(headers=target.headers_for(case), checks=_CHECKS)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@schema.parametrize()
@settings(max_examples=BOUNDED_EXAMPLES, **_SETTINGS)
def test_every_operation_answers_without_5xx_and_errors_as_problem_json(
    case: schemathesis.Case, fuzz_target: FuzzTarget
) -> None:
    _call(case, fuzz_target)


@pytest.mark.soak
@schema.parametrize()
@settings(max_examples=SOAK_EXAMPLES, **_SETTINGS)
def test_fuzz_soak(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    _call(case, fuzz_target)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_fuzzed_schema_covers_every_route_of_the_app(fuzz_target: FuzzTarget) -> None:
    """Exclude nothing silently: every API route is in the schema the fuzzer reads. Only the
    server-rendered pages and the static files are outside it (they are HTML forms, tested in
    test_web.py and test_web_security.py)."""
    app = fuzz_target.service.app
    published = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    # Route contexts as FastAPI's own schema generator reads them: ``app.routes`` holds the
    # included routers wrapped, so a plain walk of it would find almost nothing to compare.
    contexts = list(iter_route_contexts(app.routes))
    routes = {
        (method, context.path_format)
        for context in contexts
        for method in context.methods or ()
        if getattr(context, "include_in_schema", False)
    }
    assert len(routes) >= 40, sorted(routes)  # every router's routes were found, not just the app's own
    assert routes <= published, sorted(routes - published)
    hidden = {context.path_format or "" for context in contexts if not getattr(context, "include_in_schema", True)}
    assert all(not path.startswith(("/v1/", "/gateway/", "/.well-known/")) for path in hidden), hidden


# --- the gateway's forwarding path ----------------------------------------------------------------

PORTAL_KEY = demo_signing_key("portal-exchange", "portal")
ONE_STOP_KEY = demo_signing_key("one-stop-exchange", "one-stop")
GATEWAY_PEER_KEY = demo_peer_key("gateway-exchange", "gateway")
_SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@", min_size=1, max_size=12)
_QUERY = st.dictionaries(
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=6),
    st.text(max_size=12),
    max_size=3,
)


@pytest.fixture(scope="module")
def one_stop() -> Iterator[tuple[StandIn, LoopbackServer]]:
    stand_in = StandIn("one-stop", ONE_STOP_KEY, GATEWAY_PEER_KEY)
    server = LoopbackServer(stand_in.app())
    yield stand_in, server
    server.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_signed_messages_with_fuzzed_paths_and_bodies_cross_the_gateway_without_5xx(
    service: Service, one_stop: tuple[StandIn, LoopbackServer]
) -> None:
    stand_in, server = one_stop
    exchange = service.state.exchange
    service.state.services["gateway"] = Gateway(exchange, timeout_seconds=5.0)
    exchange.peers.add(
        "portal", keyid="portal", key_pem=demo_cert_pem("portal-exchange"), routes=["* /gateway/one-stop/**"]
    )
    exchange.peers.add("one-stop", keyid="one-stop", key_pem=demo_cert_pem("one-stop-exchange"), base_url=server.url)
    exchange.peers.add("gateway", keyid="gateway", key_pem=demo_cert_pem("gateway-exchange"))
    client = service.client
    client.auth = ExchangeAuth(PORTAL_KEY, server_key=GATEWAY_PEER_KEY)
    counter = itertools.count()

    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
        segments=st.lists(_SEGMENT, min_size=1, max_size=4),
        query=_QUERY,
        body=st.binary(max_size=2048),
    )
    @settings(max_examples=GATEWAY_EXAMPLES, **_SETTINGS)
    def forwarded(method: str, segments: list[str], query: dict[str, str], body: bytes) -> None:
        before = len(stand_in.received)
        path = "/gateway/one-stop/" + "/".join(segments) + f"/{next(counter)}"
        content = None if method in ("GET", "DELETE") else body
        response = client.request(method, f"http://testserver{path}", params=query, content=content)
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith(PROBLEM_JSON), response.text[:300]
        else:
            # Forwarded, re-signed by the gateway, verified by the peer, and its signed answer
            # verified by the portal's client (ExchangeAuth) on the way back.
            assert len(stand_in.received) == before + 1
            assert stand_in.received[-1]["keyid"] == "gateway"
            assert stand_in.received[-1]["body"] == (content or b"")

    try:
        forwarded()
    finally:
        service.state.services["gateway"].close()
