"""The request's external origin: the scheme and authority its sender addressed. An RFC 9421
``@target-uri`` is checked against it, and every absolute link the service hands out starts
with it.

Behind a TLS terminator the connection the service accepted says ``http://`` and names the
proxy's upstream, not the address the sender signed. So the origin is, in this order:

1. from a trusted reverse proxy (its TCP address is in ``BHXH_TRUSTED_PROXIES``): the
   ``Forwarded`` field (RFC 7239 §4, ``proto`` and ``host``) or, when there is none,
   ``X-Forwarded-Proto`` and ``X-Forwarded-Host``; a parameter it leaves out comes from the
   connection;
2. ``BHXH_PUBLIC_BASE_URL`` when it was set explicitly (its scheme and authority; links the
   service hands out keep its path too);
3. the connection itself: its scheme and ``Host`` field (local use and tests, where the default
   ``http://127.0.0.1:8000`` would be wrong for any other port or name).

From any other address the forwarding fields are ignored, whatever they hold: a sender cannot
choose the URI its signature is checked against. The connection's scheme is uvicorn's (``serve``
runs it with its own proxy-header handling off), and ``scope["client"]`` is the TCP peer.

The same rule gives the sender's address, which per-address budgets and counts of anonymous
refusals are keyed by (``client_address``): the TCP peer, or, from a trusted proxy, the address
it states the request came from (RFC 7239 ``for``, or else ``X-Forwarded-For``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from starlette.types import Scope

from integrity.app_state import AppState
from integrity.settings import Settings

__all__ = ["UNKNOWN_ADDRESS", "ExternalOrigin", "connection_target_uri", "external_origin"]

Network = IPv4Network | IPv6Network
SERVICE_KEY = "external-origin"
UNKNOWN_ADDRESS = "unknown"  # a connection without a peer address (not a socket)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# RFC 3986 §3.2.2 host (a registered name, IPv4 or a bracketed IPv6 literal) and optional port:
# what a proxy may state as the host the sender used; anything else is ignored.
_AUTHORITY = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$")
# RFC 7239 §4: Forwarded = 1#forwarded-element, forwarded-element = [pair] *( ";" [pair] ),
# pair = token "=" ( token / quoted-string ). No library among our dependencies parses this
# field, and the grammar is small. A quoted string may hold "," or ";", so a field is split
# only once it matched the whole grammar (its quotes are then balanced).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# A value is a token or a quoted string; proxies often leave "host:port" and IPv6 literals
# unquoted, which is accepted (such a value comes only from a trusted proxy anyway).
_VALUE = rf"(?:[!#$%&'*+.^_`|~0-9A-Za-z:\[\]-]+|{_QUOTED})"
_PAIR = re.compile(rf"\s*({_TOKEN})=({_VALUE})\s*")
_ELEMENT = rf"(?:\s*{_TOKEN}={_VALUE}\s*)?(?:;(?:\s*{_TOKEN}={_VALUE}\s*)?)*"
_FIELD = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*")
_ELEMENTS = re.compile(rf'(?:[^,"]|{_QUOTED})+')
_PAIRS = re.compile(rf'(?:[^;"]|{_QUOTED})+')


@dataclass(frozen=True)
class ExternalOrigin:
    """How this instance finds a request's external origin (see the module docstring)."""

    base_url: str | None = None  # BHXH_PUBLIC_BASE_URL when set explicitly, normalised
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalOrigin:
        explicit = "public_base_url" in settings.model_fields_set
        return cls(
            base_url=_normalised_base(settings.public_base_url) if explicit else None,
            trusted_proxies=tuple(ip_network(n) for n in settings.trusted_proxies),
        )

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (a TCP peer) is one of the trusted reverse proxies."""
        parsed = _ip(address)
        return parsed is not None and any(parsed in network for network in self.trusted_proxies)

    def origin(self, scope: Scope) -> str:
        """``scheme://authority`` the sender addressed, without a trailing slash."""
        return self._stated(scope) or _origin_of(self.base_url) or _connection_origin(scope)

    def target_uri(self, scope: Scope) -> str:
        """The absolute target URI the sender addressed (RFC 9110 §7.1), byte for byte: the raw
        path, never the decoded one, and the raw query, so it matches what the sender signed.
        The service's routes are at the root of its origin: a path in BHXH_PUBLIC_BASE_URL is
        not part of it (a proxy that strips such a prefix changes the URI the sender signed)."""
        return self.origin(scope) + _raw_path_and_query(scope)

    def url(self, scope: Scope, path: str) -> str:
        """The absolute URL of the service's own ``path`` for a link in an answer: under
        BHXH_PUBLIC_BASE_URL (with its path) when that is what applies, like the receipts' QR codes."""
        return (self._stated(scope) or self.base_url or _connection_origin(scope)) + path

    def client_address(self, scope: Scope) -> str:
        """The sender's address: the TCP peer, or, when that peer is a trusted proxy, the
        address the proxy states the request came from. Each proxy on the way appends the hop
        it received the request from (RFC 7239 §5.2 ``for``; the same for X-Forwarded-For), so
        the list is read from the end, past the hops that are our trusted proxies themselves;
        what comes before them may be the sender's own invention. When ``Forwarded`` and
        ``X-Forwarded-For`` disagree, or neither states an IP address, it is the peer's."""
        client = scope.get("client")
        peer = str(client[0]) if client else UNKNOWN_ADDRESS
        if not self.trusts(peer):
            return peer
        fields = _fields(scope)
        forwarded = [_node_address(e.get("for")) for e in _elements(", ".join(fields.get("forwarded", [])))]
        x_forwarded = [_node_address(v.strip()) for v in ", ".join(fields.get("x-forwarded-for", [])).split(",")]
        stated = {hop for hop in (self._sender_hop(forwarded), self._sender_hop(x_forwarded)) if hop is not None}
        return stated.pop() if len(stated) == 1 else peer

    def _sender_hop(self, hops: list[str | None]) -> str | None:
        """The first hop, walking back from the last one, that is not a trusted proxy; its
        address in canonical form, or None when it is not an IP address (``unknown``, an
        obfuscated identifier, or nothing)."""
        if not hops:
            return None
        index = len(hops) - 1
        while index > 0 and self.trusts(hops[index]):
            index -= 1
        address = _ip(hops[index])
        return str(address) if address is not None else None

    def _stated(self, scope: Scope) -> str | None:
        client = scope.get("client")
        return self._forwarded(scope) if client and self.trusts(client[0]) else None

    def _forwarded(self, scope: Scope) -> str | None:
        """The origin a trusted proxy states, or None when it states none. A proxy sets one
        family of fields and may pass the other on from the sender untouched, so when
        ``Forwarded`` and ``X-Forwarded-*`` state different values neither is believed."""
        fields = _fields(scope)
        element = self._outermost_trusted(_elements(", ".join(fields.get("forwarded", []))))
        stated: list[tuple[str | None, str | None]] = [
            (element.get("proto"), element.get("host")),
            (_last(fields.get("x-forwarded-proto")), _last(fields.get("x-forwarded-host"))),
        ]
        protos = {p.lower() for p, _ in stated if p}
        hosts = {h.lower() for _, h in stated if h}
        if len(protos) > 1 or len(hosts) > 1:
            return None
        proto = next((p.lower() for p, _ in stated if p), None)
        host = next((h for _, h in stated if h), None)
        if (proto is not None and proto not in _DEFAULT_PORTS) or (host is not None and not _AUTHORITY.match(host)):
            return None
        if proto is None and host is None:
            return None
        scheme = proto or str(scope["scheme"])
        return f"{scheme}://{_without_default_port(scheme, host or _host_field(scope))}"

    def _outermost_trusted(self, elements: list[dict[str, str]]) -> dict[str, str]:
        """The element describing the request as the sender made it. Each proxy appends one,
        whose ``for`` names the hop it came from; walking back from the last (written by our
        trusted peer) while that hop is itself a trusted proxy stops at the one written by the
        proxy that faced the sender. Elements before it may be the sender's own inventions."""
        if not elements:
            return {}
        index = len(elements) - 1
        while index > 0 and self.trusts(_node_address(elements[index].get("for"))):
            index -= 1
        return elements[index]


def external_origin(state: AppState) -> ExternalOrigin:
    """The instance's ``ExternalOrigin``, built once from its settings."""
    origin = state.services.get(SERVICE_KEY)
    if origin is None:
        origin = state.services.setdefault(SERVICE_KEY, ExternalOrigin.from_settings(state.settings))
    return origin  # type: ignore[no-any-return]


def connection_target_uri(scope: Scope) -> str:
    """The target URI as the connection shows it (scheme, ``Host``, raw path and query),
    believing no forwarding field: what a server with no proxy in front sees."""
    return _connection_origin(scope) + _raw_path_and_query(scope)


def _connection_origin(scope: Scope) -> str:
    return f"{scope['scheme']}://{_host_field(scope)}"


def _origin_of(base_url: str | None) -> str | None:
    if base_url is None:
        return None
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _raw_path_and_query(scope: Scope) -> str:
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")


def _host_field(scope: Scope) -> str:
    host = _fields(scope).get("host")
    if host:
        return host[0]
    server = scope.get("server") or ("localhost", None)
    return str(server[0]) if server[1] is None else f"{server[0]}:{server[1]}"


def _fields(scope: Scope) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1").strip())
    return out


def _last(values: list[str] | None) -> str | None:
    """The last member of a comma-separated field: the one the trusted proxy itself added."""
    if not values:
        return None
    return ", ".join(values).split(",")[-1].strip() or None


def _elements(text: str) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded``: elements separated by ",", pairs by ";", parameter names
    case-insensitive, quoted values unquoted. A field that breaks the grammar states nothing."""
    if not _FIELD.fullmatch(text):
        return []
    elements: list[dict[str, str]] = []
    for element in _ELEMENTS.findall(text):
        pairs: dict[str, str] = {}
        for pair in _PAIRS.findall(element):
            match = _PAIR.fullmatch(pair)
            if match is None:
                continue  # only blanks between two ";"
            value = match.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            pairs.setdefault(match.group(1).lower(), value)
        elements.append(pairs)
    return elements


def _node_address(node: str | None) -> str | None:
    """The IP address of an RFC 7239 §6 node (``192.0.2.43``, ``"[2001:db8::1]:4711"``,
    ``unknown``, ``_hidden``), or None."""
    if not node:
        return None
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else None
    return node.rsplit(":", 1)[0] if node.count(":") == 1 else node


def _ip(address: str | None) -> IPv4Address | IPv6Address | None:
    if not address:
        return None
    try:
        return ip_address(address)
    except ValueError:
        return None


def _without_default_port(scheme: str, authority: str) -> str:
    # RFC 3986 §6.2.3: "https://h:443/" and "https://h/" are one URI; a client signs the short form.
    host, _, port = authority.rpartition(":")
    if host and not host.endswith(":") and "]" not in port and port == _DEFAULT_PORTS.get(scheme):
        return host
    return authority


def _normalised_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return f"{scheme}://{_without_default_port(scheme, parts.netloc)}{parts.path.rstrip('/')}"
