"""The cheap forms of the per-request work: the HTTP metric families kept as plain numbers
give the exposition prometheus_client's own Counter and Histogram would, and the cached
Host / peer answers stay right (and bounded) whatever clients send."""

from __future__ import annotations

from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from api import middleware
from api.metrics import _LATENCY_BUCKETS, HttpStats
from api.origins import host_allowed, machine_names

_ROUTES = st.sampled_from(["/v2/manifest", "/v2/blob", "/api/tags"])
_METHODS = st.sampled_from(["GET", "HEAD", "PUT", "BREW"])
_STATUS = st.sampled_from([200, 404, 500])
# Latencies on and around every bucket bound (bounds are inclusive), and past the last.
_SECONDS = st.one_of(st.sampled_from([0.0, *_LATENCY_BUCKETS, 61.0]),
                     st.floats(min_value=0, max_value=100, allow_nan=False))
_BYTES = st.integers(min_value=0, max_value=1 << 40)
_REQUEST = st.tuples(_ROUTES, _METHODS, _STATUS, _SECONDS, _BYTES, _BYTES)


def _without_created(text: bytes) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if "_created" not in line)


def _reference(requests: list[tuple[str, str, int, float, int, int]]) -> CollectorRegistry:
    """The same families as prometheus_client children, updated the way the middleware
    updated them before (a label set per request, bytes only when non-zero)."""
    r = CollectorRegistry()
    count = Counter("corral_http_requests", "HTTP requests answered", ("route", "method", "status"), registry=r)
    latency = Histogram("corral_http_request_duration_seconds", "Time from request to the last byte of the answer",
                        ("route", "method"), buckets=_LATENCY_BUCKETS, registry=r)
    received = Counter("corral_http_request_bytes", "Request body bytes received", ("route",), registry=r)
    sent = Counter("corral_http_response_bytes", "Response bytes sent", ("route",), registry=r)
    for route, method, status, seconds, got, gave in requests:
        method = method if method != "BREW" else "other"
        count.labels(route, method, str(status)).inc()
        latency.labels(route, method).observe(seconds)
        received.labels(route).inc(got)
        sent.labels(route).inc(gave)
    return r


@settings(max_examples=60, deadline=None)
@given(st.lists(_REQUEST, max_size=30))
def test_http_stats_expose_what_prometheus_children_would(requests):
    stats = HttpStats()
    r = CollectorRegistry()
    r.register(stats)
    for route, method, status, seconds, got, gave in requests:
        stats.observe(route, method, status, seconds, got, gave)
    assert _without_created(generate_latest(r)) == _without_created(generate_latest(_reference(requests)))


def test_http_stats_keep_created_samples():
    stats = HttpStats()
    r = CollectorRegistry()
    r.register(stats)
    stats.observe("/v2/blob", "HEAD", 200, 0.002, 0, 0)
    text = generate_latest(r).decode()
    for family in ("corral_http_requests", "corral_http_request_duration_seconds",
                   "corral_http_request_bytes", "corral_http_response_bytes"):
        assert f"{family}_created{{" in text


def _request(host: str, peer: str) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 50000) if name == "peername" else default
    )
    return make_mocked_request("GET", "/api/tags", headers={"Host": host}, transport=transport)


def test_cached_host_answers_match_the_rule_and_stay_bounded():
    check = middleware.host_rule("0.0.0.0")
    machine = machine_names()
    hosts = [f"rebind{i}.evil.example.com" for i in range(3 * middleware._CACHE_LIMIT)]
    hosts += ["localhost:11434", "127.0.0.1", "[::1]:8080", "10.1.2.3", "box.local", "8.8.8.8"]
    for _ in range(2):  # the second time from the cache (what is left in it)
        for host in hosts:
            refused = check(_request(host, "127.0.0.1"))
            assert (refused is None) == host_allowed(host, frozenset(), machine), host
            # remote peers' Host is not judged when listening beyond loopback
            assert check(_request(host, "203.0.113.9")) is None


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)))
def test_cached_peer_answer_is_the_ipaddress_rule(remote):
    assert middleware._loopback_address(remote) == middleware._address_is_loopback(remote)
    assert len(middleware._loopback_address.answers) <= middleware._CACHE_LIMIT


async def test_response_bytes_counted_for_plain_file_and_raised_answers(aiohttp_client, tmp_path):
    from api.metrics import Metrics, count_prepared, metrics_middleware

    meters = Metrics()
    app = web.Application(middlewares=[metrics_middleware(meters)])

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        count_prepared(request, response)

    app.on_response_prepare.append(on_prepare)
    weights = tmp_path / "weights"
    weights.write_bytes(b"w" * 1000)

    async def file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(weights)

    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"p" * 10)

    app.router.add_get("/file", file)
    app.router.add_get("/plain", plain)
    client = await aiohttp_client(app)
    for method, path in (("GET", "/file"), ("GET", "/plain"), ("HEAD", "/plain"), ("GET", "/missing")):
        async with client.request(method, path) as resp:
            body = await resp.read()
            if path == "/missing":
                missing = len(body)
    routes = meters.http.routes
    assert routes["/file"].sent == 1000
    assert routes["/plain"].sent == 10  # the HEAD's Content-Length is never sent
    assert routes["unmatched"].sent == missing > 0  # a raised 404, counted when aiohttp prepares it
