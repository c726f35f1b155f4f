"""Prometheus metrics of the service (prometheus-client, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "bhxh_http_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "bhxh_http_request_seconds",
    "HTTP request latency by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
API_KEY_EVENTS = Counter("bhxh_api_key_events_total", "API key creations, revocations and refusals", ["event"])
RATE_LIMITED = Counter(
    "bhxh_rate_limited_total",
    "Requests refused by a rate limit (429), by route class and caller kind",
    ["route_class", "caller"],
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "bhxh_rate_limit_storage_errors_total",
    "Rate-limit checks the storage could not answer, by outcome: allowed (authenticated callers, "
    "fail open) or refused (anonymous callers, fail closed)",
    ["outcome"],
)
CERTIFICATE_DAYS_LEFT = Gauge(
    "bhxh_certificate_days_left",
    "Days until each certificate the service signs with expires (negative: expired), by key id and purpose",
    ["key", "purpose"],
)
