"""Prometheus metrics of `asd serve`, owned by `prometheus_client` (one registry per server, so
several servers in one process — tests — do not share counters). The runner reports events to
`ServeMetrics.observe`; queue depths are read from the tier pools when /metrics is scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)


class ServeMetrics:
    def __init__(self, runner):
        self.runner = runner
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("asd_requests", "HTTP requests by route and status code",
                                ["route", "code"], registry=registry)
        self.stops = Counter("asd_stops", "Requests answered, by the tier they stopped at", ["tier"], registry=registry)
        self.latency = Histogram("asd_request_latency_seconds", "End-to-end cascade latency",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.tier_latency = Histogram("asd_tier_latency_seconds", "Time spent at a tier (queue + verify + generate)",
                                      ["tier"], buckets=LATENCY_BUCKETS, registry=registry)
        self.errors = Counter("asd_errors", "Requests not answered, by kind", ["kind"], registry=registry)
        self.fallbacks = Counter("asd_fallbacks", "Tier failures absorbed by a fallback", ["tier"], registry=registry)
        # "overloaded", not "rejected": /stats' `rejected` counts requests refused for their length
        self.overloaded = Counter("asd_overloaded", "Requests refused with 429 (queue full)", registry=registry)
        self.feedback = Counter("asd_feedback", "Feedback observations", ["accepted"], registry=registry)
        self.in_flight = Gauge("asd_in_flight", "Requests admitted and not yet answered", registry=registry)
        self.queue_depth = Gauge("asd_queue_depth", "Tier calls waiting for a free slot", ["tier"], registry=registry)
        self.tier_running = Gauge("asd_tier_running", "Tier calls in progress", ["tier"], registry=registry)
        for pool in runner.pools:  # every tier appears from the first scrape on
            self.stops.labels(pool.name)
            self.queue_depth.labels(pool.name)
        runner.observers.append(self.observe)

    def observe(self, event: str, payload: dict) -> None:
        names = [p.name for p in self.runner.pools]
        if event == "done":
            result = payload["result"]
            self.stops.labels(result.tier_name).inc()
            self.latency.observe(result.latency_ms / 1e3)
        elif event == "tier":
            run = payload["run"]
            self.tier_latency.labels(run.name).observe(run.latency_ms / 1e3)
        elif event == "fallback":
            self.fallbacks.labels(names[payload["tier"]]).inc()
        elif event == "error":
            self.errors.labels(payload["kind"]).inc()
        elif event == "overloaded":
            self.overloaded.inc()

    def render(self) -> bytes:
        self.in_flight.set(self.runner.in_flight)
        for pool in self.runner.pools:
            self.queue_depth.labels(pool.name).set(pool.waiting)
            self.tier_running.labels(pool.name).set(pool.running)
        return generate_latest(self.registry)
