"""Prometheus metrics of one server: what it serves, stores, transfers and generates.

Every application gets its own `CollectorRegistry` (tests run many servers in one process).
Counters and histograms are updated where things happen; gauges that describe state
(blobs, manifests, store size, upload sessions, loaded models, busy slots, queue depth)
are read when `/metrics` is scraped, so the hot path pays nothing for them.

The request middleware labels by the matched route (`/api/tags`, `/v2/blob`...), never by
the raw path, so the label set stays small whatever clients send. The request families
are plain numbers in `HttpStats` (no locks: only the event loop counts), so a request costs
one dictionary lookup, a bisection and a few additions; a prometheus_client child costs a
lock per update and a loop over the buckets per observation, which measured about 7% of a
manifest GET's server CPU (py-spy, 32 connections), not the 2% a loop calling the
middleware alone suggests (in a real server the code runs with cold caches).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from api.board import BOARD, TransferBoard
from api.state import SCHEDULER, STORE
from registry.server import REGISTRY
from registry.server.uploads import UPLOADS
from store.driver import PathNotFound, StorageDriver
from store.errors import StoreError
from store.gc import GCReport
from store.names import ModelName

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteBytes:
    """Request and response body bytes of one route."""

    __slots__ = ("created", "received", "sent")

    def __init__(self, created: float) -> None:
        self.created = created
        self.received = 0
        self.sent = 0


class RouteLatency:
    """The latency histogram of one (route, method): a count per bucket (the last one past
    every bound), not cumulative; the exposition adds them up."""

    __slots__ = ("counts", "created", "sum")

    def __init__(self, created: float) -> None:
        self.created = created
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.sum = 0.0


class RequestSeries:
    """One (route, method, status): its count, and the shared histogram and byte counts."""

    __slots__ = ("bytes", "count", "created", "latency")

    def __init__(self, created: float, latency: RouteLatency, route_bytes: RouteBytes) -> None:
        self.created = created
        self.count = 0
        self.latency = latency
        self.bytes = route_bytes


class HttpStats(Collector):
    """The HTTP request families (`corral_http_requests`, `corral_http_request_duration_seconds`,
    `corral_http_request_bytes`, `corral_http_response_bytes`), kept as plain numbers.

    Every request updates them, so they skip prometheus_client's per-sample locks and its
    per-bucket histogram loop: only the event loop's thread counts (the middleware and the
    response-prepare hook), and a scrape from any thread reads a snapshot of the dictionaries
    (copied in one step under the GIL). A bucket is found by bisection (`le` bounds are
    inclusive, as prometheus_client's). The exposition is the same as Counter and Histogram
    children would give, `_created` samples included."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], RequestSeries] = {}
        self.latencies: dict[tuple[str, str], RouteLatency] = {}
        self.routes: dict[str, RouteBytes] = {}

    def _series(self, key: tuple[str, str, str]) -> RequestSeries:
        route, method, _ = key
        now = time.time()
        latency = self.latencies.get((route, method))
        if latency is None:
            latency = self.latencies[(route, method)] = RouteLatency(now)
        route_bytes = self.routes.get(route)
        if route_bytes is None:
            route_bytes = self.routes[route] = RouteBytes(now)
        series = self.series[key] = RequestSeries(now, latency, route_bytes)
        return series

    def observe(self, route: str, method: str, status: int, seconds: float,
                received: int, sent: int) -> RouteBytes:
        if method not in _METHODS:
            method = "other"  # clients choose the method: keep the label set bounded
        key = (route, method, str(status))
        series = self.series.get(key)
        if series is None:
            series = self._series(key)
        series.count += 1
        latency = series.latency
        latency.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        latency.sum += seconds
        route_bytes = series.bytes
        if received:
            route_bytes.received += received
        if sent:
            route_bytes.sent += sent
        return route_bytes

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        series = list(self.series.items())
        latencies = list(self.latencies.items())
        routes = list(self.routes.items())
        requests = CounterMetricFamily("corral_http_requests", "HTTP requests answered",
                                       labels=("route", "method", "status"))
        for labels, one in series:
            requests.add_metric(labels, one.count, created=one.created)
        yield requests
        latency = HistogramMetricFamily("corral_http_request_duration_seconds",
                                        "Time from request to the last byte of the answer",
                                        labels=("route", "method"))
        for labels, hist in latencies:
            buckets, running = [], 0
            for bound, count in zip((*_LATENCY_BUCKETS, float("inf")), list(hist.counts), strict=True):
                running += count
                buckets.append((floatToGoString(bound), float(running)))
            latency.add_metric(labels, buckets, hist.sum)
            latency.add_sample("corral_http_request_duration_seconds_created",
                               dict(zip(("route", "method"), labels, strict=True)), hist.created)
        yield latency
        received = CounterMetricFamily("corral_http_request_bytes", "Request body bytes received",
                                       labels=("route",))
        sent = CounterMetricFamily("corral_http_response_bytes", "Response bytes sent", labels=("route",))
        for route, counts in routes:
            received.add_metric((route,), counts.received, created=counts.created)
            sent.add_metric((route,), counts.sent, created=counts.created)
        yield received
        yield sent

class Metrics:
    """The metric families of one server."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.http = HttpStats()
        r.register(self.http)
        self.transfers_in_flight = Gauge("corral_transfers_in_flight",
                                         "Pulls and pushes this server is running (/api/pull, /api/push)",
                                         ("direction",), registry=r)
        self.transfer_bytes = Counter("corral_transfer_bytes",
                                      "Blob bytes moved by pulls and pushes this server ran",
                                      ("direction",), registry=r)
        self.transfers = Counter("corral_transfers", "Pulls and pushes finished, by outcome",
                                 ("direction", "outcome"), registry=r)
        self.gc_runs = Counter("corral_gc_runs", "Garbage collections run", registry=r)
        self.gc_freed_bytes = Counter("corral_gc_freed_bytes", "Bytes freed by garbage collection",
                                      registry=r)
        self.gc_removed_blobs = Counter("corral_gc_removed_blobs", "Blobs removed by garbage collection",
                                        registry=r)
        self.tokens = Counter("corral_generated_tokens", "Tokens generated", ("model",), registry=r)
        self.prompt_tokens = Counter("corral_prompt_tokens", "Prompt tokens evaluated", ("model",),
                                     registry=r)
        self.ttft = Histogram("corral_time_to_first_token_seconds",
                              "From request arrival to the first generated token",
                              ("model",), buckets=_TTFT_BUCKETS, registry=r)
        self.tps = Histogram("corral_tokens_per_second", "Generation speed of a request",
                             ("model",), buckets=_TPS_BUCKETS, registry=r)
        self.completions = Counter("corral_completions", "Generate and chat requests finished",
                                   ("model", "done_reason"), registry=r)

    def observe_request(self, route: str, method: str, status: int, seconds: float,
                        received: int, sent: int) -> RouteBytes:
        """Count a request; returns its route's byte counts (for bytes that aiohttp sends
        after the middleware returned)."""
        return self.http.observe(route, method, status, seconds, received, sent)

    def observe_gc(self, report: GCReport) -> None:
        self.gc_runs.inc()
        self.gc_removed_blobs.inc(len(report.removed_blobs))
        self.gc_freed_bytes.inc(report.freed_bytes)

    def observe_completion(self, model: str, chunk: dict[str, Any], ttft_s: float | None) -> None:
        """Record the final chunk of a generate or chat request (ollama's done metrics).

        The label is the model's shortest name, lower-cased, so the spellings a client may
        use for one model (`tiny`, `TINY:latest`, `library/tiny`) share one series."""
        model = model_label(model)
        eval_count = int(chunk.get("eval_count") or 0)
        prompt_count = int(chunk.get("prompt_eval_count") or 0)
        eval_ns = int(chunk.get("eval_duration") or 0)
        if eval_count:
            self.tokens.labels(model).inc(eval_count)
        if prompt_count:
            self.prompt_tokens.labels(model).inc(prompt_count)
        if ttft_s is not None and eval_count:
            self.ttft.labels(model).observe(ttft_s)
        if eval_count and eval_ns > 0:
            self.tps.labels(model).observe(eval_count / (eval_ns / 1e9))
        self.completions.labels(model, str(chunk.get("done_reason") or "stop")).inc()


def model_label(text: str) -> str:
    try:
        return ModelName.parse(text).display_shortest().lower()
    except (StoreError, ValueError):
        return "other"


METRICS = web.AppKey("metrics", Metrics)
REQUEST_START = web.RequestKey("corral_request_start", float)


def v2_kind(path: str) -> str:
    """The registry resource a /v2 path names (base, catalog, token, blob, upload_start,
    upload, manifest, tags, or invalid), from its last segments only: the handler parses
    and validates the path itself; a label needs no more than this."""
    parts = path.split("/")
    n = len(parts)
    if n <= 3:
        return {"": "base", "_catalog": "catalog", "token": "token"}.get(parts[2] if n == 3 else "", "invalid")
    last, prev = parts[-1], parts[-2]
    if prev == "manifests":
        return "manifest"
    if prev == "uploads" and parts[-3] == "blobs":
        return "upload_start" if last == "" else "upload"
    if prev == "blobs":
        return "blob"
    if prev == "tags" and last == "list":
        return "tags"
    return "invalid"


def route_label(request: web.Request) -> str:
    """The matched resource, not the raw path: `/v2/<kind>` for the registry."""
    path = request.path
    if path == "/v2" or path.startswith("/v2/"):
        return "/v2/" + v2_kind(path)
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    if resource is None or info.http_exception is not None:
        return "unmatched"
    return resource.canonical


def metrics_middleware(metrics: Metrics) -> Callable[..., object]:
    observe = metrics.http.observe
    clock = time.perf_counter

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        request[REQUEST_START] = started
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            method = request.method
            sent = 0
            later = False
            if response is not None and response.prepared:
                sent = response.body_length  # streamed: everything was written already
            elif method != "HEAD":  # a HEAD's Content-Length is never sent
                # A plain Response knows its length now; a file's (or a raised HTTP error's)
                # is known when aiohttp prepares it: the prepare hook counts it then.
                length = response.content_length if type(response) is web.Response else None
                if length is None:
                    later = True
                else:
                    sent = length
            received = request.content.total_bytes if request.body_exists else 0
            counts = observe(route_label(request), method, status, clock() - started, received, sent)
            if later:
                request[_BYTES_OUT] = counts

    return middleware


_BYTES_OUT = web.RequestKey("corral_metrics_bytes_out", RouteBytes)


def count_prepared(request: web.Request, response: web.StreamResponse) -> None:
    """Bytes of answers whose length is known only when aiohttp prepares them (file
    responses), on the route's counts that the middleware left on the request."""
    counts = request.get(_BYTES_OUT)
    if counts is not None:
        length = response.content_length
        if length:
            counts.sent += length


def ttft_since_request(request: web.Request) -> float | None:
    started = request.get(REQUEST_START)
    return None if started is None else time.perf_counter() - started


def observe_completion(request: web.Request, chunk: dict[str, Any], ttft_s: float | None) -> None:
    metrics = request.app.get(METRICS)
    if metrics is not None and chunk.get("done") and "model" in chunk:
        metrics.observe_completion(str(chunk["model"]), chunk, ttft_s)


async def metered(app: web.Application, direction: str, model: str,
                  events: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """Pass a pull's or push's progress events through, counting in-flight transfers and
    the bytes that each event says were newly completed, and showing it on the board."""
    metrics = app[METRICS]
    board = app[BOARD]
    done: dict[str, int] = {}
    in_flight = metrics.transfers_in_flight.labels(direction)
    moved = metrics.transfer_bytes.labels(direction)
    outcome = "error"
    in_flight.inc()
    transfer = board.start(direction, model)
    try:
        async for event in events:
            progress = event.to_progress()
            board.update(transfer, progress)
            digest, completed = progress.get("digest"), progress.get("completed")
            if digest and isinstance(completed, int):
                delta = completed - done.get(digest, 0)
                if delta > 0:
                    moved.inc(delta)
                    done[digest] = completed
            yield event
        outcome = "success"
    finally:
        board.finish(transfer)
        in_flight.dec()
        metrics.transfers.labels(direction, outcome).inc()
        await events.aclose()


class StateCollector(Collector):
    """Gauges read at scrape time from the store, the registry and the scheduler."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the app is not started yet

    def collect(self) -> Iterator[Metric]:
        # From the store on its driver (any driver): counts it keeps current itself.
        store = self._app[STORE]
        try:
            blobs = store.blobs.stats()
        except (OSError, StoreError):
            blobs = None
        if blobs is not None:
            yield GaugeMetricFamily("corral_store_blobs", "Blobs in the store", value=blobs.count)
            yield GaugeMetricFamily("corral_store_bytes", "Bytes of blobs in the store", value=blobs.bytes)
        yield GaugeMetricFamily("corral_store_manifests", "Manifests (model tags) in the store",
                                value=store.manifests.count())
        registry = self._app.get(REGISTRY)
        if registry is not None:
            yield GaugeMetricFamily("corral_registry_upload_sessions",
                                    "Registry upload sessions open in the store",
                                    value=_upload_sessions(registry.driver))
        scheduler = self._app.get(SCHEDULER)
        if scheduler is not None:
            stats = scheduler.stats()
            yield GaugeMetricFamily("corral_models_loaded", "Models loaded in runners",
                                    value=stats.loaded)
            yield GaugeMetricFamily("corral_slots_busy", "Runners serving a request now",
                                    value=stats.busy)
            yield GaugeMetricFamily("corral_queue_depth", "Requests waiting for a runner",
                                    value=stats.queued)
            yield CounterMetricFamily("corral_runner_crashes",
                                      "Runners that exited on their own since the server started",
                                      value=stats.crashes)


def _upload_sessions(driver: StorageDriver) -> int:
    try:
        return len(driver.list(UPLOADS))
    except PathNotFound:
        return 0


def install(app: web.Application, metrics: Metrics) -> Metrics:
    """Attach the app's metrics and the scrape-time collector."""
    app[METRICS] = metrics
    app[BOARD] = TransferBoard()
    collector = StateCollector(app)
    metrics.registry.register(collector)
    app[COLLECTOR] = collector
    return metrics


COLLECTOR = web.AppKey("metrics_collector", StateCollector)


def record_gc(app: web.Application, report: GCReport) -> None:
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.observe_gc(report)
