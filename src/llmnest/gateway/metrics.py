"""Prometheus metrics of the gateway, all named `llmnest_...`; labels carry key names, never secrets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmnest_requests", "Requests answered by the gateway",
                                ["key_name", "model", "status"], registry=r)
        self.prompt_tokens = Counter("llmnest_prompt_tokens", "Prompt tokens (engine usage)",
                                     ["key_name", "model"], registry=r)
        self.completion_tokens = Counter("llmnest_completion_tokens", "Completion tokens (engine usage)",
                                         ["key_name", "model"], registry=r)
        self.ttft = Histogram("llmnest_time_to_first_token_seconds", "Time to the first streamed token",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("llmnest_request_duration_seconds", "Request duration at the gateway",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("llmnest_requests_in_flight", "Requests being proxied", ["model"], registry=r)
        self.replica_up = Gauge("llmnest_replica_up", "1 when the replica passes health checks",
                                ["model", "replica"], registry=r)
        self.replica_ready = Gauge("llmnest_replica_in_rotation", "1 when the replica takes new requests (0: starting "
                                   "or draining)", ["model", "replica"], registry=r)
        self.replica_outstanding = Gauge("llmnest_replica_outstanding_requests", "Requests in flight per replica",
                                         ["model", "replica"], registry=r)
        self.rejected = Counter("llmnest_limit_rejections", "Requests refused by a limit",
                                ["key_name", "limit"], registry=r)
        self.refused = Counter("llmnest_refused_requests", "Requests refused before reaching an engine, by reason"
                               " (HTTP limits, keys, bad requests, limits, no replica)", ["reason"], registry=r)

    def refused_by(self, reason: str) -> None:
        self.refused.labels(reason).inc()
