"""Prometheus metrics for every sigstead process: ``GET /metrics``.

One registry per application (not prometheus-client's global one), so several apps in one
process (the tests) never share counters. A worker pool (``up --workers N``) answers a scrape
from whichever worker the kernel hands it to, so there the counters and histograms are
prometheus-client's multiprocess ones (``PROMETHEUS_MULTIPROC_DIR``, set by the pool before
any metric exists): every worker's scrape sums all of them. What is measured:

- every HTTP request by route template, method and status (``sigstead_http_requests_total``)
  and its latency (``sigstead_http_request_seconds``); refusals such as pushback (503) and
  body limits (413, 415, 408) are among the statuses;
- each log's committed batches: entries per batch and commit latency
  (``sigstead_log_batch_entries``, ``sigstead_log_commit_seconds``);
- read at scrape time: each log's tree size and queue depth (``sigstead_log_tree_size``,
  ``sigstead_log_queue_depth``), and whether this process is the log's elected sequencer
  (``sigstead_log_sequencer_leader``; services/log/cluster.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from services.log.sequencer import Sequencer

__all__ = ["METRICS", "Metrics", "metrics_middleware"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Logs(Collector):
    """Tree size and queue depth of each watched log, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.logs: dict[str, Sequencer] = {}

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily(
            "sigstead_log_tree_size", "Entries in the log's latest committed tree", labels=["log"]
        )
        depth = GaugeMetricFamily(
            "sigstead_log_queue_depth", "Submissions waiting to be sequenced", labels=["log"]
        )
        leader = GaugeMetricFamily(
            "sigstead_log_sequencer_leader",
            "1 if this process sequences the log, 0 if it forwards to the process that does",
            labels=["log"],
        )
        for name, sequencer in self.logs.items():
            if sequencer.started:  # a stopped sequencer has no head to report
                size.add_metric([name], sequencer.head.size)
                depth.add_metric([name], sequencer.pending)
                leader.add_metric([name], 1 if sequencer.leading else 0)
        yield size
        yield depth
        yield leader


class Metrics:
    """The registry of one application and the instruments the services update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sigstead_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sigstead_http_request_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_entries = Histogram(
            "sigstead_log_batch_entries",
            "Entries per committed batch",
            ["log"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "sigstead_log_commit_seconds",
            "Time to commit one batch (storage transaction)",
            ["log"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.witnessed_lag = Gauge(
            "sigstead_log_witnessed_lag_entries",
            "Entries the newest quorum-cosigned checkpoint lags the log by (--witness-policy)",
            ["log"],
            registry=self.registry,
            # In a worker pool: what the worker that pushed last knows (they all push).
            multiprocess_mode="max",
        )
        self.certificates = Counter(
            "sigstead_ca_certificates_issued",
            "Certificates the CA issued, by the OIDC issuer of the identity certified",
            ["issuer"],
            registry=self.registry,
        )
        self.timestamps = Counter(
            "sigstead_tsa_timestamps_issued",
            "RFC 3161 timestamps the TSA signed",
            registry=self.registry,
        )
        self._logs = _Logs()
        self.registry.register(self._logs)
        # ``labels()`` validates and locks on every call, a few µs a request; the children are
        # fixed once made (prometheus-client keeps them too), so each request needs one lookup.
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one HTTP answer and its latency."""
        if method not in _METHODS:
            # aiohttp's C parser knows some 30 methods (WebDAV's...), its pure-Python one takes
            # any token: one series each would grow without end.
            method = "other"
        key = (route, method, status)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, name: str, sequencer: Sequencer) -> None:
        """Report ``sequencer``'s tree size and queue depth as log ``name``."""
        self._logs.logs[name] = sequencer

    def commit_observer(self, name: str) -> Callable[[int, float], None]:
        """The sequencer hook that records each committed batch of log ``name``."""
        entries = self.batch_entries.labels(name)
        seconds = self.commit_seconds.labels(name)

        def observe(count: int, elapsed: float) -> None:
            entries.observe(count)
            seconds.observe(elapsed)

        return observe

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        # Every worker's counters and histograms, summed; the gauges read at scrape time
        # (tree size, queue depth, leadership) are this worker's.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, shared)  # type: ignore[no-untyped-call]
        registry.register(self._logs)
        return generate_latest(registry)


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count and time every request under its route template (never the raw path: entry IDs
    and tile indexes would make a series per request)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].answered(route, request.method, status, time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
